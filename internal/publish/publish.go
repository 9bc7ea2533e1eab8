package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/streams"
)

// Client publishes commands to, and reads events from, the streams named by
// Streams. It is safe for concurrent use.
type Client struct {
	js      jetstream.JetStream
	streams streams.Config
}

// NewClient returns a Client over js for the streams of cfg.
func NewClient(js jetstream.JetStream, cfg streams.Config) *Client {
	return &Client{js: js, streams: cfg}
}

// Streams returns the stream configuration the client uses.
func (c *Client) Streams() streams.Config { return c.streams }

// JetStream returns the JetStream handle the client uses.
func (c *Client) JetStream() jetstream.JetStream { return c.js }

// Check reports streams.ErrNotProvisioned (wrapped) when a stream is missing.
func (c *Client) Check(ctx context.Context) error { return streams.Check(ctx, c.js, c.streams) }

// Provision creates or updates the three streams (streams.Provision).
func (c *Client) Provision(ctx context.Context) error {
	return streams.Provision(ctx, c.js, c.streams)
}

// Ack is JetStream's acknowledgement of a published command.
type Ack struct {
	Stream   string
	Sequence uint64
	// Duplicate is true when the stream already held a message with this
	// command_id (Nats-Msg-Id) within its duplicate window and dropped this one.
	Duplicate bool
}

// Encode returns the JSON of cmd after checking it with command.Validate, so
// that nothing the worker would reject is ever published. An invalid command
// gives an error that matches command.ErrInvalid and holds a
// *command.InvalidError naming each field at fault.
func Encode(cmd *command.Command) ([]byte, error) {
	data, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	if err := command.Validate(string(cmd.Type), data); err != nil {
		return nil, fmt.Errorf("invalid %s command: %w", cmd.Type, err)
	}
	return data, nil
}

// Publish validates cmd (see Encode) and publishes it on the subject of its
// type with the header Nats-Msg-Id = command_id, and returns once JetStream
// has stored it. Publishing the same command_id twice within the stream's
// duplicate window stores it once (Ack.Duplicate on the second). A different
// command_id with the same idempotency key is stored and is answered by the
// worker with the key's outcome (a command.duplicate event).
func (c *Client) Publish(ctx context.Context, cmd *command.Command) (Ack, error) {
	data, err := Encode(cmd)
	if err != nil {
		return Ack{}, err
	}
	msg := &nats.Msg{
		Subject: c.streams.CommandSubject(string(cmd.Type)),
		Header:  nats.Header{},
		Data:    data,
	}
	msg.Header.Set(jetstream.MsgIDHeader, cmd.CommandID)
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(c.streams.Commands))
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			err = fmt.Errorf("%w (%w)", streams.ErrNotProvisioned, err)
		}
		return Ack{}, fmt.Errorf("publish %s command %s: %w", cmd.Type, cmd.CommandID, err)
	}
	return Ack{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}
