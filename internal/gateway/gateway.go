// Package gateway holds the vocabulary shared by every payment gateway adapter:
// the operation requested, the typed outcome of one attempt, and the state of an
// authorisation as the gateway's status call reports it.
//
// Adapters (paymentoptions, sibs) return these concrete types; the handlers
// package declares the small interface it needs from an adapter.
//
// It also holds the mechanics every HTTP adapter shares (transport.go): the
// check of a configured gateway URL (CheckBaseURL), the sending of one
// attempt that tells whether the request was written (NoRedirects, HTTP,
// Exchange), the classification of an attempt that got no answer
// (ClassifyTransport), and the reading of Retry-After (ParseRetryAfter).
// What differs between gateways (body shapes, headers, classification
// tables) stays in the adapters.
package gateway

import (
	"fmt"
	"time"
)

// Operation is what a command asks the gateway to do with an authorisation.
type Operation string

// Operations supported by every adapter.
const (
	Capture Operation = "capture"
	Void    Operation = "void"
)

// Request is one capture or void of an authorisation, in our own units: Amount is
// an integer in the minor units of Currency. Amount is zero for a full void.
type Request struct {
	Operation     Operation
	MerchantID    string
	TransactionID string
	Amount        int64
	Currency      string
	Notes         string
	// Reference is our own id for the operation (the idempotency key); adapters
	// send it where the gateway has a merchant reference field.
	Reference string
	// OriginalTime is the authorisation's time when the command carries it
	// (SIBS cancellation quotes it); zero when unknown.
	OriginalTime time.Time
}

// Outcome classifies one gateway attempt. The retry, reconcile and ack
// decisions are taken from it and from nothing else.
type Outcome int

// Outcomes of one attempt.
const (
	// Succeeded: the gateway applied the operation.
	Succeeded Outcome = iota + 1
	// Declined: the gateway answered and refused; final, never retried.
	Declined
	// Retryable: the gateway certainly did not apply the operation (connection
	// refused, 429, a 5xx known not to have been applied); safe to resend.
	Retryable
	// Unknown: the operation may have been applied (timeout or reset after the
	// request was sent, a 5xx, an "unclear result" code). Never resend blind:
	// ask the status endpoint first.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case Succeeded:
		return "succeeded"
	case Declined:
		return "declined"
	case Retryable:
		return "retryable"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Result is the outcome of one attempt with what the gateway said. It never
// holds a full card number: adapters mask it before a Result leaves them.
type Result struct {
	Outcome Outcome
	// HTTPStatus is the status of the answer, 0 when none arrived.
	HTTPStatus int
	// Code and Message are the gateway's own (gateway_response.code/message, or
	// SIBS returnStatus.statusCode/statusMsg).
	Code    string
	Message string
	// ResponseCode is the acquirer's code where the gateway gives one
	// (payment_details.response_code), as text; empty when absent.
	ResponseCode string
	// TransactionID and Ref identify the operation at the gateway.
	TransactionID string
	Ref           string
	AuthCode      string
	Scheme        string
	// MaskedPAN shows at most the first six and last four digits.
	MaskedPAN string
	Amount    int64
	Currency  string
	// RetryAfter is the wait the gateway asked for (429 Retry-After), 0 if none.
	RetryAfter time.Duration
	// Err is the transport or decoding error behind a Retryable or Unknown
	// outcome, nil otherwise.
	Err error
}

// State is the state of an authorisation as the gateway's status call reports it.
type State int

// Authorisation states.
const (
	// StateUnknown: the status call could not tell (error, unreadable answer).
	StateUnknown State = iota
	// StateNotFound: the gateway does not know the transaction.
	StateNotFound
	// StateAuthorised: authorised and open: neither captured nor voided.
	StateAuthorised
	// StateCaptured: captured, fully or partly (Status.CapturedAmount).
	StateCaptured
	// StateVoided: voided (cancelled), fully or partly.
	StateVoided
)

func (s State) String() string {
	switch s {
	case StateNotFound:
		return "not_found"
	case StateAuthorised:
		return "authorised"
	case StateCaptured:
		return "captured"
	case StateVoided:
		return "voided"
	}
	return "unknown"
}

// Status is what the gateway's status call says of an authorisation.
type Status struct {
	State State
	// AuthorisedAmount and CapturedAmount are in minor units of Currency.
	AuthorisedAmount int64
	CapturedAmount   int64
	VoidedAmount     int64
	Currency         string
	// AuthorisedAt is the authorisation's time, zero if the gateway did not say.
	AuthorisedAt time.Time
	// Result carries the gateway's codes and card data of the last operation
	// on the authorisation, for the event when reconciliation finds it applied.
	Result Result
	// Ours is what the status says of our own operation: the one of the
	// request's type sent with the request's Reference (the idempotency key),
	// when the gateway lists the operations on the authorisation by merchant
	// reference (SIBS, in our reading of its status answer). It is
	// OursUnlisted when the gateway lists none (PaymentOptions):
	// reconciliation then falls back on State and the amounts. OursAmount is
	// the amount of our applied operation, in minor units of Currency.
	Ours       OursState
	OursAmount int64
}

// OursState is what a status call says of the operation sent with our
// reference. Status stays comparable: it carries no list.
type OursState int

// States of our operation in a status answer.
const (
	// OursUnlisted: the gateway does not list operations by reference.
	OursUnlisted OursState = iota
	// OursAbsent: the gateway lists the operations, and none of our type
	// carries our reference but refused ones: ours was not applied.
	OursAbsent
	// OursPending: an operation with our reference is still being processed:
	// it may yet be applied.
	OursPending
	// OursApplied: an operation with our reference was applied, for
	// Status.OursAmount.
	OursApplied
)

func (o OursState) String() string {
	switch o {
	case OursAbsent:
		return "absent"
	case OursPending:
		return "pending"
	case OursApplied:
		return "applied"
	}
	return "unlisted"
}
