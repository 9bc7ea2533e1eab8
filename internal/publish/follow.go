package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
)

// ErrBadType is returned by Filter.Subject for a --type that is not an event
// kind, a CloudEvents type or a subject pattern (the public client's
// ErrBadFilter).
var ErrBadType = client.ErrBadFilter

// Filter selects result events. Empty fields match everything.
type Filter struct {
	// Type is an event kind ("capture.succeeded"), its CloudEvents type
	// ("payments.capture.succeeded"), one leading token ("capture",
	// "command": every kind under it), or a subject pattern of NATS wildcards
	// relative to the events prefix ("*.failed", "capture.>"). The server
	// applies it, as a subject filter.
	Type string
	// MerchantID, TransactionID and IdempotencyKey compare with the event's
	// data exactly; they are applied here.
	MerchantID     string
	TransactionID  string
	IdempotencyKey string
}

// public is f as the public client's filter.
func (f Filter) public() client.Filter {
	return client.Filter{Type: f.Type, MerchantID: f.MerchantID, TransactionID: f.TransactionID, IdempotencyKey: f.IdempotencyKey}
}

// Subject returns the subject filter of f.Type under the events prefix of
// cfg: the event wildcard when Type is empty.
func (f Filter) Subject(cfg streams.Config) (string, error) {
	return f.public().Subject(PublicStreams(cfg))
}

// Matches reports whether e passes the data filters of f (MerchantID,
// TransactionID, IdempotencyKey; Type is applied by the server).
func (f Filter) Matches(e events.Event) bool {
	d := e.Data
	return (f.MerchantID == "" || d.MerchantID == f.MerchantID) &&
		(f.TransactionID == "" || d.TransactionID == f.TransactionID) &&
		(f.IdempotencyKey == "" || d.IdempotencyKey == f.IdempotencyKey)
}

// FollowOptions says where Follow starts, what it selects and when it stops.
type FollowOptions struct {
	Filter Filter
	// All starts at the first stored event; otherwise Since, when set,
	// starts at the first event stored at or after it; otherwise only
	// events stored from now on are delivered.
	All   bool
	Since time.Time
	// Limit stops Follow after that many matching events; 0 follows until ctx
	// ends.
	Limit int
}

// Received is one event read by Follow.
type Received struct {
	Subject  string
	Sequence uint64
	// Raw is the message as stored.
	Raw []byte
	// Event is Raw decoded; zero when Err is set.
	Event events.Event
	// Err is set when Raw is not an event; such messages are handed to the
	// callback whatever the filter, and do not count towards Limit.
	Err error
}

// Follow reads the events stream with the public client's Events (an
// ordered consumer), in stream order, and calls fn for each event that
// passes o.Filter. It returns nil after o.Limit events, the error of fn
// when fn fails, and ctx's error when ctx ends (Ctrl-C): a follower that is
// stopped is not a failure, so callers usually treat context.Canceled as
// success.
func (c *Client) Follow(ctx context.Context, o FollowOptions, fn func(Received) error) error {
	f := o.Filter.public()
	f.All, f.Since = o.All, o.Since
	if _, err := f.Subject(PublicStreams(c.streams)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	for ev, err := range c.cl.Events(ctx, f) {
		var r Received
		var de *client.DecodeError
		switch {
		case errors.As(err, &de):
			r = Received{Subject: de.Subject, Sequence: de.Sequence, Err: err}
		case err != nil:
			return err
		default:
			r, err = received(c.streams, ev)
			if err != nil {
				r.Err = err
			}
		}
		if err := fn(r); err != nil {
			return err
		}
		if r.Err == nil {
			if n++; o.Limit > 0 && n >= o.Limit {
				return nil
			}
		}
	}
	return ctx.Err()
}

// received is a public client's event as Follow hands it over.
func received(cfg streams.Config, ev client.Event) (Received, error) {
	r := Received{Subject: cfg.EventSubject(string(ev.Kind())), Sequence: ev.Sequence, Raw: ev.JSON()}
	e, err := EventOf(ev)
	if err != nil {
		return r, fmt.Errorf("event at sequence %d: %w", ev.Sequence, err)
	}
	r.Event = e
	return r, nil
}

// EventOf returns a public client's event as the events package has it.
func EventOf(ev client.Event) (events.Event, error) {
	var e events.Event
	if err := json.Unmarshal(ev.JSON(), &e); err != nil {
		return events.Event{}, err
	}
	return e, nil
}
