package publish

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/payworker/payworker/client"
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

// BatchPublishOptions tune a BatchPublisher; they are the public client's
// client.BatchOptions, with OnAck reporting rows. Zero values take the
// defaults.
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
	// the failures go on, up to 5s (default 250ms).
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
const DefaultBatchWindow = client.DefaultBatchWindow

// BatchStats count what a BatchPublisher did.
type BatchStats = client.BatchStats

// ErrPublishing is returned by BatchPublisher.Publish once
// BatchPublishOptions.MaxConsecutiveFailures rows in a row have failed; it
// wraps the last failure.
var ErrPublishing = client.ErrPublishing

// BatchPublisher publishes the rows of a batch with the public client's
// client.Batch (asynchronous, a bounded window of acknowledgements, retries
// with the same Nats-Msg-Id), and reports each row's end by its line.
// Publish and Close are called from one goroutine.
type BatchPublisher struct {
	b *client.Batch

	// lines are the lines of the rows sent and not yet reported, in
	// publication order, which is OnAck's order.
	mu    sync.Mutex
	lines []int
}

// NewBatchPublisher returns a BatchPublisher on the client's connection.
// Close it to wait for the outstanding acknowledgements.
func (c *Client) NewBatchPublisher(o BatchPublishOptions) (*BatchPublisher, error) {
	p := &BatchPublisher{}
	b, err := c.cl.NewBatch(client.BatchOptions{
		Window: o.Window, Attempts: o.Attempts, AckTimeout: o.AckTimeout, RetryWait: o.RetryWait,
		MaxConsecutiveFailures: o.MaxConsecutiveFailures,
		OnAck: func(a client.BatchAck) {
			p.mu.Lock()
			line := p.lines[0]
			p.lines = p.lines[1:]
			p.mu.Unlock()
			if o.OnAck != nil {
				o.OnAck(BatchAck{
					BatchItem: BatchItem{Line: line, MerchantID: a.MerchantID, Key: a.IdempotencyKey, CommandID: a.CommandID},
					Sequence:  a.Sequence, Duplicate: a.Duplicate, Attempts: a.Attempts, Err: a.Err,
				})
			}
		},
	})
	if err != nil {
		return nil, err
	}
	p.b = b
	return p, nil
}

// Publish sends the command of a valid row (Row.Enc, or Row.Cmd encoded
// anew) on the subject of its type. It blocks while Window publications
// await their acknowledgement, and returns ctx's error if ctx ends
// meanwhile (nothing is sent then). The end of the publication is reported
// to OnAck. It returns ErrPublishing once publishing keeps failing.
func (p *BatchPublisher) Publish(ctx context.Context, row *Row) error {
	if row.Err != nil || (row.Enc == nil && row.Data == nil) {
		return fmt.Errorf("line %d: not a valid row", row.Line)
	}
	enc := row.Enc
	if enc == nil {
		var err error
		if enc, err = encode(&row.Cmd); err != nil {
			return fmt.Errorf("line %d: not a valid row: %w", row.Line, err)
		}
	}
	// Queued before it is sent: its acknowledgement may come at once. A
	// command not sent is the last one queued.
	p.mu.Lock()
	p.lines = append(p.lines, row.Line)
	p.mu.Unlock()
	if err := p.b.Publish(ctx, enc); err != nil {
		p.mu.Lock()
		p.lines = p.lines[:len(p.lines)-1]
		p.mu.Unlock()
		return err
	}
	return nil
}

// Close waits until every publication is acknowledged or has failed for
// good (and OnAck has been called for it), or until ctx ends, which leaves
// the outstanding ones unreported. Publish must not be called after Close.
func (p *BatchPublisher) Close(ctx context.Context) error { return p.b.Close(ctx) }

// Stats returns the counts so far; safe to call from any goroutine.
func (p *BatchPublisher) Stats() BatchStats { return p.b.Stats() }
