package publish

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/streams"
)

// Client publishes commands to, and reads events from, the streams named by
// Streams. It is safe for concurrent use. The wire format of commands
// (subject, headers, JSON) is the public client package's, which it wraps.
type Client struct {
	js      jetstream.JetStream
	streams streams.Config
	cl      *client.Client
}

// NewClient returns a Client over js for the streams of cfg.
func NewClient(js jetstream.JetStream, cfg streams.Config) *Client {
	return &Client{js: js, streams: cfg, cl: client.New(js, client.WithStreams(PublicStreams(cfg)))}
}

// PublicStreams returns the public client's names of the streams of cfg.
func PublicStreams(cfg streams.Config) client.Streams {
	return client.Streams{Prefix: cfg.Prefix, Commands: cfg.Commands, Events: cfg.Events}
}

// Client returns the public client over the same connection and streams.
func (c *Client) Client() *client.Client { return c.cl }

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

// Typed returns cmd as the public client's Capture or Void. A command of
// another type gives the worker's *command.InvalidError for it.
func Typed(cmd *command.Command) (client.Command, error) {
	var at time.Time
	if cmd.OriginalTransactionTime != nil {
		at = *cmd.OriginalTransactionTime
	}
	switch cmd.Type {
	case command.Capture:
		return client.Capture{CommandID: cmd.CommandID, IdempotencyKey: cmd.IdempotencyKey, MerchantID: cmd.MerchantID,
			TransactionID: cmd.TransactionID, Amount: cmd.AmountValue(), Currency: cmd.Currency, Gateway: cmd.Gateway,
			Notes: cmd.Notes, Metadata: cmd.Metadata, OriginalTransactionTime: at}, nil
	case command.Void:
		return client.Void{CommandID: cmd.CommandID, IdempotencyKey: cmd.IdempotencyKey, MerchantID: cmd.MerchantID,
			TransactionID: cmd.TransactionID, Amount: cmd.AmountValue(), Currency: cmd.Currency, Gateway: cmd.Gateway,
			Notes: cmd.Notes, Metadata: cmd.Metadata, OriginalTransactionTime: at}, nil
	}
	return nil, cmd.Check()
}

// Encode returns the JSON of cmd, as the public client publishes it, after
// checking it as the worker would, so that nothing the worker would reject
// is ever published. An invalid command gives an error that matches
// command.ErrInvalid and holds a *command.InvalidError naming each field at
// fault. An amount of 0 is checked as absent, as the client sends it.
func Encode(cmd *command.Command) ([]byte, error) {
	enc, err := EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	return enc.JSON(), nil
}

// EncodeCommand is Encode, returning the command as the public client
// publishes it.
func EncodeCommand(cmd *command.Command) (*client.Encoded, error) {
	enc, err := encode(cmd)
	if err != nil {
		return nil, fmt.Errorf("invalid %s command: %w", cmd.Type, err)
	}
	return enc, nil
}

func encode(cmd *command.Command) (*client.Encoded, error) {
	t, err := Typed(cmd)
	if err != nil {
		return nil, err
	}
	if cmd.Amount != nil && *cmd.Amount == 0 || cmd.CommandID == "" {
		// The client leaves a zero amount out, and makes up a missing
		// command id; the worker would be told about either.
		return nil, cmd.Check()
	}
	return client.Encode(t)
}

// Publish validates cmd (see Encode) and publishes it with the public
// client (client.Client.Publish): on the subject of its type with the
// header Nats-Msg-Id = command_id, and returns once JetStream has stored
// it. Publishing the same command_id twice within the stream's duplicate
// window stores it once (Ack.Duplicate on the second). A different
// command_id with the same idempotency key is stored and is answered by the
// worker with the key's outcome (a command.duplicate event).
func (c *Client) Publish(ctx context.Context, cmd *command.Command) (Ack, error) {
	enc, err := EncodeCommand(cmd)
	if err != nil {
		return Ack{}, err
	}
	ack, err := c.cl.Publish(ctx, enc)
	if err != nil {
		return Ack{}, err
	}
	return Ack{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}
