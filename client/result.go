package client

import (
	"fmt"
	"strings"
)

// Result is the outcome of a command or of an idempotency key: one of
// *Succeeded, *Declined, *Rejected, *DeadLettered or *Duplicate. Each
// embeds the Event that decided it. Switch on its type:
//
//	switch r := res.(type) {
//	case *client.Succeeded:    // the gateway did it
//	case *client.Declined:     // the gateway refused: r.GatewayCode, r.GatewayMessage
//	case *client.Rejected:     // the worker refused the command: r.Field, r.Message
//	case *client.DeadLettered: // no outcome could be reached; kept for replay: r.Reason
//	case *client.Duplicate:    // the key was done before: r.Original
//	}
type Result interface {
	// OK reports whether the operation took effect: a Succeeded, or a
	// Duplicate of one.
	OK() bool
	// String is one line for logs: the outcome and what decided it.
	String() string
	// event returns the deciding event.
	event() *Event
}

// EventOf returns the event that decided r.
func EventOf(r Result) Event { return *r.event() }

// Succeeded is a capture or void the gateway applied (a terminal
// *.succeeded event).
type Succeeded struct {
	Event
	// GatewayCode is the gateway's success code (INFO0001 for a
	// PaymentOptions capture); GatewayTransactionID its id of the
	// operation.
	GatewayCode          string
	GatewayTransactionID string
}

// Declined is a capture or void the gateway refused for good (a terminal
// *.failed event): the authorisation is unknown, already captured or
// voided, the amount is above the authorised one, a risk block, ...
type Declined struct {
	Event
	// GatewayCode and GatewayMessage are the gateway's words.
	GatewayCode    string
	GatewayMessage string
	// Code and Message are the worker's (gateway_declined, ...).
	Code    string
	Message string
}

// Rejected is a command the worker refused without calling the gateway: it
// is not a valid command (a publisher that does not check commands as this
// package does), or its idempotency key was used before with other
// parameters (Code idempotency_key_conflict), or its gateway is not
// configured.
type Rejected struct {
	Event
	Code    string
	Field   string
	Message string
}

// DeadLettered is a command that reached no final outcome (the gateway
// stayed down, the outcome of an attempt could not be learnt): it is kept
// in the dead-letter stream for an operator to replay (`publisher replay`),
// which then gets its terminal outcome.
type DeadLettered struct {
	Event
	// Reason is the worker's code: retries_exhausted, outcome_unknown, ...
	Reason  string
	Message string
	// DLQSubject and DLQSequence locate the kept command.
	DLQSubject  string
	DLQSequence uint64
}

// Duplicate is a command whose idempotency key already had its terminal
// outcome: the worker did nothing new and named the original event.
type Duplicate struct {
	Event
	OriginalEventID   string
	OriginalCommandID string
	// Original is the key's outcome, a *Succeeded or *Declined. The
	// worker records an outcome before it publishes its event, so the
	// duplicate may come first: the original is then waited for, up to
	// 10 seconds or until the context ends. Original is nil when its event
	// is not found: stored before the client's history (WithHistory), or
	// not stored in that time (a worker that stopped between recording
	// and publishing publishes it when the command is redelivered, after
	// ACK_WAIT).
	Original Result
}

func (r *Succeeded) event() *Event    { return &r.Event }
func (r *Declined) event() *Event     { return &r.Event }
func (r *Rejected) event() *Event     { return &r.Event }
func (r *DeadLettered) event() *Event { return &r.Event }
func (r *Duplicate) event() *Event    { return &r.Event }

// OK returns true.
func (*Succeeded) OK() bool { return true }

// OK returns false.
func (*Declined) OK() bool { return false }

// OK returns false.
func (*Rejected) OK() bool { return false }

// OK returns false.
func (*DeadLettered) OK() bool { return false }

// OK reports whether the original outcome is known and succeeded.
func (r *Duplicate) OK() bool { return r.Original != nil && r.Original.OK() }

func (r *Succeeded) String() string {
	return line(&r.Event, "succeeded", "gateway_code", r.GatewayCode)
}

func (r *Declined) String() string {
	return line(&r.Event, "declined", "gateway_code", r.GatewayCode, "gateway_message", r.GatewayMessage, "error", r.Code)
}

func (r *Rejected) String() string {
	return line(&r.Event, "rejected", "error", r.Code, "field", r.Field, "message", r.Message)
}

func (r *DeadLettered) String() string {
	return line(&r.Event, "dead_lettered", "reason", r.Reason, "message", r.Message,
		"dlq", fmt.Sprintf("%s#%d", r.DLQSubject, r.DLQSequence))
}

func (r *Duplicate) String() string {
	orig := "unknown"
	if r.Original != nil {
		orig = strings.Fields(r.Original.String())[1]
	}
	return line(&r.Event, "duplicate", "original", orig, "original_event_id", r.OriginalEventID)
}

// line is "<type> <outcome> merchant=… key=… k=v … event_id=…".
func line(e *Event, outcome string, kv ...string) string {
	var b strings.Builder
	typ := e.Data.CommandType
	if typ == "" {
		typ = "command"
	}
	b.WriteString(typ + " " + outcome)
	pairs := append([]string{"merchant", e.Data.MerchantID, "key", e.Data.IdempotencyKey}, kv...)
	pairs = append(pairs, "event_id", e.ID)
	for i := 0; i+1 < len(pairs); i += 2 {
		if v := pairs[i+1]; v != "" {
			if strings.ContainsAny(v, " \"=") {
				v = fmt.Sprintf("%q", v)
			}
			b.WriteString(" " + pairs[i] + "=" + v)
		}
	}
	return b.String()
}

// resultOf turns an event into the result it says; ok is false for an
// event that is no outcome (an unknown kind).
func resultOf(e Event) (Result, bool) {
	d := e.Data
	errOf := func() EventError {
		if d.Error == nil {
			return EventError{}
		}
		return *d.Error
	}
	switch e.Kind() {
	case KindCaptureSucceeded, KindVoidSucceeded:
		return &Succeeded{Event: e, GatewayCode: d.GatewayCode, GatewayTransactionID: d.GatewayTransactionID}, true
	case KindCaptureFailed, KindVoidFailed:
		x := errOf()
		return &Declined{Event: e, GatewayCode: d.GatewayCode, GatewayMessage: d.GatewayMessage, Code: x.Code, Message: x.Message}, true
	case KindRejected:
		x := errOf()
		return &Rejected{Event: e, Code: x.Code, Field: x.Field, Message: x.Message}, true
	case KindDeadLettered:
		x := errOf()
		return &DeadLettered{Event: e, Reason: x.Code, Message: x.Message, DLQSubject: d.DLQSubject, DLQSequence: d.DLQSequence}, true
	case KindDuplicate:
		return &Duplicate{Event: e, OriginalEventID: d.OriginalEventID, OriginalCommandID: d.OriginalCommandID}, true
	}
	return nil, false
}
