// Package idempotency records, per merchant and idempotency key, who is working
// on a command and what its outcome was, so that no key is acted on twice.
//
// A record is claimed atomically under a lease with a fencing token: the token
// grows on every claim, even across a lost record (see Record.Token), and every later write (Renew, Complete, Release)
// names the token it holds and is refused with ErrFenced when another holder has
// claimed the record since. A claim may also take a per-(merchant, transaction)
// lock in the same atomic step, so that two commands on one authorisation never
// run at once.
//
// Two implementations pass one contract suite (storetest): Redis (Lua scripts,
// server time) and a JetStream key-value bucket (revision-checked updates).
package idempotency

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrFenced is returned by a write whose token is no longer the record's: the
// lease was lost and another holder has claimed the key since.
var ErrFenced = errors.New("idempotency: fencing token superseded")

// ErrNotFound is returned by Get for a key that has no record.
var ErrNotFound = errors.New("idempotency: no record")

// State is the life-cycle state of a record.
type State string

// Record states.
const (
	// StateInProgress: a holder works on the key under a lease until LeaseUntil.
	StateInProgress State = "in_progress"
	// StateReleased: no holder; an earlier holder gave the key back (dead letter,
	// shutdown). Uncertain says whether an attempt may have reached the gateway.
	StateReleased State = "released"
	// StateCompleted: the terminal outcome is stored; the key is never acted on again.
	StateCompleted State = "completed"
)

// Record is everything stored under one key.
type Record struct {
	Fingerprint string `json:"fingerprint"`
	// CommandID is the command that first claimed the key.
	CommandID string `json:"command_id"`
	State     State  `json:"state"`
	Holder    string `json:"holder,omitempty"`
	// LeaseUntil is when the holder's lease ends (StateInProgress only).
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Token is the fencing token of the latest claim. It is the store's
	// clock in milliseconds at the claim, or the previous token + 1 if that is
	// larger, so it keeps growing even when a record is lost and claimed
	// afresh (a Redis failover or restart losing the last writes): a holder
	// from before the loss can never write over the new claim.
	Token int64 `json:"token"`
	// Claims counts the claims of the key: 1 for a first run, more after a
	// takeover or a replay.
	Claims int `json:"claims"`
	// Uncertain is set by Release when an attempt may have reached the gateway:
	// the next holder must reconcile through the status call before resending.
	Uncertain bool `json:"uncertain,omitempty"`
	// TxnLock is the transaction the holder locked, "" if none.
	TxnLock string `json:"txn_lock,omitempty"`
	// Outcome is set once StateCompleted.
	Outcome   *Outcome  `json:"outcome,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Outcome is the terminal result of a key: the event that announced it, stored
// whole so a redelivery republishes the same bytes under the same message id.
type Outcome struct {
	Succeeded bool   `json:"succeeded"`
	EventID   string `json:"event_id"`
	Subject   string `json:"subject"`
	// Event is stored byte for byte (white space around it aside); it must
	// be valid JSON.
	Event json.RawMessage `json:"event"`
}

// ClaimRequest asks for a key.
type ClaimRequest struct {
	// Scope is the merchant id: keys of different merchants never collide.
	Scope       string
	Key         string
	Fingerprint string
	CommandID   string
	// Holder names the claimant (worker instance id); it appears in the record.
	Holder string
	// Lease is how long the claim holds without a Renew.
	Lease time.Duration
	// TxnLock, when not empty, is the transaction id to lock for the lease in
	// the same atomic step; the claim is Busy while another key holds it.
	TxnLock string
}

// ClaimStatus says what a claim found.
type ClaimStatus int

// Claim results.
const (
	// Acquired: the key has no record; the caller holds it. No attempt was
	// made before unless Record.Uncertain says the store may have lost the
	// key's record (then reconcile through the status call first).
	Acquired ClaimStatus = iota + 1
	// Resumed: the caller holds a key that an earlier holder left, by release or
	// by letting its lease expire. An attempt may have reached the gateway:
	// reconcile through the status call before any resend.
	Resumed
	// Completed: the key's outcome is stored in Claim.Record.Outcome; nothing to do.
	Completed
	// Conflict: the key exists with another fingerprint (SPEC §4.4).
	Conflict
	// Busy: another holder's lease on the key, or another key's lock on the
	// transaction, is live; try again after Claim.RetryAfter.
	Busy
)

func (s ClaimStatus) String() string {
	switch s {
	case Acquired:
		return "acquired"
	case Resumed:
		return "resumed"
	case Completed:
		return "completed"
	case Conflict:
		return "conflict"
	case Busy:
		return "busy"
	}
	return "invalid"
}

// Claim is the answer to a ClaimRequest.
type Claim struct {
	Status ClaimStatus
	// Record is the record as it stands after the claim (for Acquired and
	// Resumed, with the caller's token; for Busy, the holder's or, when the
	// transaction lock is what is busy, the claimed key's own record if any).
	Record Record
	// RetryAfter is how long the blocking lease has left (Busy only).
	RetryAfter time.Duration
	// Settle (Acquired and Resumed only, with Record.Uncertain) says an
	// earlier holder may still have a gateway call in flight: it took over
	// an expired lease, or the store lost records a moment ago. Let the
	// gateway settle before asking its status.
	Settle bool
}

// Store is the contract both implementations keep. Every method is one atomic
// operation; an error other than ErrFenced or ErrNotFound means the store could
// not be reached or answered nonsense, and the caller must fail closed.
//
// Renew, Complete and Release name the claim they act for by its token and by
// txn, the ClaimRequest.TxnLock of that claim ("" if it locked no
// transaction), so that a store can name the transaction lock before it reads
// the record (Redis scripts declare every key they touch). A txn other than
// the one the token's claim locked is a programming error: the store refuses
// it with an error that is not ErrFenced, and changes nothing.
type Store interface {
	// Claim takes the key (and the transaction lock) for req.Lease.
	Claim(ctx context.Context, req ClaimRequest) (Claim, error)
	// Renew extends the lease of the holder of token (and its transaction lock).
	// It returns ErrFenced when the record is missing (a lost record is never
	// resurrected), not in progress or claimed by another token, and when
	// another key has taken the transaction lock after this lease ended: the
	// holder must stop.
	Renew(ctx context.Context, scope, key, txn string, token int64, lease time.Duration) error
	// Complete stores the terminal outcome and frees the transaction lock if
	// this key and token still hold it (a lost lock does not stop it: the
	// token is what fences). ErrFenced when the record is missing, not in
	// progress or claimed by another token, except that repeating a Complete
	// that succeeded (same token and EventID, its reply lost) returns nil.
	Complete(ctx context.Context, scope, key, txn string, token int64, out Outcome) error
	// Release gives the key back without an outcome (dead letter, shutdown),
	// keeping the record so the next claim Resumes; uncertain says whether an
	// attempt may have reached the gateway (a record once uncertain stays so
	// until completed). It frees the transaction lock if this key and token
	// still hold it; repeating it is harmless. ErrFenced when the record is
	// missing, completed or claimed by another token.
	Release(ctx context.Context, scope, key, txn string, token int64, uncertain bool) error
	// Get reads a record without changing it.
	Get(ctx context.Context, scope, key string) (Record, error)
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
}
