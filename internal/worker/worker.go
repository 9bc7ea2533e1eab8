// Package worker runs the shared durable pull consumer over the command
// subjects and feeds its messages to a handler, many at once, with a shutdown
// that loses nothing.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
)

// Handler settles one message (acks, naks or terminates it). It is called
// from up to Concurrency goroutines at once.
type Handler interface {
	Handle(ctx context.Context, msg jetstream.Msg)
}

// Config is what a Worker is built from.
type Config struct {
	JetStream jetstream.JetStream
	Streams   streams.Config
	Handler   Handler
	// Concurrency is the number of commands in flight at once.
	Concurrency int
	// AckWait and MaxDeliver configure the consumer; MaxDeliver -1 is
	// unlimited (the handler dead-letters by its own budget).
	AckWait    time.Duration
	MaxDeliver int
	// ShutdownTimeout bounds how long in-flight commands may run after Run's
	// ctx ends; what is still running then is cancelled and handed back.
	ShutdownTimeout time.Duration
	// FetchWait is how long one pull request waits for messages (default
	// 1s). A pull request lost with a restarting NATS server is replaced
	// within FetchWait, and shutdown waits up to FetchWait for the open ones
	// to end.
	FetchWait time.Duration
	Logger    *slog.Logger
	// InFlight, when set, is told of every change in the number of commands in flight.
	InFlight func(delta int)
}

// maxPulls bounds the pull requests one worker keeps open at once, far below
// the consumer's MaxWaiting (512) even with many replicas.
const maxPulls = 4

// Worker consumes commands.
type Worker struct {
	cfg  Config
	log  *slog.Logger
	cons atomic.Pointer[jetstream.Consumer] // nil while not bound
	// consumerDiff is the last difference checkConsumer warned about.
	consumerDiff atomic.Pointer[string]
}

// New returns a Worker; call Run to start it.
func New(cfg Config) *Worker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 128
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = -1
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.FetchWait <= 0 {
		cfg.FetchWait = time.Second
	}
	if cfg.InFlight == nil {
		cfg.InFlight = func(int) {}
	}
	return &Worker{cfg: cfg, log: cfg.Logger}
}

// ConsumerConfig is the shared durable pull consumer every worker binds to.
//
// AckWait need not cover a command's retry budget: while a command runs, its
// handler extends the ack deadline with InProgress every third of
// min(lease, AckWait) (handlers.Handler.keepAlive), and a message is only
// ever pulled for a free concurrency slot, so none waits in a client buffer
// while its ack timer runs. MaxDeliver is best left unlimited (-1): every
// NakWithDelay (busy key, store unreachable, shutdown) counts as a delivery,
// and JetStream drops a message past MaxDeliver without a dead letter; the
// handler's own budget dead-letters instead. MaxAckPending leaves room for
// every replica's in-flight commands.
func (w *Worker) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       w.cfg.Streams.Consumer,
		Description:   "payworker command workers",
		FilterSubject: w.cfg.Streams.CommandWildcard(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    w.cfg.MaxDeliver,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: max(1000, 16*w.cfg.Concurrency),
	}
}

// Ready reports whether the consumer is bound and answers. Its info comes
// from the consumer's leader: while the consumer has none (an election after
// a server was lost) or this worker reaches no JetStream server, it fails,
// and the worker reports not ready until a leader answers again.
func (w *Worker) Ready(ctx context.Context) error {
	c := w.cons.Load()
	if c == nil {
		return errors.New("consumer not bound")
	}
	if _, err := (*c).Info(ctx); err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	return nil
}

// Run binds the consumer and processes messages until ctx ends; then it
// shuts down in order:
//
//  1. stop fetching: no pull request is sent any more; the open ones run out
//     within FetchWait, and what they deliver after ctx ended is not started
//     but handed back with NakWithDelay(FetchWait), a delay that outlasts
//     this worker's own open pull requests so the message goes to another
//     worker (or to this one's successor);
//  2. wait for the commands in flight until ShutdownTimeout after ctx ended,
//     then cancel the rest (their handler releases the key, marked uncertain
//     if a gateway call was cut, and Naks them for immediate redelivery) and
//     wait for them.
//
// It returns nil after that shutdown. It returns an error when the commands
// stream does not exist at start, and after the shutdown when the NATS
// connection was closed under it. Other binding errors at start (no
// JetStream leader during an election, a timeout) are logged and retried
// with backoff until ctx ends. Errors on the way (a server lost, a consumer
// deleted) are logged, and the consumer is bound again after a backoff.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.bindAtStart(ctx)
	if cons == nil {
		return err
	}
	defer w.cons.Store(nil)

	// Work runs on its own context so that SIGTERM does not cut a gateway
	// call short; it is cancelled only when the shutdown timeout runs out.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	p := &pool{slots: make(chan struct{}, w.cfg.Concurrency), pulls: make(chan struct{}, maxPulls),
		jobs: make(chan jetstream.Msg, w.cfg.Concurrency)}
	// The handlers run on long-lived goroutines, one per slot, so a command
	// does not pay for a new goroutine and the growth of its stack.
	var runners sync.WaitGroup
	for range w.cfg.Concurrency {
		runners.Add(1)
		go func() {
			defer runners.Done()
			for msg := range p.jobs {
				w.cfg.Handler.Handle(work, msg)
				p.release(1)
				w.cfg.InFlight(-1)
				p.handlers.Done()
			}
		}()
	}
	defer func() { close(p.jobs); runners.Wait() }()

	err = w.consume(ctx, cons, p)
	timer := time.NewTimer(w.cfg.ShutdownTimeout)
	defer timer.Stop()
	w.log.Info("draining: waiting for commands in flight", slog.Duration("timeout", w.cfg.ShutdownTimeout))
	done := make(chan struct{})
	go func() {
		// 1. Stop fetching: consume has returned; the readers of the
		// pull requests still open hand back what comes now.
		p.readers.Wait()
		// 2. Wait for in-flight commands (none starts after step 1).
		p.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-timer.C:
		w.log.Warn("shutdown timeout: handing back the commands still in flight")
		cancelWork()
		<-done
	}
	return err
}

// pool tracks a worker's concurrency slots, its open pull requests and the
// goroutines it started.
type pool struct {
	slots    chan struct{} // one token per command in flight or pulled for
	pulls    chan struct{} // one token per open pull request
	jobs     chan jetstream.Msg
	readers  sync.WaitGroup
	handlers sync.WaitGroup
}

// Pull batching: when fewer than batchMin(concurrency) slots are free, the
// next pull request waits up to pullLinger for more to free up, so that a
// saturated worker pulls several messages per request (one pull request, one
// inbox subscription, one unsubscription) rather than one. An idle worker
// has every slot free and pulls at once.
const pullLinger = 2 * time.Millisecond

func batchMin(concurrency int) int { return min(max(concurrency/8, 1), 64) }

// reserve waits for one free slot, then takes every other free one, lingering
// up to pullLinger for batchMin of them: the size of the next pull request.
// It returns 0 when ctx ends first.
func (p *pool) reserve(ctx context.Context) int {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1 + p.take(cap(p.slots)-1)
	if want := batchMin(cap(p.slots)); n < want {
		t := time.NewTimer(pullLinger)
		defer t.Stop()
		for n < want {
			select {
			case p.slots <- struct{}{}:
				n++
				continue
			case <-t.C:
			case <-ctx.Done():
			}
			break
		}
		n += p.take(cap(p.slots) - n)
	}
	return n
}

// take takes up to max free slots without waiting and returns how many.
func (p *pool) take(max int) int {
	n := 0
	for n < max {
		select {
		case p.slots <- struct{}{}:
			n++
			continue
		default:
		}
		break
	}
	return n
}

func (p *pool) release(n int) {
	for range n {
		<-p.slots
	}
}

// consume pulls messages for free slots until ctx ends. Each pull request
// asks for as many messages as there are free slots, so that a message is
// never delivered before a slot is free to run it: no message waits in a
// client buffer while its ack timer runs out and JetStream redelivers it to
// another worker.
func (w *Worker) consume(ctx context.Context, cons jetstream.Consumer, p *pool) error {
	var failed atomic.Pointer[error] // the last pull's error, until handled
	fail := func(err error) { failed.CompareAndSwap(nil, &err) }
	pause := backoff{min: 100 * time.Millisecond, max: maxBindPause}
	for {
		select {
		case p.pulls <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		n := p.reserve(ctx)
		if n == 0 {
			<-p.pulls
			return nil
		}
		if errp := failed.Swap(nil); errp != nil {
			// Something went wrong with the consumer or the connection:
			// wait, then bind again (the server may have restarted, or the
			// consumer been deleted).
			w.cons.Store(nil)
			w.log.Warn("pulling commands failed; binding the consumer again", slog.Any("error", *errp), slog.Duration("after", pause.cur()))
			if !sleep(ctx, jittered(pause.next())) {
				p.release(n)
				<-p.pulls
				return nil
			}
			c, err := w.bind(ctx)
			if err != nil {
				fail(err)
				p.release(n)
				<-p.pulls
				continue
			}
			cons = c
		}
		// The pull request is not cancelled with ctx: it runs out on its
		// own, so no message already on its way to it is dropped.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.FetchWait)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			p.release(n)
			<-p.pulls
			if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed) {
				return fmt.Errorf("pull from %s: %w", w.cfg.Streams.Commands, err)
			}
			if ctx.Err() == nil {
				fail(err)
			}
			continue
		}
		p.readers.Add(1)
		go func() {
			defer func() { cancel(); <-p.pulls; p.readers.Done() }()
			if err := w.dispatch(ctx, batch, n, p); err != nil {
				fail(err)
			} else {
				pause.reset()
			}
		}()
	}
}

// dispatch starts a handler for every message of batch, which was pulled
// for n reserved slots, and gives back the slots it did not use. A message
// that arrives after ctx ended is handed back instead. It returns the pull's
// error, if it failed for another reason than its end.
func (w *Worker) dispatch(ctx context.Context, batch jetstream.MessageBatch, n int, p *pool) error {
	started := 0
	var late []jetstream.Msg
	for msg := range batch.Messages() {
		if ctx.Err() != nil {
			late = append(late, msg)
			continue
		}
		started++
		p.handlers.Add(1)
		w.cfg.InFlight(1)
		p.jobs <- msg // a slot is reserved for it: never blocks
	}
	// Hand back what was not started, once the batch is over: the delay
	// outlasts this worker's other open pull requests.
	for _, msg := range late {
		_ = msg.NakWithDelay(w.cfg.FetchWait)
	}
	if len(late) > 0 {
		w.log.Info("handed back commands pulled after shutdown began", slog.Int("count", len(late)))
	}
	p.release(n - started)
	err := batch.Error()
	if err == nil || ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// bindTimeout bounds one attempt to bind the consumer: a request lost with
// a server that died is sent again after a backoff, not waited on.
const bindTimeout = 2 * time.Second

// maxBindPause is the longest wait between two attempts to bind the
// consumer; the waits are jittered. Once a leader answers again, a worker
// binds within about this long.
const maxBindPause = 2 * time.Second

// bindAtStart binds the consumer, retrying with backoff and jitter until it
// succeeds or ctx ends (nil, nil). It gives up at once (nil and the error)
// when the commands stream is missing or JetStream is not enabled.
func (w *Worker) bindAtStart(ctx context.Context) (jetstream.Consumer, error) {
	pause := backoff{min: 100 * time.Millisecond, max: maxBindPause}
	for {
		cons, err := w.bind(ctx)
		switch {
		case err == nil:
			return cons, nil
		case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrJetStreamNotEnabled),
			errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
			return nil, err
		}
		d := jittered(pause.next())
		w.log.Warn("binding the consumer failed; retrying", slog.Any("error", err), slog.Duration("after", d))
		if !sleep(ctx, d) {
			return nil, nil
		}
	}
}

// bind binds the shared consumer and publishes it to Ready: the consumer
// that exists, as it is (js.Consumer only reads its info), or, only when
// there is none, a new one with ConsumerConfig. Every worker binds at start
// and after pull errors, so binding must neither rewrite the consumer (the
// last worker to start would win) nor send configuration writes to the
// meta leader from every worker at each leader change, as
// CreateOrUpdateConsumer would. A consumer that differs from ConsumerConfig
// where it matters is kept, with a warning.
func (w *Worker) bind(ctx context.Context) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, bindTimeout)
	defer cancel()
	stream, name := w.cfg.Streams.Commands, w.cfg.Streams.Consumer
	cons, err := w.cfg.JetStream.Consumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = w.cfg.JetStream.CreateConsumer(ctx, stream, w.ConsumerConfig())
		switch {
		case errors.Is(err, jetstream.ErrConsumerExists):
			// Another worker created it a moment ago, configured otherwise.
			cons, err = w.cfg.JetStream.Consumer(ctx, stream, name)
		case err == nil:
			w.log.Info("created the shared consumer", slog.String("stream", stream), slog.String("consumer", name))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bind consumer %s on %s: %w", name, stream, err)
	}
	w.checkConsumer(cons.CachedInfo().Config)
	w.cons.Store(&cons)
	return cons, nil
}

// checkConsumer warns, once per difference, when the consumer bound differs
// from ConsumerConfig in a setting the worker relies on: the filter and ack
// policy (which messages, acked how), AckWait (the handler extends the ack
// deadline every third of the configured one), MaxDeliver (a limit drops
// commands without a dead letter) and MaxAckPending (the fleet's commands
// in flight). Whoever set them, an operator or another version, keeps them.
func (w *Worker) checkConsumer(have jetstream.ConsumerConfig) {
	want := w.ConsumerConfig()
	var diffs []string
	diff := func(name string, differs bool, got, conf any) {
		if differs {
			diffs = append(diffs, fmt.Sprintf("%s %v (configured %v)", name, got, conf))
		}
	}
	filter := have.FilterSubject
	if filter == "" && len(have.FilterSubjects) > 0 {
		filter = strings.Join(have.FilterSubjects, ",")
	}
	diff("filter_subject", filter != want.FilterSubject, filter, want.FilterSubject)
	diff("ack_policy", have.AckPolicy != want.AckPolicy, have.AckPolicy, want.AckPolicy)
	diff("ack_wait", have.AckWait != want.AckWait, have.AckWait, want.AckWait)
	diff("max_deliver", have.MaxDeliver != want.MaxDeliver, have.MaxDeliver, want.MaxDeliver)
	diff("max_ack_pending", have.MaxAckPending != want.MaxAckPending, have.MaxAckPending, want.MaxAckPending)
	if len(diffs) == 0 {
		return
	}
	msg := strings.Join(diffs, ", ")
	if old := w.consumerDiff.Swap(&msg); old != nil && *old == msg {
		return
	}
	w.log.Warn("the shared consumer differs from this worker's configuration; it is kept as it is (change it with `nats consumer edit`, or delete it to have it created again)",
		slog.String("consumer", w.cfg.Streams.Consumer), slog.String("differences", msg))
}

// jittered is d less up to half of it, at random, so that workers that
// failed together do not retry together.
func jittered(d time.Duration) time.Duration {
	return d - rand.N(d/2+1)
}

// backoff is a doubling delay between min and max, safe for concurrent use.
type backoff struct {
	min, max time.Duration
	d        atomic.Int64
}

func (b *backoff) cur() time.Duration {
	if d := time.Duration(b.d.Load()); d > 0 {
		return d
	}
	return b.min
}

func (b *backoff) next() time.Duration {
	d := b.cur()
	b.d.Store(int64(min(2*d, b.max)))
	return d
}

func (b *backoff) reset() { b.d.Store(0) }

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
