// Package worker runs the shared durable pull consumer over the command
// subjects and feeds its messages to a handler, many at once, with a shutdown
// that loses nothing.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

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
	Logger          *slog.Logger
	// InFlight, when set, is told of every change in the number of commands in flight.
	InFlight func(delta int)
}

// Worker consumes commands.
type Worker struct {
	cfg   Config
	log   *slog.Logger
	bound atomic.Bool
	cons  atomic.Pointer[jetstream.Consumer]
}

// New returns a Worker; call Run to start it.
func New(cfg Config) *Worker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = -1
	}
	if cfg.InFlight == nil {
		cfg.InFlight = func(int) {}
	}
	return &Worker{cfg: cfg, log: cfg.Logger}
}

// ConsumerConfig is the shared durable pull consumer every worker binds to.
// MaxAckPending leaves room for every replica's in-flight commands plus the
// ones waiting in their pull buffers.
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

// Ready reports whether the consumer is bound and answers.
func (w *Worker) Ready(ctx context.Context) error {
	c := w.cons.Load()
	if c == nil || !w.bound.Load() {
		return errors.New("consumer not bound")
	}
	if _, err := (*c).Info(ctx); err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	return nil
}

// Run binds the consumer and processes messages until ctx ends. Then it stops
// fetching, hands back (Nak) the messages buffered but not started, lets the
// commands in flight finish for up to ShutdownTimeout, cancels the rest (their
// handler hands them back) and returns nil. It returns an error only when the
// consumer cannot be bound.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.cfg.JetStream.CreateOrUpdateConsumer(ctx, w.cfg.Streams.Commands, w.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("bind consumer %s on %s: %w", w.cfg.Streams.Consumer, w.cfg.Streams.Commands, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(w.cfg.Concurrency))
	if err != nil {
		return fmt.Errorf("consume %s: %w", w.cfg.Streams.Commands, err)
	}
	w.cons.Store(&cons)
	w.bound.Store(true)
	defer w.bound.Store(false)

	// Work runs on its own context so that SIGTERM does not cut a gateway
	// call short; it is cancelled only when the shutdown timeout runs out.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var wg sync.WaitGroup
	sem := make(chan struct{}, w.cfg.Concurrency)

	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			it.Drain()
		case <-stopped:
		}
	}()

	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			// No free slot and shutting down: stop waiting for one.
		}
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				w.log.Warn("consumer iterator", slog.Any("error", err))
				continue
			}
			break
		}
		if ctx.Err() != nil {
			// Buffered before the drain: give it back for another worker now.
			_ = msg.Nak()
			continue
		}
		wg.Add(1)
		w.cfg.InFlight(1)
		go func() {
			defer func() { <-sem; w.cfg.InFlight(-1); wg.Done() }()
			w.cfg.Handler.Handle(work, msg)
		}()
	}
	close(stopped)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	w.log.Info("draining: waiting for commands in flight", slog.Duration("timeout", w.cfg.ShutdownTimeout))
	select {
	case <-done:
	case <-time.After(w.cfg.ShutdownTimeout):
		w.log.Warn("shutdown timeout: handing back the commands still in flight")
		cancelWork()
		<-done
	}
	return nil
}
