package client

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Client sends commands to payworker and reads their outcomes, over one
// JetStream context. It is safe for concurrent use. A Client that waited for
// an outcome holds a consumer on the events stream: Close it when done.
type Client struct {
	js      jetstream.JetStream
	streams Streams
	history time.Duration
	trace   func(context.Context) (traceparent, tracestate string)

	mu     sync.Mutex
	f      *follower // started by the first wait
	closed bool
}

// Streams names the streams and subjects a Client uses. The zero value of a
// field takes its default (DefaultStreams), which is what a worker run
// without STREAM_* settings uses.
type Streams struct {
	// Prefix is the first token of every subject: commands go to
	// <Prefix>.cmd.capture and <Prefix>.cmd.void, events come from
	// <Prefix>.evt.<kind>. Default "payments".
	Prefix string
	// Commands is the stream that stores commands; Publish expects it to
	// store them (the Nats-Expected-Stream header). Default PAYMENT_COMMANDS.
	Commands string
	// Events is the stream of result events. Default PAYMENT_EVENTS.
	Events string
}

// DefaultStreams returns the names of the streams of a worker run with its
// defaults (SPEC §3.1).
func DefaultStreams() Streams {
	return Streams{Prefix: "payments", Commands: "PAYMENT_COMMANDS", Events: "PAYMENT_EVENTS"}
}

func (s Streams) withDefaults() Streams {
	d := DefaultStreams()
	if s.Prefix == "" {
		s.Prefix = d.Prefix
	}
	if s.Commands == "" {
		s.Commands = d.Commands
	}
	if s.Events == "" {
		s.Events = d.Events
	}
	return s
}

// CommandSubject is the subject of commands of type t: payments.cmd.capture.
func (s Streams) CommandSubject(t Type) string { return s.Prefix + ".cmd." + string(t) }

// EventSubject is the subject of events of kind k:
// payments.evt.capture.succeeded.
func (s Streams) EventSubject(k Kind) string { return s.Prefix + ".evt." + string(k) }

// EventWildcard matches every event subject: payments.evt.>.
func (s Streams) EventWildcard() string { return s.Prefix + ".evt.>" }

// Option configures a Client.
type Option func(*Client)

// WithStreams sets the stream names and the subject prefix, for a worker run
// with STREAM_PREFIX, STREAM_COMMANDS or STREAM_EVENTS.
func WithStreams(s Streams) Option {
	return func(c *Client) { c.streams = s.withDefaults() }
}

// DefaultHistory is how far back before a wait the Client looks for an
// outcome that is already stored, unless WithHistory says otherwise.
const DefaultHistory = time.Hour

// WithHistory sets how far back Await looks for an outcome stored before it
// was called (DefaultHistory when d is not positive). An outcome stored
// earlier than that is not found: Await then waits for a new one. Waits for
// a command this Client published (Do, AwaitCommand) do not depend on it.
func WithHistory(d time.Duration) Option {
	return func(c *Client) {
		if d <= 0 {
			d = DefaultHistory
		}
		c.history = d
	}
}

// New returns a Client that publishes and reads through js. It makes no
// call to the server: a missing stream shows as ErrNotProvisioned on the
// first Publish or wait.
func New(js jetstream.JetStream, opts ...Option) *Client {
	c := &Client{js: js, streams: DefaultStreams(), history: DefaultHistory}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Streams returns the stream names and subject prefix the client uses.
func (c *Client) Streams() Streams { return c.streams }

// Close stops the client's follower of the events stream, if a wait
// started it, and deletes its consumer; waits still running return
// ErrClosed. It does not close the NATS connection, which the caller owns.
// Publish keeps working after Close; waits do not. Safe to call twice.
func (c *Client) Close() error {
	c.mu.Lock()
	f := c.f
	c.f, c.closed = nil, true
	c.mu.Unlock()
	if f != nil {
		f.close()
	}
	return nil
}
