package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
)

// The Payworker-* headers the worker sets on a DLQ entry. They are defined
// in internal/handlers; a test keeps these copies in step, so that the
// operator's tool does not link the worker.
const (
	hdrReason         = "Payworker-Reason"
	hdrError          = "Payworker-Error"
	hdrAttempts       = "Payworker-Attempts"
	hdrLastAnswer     = "Payworker-Last-Gateway-Answer"
	hdrUncertain      = "Payworker-Outcome-Uncertain"
	hdrOrigSubject    = "Payworker-Original-Subject"
	hdrOrigStream     = "Payworker-Original-Stream"
	hdrOrigSequence   = "Payworker-Original-Sequence"
	hdrFirstAttempt   = "Payworker-First-Attempt"
	hdrLastAttempt    = "Payworker-Last-Attempt"
	hdrDeadLetteredAt = "Payworker-Dead-Lettered-At"
)

// KindInvalid is the DLQ kind (last subject token) of messages the worker
// rejected: payments.dlq.invalid.
const KindInvalid = "invalid"

// DeadLetter is one message of the dead-letter stream (SPEC §3.1): a command
// whose budget ran out (payments.dlq.capture, payments.dlq.void) or a
// message the worker rejected (payments.dlq.invalid). The body is the
// message's bytes as the worker received them; the rest is read from the
// Payworker-* headers the worker sets (internal/handlers) and, best effort,
// from the body.
type DeadLetter struct {
	Stream  string
	Seq     uint64
	Subject string
	// Kind is the last subject token: "capture", "void" or "invalid".
	Kind string
	// Stored is when JetStream stored the message.
	Stored time.Time
	Header nats.Header
	Body   []byte

	// Reason is Payworker-Reason: retries_exhausted, outcome_unknown, or the
	// error code of a rejection (schema_violation, idempotency_key_conflict…).
	Reason     string
	Error      string
	Attempts   int
	LastAnswer string
	// Uncertain is Payworker-Outcome-Uncertain: an attempt may have reached
	// the gateway, so a replay must reconcile through the status call first.
	Uncertain       bool
	OriginalSubject string
	OriginalStream  string
	OriginalSeq     uint64
	FirstAttempt    time.Time
	LastAttempt     time.Time
	// DeadLetteredAt is Payworker-Dead-Lettered-At, or Stored when the header
	// is missing or unreadable (rejections carry none).
	DeadLetteredAt time.Time

	// Read from the body when it is a JSON object; empty otherwise.
	CommandID      string
	CommandType    string
	IdempotencyKey string
	MerchantID     string
	TransactionID  string
}

// Invalid reports whether the entry is a rejected message (payments.dlq.invalid).
func (d DeadLetter) Invalid() bool { return d.Kind == KindInvalid }

// Key returns the entry's idempotency key: idempotency_key, or command_id
// when the body has none (the command schema's default).
func (d DeadLetter) Key() string {
	if d.IdempotencyKey != "" {
		return d.IdempotencyKey
	}
	return d.CommandID
}

// deadLetterOf reads a stored DLQ message.
func deadLetterOf(stream string, m *jetstream.RawStreamMsg) DeadLetter {
	d := DeadLetter{
		Stream:  stream,
		Seq:     m.Sequence,
		Subject: m.Subject,
		Kind:    m.Subject[strings.LastIndexByte(m.Subject, '.')+1:],
		Stored:  m.Time,
		Header:  m.Header,
		Body:    m.Data,
	}
	h := m.Header
	d.Reason = h.Get(hdrReason)
	d.Error = h.Get(hdrError)
	d.Attempts, _ = strconv.Atoi(h.Get(hdrAttempts))
	d.LastAnswer = h.Get(hdrLastAnswer)
	d.Uncertain, _ = strconv.ParseBool(h.Get(hdrUncertain))
	d.OriginalSubject = h.Get(hdrOrigSubject)
	d.OriginalStream = h.Get(hdrOrigStream)
	d.OriginalSeq, _ = strconv.ParseUint(h.Get(hdrOrigSequence), 10, 64)
	d.FirstAttempt, _ = time.Parse(time.RFC3339Nano, h.Get(hdrFirstAttempt))
	d.LastAttempt, _ = time.Parse(time.RFC3339Nano, h.Get(hdrLastAttempt))
	var err error
	if d.DeadLetteredAt, err = time.Parse(time.RFC3339Nano, h.Get(hdrDeadLetteredAt)); err != nil {
		d.DeadLetteredAt = m.Time
	}
	var body map[string]any
	if json.Unmarshal(m.Data, &body) == nil {
		str := func(k string) string { s, _ := body[k].(string); return s }
		d.CommandID = str("command_id")
		d.CommandType = str("type")
		d.IdempotencyKey = str("idempotency_key")
		d.MerchantID = str("merchant_id")
		d.TransactionID = str("transaction_id")
	}
	return d
}

// DLQFilter selects dead letters. Empty fields match everything.
type DLQFilter struct {
	// Type is "capture", "void" or "invalid" (the DLQ subject's last token).
	// The server applies it, as a subject filter.
	Type string
	// MerchantID compares with the body's merchant_id.
	MerchantID string
	// Reason compares with Payworker-Reason (retries_exhausted,
	// outcome_unknown, schema_violation…).
	Reason string
	// Since and Until bound DeadLetteredAt, both inclusive.
	Since time.Time
	Until time.Time
}

// ErrBadDLQType is returned by DLQFilter.Subject for a Type that is not
// capture, void or invalid.
var ErrBadDLQType = errors.New("not capture, void or invalid")

// Subject returns the subject filter of f.Type under the DLQ prefix of cfg:
// the DLQ wildcard when Type is empty.
func (f DLQFilter) Subject(cfg streams.Config) (string, error) {
	switch f.Type {
	case "":
		return cfg.DLQWildcard(), nil
	case "capture", "void", KindInvalid:
		return cfg.DLQSubject(f.Type), nil
	}
	return "", fmt.Errorf("type %q: %w", f.Type, ErrBadDLQType)
}

// Matches reports whether d passes every filter of f.
func (f DLQFilter) Matches(d DeadLetter) bool {
	return (f.Type == "" || d.Kind == f.Type) &&
		(f.MerchantID == "" || d.MerchantID == f.MerchantID) &&
		(f.Reason == "" || d.Reason == f.Reason) &&
		(f.Since.IsZero() || !d.DeadLetteredAt.Before(f.Since)) &&
		(f.Until.IsZero() || !d.DeadLetteredAt.After(f.Until))
}

// ErrStop may be returned by the callback of DeadLetters to end the
// iteration early; DeadLetters then returns nil.
var ErrStop = errors.New("stop")

// DeadLetters calls fn, in stream order, for each dead letter that passes f
// and was in the DLQ stream when DeadLetters was called: entries stored
// while it runs (a replayed command dead-lettered again) are left for the
// next call, so a replay never chases its own tail. It reads message by
// message (JetStream's "next message for subject" get), creating no
// consumer, so fn may delete the entry it is given. It returns fn's error,
// except ErrStop which ends the iteration with nil, and the error of a read
// that fails.
func (c *Client) DeadLetters(ctx context.Context, f DLQFilter, fn func(DeadLetter) error) error {
	subject, err := f.Subject(c.streams)
	if err != nil {
		return err
	}
	stream, err := c.dlqStream(ctx)
	if err != nil {
		return err
	}
	state := stream.CachedInfo().State
	if state.Msgs == 0 {
		return nil
	}
	for seq := max(state.FirstSeq, 1); seq <= state.LastSeq; {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s from sequence %d: %w", c.streams.DLQ, seq, err)
		}
		if m.Sequence > state.LastSeq {
			return nil
		}
		seq = m.Sequence + 1
		d := deadLetterOf(c.streams.DLQ, m)
		if !f.Matches(d) {
			continue
		}
		if err := fn(d); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

// DeleteDeadLetter removes the entry seq from the DLQ stream. An entry that
// is already gone (deleted by a concurrent replay) counts as deleted.
func (c *Client) DeleteDeadLetter(ctx context.Context, seq uint64) error {
	stream, err := c.dlqStream(ctx)
	if err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil {
		if _, gerr := stream.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s entry %d: %w", c.streams.DLQ, seq, err)
	}
	return nil
}

// dlqStream returns the DLQ stream, with streams.ErrNotProvisioned when it
// does not exist.
func (c *Client) dlqStream(ctx context.Context) (jetstream.Stream, error) {
	stream, err := c.js.Stream(ctx, c.streams.DLQ)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("stream %s: %w", c.streams.DLQ, streams.ErrNotProvisioned)
		}
		return nil, fmt.Errorf("stream %s: %w", c.streams.DLQ, err)
	}
	return stream, nil
}
