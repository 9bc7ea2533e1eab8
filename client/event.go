package client

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Kind is an event kind; its subject is payments.evt.<kind> and its
// CloudEvents type payments.<kind>.
type Kind string

// Event kinds (SPEC §3.1).
const (
	KindCaptureSucceeded Kind = "capture.succeeded"
	KindCaptureFailed    Kind = "capture.failed"
	KindVoidSucceeded    Kind = "void.succeeded"
	KindVoidFailed       Kind = "void.failed"
	KindRejected         Kind = "command.rejected"
	KindDuplicate        Kind = "command.duplicate"
	KindDeadLettered     Kind = "command.dead_lettered"
)

// Kinds lists every event kind.
func Kinds() []Kind {
	return []Kind{KindCaptureSucceeded, KindCaptureFailed, KindVoidSucceeded, KindVoidFailed,
		KindRejected, KindDuplicate, KindDeadLettered}
}

// Terminal reports whether k is a terminal outcome of an idempotency key:
// capture or void, succeeded or failed. A key has at most one terminal
// event (SPEC §4.2).
func (k Kind) Terminal() bool {
	switch k {
	case KindCaptureSucceeded, KindCaptureFailed, KindVoidSucceeded, KindVoidFailed:
		return true
	}
	return false
}

// ceTypePrefix starts the CloudEvents type of every event.
const ceTypePrefix = "payments."

// Type is the CloudEvents type of the kind: payments.capture.succeeded.
func (k Kind) Type() string { return ceTypePrefix + string(k) }

// Event is a result event: CloudEvents 1.0 in structured JSON mode, as the
// worker publishes it on payments.evt.<kind> (SPEC §3.3).
type Event struct {
	SpecVersion string `json:"specversion"`
	// ID is the event's id, also its Nats-Msg-Id. A terminal event's id is
	// derived from (merchant, idempotency key): the same for every
	// publication of the key's outcome.
	ID     string `json:"id"`
	Source string `json:"source"`
	// Type is the CloudEvents type: payments.<kind>.
	Type string `json:"type"`
	// Subject is the transaction id.
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	// Traceparent and Tracestate are the CloudEvents distributed tracing
	// extension: the trace context the command was published with.
	Traceparent string    `json:"traceparent,omitempty"`
	Tracestate  string    `json:"tracestate,omitempty"`
	Data        EventData `json:"data"`

	// Sequence is the event's sequence in the events stream; 0 when the
	// event was not read from it.
	Sequence uint64 `json:"-"`
	raw      []byte
}

// EventData is the payload of a result event. Fields that do not apply to
// the kind are empty.
type EventData struct {
	CommandID      string `json:"command_id,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	MerchantID     string `json:"merchant_id,omitempty"`
	TransactionID  string `json:"transaction_id,omitempty"`
	// CommandType is "capture" or "void" where known.
	CommandType string `json:"command_type,omitempty"`
	Gateway     string `json:"gateway,omitempty"`
	Amount      *int64 `json:"amount,omitempty"`
	Currency    string `json:"currency,omitempty"`
	// Attempts counts the gateway calls made for the command, status calls
	// included; 0 when the gateway was not called.
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
	// Reconciled is true when the outcome was learnt from the gateway's
	// status call after an attempt whose result was unknown.
	Reconciled bool `json:"reconciled,omitempty"`

	Error *EventError `json:"error,omitempty"`

	// OriginalEventID names the terminal event a duplicate repeats, and
	// OriginalCommandID the command that first used the key.
	OriginalEventID   string `json:"original_event_id,omitempty"`
	OriginalCommandID string `json:"original_command_id,omitempty"`
	// DLQSubject and DLQSequence locate a dead-lettered or rejected
	// message in the dead-letter stream.
	DLQSubject  string `json:"dlq_subject,omitempty"`
	DLQSequence uint64 `json:"dlq_sequence,omitempty"`

	Metadata map[string]string `json:"metadata,omitempty"`
}

// EventError describes a failure, rejection or dead letter.
type EventError struct {
	// Code is stable and machine-readable: gateway_declined,
	// schema_violation, idempotency_key_conflict, retries_exhausted, ...
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field is the command field at fault, for rejections.
	Field     string `json:"field,omitempty"`
	Retryable bool   `json:"retryable"`
}

// Kind returns the event's kind, "" for a type this package does not know.
func (e Event) Kind() Kind {
	k, ok := strings.CutPrefix(e.Type, ceTypePrefix)
	if !ok {
		return ""
	}
	for _, known := range Kinds() {
		if Kind(k) == known {
			return known
		}
	}
	return ""
}

// JSON returns the event as stored in the stream, or as json.Marshal
// writes it for an event not read from a stream.
func (e Event) JSON() []byte {
	if e.raw != nil {
		return e.raw
	}
	b, _ := json.Marshal(e)
	return b
}

// decodeEvent decodes a stored event.
func decodeEvent(data []byte, seq uint64) (Event, error) {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return Event{}, fmt.Errorf("event at sequence %d: %w", seq, err)
	}
	e.Sequence, e.raw = seq, data
	return e, nil
}
