package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
)

// ErrBadType is returned by Filter.Subject for a --type that is not an event
// kind, a CloudEvents type or a subject pattern.
var ErrBadType = errors.New("not an event kind or subject pattern")

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

// Subject returns the subject filter of f.Type under the events prefix of
// cfg: the event wildcard when Type is empty.
func (f Filter) Subject(cfg streams.Config) (string, error) {
	t := strings.TrimSpace(f.Type)
	if t == "" {
		return cfg.EventWildcard(), nil
	}
	if k, ok := events.KindOfType(t); ok {
		return cfg.EventSubject(string(k)), nil
	}
	tokens := strings.Split(t, ".")
	for i, tok := range tokens {
		switch {
		case tok == "":
			return "", fmt.Errorf("type %q: empty token: %w", f.Type, ErrBadType)
		case tok == ">" && i != len(tokens)-1:
			return "", fmt.Errorf("type %q: '>' must be the last token: %w", f.Type, ErrBadType)
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*> \t\r\n"):
			return "", fmt.Errorf("type %q: bad token %q: %w", f.Type, tok, ErrBadType)
		}
	}
	if len(tokens) == 1 && tokens[0] != "*" && tokens[0] != ">" {
		t += ".>"
	}
	return cfg.EventSubject(t), nil
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
	// All starts at the first stored event; otherwise Since, when set, starts
	// at the first event stored at or after it; otherwise only events stored
	// from now on are delivered.
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

// Follow reads the events stream with an ordered consumer, in stream order,
// and calls fn for each event that passes o.Filter. It returns nil after
// o.Limit events, the error of fn when fn fails, and ctx's error when ctx
// ends (Ctrl-C): a follower that is stopped is not a failure, so callers
// usually treat context.Canceled as success.
func (c *Client) Follow(ctx context.Context, o FollowOptions, fn func(Received) error) error {
	subject, err := o.Filter.Subject(c.streams)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	}
	switch {
	case o.All:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case !o.Since.IsZero():
		since := o.Since
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	cons, err := c.js.OrderedConsumer(ctx, c.streams.Events, cfg)
	if err != nil {
		return fmt.Errorf("follow events: %w", c.streamErr(err))
	}
	defer c.deleteConsumer(cons)()
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("follow events: %w", err)
	}
	defer it.Stop()
	n := 0
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow events: %w", err)
		}
		r := Received{Subject: msg.Subject(), Raw: msg.Data()}
		if md, err := msg.Metadata(); err == nil {
			r.Sequence = md.Sequence.Stream
		}
		if err := json.Unmarshal(r.Raw, &r.Event); err != nil {
			r.Event = events.Event{}
			r.Err = fmt.Errorf("event at sequence %d: %w", r.Sequence, err)
			if err := fn(r); err != nil {
				return err
			}
			continue
		}
		if !o.Filter.Matches(r.Event) {
			continue
		}
		if err := fn(r); err != nil {
			return err
		}
		n++
		if o.Limit > 0 && n >= o.Limit {
			return nil
		}
	}
}
