package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PubAck is JetStream's acknowledgement of a published command: it is
// stored, and a worker will act on it.
type PubAck struct {
	// Stream and Sequence locate the stored command.
	Stream   string
	Sequence uint64
	// Duplicate is true when the stream already held a command with this
	// CommandID (published within its duplicate window) and dropped this
	// copy: the earlier publication is the one acted on.
	Duplicate bool
	// Type, CommandID, MerchantID and IdempotencyKey name the command, with
	// the CommandID Publish generated and the key it defaults to.
	Type           Type
	CommandID      string
	MerchantID     string
	IdempotencyKey string

	sent time.Time // before the command was sent, on this client's clock
}

// Publish checks cmd against the command schema, then publishes it on its
// subject (payments.cmd.capture or payments.cmd.void) with the header
// Nats-Msg-Id = CommandID (a new UUID when empty), the expected stream, and
// the W3C trace context of ctx (WithTraceContext, ContextWithTraceparent).
// It returns once JetStream has stored the command.
//
// Every error is a *PublishError: it matches ErrNotStored when the command
// was certainly not stored (a *ValidationError, ErrNotProvisioned, a
// refusal), and ErrMaybeStored when it may have been (no acknowledgement).
// Publishing the same command again, with the same CommandID, is always
// safe: the stream drops a copy within its duplicate window (PubAck.Duplicate)
// and the worker answers a later one from the key's record, without a
// second gateway call.
func (c *Client) Publish(ctx context.Context, cmd Command) (PubAck, error) {
	enc, err := Encode(cmd)
	if err != nil {
		w := cmd.wire()
		return PubAck{}, &PublishError{Type: cmd.Type(), CommandID: w.CommandID, MerchantID: w.MerchantID,
			IdempotencyKey: w.Key(), Err: err}
	}
	ack := PubAck{Type: enc.Type(), CommandID: enc.CommandID(), MerchantID: enc.MerchantID(), IdempotencyKey: enc.IdempotencyKey()}
	fail := func(maybe bool, err error) (PubAck, error) {
		return PubAck{}, &PublishError{Type: ack.Type, CommandID: ack.CommandID, MerchantID: ack.MerchantID,
			IdempotencyKey: ack.IdempotencyKey, MaybeStored: maybe, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return fail(false, err)
	}
	ack.sent = time.Now()
	pa, err := c.js.PublishMsg(ctx, c.message(ctx, enc))
	if err != nil {
		return fail(maybeStored(err), c.publishErr(err, ack.Type))
	}
	ack.Stream, ack.Sequence, ack.Duplicate = pa.Stream, pa.Sequence, pa.Duplicate
	return ack, nil
}

// message is the NATS message that publishes enc: the one place that says
// what a command looks like on the wire (Publish and Batch send it).
func (c *Client) message(ctx context.Context, enc *Encoded) *nats.Msg {
	h := nats.Header{
		jetstream.MsgIDHeader:          {enc.CommandID()},
		jetstream.ExpectedStreamHeader: {c.streams.Commands},
	}
	if ctx != nil {
		if parent, state := c.traceOf(ctx); parent != "" {
			h[HeaderTraceparent] = []string{parent}
			if state != "" {
				h[HeaderTracestate] = []string{state}
			}
		}
	}
	return &nats.Msg{Subject: c.streams.CommandSubject(enc.Type()), Header: h, Data: enc.JSON()}
}

// maybeStored reports whether a failed publication may have been stored:
// not when the server answered with a refusal or nobody took the subject.
func maybeStored(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrMaxPayload):
		return false
	}
	return true
}

// publishErr names a missing stream.
func (c *Client) publishErr(err error, t Type) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		return fmt.Errorf("%w: no stream stores %s (%w)", ErrNotProvisioned, c.streams.CommandSubject(t), err)
	}
	return err
}
