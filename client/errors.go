package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/streams"
)

var (
	// ErrInvalidCommand matches, with errors.Is, the *ValidationError of a
	// command the worker would reject. It is never published.
	ErrInvalidCommand = errors.New("invalid command")

	// ErrNotStored matches a *PublishError for a command that was not
	// stored: nothing will come of it. It was invalid, no stream takes its
	// subject, or the server refused it. Publishing it again is safe.
	ErrNotStored = errors.New("command not stored")

	// ErrMaybeStored matches a *PublishError for a command whose
	// acknowledgement never came (timeout, connection lost, context ended
	// after sending): it may be stored and acted on. Publish it again with
	// the same CommandID (PublishError.CommandID): the stream keeps one copy
	// within its duplicate window, and the worker answers a later copy from
	// the idempotency key's record, so the gateway is asked at most once.
	ErrMaybeStored = errors.New("command may have been stored")

	// ErrNotProvisioned matches an error caused by a missing stream: no
	// worker has run against this NATS server yet (the worker creates the
	// streams at start), or the stream names differ (WithStreams).
	ErrNotProvisioned = streams.ErrNotProvisioned

	// ErrNoOutcome matches the error of a wait whose context ended before
	// an outcome arrived; the error also wraps the context's error.
	ErrNoOutcome = errors.New("no outcome")

	// ErrClosed is returned by a wait on a closed Client.
	ErrClosed = errors.New("client closed")

	// ErrBadFilter is returned by Events for a Filter.Type that is not an
	// event kind, a CloudEvents type or a subject pattern.
	ErrBadFilter = errors.New("not an event kind or subject pattern")
)

// Problem is one reason a command is invalid.
type Problem struct {
	// Field is the JSON name of the field at fault (merchant_id,
	// metadata.order), or "" for the command as a whole.
	Field string
	// Rule is the rule broken: a JSON Schema keyword (required, maxLength,
	// pattern, minimum, enum, ...) or oversize.
	Rule string
	// Message names the field, the problem and the rule, in the worker's
	// words: "merchant_id: must be at most 10 characters, got 11".
	Message string
}

// ValidationError is the error of a command the worker would reject. Its
// texts are the worker's: a command published anyway would be rejected
// with the same field and message in its command.rejected event.
type ValidationError struct {
	// Problems has at least one entry, in the order of the command's
	// fields.
	Problems []Problem
	err      error
}

// Error joins the problems' messages with "; ", as the worker does.
func (e *ValidationError) Error() string { return e.err.Error() }

// Field returns the field of the first problem: the field a rejection
// event would name.
func (e *ValidationError) Field() string {
	if len(e.Problems) == 0 {
		return ""
	}
	return e.Problems[0].Field
}

// Is reports whether target is ErrInvalidCommand or ErrNotStored.
func (e *ValidationError) Is(target error) bool {
	return target == ErrInvalidCommand || target == ErrNotStored
}

// Unwrap returns the worker's own error.
func (e *ValidationError) Unwrap() error { return e.err }

// validationError wraps the worker's decoding error; nil stays nil.
func validationError(err error) error {
	if err == nil {
		return nil
	}
	ve := &ValidationError{err: err}
	var ie *command.InvalidError
	if errors.As(err, &ie) {
		for _, p := range ie.Problems {
			ve.Problems = append(ve.Problems, Problem{Field: p.Field, Rule: p.Rule, Message: p.Message})
		}
	} else {
		ve.Problems = []Problem{{Rule: "encoding", Message: err.Error()}}
	}
	return ve
}

// PublishError is the error of Publish. It matches ErrNotStored or
// ErrMaybeStored, and wraps the cause (a *ValidationError,
// ErrNotProvisioned, a JetStream or context error).
type PublishError struct {
	// Type, CommandID, MerchantID and IdempotencyKey name the command; a
	// CommandID that Publish generated is here, to retry with.
	Type           Type
	CommandID      string
	MerchantID     string
	IdempotencyKey string
	// MaybeStored is true when the command may have been stored (no
	// acknowledgement came back), false when it certainly was not.
	MaybeStored bool
	Err         error
}

func (e *PublishError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "publish %s command", e.Type)
	if e.CommandID != "" {
		fmt.Fprintf(&b, " %s", e.CommandID)
	}
	if e.MaybeStored {
		b.WriteString(" (may have been stored: retry with the same command_id)")
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

// Unwrap returns the cause.
func (e *PublishError) Unwrap() error { return e.Err }

// Is reports whether target is ErrMaybeStored (MaybeStored) or ErrNotStored
// (not MaybeStored).
func (e *PublishError) Is(target error) bool {
	switch target {
	case ErrMaybeStored:
		return e.MaybeStored
	case ErrNotStored:
		return !e.MaybeStored
	}
	return false
}

// DecodeError is what Events yields for a message on the events stream that
// is not a result event. The sequence goes on after it.
type DecodeError struct {
	Subject  string
	Sequence uint64
	Err      error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("message %d on %s is not an event: %v", e.Sequence, e.Subject, e.Err)
}

// Unwrap returns the decoding error.
func (e *DecodeError) Unwrap() error { return e.Err }
