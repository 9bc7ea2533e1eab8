package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BatchAck is the end of one command's publication in a Batch.
type BatchAck struct {
	// N numbers the publication: the Nth call to Batch.Publish, from 1.
	N int64
	// Type, CommandID, MerchantID and IdempotencyKey name the command.
	Type           Type
	CommandID      string
	MerchantID     string
	IdempotencyKey string
	// Sequence is the stream sequence of the stored command (of the copy
	// already stored, for a duplicate).
	Sequence uint64
	// Duplicate is true when the stream already held this CommandID within
	// its duplicate window and dropped the publication: it was published
	// before. A publication acknowledged only after a retry is never
	// reported as a duplicate, since the first attempt may have been
	// stored.
	Duplicate bool
	// Attempts is the number of publications made, 1 without a retry.
	Attempts int
	// Err is set when every attempt failed: the command was not published
	// as far as we know (a timed-out attempt may still have been stored,
	// which publishing it again with the same CommandID makes harmless).
	Err error
}

// BatchOptions tune a Batch. Zero values take the defaults.
type BatchOptions struct {
	// Window is the most publications awaiting their acknowledgement at
	// once (DefaultBatchWindow).
	Window int
	// Attempts is the most publications of one command (default 4). A
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
	// MaxConsecutiveFailures stops the batch when that many commands in a
	// row could not be published (default 16): the stream or the server is
	// refusing everything, and going on would only fail every command.
	MaxConsecutiveFailures int
	// OnAck, when set, is called once for each command given to Publish,
	// in publication order, from a single goroutine, when its
	// acknowledgement arrived or its publication failed for good.
	OnAck func(BatchAck)
}

// DefaultBatchWindow is the default BatchOptions.Window.
const DefaultBatchWindow = 1024

func (o *BatchOptions) defaults() {
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

// BatchStats count what a Batch did.
type BatchStats struct {
	// Published is the number of commands handed to Publish.
	Published int64
	// Acked is the number of commands JetStream acknowledged (stored, or
	// dropped as a duplicate).
	Acked int64
	// Duplicates is the number of acknowledged commands the stream dropped
	// as already published (BatchAck.Duplicate).
	Duplicates int64
	// Failed is the number of commands whose every attempt failed.
	Failed int64
	// Retries is the number of publications beyond each command's first.
	Retries int64
}

// ErrPublishing is returned by Batch.Publish once
// BatchOptions.MaxConsecutiveFailures commands in a row have failed; it
// wraps the last failure.
var ErrPublishing = errors.New("publishing keeps failing")

// Batch publishes many commands asynchronously, each as Publish would
// (same subject, headers and JSON), with at most BatchOptions.Window
// acknowledgements outstanding: Publish returns as soon as the command is
// sent, and blocks only while the window is full. A publication that fails
// is retried with the same message (the same Nats-Msg-Id, so the stream
// stores it once). Publish and Close are called from one goroutine.
type Batch struct {
	c     *Client
	js    jetstream.JetStream
	o     BatchOptions
	slots chan struct{}
	queue chan inflight

	done   chan struct{}
	closed bool
	n      int64

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
	msg *nats.Msg
	f   jetstream.PubAckFuture
	err error
	ack BatchAck
	at  time.Time // when it was published
}

// NewBatch returns a Batch on the client's connection. It uses a JetStream
// context of its own, whose asynchronous publications time out after
// o.AckTimeout. Close it to wait for the outstanding acknowledgements.
func (c *Client) NewBatch(o BatchOptions) (*Batch, error) {
	o.defaults()
	js, err := jetstream.New(c.js.Conn(),
		jetstream.WithPublishAsyncMaxPending(o.Window),
		jetstream.WithPublishAsyncTimeout(o.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	b := &Batch{
		c:     c,
		js:    js,
		o:     o,
		slots: make(chan struct{}, o.Window),
		queue: make(chan inflight, o.Window),
		done:  make(chan struct{}),
	}
	go b.collect()
	return b, nil
}

// Publish checks and encodes cmd (nothing to do for an *Encoded) and sends
// it. It blocks while Window publications await their acknowledgement, and
// returns ctx's error if ctx ends meanwhile (nothing is sent then). The
// end of the publication is reported to OnAck. It returns a
// *ValidationError for an invalid command (nothing is sent, OnAck is not
// called), and ErrPublishing once publishing keeps failing.
func (b *Batch) Publish(ctx context.Context, cmd Command) error {
	if err := b.err(); err != nil {
		return err
	}
	enc, err := Encode(cmd)
	if err != nil {
		return err
	}
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.n++
	msg := b.c.message(ctx, enc)
	// An attempt that fails at once (the connection broke) is retried by
	// the collecting goroutine, in its turn, like one whose
	// acknowledgement fails.
	f, err := b.js.PublishMsgAsync(msg)
	b.published.Add(1)
	b.queue <- inflight{msg: msg, f: f, err: err, at: time.Now(), ack: BatchAck{
		N: b.n, Type: enc.Type(), CommandID: enc.CommandID(), MerchantID: enc.MerchantID(), IdempotencyKey: enc.IdempotencyKey(),
	}}
	return nil
}

// Close waits until every publication is acknowledged or has failed for
// good (and OnAck has been called for it), or until ctx ends, which leaves
// the outstanding ones unreported. Publish must not be called after Close.
func (b *Batch) Close(ctx context.Context) error {
	if !b.closed {
		b.closed = true
		close(b.queue)
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %d acknowledgements: %w", len(b.slots), ctx.Err())
	}
}

// Stats returns the counts so far; safe to call from any goroutine.
func (b *Batch) Stats() BatchStats {
	return BatchStats{
		Published:  b.published.Load(),
		Acked:      b.acked.Load(),
		Duplicates: b.duplicates.Load(),
		Failed:     b.failed.Load(),
		Retries:    b.retries.Load(),
	}
}

func (b *Batch) err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failErr
}

// collect awaits the acknowledgements in publication order, retries the
// failed publications and frees their window slots.
func (b *Batch) collect() {
	defer close(b.done)
	consecutive := 0
	for inf := range b.queue {
		a := b.await(inf)
		<-b.slots
		if a.Err != nil {
			b.failed.Add(1)
			consecutive++
			if consecutive >= b.o.MaxConsecutiveFailures {
				b.mu.Lock()
				if b.failErr == nil {
					b.failErr = fmt.Errorf("%w: %d commands in a row could not be published, the last (%s): %w",
						ErrPublishing, consecutive, a.CommandID, a.Err)
				}
				b.mu.Unlock()
			}
		} else {
			consecutive = 0
			b.acked.Add(1)
			if a.Duplicate {
				b.duplicates.Add(1)
			}
		}
		if b.o.OnAck != nil {
			b.o.OnAck(a)
		}
	}
}

// await waits for one publication's acknowledgement, publishing it again
// (same message, same Nats-Msg-Id) after a failure that may pass.
func (b *Batch) await(inf inflight) BatchAck {
	a := inf.ack
	a.Attempts = 1
	f, err, at := inf.f, inf.err, inf.at
	for {
		if err == nil {
			select {
			case ack := <-f.Ok():
				a.Sequence = ack.Sequence
				a.Duplicate = ack.Duplicate && a.Attempts == 1
				b.wait = 0
				return a
			case err = <-f.Err():
			}
		}
		for {
			if !maybeStored(err) || a.Attempts >= b.o.Attempts {
				a.Err = b.c.publishErr(err, a.Type)
				return a
			}
			b.backoff(at)
			a.Attempts++
			b.retries.Add(1)
			at = time.Now()
			f, err = b.js.PublishMsgAsync(&nats.Msg{Subject: inf.msg.Subject, Header: inf.msg.Header, Data: inf.msg.Data})
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
func (b *Batch) backoff(at time.Time) {
	if at.Before(b.pausedUntil) {
		return
	}
	if b.wait == 0 {
		b.wait = b.o.RetryWait
	} else {
		b.wait = min(2*b.wait, maxRetryWait)
	}
	time.Sleep(b.wait)
	b.pausedUntil = time.Now()
}
