package client

import (
	"time"

	"github.com/google/uuid"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/encoded"
)

// Type is a command type: TypeCapture or TypeVoid. It is also the last
// token of the command's subject.
type Type string

// Command types.
const (
	TypeCapture Type = "capture"
	TypeVoid    Type = "void"
)

// Command is a command to publish: a Capture, a Void (or a pointer to
// either), or an *Encoded. Only this package implements it.
type Command interface {
	// Type is the command's type.
	Type() Type
	// Validate checks the command against the JSON Schema the worker
	// applies, and returns nil or a *ValidationError. A command with an
	// empty CommandID is checked as Publish would send it, with one.
	Validate() error
	// wire returns the command as the worker decodes it.
	wire() *command.Command
}

// Capture captures an authorisation: the payment is taken. SPEC §3.2.
type Capture struct {
	// CommandID identifies this message; it is also its Nats-Msg-Id, so the
	// stream stores one copy of a command published twice within its
	// duplicate window. At most 64 characters; Publish generates a UUID
	// when it is empty. Publish again with the same CommandID to retry.
	CommandID string
	// IdempotencyKey scopes, with MerchantID, the effect: whatever the
	// number of commands with this key, the gateway is asked at most once.
	// At most 255 characters; the CommandID when empty. A key made of the
	// order and the shipment (order-42/ship-1) makes a re-emitted
	// fulfilment harmless.
	IdempotencyKey string
	// MerchantID is the gateway's merchant id, 1 to 10 characters.
	MerchantID string
	// TransactionID is the authorisation's transaction id, 1 to 36
	// characters.
	TransactionID string
	// Amount is in minor units of Currency (1000 JPY, or 10.00 EUR as
	// 1000); required, at least 1. A capture below the authorised amount
	// is partial.
	Amount int64
	// Currency is the ISO 4217 alpha-3 code, upper case: JPY, EUR.
	Currency string
	// Gateway is "paymentoptions" or "sibs"; empty lets the worker route it
	// (GATEWAY_ROUTES, DEFAULT_GATEWAY).
	Gateway string
	// Notes is free text for the gateway, at most 128 characters.
	Notes string
	// Metadata is echoed in the result event.
	Metadata map[string]string
	// OriginalTransactionTime is the authorisation's time, for gateways
	// that quote it (SIBS); optional.
	OriginalTransactionTime time.Time
}

// Void cancels an authorisation, in full or (where the gateway supports
// it) in part. SPEC §3.2. The fields mean what they mean in Capture.
type Void struct {
	CommandID      string
	IdempotencyKey string
	MerchantID     string
	TransactionID  string
	// Amount, when not zero, asks for a partial cancellation of that
	// amount (SIBS); Currency is then required. Zero cancels the whole
	// authorisation.
	Amount                  int64
	Currency                string
	Gateway                 string
	Notes                   string
	Metadata                map[string]string
	OriginalTransactionTime time.Time
}

// Type returns TypeCapture.
func (Capture) Type() Type { return TypeCapture }

// Type returns TypeVoid.
func (Void) Type() Type { return TypeVoid }

// Validate checks the capture as the worker would; see Command.
func (c Capture) Validate() error { return validate(c) }

// Validate checks the void as the worker would; see Command.
func (v Void) Validate() error { return validate(v) }

func (c Capture) wire() *command.Command {
	return wireOf(command.Capture, c.CommandID, c.IdempotencyKey, c.MerchantID, c.TransactionID,
		c.Amount, c.Currency, c.Gateway, c.Notes, c.Metadata, c.OriginalTransactionTime)
}

func (v Void) wire() *command.Command {
	return wireOf(command.Void, v.CommandID, v.IdempotencyKey, v.MerchantID, v.TransactionID,
		v.Amount, v.Currency, v.Gateway, v.Notes, v.Metadata, v.OriginalTransactionTime)
}

// wireOf builds the worker's command. A zero amount is left out: a capture
// without one is told "amount: is required for capture", a void without
// one is a full cancellation.
func wireOf(t command.Type, id, key, merchant, txn string, amount int64, currency, gw, notes string,
	md map[string]string, at time.Time) *command.Command {
	c := &command.Command{
		CommandID: id, Type: t, IdempotencyKey: key, MerchantID: merchant, TransactionID: txn,
		Currency: currency, Gateway: gw, Notes: notes, Metadata: md,
	}
	if amount != 0 {
		c.Amount = &amount
	}
	if !at.IsZero() {
		c.OriginalTransactionTime = &at
	}
	return c
}

// validate checks cmd with a placeholder command id when it has none, as
// Publish fills one in.
func validate(cmd Command) error {
	w := cmd.wire()
	if w.CommandID == "" {
		w.CommandID = placeholderID
	}
	_, err := w.Encode(nil)
	return validationError(err)
}

// placeholderID stands for the command id Publish generates: a UUID.
const placeholderID = "00000000-0000-0000-0000-000000000000"

// Encoded is a command in its wire form: its JSON, checked once against the
// command schema, and what Publish needs to send it. Publishing it does not
// check it again. Make one with Encode.
type Encoded struct {
	w    *command.Command
	data []byte
}

func init() {
	encoded.Checked = func(w *command.Command, data []byte) any { return &Encoded{w: w, data: data} }
}

// Encode checks cmd as the worker would and encodes it as the worker reads
// it, generating a CommandID when it has none. It returns a
// *ValidationError for a command the worker would reject.
func Encode(cmd Command) (*Encoded, error) {
	if e, ok := cmd.(*Encoded); ok {
		return e, nil
	}
	w := cmd.wire()
	if w.CommandID == "" {
		w.CommandID = uuid.NewString()
	}
	data, err := w.Encode(nil)
	if err != nil {
		return nil, validationError(err)
	}
	return &Encoded{w: w, data: data}, nil
}

// Type returns the command's type.
func (e *Encoded) Type() Type { return Type(e.w.Type) }

// Validate returns nil: an Encoded was checked when it was made.
func (e *Encoded) Validate() error { return nil }

func (e *Encoded) wire() *command.Command { return e.w }

// JSON returns the command's JSON, as published. The caller must not
// modify it.
func (e *Encoded) JSON() []byte { return e.data }

// CommandID returns the command id, also the message's Nats-Msg-Id.
func (e *Encoded) CommandID() string { return e.w.CommandID }

// MerchantID returns the merchant id.
func (e *Encoded) MerchantID() string { return e.w.MerchantID }

// IdempotencyKey returns the idempotency key: the command's, or its
// command id when it has none.
func (e *Encoded) IdempotencyKey() string { return e.w.Key() }
