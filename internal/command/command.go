// Package command defines the capture and void commands of SPEC §3.2 and
// decodes them: every message is checked against the embedded JSON Schema
// before anything acts on it.
package command

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/payworker/payworker/internal/gateway"
)

// Type is the command type; it must match the subject the command arrives on.
type Type string

// Command types.
const (
	Capture Type = "capture"
	Void    Type = "void"
)

// MaxSize is the largest message accepted, in bytes; a larger one is rejected
// as oversize without being parsed.
const MaxSize = 64 << 10

// Command is one capture or void, as published on payments.cmd.<type>.
type Command struct {
	CommandID      string            `json:"command_id"`
	Type           Type              `json:"type"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	MerchantID     string            `json:"merchant_id"`
	TransactionID  string            `json:"transaction_id"`
	Amount         *int64            `json:"amount,omitempty"`
	Currency       string            `json:"currency,omitempty"`
	Gateway        string            `json:"gateway,omitempty"`
	Notes          string            `json:"notes,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	// OriginalTransactionTime is the authorisation's time, for gateways whose
	// cancellation quotes it (SIBS); optional.
	OriginalTransactionTime *time.Time `json:"original_transaction_time,omitempty"`
}

// Key returns the idempotency key: IdempotencyKey, or CommandID when unset.
func (c *Command) Key() string {
	if c.IdempotencyKey != "" {
		return c.IdempotencyKey
	}
	return c.CommandID
}

// AmountValue returns the amount in minor units, 0 when absent.
func (c *Command) AmountValue() int64 {
	if c.Amount == nil {
		return 0
	}
	return *c.Amount
}

// Fingerprint identifies the parameters that must not change under one
// idempotency key (SPEC §4.4): type, gateway, merchant, transaction, amount and
// currency. gw is the gateway the command is routed to (its own field or the
// configured default), so a command that names the default gateway and one
// that leaves it out have the same fingerprint.
func (c *Command) Fingerprint(gw string) string {
	h := sha256.New()
	for _, part := range []string{
		string(c.Type), gw, c.MerchantID, c.TransactionID,
		amountText(c.Amount), c.Currency,
	} {
		h.Write([]byte(strconv.Itoa(len(part))))
		h.Write([]byte{':'})
		h.Write([]byte(part))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func amountText(a *int64) string {
	if a == nil {
		return "-"
	}
	return strconv.FormatInt(*a, 10)
}

// Request converts the command into the gateway's vocabulary.
func (c *Command) Request() gateway.Request {
	r := gateway.Request{
		Operation:     gateway.Operation(c.Type),
		MerchantID:    c.MerchantID,
		TransactionID: c.TransactionID,
		Amount:        c.AmountValue(),
		Currency:      c.Currency,
		Notes:         c.Notes,
		Reference:     c.Key(),
	}
	if c.OriginalTransactionTime != nil {
		r.OriginalTime = *c.OriginalTransactionTime
	}
	return r
}
