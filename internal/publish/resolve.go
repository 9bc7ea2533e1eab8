package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
)

// ErrEventNotFound is returned by FindEvent when no stored event has the id.
var ErrEventNotFound = errors.New("event not found")

// FindEvent returns the stored event with the given CloudEvents id, reading
// the events stream from its start on the subjects of kinds (every event
// subject when none is given). It reads until the end of the stream, so it is
// meant for single look-ups, not for loops.
func (c *Client) FindEvent(ctx context.Context, id string, kinds ...events.Kind) (events.Event, error) {
	subjects := []string{c.streams.EventWildcard()}
	if len(kinds) > 0 {
		subjects = subjects[:0]
		for _, k := range kinds {
			subjects = append(subjects, c.streams.EventSubject(string(k)))
		}
	}
	cons, err := c.js.OrderedConsumer(ctx, c.streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return events.Event{}, fmt.Errorf("find event %s: %w", id, c.streamErr(err))
	}
	defer c.deleteConsumer(cons)()
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		return events.Event{}, fmt.Errorf("find event %s: %w", id, ErrEventNotFound)
	}
	it, err := cons.Messages()
	if err != nil {
		return events.Event{}, fmt.Errorf("find event %s: %w", id, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return events.Event{}, fmt.Errorf("find event %s: %w", id, err)
		}
		var e events.Event
		if json.Unmarshal(msg.Data(), &e) == nil && e.ID == id {
			return e, nil
		}
		if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
			return events.Event{}, fmt.Errorf("find event %s: %w", id, ErrEventNotFound)
		}
	}
}

// Resolve completes a duplicate outcome with the terminal event it repeats
// (Outcome.Original), looked up with FindEvent among the terminal events of
// the command's type. Other outcomes are returned unchanged. When the
// original is not found, o is returned unchanged with the error.
func (c *Client) Resolve(ctx context.Context, o Outcome) (Outcome, error) {
	if o.Kind != events.Duplicate || o.Original != nil || o.Event.Data.OriginalEventID == "" {
		return o, nil
	}
	var kinds []events.Kind
	switch typ := o.Event.Data.CommandType; typ {
	case "capture", "void":
		kinds = []events.Kind{events.TerminalKind(typ, true), events.TerminalKind(typ, false)}
	default:
		kinds = []events.Kind{events.CaptureSucceeded, events.CaptureFailed, events.VoidSucceeded, events.VoidFailed}
	}
	e, err := c.FindEvent(ctx, o.Event.Data.OriginalEventID, kinds...)
	if err != nil {
		return o, err
	}
	o.Original = &e
	return o, nil
}
