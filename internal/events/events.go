// Package events builds the CloudEvents 1.0 result events of SPEC §3.3
// (structured JSON mode) and names their subjects and types.
package events

import (
	"time"

	"github.com/google/uuid"
)

// Kind is an event kind; the NATS subject is <prefix>.evt.<kind> and the
// CloudEvents type is payments.<kind>.
type Kind string

// Event kinds of SPEC §3.1.
const (
	CaptureSucceeded Kind = "capture.succeeded"
	CaptureFailed    Kind = "capture.failed"
	VoidSucceeded    Kind = "void.succeeded"
	VoidFailed       Kind = "void.failed"
	Rejected         Kind = "command.rejected"
	Duplicate        Kind = "command.duplicate"
	DeadLettered     Kind = "command.dead_lettered"
)

// Kinds lists every kind, for schema tests and for the publisher's filters.
var Kinds = []Kind{CaptureSucceeded, CaptureFailed, VoidSucceeded, VoidFailed, Rejected, Duplicate, DeadLettered}

// Terminal reports whether the kind is a terminal outcome (succeeded or failed).
func (k Kind) Terminal() bool {
	switch k {
	case CaptureSucceeded, CaptureFailed, VoidSucceeded, VoidFailed:
		return true
	}
	return false
}

// Type is the CloudEvents type of the kind: payments.capture.succeeded.
func (k Kind) Type() string { return "payments." + string(k) }

// KindOfType is the inverse of Kind.Type; ok is false for a foreign type.
func KindOfType(typ string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Type() == typ {
			return k, true
		}
	}
	return "", false
}

// TerminalKind returns the terminal kind of an operation ("capture", "void").
func TerminalKind(op string, succeeded bool) Kind {
	if succeeded {
		return Kind(op + ".succeeded")
	}
	return Kind(op + ".failed")
}

// SpecVersion and ContentType are fixed by SPEC §3.3.
const (
	SpecVersion = "1.0"
	ContentType = "application/json"
)

// Event is one CloudEvents 1.0 event in structured JSON mode.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	// TraceParent and TraceState are the CloudEvents distributed-tracing
	// extension attributes: the W3C trace context of the command's
	// handling, also in the message's traceparent and tracestate headers.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
	Data        Data   `json:"data"`
}

// Data is the payload of every event; fields that do not apply to a kind are
// left out of the JSON.
type Data struct {
	CommandID      string `json:"command_id,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	MerchantID     string `json:"merchant_id,omitempty"`
	TransactionID  string `json:"transaction_id,omitempty"`
	// CommandType is "capture" or "void" where known.
	CommandType string `json:"command_type,omitempty"`
	Gateway     string `json:"gateway,omitempty"`
	Amount      *int64 `json:"amount,omitempty"`
	Currency    string `json:"currency,omitempty"`
	// Attempts counts the gateway calls made for the command (status calls
	// included); 0 when the gateway was not called.
	Attempts int `json:"attempts"`

	GatewayCode          string `json:"gateway_code,omitempty"`
	GatewayMessage       string `json:"gateway_message,omitempty"`
	GatewayResponseCode  string `json:"gateway_response_code,omitempty"`
	GatewayTransactionID string `json:"gateway_transaction_id,omitempty"`
	GatewayRef           string `json:"gateway_ref,omitempty"`
	AuthCode             string `json:"auth_code,omitempty"`
	Scheme               string `json:"scheme,omitempty"`
	// MaskedCardNumber shows at most the first six and last four digits.
	MaskedCardNumber string `json:"masked_card_number,omitempty"`
	// Reconciled is true when the outcome was learnt from the status call
	// after an attempt whose result was unknown.
	Reconciled bool `json:"reconciled,omitempty"`

	Error *Error `json:"error,omitempty"`

	// OriginalEventID names the terminal event a duplicate repeats.
	OriginalEventID string `json:"original_event_id,omitempty"`
	// OriginalCommandID names the command that first used the key (duplicate).
	OriginalCommandID string `json:"original_command_id,omitempty"`
	// DLQSubject and DLQSequence locate the dead-lettered or rejected message.
	DLQSubject  string `json:"dlq_subject,omitempty"`
	DLQSequence uint64 `json:"dlq_sequence,omitempty"`

	Metadata map[string]string `json:"metadata,omitempty"`
}

// Error describes a failure, rejection or dead letter.
type Error struct {
	// Code is a stable machine-readable code, e.g. "schema_violation",
	// "idempotency_key_conflict", "gateway_declined", "retries_exhausted".
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field is the command field at fault, for rejections.
	Field     string `json:"field,omitempty"`
	Retryable bool   `json:"retryable"`
}

// namespace seeds the deterministic ids.
var namespace = uuid.MustParse("6b1f3a1e-4d5c-4c7e-9a52-7a9f0c1d2e3f")

// TerminalID is the id of the terminal event of (merchant, key): the same for
// every publication, so JetStream drops a second one as a duplicate.
func TerminalID(merchant, key string) string {
	return uuid.NewSHA1(namespace, []byte("terminal\x00"+merchant+"\x00"+key)).String()
}

// MessageID is the deterministic id of a non-terminal event that one delivery
// of one command produces (kind, merchant, key, command id), so a redelivery
// of that command does not announce it twice.
func MessageID(kind Kind, merchant, key, commandID string) string {
	return uuid.NewSHA1(namespace, []byte(string(kind)+"\x00"+merchant+"\x00"+key+"\x00"+commandID)).String()
}

// New returns an event of kind with the given id, source and data; the
// subject is the transaction id.
func New(kind Kind, id, source string, now time.Time, data Data) Event {
	return Event{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          source,
		Type:            kind.Type(),
		Subject:         data.TransactionID,
		Time:            now.UTC(),
		DataContentType: ContentType,
		Data:            data,
	}
}
