package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/command"
)

// BatchItem names a published row in a BatchAck.
type BatchItem struct {
	Line       int
	MerchantID string
	Key        string
	CommandID  string
}

// BatchAck is the end of one row's publication.
type BatchAck struct {
	BatchItem
	// Sequence is the stream sequence of the stored command (of the copy
	// already stored, for a duplicate).
	Sequence uint64
	// Duplicate is true when the stream already held this command id
	// (Nats-Msg-Id) within its duplicate window and dropped the publication:
	// the row was published before. A publication acknowledged only after a
	// retry is never reported as a duplicate, since the first attempt may
	// have been stored.
	Duplicate bool
	// Attempts is the number of publications made, 1 without a retry.
	Attempts int
	// Err is set when every attempt failed: the row was not published (as
	// far as we know; a timed-out attempt may still have been stored, which
	// a rerun's Nats-Msg-Id and idempotency key make harmless).
	Err error
}

// BatchPublishOptions tune a BatchPublisher. Zero values take the defaults.
type BatchPublishOptions struct {
	// Window is the most publications awaiting their acknowledgement at
	// once (default 1024).
	Window int
	// Attempts is the most publications of one row (default 4). A
	// publication the server refuses (an API error, no stream) is not
	// retried.
	Attempts int
	// AckTimeout is how long an acknowledgement is awaited before the
	// attempt counts as failed (default 10s).
	AckTimeout time.Duration
	// RetryWait is the wait before retrying after a failure, doubled while
	// the failures go on, up to 5s (default 250ms). The publications that
	// failed together are retried after one wait.
	RetryWait time.Duration
	// MaxConsecutiveFailures stops the batch when that many rows in a row
	// could not be published (default 16): the stream or the server is
	// refusing everything, and going on would only fail every row.
	MaxConsecutiveFailures int
	// OnAck, when set, is called once for each row published with Publish,
	// in publication order, from a single goroutine, when its
	// acknowledgement arrived or its publication failed for good.
	OnAck func(BatchAck)
}

// DefaultBatchWindow is the default BatchPublishOptions.Window.
const DefaultBatchWindow = 1024

func (o *BatchPublishOptions) defaults() {
	if o.Window <= 0 {
		o.Window = DefaultBatchWindow
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	if o.RetryWait <= 0 {
		o.RetryWait = 250 * time.Millisecond
	}
	if o.MaxConsecutiveFailures <= 0 {
		o.MaxConsecutiveFailures = 16
	}
}

// BatchStats count what a BatchPublisher did.
type BatchStats struct {
	// Published is the number of rows handed to Publish.
	Published int64
	// Acked is the number of rows JetStream acknowledged (stored, or
	// dropped as a duplicate).
	Acked int64
	// Duplicates is the number of acknowledged rows the stream dropped as
	// already published (BatchAck.Duplicate).
	Duplicates int64
	// Failed is the number of rows whose every attempt failed.
	Failed int64
	// Retries is the number of publications beyond each row's first.
	Retries int64
}

// ErrPublishing is returned by BatchPublisher.Publish once
// BatchPublishOptions.MaxConsecutiveFailures rows in a row have failed; it
// wraps the last failure.
var ErrPublishing = errors.New("publishing keeps failing")

// BatchPublisher publishes the rows of a batch asynchronously
// (PublishMsgAsync with Nats-Msg-Id = command_id), with at most
// BatchPublishOptions.Window acknowledgements outstanding: Publish returns as
// soon as the row is sent, and blocks only while the window is full. Publish
// and Close are called from one goroutine.
type BatchPublisher struct {
	js    jetstream.JetStream
	o     BatchPublishOptions
	slots chan struct{}
	queue chan inflight

	subjects     map[command.Type]string
	expectStream []string // shared by every message's header; never changed
	done         chan struct{}
	closed       bool

	published, acked, duplicates, failed, retries atomic.Int64

	mu      sync.Mutex
	failErr error // set once publishing keeps failing

	// Owned by the collecting goroutine: the end of the last wait before
	// retrying, and the next wait.
	pausedUntil time.Time
	wait        time.Duration
}

// inflight is a publication awaiting its acknowledgement: the future of
// the attempt, or the error that made it fail at once.
type inflight struct {
	msg  *nats.Msg
	f    jetstream.PubAckFuture
	err  error
	item BatchItem
	at   time.Time // when it was published
}

// NewBatchPublisher returns a BatchPublisher on the client's connection. It
// uses a JetStream context of its own, whose asynchronous publications time
// out after o.AckTimeout. Close it to wait for the outstanding
// acknowledgements.
func (c *Client) NewBatchPublisher(o BatchPublishOptions) (*BatchPublisher, error) {
	o.defaults()
	js, err := jetstream.New(c.js.Conn(),
		jetstream.WithPublishAsyncMaxPending(o.Window),
		jetstream.WithPublishAsyncTimeout(o.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("batch publisher: %w", err)
	}
	p := &BatchPublisher{
		js:    js,
		o:     o,
		slots: make(chan struct{}, o.Window),
		queue: make(chan inflight, o.Window),
		done:  make(chan struct{}),
		subjects: map[command.Type]string{
			command.Capture: c.streams.CommandSubject(string(command.Capture)),
			command.Void:    c.streams.CommandSubject(string(command.Void)),
		},
		expectStream: []string{c.streams.Commands},
	}
	go p.collect()
	return p, nil
}

// Publish sends the command of a valid row (Row.Data) on the subject of its
// type. It blocks while Window publications await their acknowledgement,
// and returns ctx's error if ctx ends meanwhile (nothing is sent then). The
// outcome of the publication is reported to OnAck. It returns ErrPublishing
// once publishing keeps failing.
func (p *BatchPublisher) Publish(ctx context.Context, row *Row) error {
	if err := p.err(); err != nil {
		return err
	}
	if row.Err != nil || row.Data == nil {
		return fmt.Errorf("line %d: not a valid row", row.Line)
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	cmd := &row.Cmd
	subject, ok := p.subjects[cmd.Type]
	if !ok {
		<-p.slots
		return fmt.Errorf("line %d: command type %q: not a valid row", row.Line, cmd.Type)
	}
	// The headers WithMsgID and WithExpectStream would set, built here
	// without their per-message option closures.
	msg := &nats.Msg{
		Subject: subject,
		Header:  nats.Header{jetstream.MsgIDHeader: {cmd.CommandID}, jetstream.ExpectedStreamHeader: p.expectStream},
		Data:    row.Data,
	}
	// An attempt that fails at once (the connection broke) is retried by
	// the collecting goroutine, in its turn, like one whose
	// acknowledgement fails.
	f, err := p.js.PublishMsgAsync(msg)
	p.published.Add(1)
	p.queue <- inflight{msg: msg, f: f, err: err, at: time.Now(),
		item: BatchItem{Line: row.Line, MerchantID: cmd.MerchantID, Key: cmd.Key(), CommandID: cmd.CommandID}}
	return nil
}

// Close waits until every publication is acknowledged or has failed for
// good (and OnAck has been called for it), or until ctx ends, which leaves
// the outstanding ones unreported. Publish must not be called after Close.
func (p *BatchPublisher) Close(ctx context.Context) error {
	if !p.closed {
		p.closed = true
		close(p.queue)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %d acknowledgements: %w", len(p.slots), ctx.Err())
	}
}

// Stats returns the counts so far; safe to call from any goroutine.
func (p *BatchPublisher) Stats() BatchStats {
	return BatchStats{
		Published:  p.published.Load(),
		Acked:      p.acked.Load(),
		Duplicates: p.duplicates.Load(),
		Failed:     p.failed.Load(),
		Retries:    p.retries.Load(),
	}
}

func (p *BatchPublisher) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failErr
}

// collect awaits the acknowledgements in publication order, retries the
// failed publications and frees their window slots.
func (p *BatchPublisher) collect() {
	defer close(p.done)
	consecutive := 0
	for inf := range p.queue {
		a := p.await(inf)
		<-p.slots
		if a.Err != nil {
			p.failed.Add(1)
			consecutive++
			if consecutive >= p.o.MaxConsecutiveFailures {
				p.mu.Lock()
				if p.failErr == nil {
					p.failErr = fmt.Errorf("%w: %d rows in a row could not be published, the last (line %d): %w", ErrPublishing, consecutive, a.Line, a.Err)
				}
				p.mu.Unlock()
			}
		} else {
			consecutive = 0
			p.acked.Add(1)
			if a.Duplicate {
				p.duplicates.Add(1)
			}
		}
		if p.o.OnAck != nil {
			p.o.OnAck(a)
		}
	}
}

// await waits for one publication's acknowledgement, publishing it again
// (same message, same Nats-Msg-Id) after a failure that may pass.
func (p *BatchPublisher) await(inf inflight) BatchAck {
	a := BatchAck{BatchItem: inf.item, Attempts: 1}
	f, err, at := inf.f, inf.err, inf.at
	for {
		if err == nil {
			select {
			case ack := <-f.Ok():
				a.Sequence = ack.Sequence
				a.Duplicate = ack.Duplicate && a.Attempts == 1
				p.wait = 0
				return a
			case err = <-f.Err():
			}
		}
		for {
			if !retryable(err) || a.Attempts >= p.o.Attempts {
				a.Err = err
				return a
			}
			p.backoff(at)
			a.Attempts++
			p.retries.Add(1)
			at = time.Now()
			f, err = p.js.PublishMsgAsync(&nats.Msg{Subject: inf.msg.Subject, Header: inf.msg.Header, Data: inf.msg.Data})
			if err == nil {
				break
			}
		}
	}
}

// maxRetryWait bounds the wait between retries.
const maxRetryWait = 5 * time.Second

// backoff waits before retrying a publication made at `at` that failed. A
// failure is one incident with the others of the window: the publications
// made before the last wait ended are retried at once; a publication made
// after it starts a new wait, RetryWait first, then doubled, until a
// publication succeeds.
func (p *BatchPublisher) backoff(at time.Time) {
	if at.Before(p.pausedUntil) {
		return
	}
	if p.wait == 0 {
		p.wait = p.o.RetryWait
	} else {
		p.wait = min(2*p.wait, maxRetryWait)
	}
	time.Sleep(p.wait)
	p.pausedUntil = time.Now()
}

// retryable reports whether publishing again may succeed: not when the
// server refused the message (an API error) or no stream takes the subject.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return true
	case errors.As(err, &apiErr), errors.Is(err, jetstream.ErrNoStreamResponse):
		return false
	}
	return true
}
