package publish

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
)

// Outcome is the result event that answered a command.
type Outcome struct {
	// Kind is the kind of Event: a terminal kind, or command.rejected,
	// command.duplicate or command.dead_lettered.
	Kind  events.Kind
	Event events.Event
	// Original is the terminal event a duplicate repeats, when the public
	// client found it (client.Duplicate.Original); nil otherwise.
	Original *events.Event
}

// Final returns the terminal event that decides the outcome (Original for a
// resolved duplicate, Event for a terminal one) and false when there is none
// (rejected, dead-lettered, or a duplicate whose original was not found).
func (o Outcome) Final() (events.Event, bool) {
	switch {
	case o.Kind.Terminal():
		return o.Event, true
	case o.Kind == events.Duplicate && o.Original != nil:
		return *o.Original, true
	}
	return events.Event{}, false
}

// Succeeded reports whether the command's key ended in success: a succeeded
// event, or a duplicate whose original event is a succeeded one.
func (o Outcome) Succeeded() bool {
	e, ok := o.Final()
	if !ok {
		return false
	}
	k, _ := events.KindOfType(e.Type)
	return k == events.CaptureSucceeded || k == events.VoidSucceeded
}

// Match names the command a replay publishes, as the worker's events about
// it name it.
type Match struct {
	MerchantID     string
	IdempotencyKey string
	CommandID      string
}

// deleteConsumer returns a function that deletes the ordered consumer's
// current server-side consumer on the events stream.
func (c *Client) deleteConsumer(cons jetstream.Consumer) func() {
	return func() { streams.DeleteConsumer(c.js, c.streams.Events, cons) }
}

// streamErr turns a missing events stream into streams.ErrNotProvisioned.
func (c *Client) streamErr(err error) error { return streams.NotProvisioned(c.streams.Events, err) }
