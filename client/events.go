package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Filter selects result events for Events. The zero Filter selects every
// event stored from the call on.
type Filter struct {
	// Type is an event kind ("capture.succeeded"), its CloudEvents type
	// ("payments.capture.succeeded"), a first token ("capture", "command":
	// every kind under it), or a NATS subject pattern under the events
	// prefix ("*.failed", "capture.>"). The server applies it.
	Type string
	// MerchantID, TransactionID and IdempotencyKey, when set, must equal
	// the event's.
	MerchantID     string
	TransactionID  string
	IdempotencyKey string
	// All starts at the first stored event; otherwise Since, when set,
	// starts at the first event stored at or after it; otherwise only
	// events stored from now on are read.
	All   bool
	Since time.Time
}

// Subject returns the subject filter of f.Type under the events prefix of
// s: the event wildcard when Type is empty. A Type that is none of the
// forms Filter.Type lists gives an error matching ErrBadFilter.
func (f Filter) Subject(s Streams) (string, error) {
	s = s.withDefaults()
	t := strings.TrimSpace(f.Type)
	if t == "" {
		return s.EventWildcard(), nil
	}
	if k := (Event{Type: t}).Kind(); k != "" {
		return s.EventSubject(k), nil
	}
	tokens := strings.Split(t, ".")
	for i, tok := range tokens {
		switch {
		case tok == "":
			return "", fmt.Errorf("type %q: empty token: %w", f.Type, ErrBadFilter)
		case tok == ">" && i != len(tokens)-1:
			return "", fmt.Errorf("type %q: '>' must be the last token: %w", f.Type, ErrBadFilter)
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*> \t\r\n"):
			return "", fmt.Errorf("type %q: bad token %q: %w", f.Type, tok, ErrBadFilter)
		}
	}
	if len(tokens) == 1 && tokens[0] != "*" && tokens[0] != ">" {
		t += ".>"
	}
	return s.Prefix + ".evt." + t, nil
}

// Matches reports whether e passes the data fields of f (MerchantID,
// TransactionID, IdempotencyKey).
func (f Filter) Matches(e Event) bool {
	d := e.Data
	return (f.MerchantID == "" || d.MerchantID == f.MerchantID) &&
		(f.TransactionID == "" || d.TransactionID == f.TransactionID) &&
		(f.IdempotencyKey == "" || d.IdempotencyKey == f.IdempotencyKey)
}

// Events reads the result events that pass filter, in stream order, with an
// ordered consumer of its own, until ctx ends or the loop stops; ctx ending
// is not an error. A message that is not an event is yielded, whatever the
// filter, as a *DecodeError with a zero Event, and the sequence goes on; a
// failure that ends it (the events stream is missing: ErrNotProvisioned) is
// yielded last.
//
//	for ev, err := range c.Events(ctx, client.Filter{Type: "*.failed", All: true}) {
//		if err != nil { ... }
//		fmt.Println(ev.Kind(), ev.Data.IdempotencyKey)
//	}
func (c *Client) Events(ctx context.Context, filter Filter) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		subject, err := filter.Subject(c.streams)
		if err != nil {
			yield(Event{}, err)
			return
		}
		cfg := jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{subject},
			DeliverPolicy:  jetstream.DeliverNewPolicy,
		}
		switch {
		case filter.All:
			cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		case !filter.Since.IsZero():
			since := filter.Since
			cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
			cfg.OptStartTime = &since
		}
		cons, err := c.js.OrderedConsumer(ctx, c.streams.Events, cfg)
		if err != nil {
			if ctx.Err() == nil {
				yield(Event{}, fmt.Errorf("follow events: %w", c.streamErr(err)))
			}
			return
		}
		defer c.deleteConsumer(cons)
		it, err := cons.Messages()
		if err != nil {
			yield(Event{}, fmt.Errorf("follow events: %w", err))
			return
		}
		defer it.Stop()
		for {
			msg, err := it.Next(jetstream.NextContext(ctx))
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, nats.ErrTimeout):
				continue
			case err != nil:
				yield(Event{}, fmt.Errorf("follow events: %w", err))
				return
			}
			var seq uint64
			if md, err := msg.Metadata(); err == nil {
				seq = md.Sequence.Stream
			}
			ev, err := decodeEvent(msg.Data(), seq)
			if err != nil {
				if !yield(Event{Sequence: seq}, &DecodeError{Subject: msg.Subject(), Sequence: seq, Err: err}) {
					return
				}
				continue
			}
			if !filter.Matches(ev) {
				continue
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}
