package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Do publishes cmd (see Publish) and waits for its outcome (see
// AwaitCommand): the usual way to capture or void and learn what became of
// it. A Publish error is returned as is (a *PublishError). When ctx ends
// before the outcome, the error is a *NoOutcomeError, which holds the
// PubAck: the command is stored and will be acted on, and AwaitCommand
// (or Await with its key) learns the outcome later.
func (c *Client) Do(ctx context.Context, cmd Command) (Result, error) {
	// Follow the events before publishing, so that the outcome is read as
	// it comes, without a history pass.
	if _, err := c.follower(ctx); err != nil {
		return nil, err
	}
	ack, err := c.Publish(ctx, cmd)
	if err != nil {
		return nil, err
	}
	res, err := c.AwaitCommand(ctx, ack)
	if errors.Is(err, ErrNoOutcome) {
		return nil, &NoOutcomeError{Ack: ack, Err: err}
	}
	return res, err
}

// NoOutcomeError is Do's error when its context ended after the command
// was stored and before its outcome came. It matches ErrNoOutcome and the
// context's error.
type NoOutcomeError struct {
	// Ack is the stored command's acknowledgement, for AwaitCommand.
	Ack PubAck
	Err error
}

func (e *NoOutcomeError) Error() string {
	return fmt.Sprintf("%s command %s (merchant %s, idempotency key %s) stored at sequence %d: %v",
		e.Ack.Type, e.Ack.CommandID, e.Ack.MerchantID, e.Ack.IdempotencyKey, e.Ack.Sequence, e.Err)
}

// Unwrap returns the wait's error, which wraps ErrNoOutcome and the
// context's error.
func (e *NoOutcomeError) Unwrap() error { return e.Err }

// AwaitCommand waits for the answer to the command that ack acknowledges:
// the terminal event it produced (*Succeeded, *Declined), or the worker's
// answer to this very command (*Duplicate when its key was done before,
// *Rejected, *DeadLettered). An answer already stored is returned at once,
// including one to an earlier publication of the same CommandID
// (ack.Duplicate). When ctx ends first, the error matches ErrNoOutcome.
func (c *Client) AwaitCommand(ctx context.Context, ack PubAck) (Result, error) {
	f, err := c.follower(ctx)
	if err != nil {
		return nil, err
	}
	w := &waiter{id: keyID{ack.MerchantID, ack.IdempotencyKey}, cmd: ack.CommandID}
	switch {
	case ack.sent.IsZero():
		// A PubAck this Client did not make: its command may be as old as
		// the history.
		w.needHistory, w.since = true, time.Now().Add(-c.history)
	case ack.Duplicate:
		// The first copy was stored within the duplicate window before.
		w.needHistory, w.since = true, ack.sent.Add(-f.duplicateWindow(ctx)-clockSkew)
	case !ack.sent.After(f.startedAt):
		// Published before the follower started reading.
		w.needHistory, w.since = true, ack.sent.Add(-clockSkew)
	}
	return c.await(ctx, f, w)
}

// Await waits for the outcome of the idempotency key of a merchant: its
// terminal event (*Succeeded or *Declined), whichever command produced it.
// An outcome stored before the call is found too, as far back as the
// client's history (WithHistory); a wait for several keys shares one read
// of that history with every other wait. It also returns when the key's
// command was dead-lettered (*DeadLettered) or rejected (*Rejected) and no
// terminal event is stored: without a new command none will come. The
// rejection of another command that reused the key with other parameters
// does not end the wait. When ctx ends first, the error matches
// ErrNoOutcome.
func (c *Client) Await(ctx context.Context, merchantID, idempotencyKey string) (Result, error) {
	f, err := c.follower(ctx)
	if err != nil {
		return nil, err
	}
	w := &waiter{id: keyID{merchantID, idempotencyKey}, needHistory: true, since: time.Now().Add(-c.history)}
	return c.await(ctx, f, w)
}

// await waits for w's event and makes it a Result; the original of a
// duplicate is looked up.
func (c *Client) await(ctx context.Context, f *follower, w *waiter) (Result, error) {
	a, err := f.wait(ctx, w)
	if err != nil {
		return nil, err
	}
	ev, err := f.fetch(ctx, a)
	if err != nil {
		return nil, err
	}
	res, ok := resultOf(ev)
	if !ok {
		return nil, fmt.Errorf("event %s: unknown type %q", ev.ID, ev.Type)
	}
	if dup, ok := res.(*Duplicate); ok {
		dup.Original = c.original(ctx, f, dup)
	}
	return res, nil
}

// original returns the terminal outcome a duplicate repeats, or nil when
// it is not found. It is looked for in what the follower read and in the
// history; when it is in neither, it may not be stored yet: the worker
// records a key's outcome before it publishes the outcome's event, so
// another command with the key can be answered in between, and its
// duplicate event precede the original in the stream (after a crash
// between the two, the original comes with its command's redelivery).
// So the follower then waits for it, up to originalGrace.
func (c *Client) original(ctx context.Context, f *follower, dup *Duplicate) Result {
	id := keyID{dup.Data.MerchantID, dup.Data.IdempotencyKey}
	a, err := f.wait(ctx, &waiter{
		id: id, terminalOnly: true, historyOnly: true, needHistory: true,
		since: time.Now().Add(-c.history),
	})
	if err == nil && a.ev == nil && a.seq == 0 {
		// What the follower reads meanwhile is in its index, which this
		// wait reads first: nothing falls between the two.
		gctx, cancel := context.WithTimeout(ctx, originalGrace)
		defer cancel()
		a, err = f.wait(gctx, &waiter{id: id, terminalOnly: true})
	}
	if err != nil {
		return nil
	}
	ev, err := f.fetch(ctx, a)
	if err != nil {
		return nil
	}
	res, _ := resultOf(ev)
	return res
}

// follower returns the running follower, starting one when there is none
// (or the last one stopped).
func (c *Client) follower(ctx context.Context) (*follower, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.f != nil && c.f.alive() {
		return c.f, nil
	}
	if c.f != nil {
		c.f.close()
	}
	f, err := startFollower(ctx, c)
	if err != nil {
		c.f = nil
		return nil, err
	}
	c.f = f
	return f, nil
}
