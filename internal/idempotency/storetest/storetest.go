// Package storetest is the contract suite every idempotency.Store passes:
// Redis and the JetStream key-value bucket run the same cases, so that the
// worker cannot tell them apart.
package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/idempotency"
)

// Options tunes the suite to an implementation.
type Options struct {
	// Lease is the short lease of the cases that wait for a lease to end;
	// 0 means 200ms. A store on a slow backend may need a longer one.
	Lease time.Duration
	// Lose deletes the record of key in scope, and the transaction lock it
	// names, behind the store's back, as a Redis failover or restart that
	// loses the last writes does. Nil skips LostRecordFencesOldHolder.
	Lose func(t *testing.T, st idempotency.Store, scope, key string)
}

// long is the lease of cases in which no lease may end.
const long = time.Minute

// Run runs the contract suite. newStore returns a store of its own to each
// subtest (a fresh key prefix or bucket), whose cases run in parallel.
func Run(t *testing.T, newStore func(t *testing.T) idempotency.Store, opts Options) {
	if opts.Lease <= 0 {
		opts.Lease = 200 * time.Millisecond
	}
	s := &suite{newStore: newStore, lease: opts.Lease, lose: opts.Lose}
	cases := []struct {
		name string
		test func(t *testing.T)
	}{
		{"FirstClaimAcquires", s.firstClaimAcquires},
		{"LiveLeaseIsBusy", s.liveLeaseIsBusy},
		{"OtherFingerprintConflicts", s.otherFingerprintConflicts},
		{"CompletedReplaysOutcome", s.completedReplaysOutcome},
		{"StaleTokenIsFenced", s.staleTokenIsFenced},
		{"RepeatedWritesAreHarmless", s.repeatedWritesAreHarmless},
		{"ExpiredLeaseResumes", s.expiredLeaseResumes},
		{"ReleaseResumes", s.releaseResumes},
		{"RenewKeepsLease", s.renewKeepsLease},
		{"ScopesAreIndependent", s.scopesAreIndependent},
		{"TxnLockSerialises", s.txnLockSerialises},
		{"TxnLockBusyKeepsOwnRecord", s.txnLockBusyKeepsOwnRecord},
		{"TxnLockAfterExpiry", s.txnLockAfterExpiry},
		{"WrongTxnIsRefused", s.wrongTxnIsRefused},
		{"LostRecordFencesOldHolder", s.lostRecordFencesOldHolder},
		{"GetMissing", s.getMissing},
		{"InvalidRequests", s.invalidRequests},
		{"Ping", s.ping},
		{"ConcurrentClaimsOneKey", s.concurrentClaimsOneKey},
		{"ConcurrentClaimsOneTxn", s.concurrentClaimsOneTxn},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.test(t)
		})
	}
}

type suite struct {
	newStore func(t *testing.T) idempotency.Store
	lease    time.Duration
	lose     func(t *testing.T, st idempotency.Store, scope, key string)
}

// request is the claim most cases start from: key-1 of merchant-1, long lease.
func request() idempotency.ClaimRequest {
	return idempotency.ClaimRequest{
		Scope:       "merchant-1",
		Key:         "key-1",
		Fingerprint: "fp-1",
		CommandID:   "cmd-1",
		Holder:      "worker-a",
		Lease:       long,
	}
}

// with returns the request for another key of the same merchant.
func with(key string, txn string) idempotency.ClaimRequest {
	r := request()
	r.Key, r.Fingerprint, r.CommandID, r.TxnLock = key, "fp-"+key, "cmd-"+key, txn
	return r
}

func claim(t *testing.T, s idempotency.Store, r idempotency.ClaimRequest) idempotency.Claim {
	t.Helper()
	c, err := s.Claim(t.Context(), r)
	if err != nil {
		t.Fatalf("Claim(%s/%s) error = %v", r.Scope, r.Key, err)
	}
	return c
}

func claimWant(t *testing.T, s idempotency.Store, r idempotency.ClaimRequest, want idempotency.ClaimStatus) idempotency.Claim {
	t.Helper()
	c := claim(t, s, r)
	if c.Status != want {
		t.Fatalf("Claim(%s/%s by %s).Status = %v, want %v (record %+v)", r.Scope, r.Key, r.Holder, c.Status, want, c.Record)
	}
	return c
}

func get(t *testing.T, s idempotency.Store, scope, key string) idempotency.Record {
	t.Helper()
	r, err := s.Get(t.Context(), scope, key)
	if err != nil {
		t.Fatalf("Get(%s/%s) error = %v", scope, key, err)
	}
	return r
}

func wantMissing(t *testing.T, s idempotency.Store, scope, key string) {
	t.Helper()
	if r, err := s.Get(t.Context(), scope, key); !errors.Is(err, idempotency.ErrNotFound) {
		t.Fatalf("Get(%s/%s) = %+v, %v; want ErrNotFound", scope, key, r, err)
	}
}

func complete(t *testing.T, s idempotency.Store, scope, key, txn string, token int64) {
	t.Helper()
	if err := s.Complete(t.Context(), scope, key, txn, token, outcome("evt-"+key, `{"id":"evt"}`)); err != nil {
		t.Fatalf("Complete(%s/%s, token %d) error = %v", scope, key, token, err)
	}
}

func release(t *testing.T, s idempotency.Store, scope, key, txn string, token int64, uncertain bool) {
	t.Helper()
	if err := s.Release(t.Context(), scope, key, txn, token, uncertain); err != nil {
		t.Fatalf("Release(%s/%s, token %d, %t) error = %v", scope, key, token, uncertain, err)
	}
}

func outcome(id, event string) idempotency.Outcome {
	return idempotency.Outcome{Succeeded: true, EventID: id, Subject: "payments.evt.capture.succeeded", Event: json.RawMessage(event)}
}

// sameRecord compares records by their JSON form.
func sameRecord(t *testing.T, what string, got, want idempotency.Record) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("%s = %s, want %s", what, g, w)
	}
}

// wantRetryAfter checks a Busy claim's RetryAfter is in (0, lease].
func wantRetryAfter(t *testing.T, c idempotency.Claim, lease time.Duration) {
	t.Helper()
	if c.RetryAfter <= 0 || c.RetryAfter > lease {
		t.Errorf("Claim.RetryAfter = %v, want in (0, %v]", c.RetryAfter, lease)
	}
}

// wantTakeoverToken checks the token of a claim that took over a record
// whose token was prev: it is the store's clock in milliseconds at the claim
// (the record's UpdatedAt) or prev + 1, whichever is larger.
func wantTakeoverToken(t *testing.T, what string, rec idempotency.Record, prev int64) {
	t.Helper()
	if want := max(prev+1, rec.UpdatedAt.UnixMilli()); rec.Token != want || rec.Token <= prev {
		t.Errorf("%s: Token = %d, want %d: max(previous token %d + 1, UpdatedAt %v in ms), above the previous token",
			what, rec.Token, want, prev, rec.UpdatedAt)
	}
}

// outlive sleeps until a lease granted now has surely ended.
func (s *suite) outlive() { time.Sleep(s.lease + s.lease/2 + 50*time.Millisecond) }

func (s *suite) firstClaimAcquires(t *testing.T) {
	st := s.newStore(t)
	r := with("key-1", "txn-1")
	before := time.Now()
	c := claim(t, st, r)
	rec := c.Record
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"Status", c.Status, idempotency.Acquired},
		{"Record.State", rec.State, idempotency.StateInProgress},
		{"Record.Token > 0", rec.Token > 0, true},
		// A new record's token is the store's clock at the claim.
		{"Record.Token == Record.CreatedAt in ms", rec.Token == rec.CreatedAt.UnixMilli(), true},
		{"Record.Claims", rec.Claims, 1},
		{"Record.Fingerprint", rec.Fingerprint, r.Fingerprint},
		{"Record.CommandID", rec.CommandID, r.CommandID},
		{"Record.Holder", rec.Holder, r.Holder},
		{"Record.TxnLock", rec.TxnLock, r.TxnLock},
		{"Record.Uncertain", rec.Uncertain, false},
		{"Record.Outcome == nil", rec.Outcome == nil, true},
		{"Record.LeaseUntil - Record.UpdatedAt", rec.LeaseUntil.Sub(rec.UpdatedAt), r.Lease},
		{"Record.CreatedAt == Record.UpdatedAt", rec.CreatedAt.Equal(rec.UpdatedAt), true},
	} {
		if f.got != f.want {
			t.Errorf("Claim(new key): %s = %v, want %v (token %d)", f.name, f.got, f.want, rec.Token)
		}
	}
	// The store's clock (Redis's or the worker's) is this machine's.
	if d := rec.CreatedAt.Sub(before); d < -5*time.Second || d > 5*time.Second {
		t.Errorf("Record.CreatedAt = %v, want within 5s of %v", rec.CreatedAt, before)
	}
	sameRecord(t, "Get after Claim", get(t, st, r.Scope, r.Key), rec)
}

func (s *suite) liveLeaseIsBusy(t *testing.T) {
	for _, tc := range []struct {
		name, holder string
	}{
		{"OtherHolder", "worker-b"},
		// A second delivery in the same worker must not run in parallel.
		{"SameHolder", "worker-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.newStore(t)
			first := claimWant(t, st, request(), idempotency.Acquired)
			r := request()
			r.Holder, r.CommandID = tc.holder, "cmd-again"
			c := claimWant(t, st, r, idempotency.Busy)
			wantRetryAfter(t, c, long)
			sameRecord(t, "Busy Claim.Record", c.Record, first.Record)
			sameRecord(t, "Get after Busy claim", get(t, st, r.Scope, r.Key), first.Record)
		})
	}
}

func (s *suite) otherFingerprintConflicts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, st idempotency.Store, token int64)
	}{
		{"InProgress", func(t *testing.T, st idempotency.Store, token int64) {}},
		{"Completed", func(t *testing.T, st idempotency.Store, token int64) {
			complete(t, st, "merchant-1", "key-1", "txn-1", token)
		}},
		{"Released", func(t *testing.T, st idempotency.Store, token int64) {
			release(t, st, "merchant-1", "key-1", "txn-1", token, false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.newStore(t)
			token := claimWant(t, st, with("key-1", "txn-1"), idempotency.Acquired).Record.Token
			tc.setup(t, st, token)
			before := get(t, st, "merchant-1", "key-1")
			r := with("key-1", "txn-2")
			r.Fingerprint = "fp-other"
			c := claimWant(t, st, r, idempotency.Conflict)
			sameRecord(t, "Conflict Claim.Record", c.Record, before)
			sameRecord(t, "Get after Conflict", get(t, st, r.Scope, r.Key), before)
			// The conflicting claim took no transaction lock.
			claimWant(t, st, with("key-2", "txn-2"), idempotency.Acquired)
		})
	}
}

func (s *suite) completedReplaysOutcome(t *testing.T) {
	for _, tc := range []struct {
		name, event string
	}{
		{"Compact", `{"specversion":"1.0","id":"evt-1","data":{"amount":1000}}`},
		{"Spaced", "{\n  \"id\": \"evt-1\",\n  \"data\": { \"amount\" : 1000 }\n}"},
		{"HTMLAndUnicode", `{"note":"<b>&amp;</b> café \u00e9 \/","n":null}`},
		{"Numbers", `{"big":123456789012345678901234567890,"f":1.0,"e":1e-7,"neg":-0}`},
		{"Array", `[1,"two",{"three":3}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.newStore(t)
			token := claimWant(t, st, with("key-1", "txn-1"), idempotency.Acquired).Record.Token
			out := idempotency.Outcome{Succeeded: true, EventID: "evt-1", Subject: "payments.evt.capture.succeeded", Event: json.RawMessage(tc.event)}
			if err := st.Complete(t.Context(), "merchant-1", "key-1", "txn-1", token, out); err != nil {
				t.Fatalf("Complete(token %d) error = %v", token, err)
			}
			r := with("key-1", "txn-1")
			r.Holder, r.CommandID = "worker-b", "cmd-redelivered"
			c := claimWant(t, st, r, idempotency.Completed)
			for what, rec := range map[string]idempotency.Record{"Claim.Record": c.Record, "Get": get(t, st, r.Scope, r.Key)} {
				if rec.Outcome == nil {
					t.Fatalf("%s.Outcome = nil, want %+v", what, out)
				}
				if got := string(rec.Outcome.Event); got != tc.event {
					t.Errorf("%s.Outcome.Event = %q, want %q (byte for byte)", what, got, tc.event)
				}
				if got, want := *rec.Outcome, out; got.Succeeded != want.Succeeded || got.EventID != want.EventID || got.Subject != want.Subject {
					t.Errorf("%s.Outcome = %+v, want %+v", what, got, want)
				}
				if rec.State != idempotency.StateCompleted || rec.Holder != "" || !rec.LeaseUntil.IsZero() || rec.Token != token || rec.Claims != 1 || rec.CommandID != "cmd-key-1" {
					t.Errorf("%s = state %q, holder %q, lease until %v, token %d, claims %d, command %q; want completed, no holder, no lease, token %d, claims 1, command cmd-key-1",
						what, rec.State, rec.Holder, rec.LeaseUntil, rec.Token, rec.Claims, rec.CommandID, token)
				}
			}
			// Completion freed the transaction lock.
			claimWant(t, st, with("key-2", "txn-1"), idempotency.Acquired)
		})
	}
}

// op is a fencing write of a case table.
type op struct {
	name string
	do   func(t *testing.T, st idempotency.Store, key, txn string, token int64) error
}

var (
	renewOp = op{"Renew", func(t *testing.T, st idempotency.Store, key, txn string, token int64) error {
		return st.Renew(t.Context(), "merchant-1", key, txn, token, long)
	}}
	completeOp = op{"Complete", func(t *testing.T, st idempotency.Store, key, txn string, token int64) error {
		return st.Complete(t.Context(), "merchant-1", key, txn, token, outcome("evt-stale", `{"stale":true}`))
	}}
	releaseOp = op{"Release", func(t *testing.T, st idempotency.Store, key, txn string, token int64) error {
		return st.Release(t.Context(), "merchant-1", key, txn, token, false)
	}}
	fencingOps = []op{renewOp, completeOp, releaseOp}
)

func (s *suite) staleTokenIsFenced(t *testing.T) {
	type state struct {
		name string
		// setup leaves key-1 claimed (returning the claim's token) or absent
		// (returning 0).
		setup func(t *testing.T, st idempotency.Store) int64
		// stale is the token written with, from setup's.
		stale func(token int64) int64
	}
	claimed := func(t *testing.T, st idempotency.Store) int64 {
		return claimWant(t, st, request(), idempotency.Acquired).Record.Token
	}
	states := []state{
		{"InProgressWrongToken", claimed, func(token int64) int64 { return token + 1 }},
		{"InProgressOlderToken", claimed, func(token int64) int64 { return token - 1 }},
		{"InProgressZeroToken", claimed, func(int64) int64 { return 0 }},
		{"Completed", func(t *testing.T, st idempotency.Store) int64 {
			token := claimed(t, st)
			complete(t, st, "merchant-1", "key-1", "", token)
			return token
		}, func(token int64) int64 { return token }},
		{"Missing", func(t *testing.T, st idempotency.Store) int64 { return 0 },
			func(int64) int64 { return time.Now().UnixMilli() }},
	}
	for _, sc := range states {
		for _, o := range fencingOps {
			t.Run(sc.name+"/"+o.name, func(t *testing.T) {
				st := s.newStore(t)
				token := sc.stale(sc.setup(t, st))
				before, beforeErr := st.Get(t.Context(), "merchant-1", "key-1")
				if err := o.do(t, st, "key-1", "", token); !errors.Is(err, idempotency.ErrFenced) {
					t.Fatalf("%s(token %d) error = %v, want ErrFenced", o.name, token, err)
				}
				after, afterErr := st.Get(t.Context(), "merchant-1", "key-1")
				if !errors.Is(afterErr, beforeErr) {
					t.Fatalf("Get after fenced %s error = %v, want %v (a lost record is never resurrected)", o.name, afterErr, beforeErr)
				}
				sameRecord(t, "Get after fenced "+o.name, after, before)
			})
		}
	}
	// A released key may not be completed or renewed by the token that gave it back.
	for _, o := range []op{renewOp, completeOp} {
		t.Run("Released/"+o.name, func(t *testing.T) {
			st := s.newStore(t)
			token := claimWant(t, st, request(), idempotency.Acquired).Record.Token
			release(t, st, "merchant-1", "key-1", "", token, false)
			if err := o.do(t, st, "key-1", "", token); !errors.Is(err, idempotency.ErrFenced) {
				t.Fatalf("%s(token %d) after Release error = %v, want ErrFenced", o.name, token, err)
			}
		})
	}
}

// repeatedWritesAreHarmless covers a write repeated because its reply was
// lost: the same Complete or Release again succeeds and changes nothing.
func (s *suite) repeatedWritesAreHarmless(t *testing.T) {
	t.Run("Complete", func(t *testing.T) {
		st := s.newStore(t)
		token := claimWant(t, st, request(), idempotency.Acquired).Record.Token
		out := outcome("evt-1", `{"id":"evt-1"}`)
		for i := range 2 {
			if err := st.Complete(t.Context(), "merchant-1", "key-1", "", token, out); err != nil {
				t.Fatalf("Complete #%d error = %v, want nil", i+1, err)
			}
		}
		if got := get(t, st, "merchant-1", "key-1"); got.Outcome == nil || got.Outcome.EventID != "evt-1" {
			t.Errorf("Get.Outcome = %+v, want event evt-1", got.Outcome)
		}
		// Another outcome under the same token is not a repetition.
		if err := st.Complete(t.Context(), "merchant-1", "key-1", "", token, outcome("evt-2", `{}`)); !errors.Is(err, idempotency.ErrFenced) {
			t.Errorf("Complete(other outcome) error = %v, want ErrFenced", err)
		}
	})
	t.Run("Release", func(t *testing.T) {
		st := s.newStore(t)
		token := claimWant(t, st, request(), idempotency.Acquired).Record.Token
		release(t, st, "merchant-1", "key-1", "", token, true)
		release(t, st, "merchant-1", "key-1", "", token, false)
		c := claimWant(t, st, request(), idempotency.Resumed)
		if !c.Record.Uncertain || c.Record.Claims != 2 {
			t.Errorf("Claim after two releases = uncertain %t, claims %d; want true, 2", c.Record.Uncertain, c.Record.Claims)
		}
		wantTakeoverToken(t, "Claim after two releases", c.Record, token)
	})
}

func (s *suite) expiredLeaseResumes(t *testing.T) {
	st := s.newStore(t)
	r := with("key-1", "txn-1")
	r.Lease = s.lease
	old := claimWant(t, st, r, idempotency.Acquired).Record.Token
	s.outlive()

	r2 := with("key-1", "txn-1")
	r2.Holder, r2.CommandID = "worker-b", "cmd-redelivered"
	c := claimWant(t, st, r2, idempotency.Resumed)
	rec := c.Record
	if rec.Claims != 2 || !rec.Uncertain || rec.Holder != "worker-b" || rec.CommandID != "cmd-key-1" || rec.State != idempotency.StateInProgress {
		t.Errorf("Claim after expiry = claims %d, uncertain %t, holder %q, command %q, state %q; want 2, true, worker-b, cmd-key-1, in_progress",
			rec.Claims, rec.Uncertain, rec.Holder, rec.CommandID, rec.State)
	}
	wantTakeoverToken(t, "Claim after expiry", rec, old)
	if !c.Settle {
		t.Errorf("Claim after expiry: Settle = false, want true (the dead holder may still have a call in flight)")
	}
	for _, o := range fencingOps {
		if err := o.do(t, st, "key-1", "txn-1", old); !errors.Is(err, idempotency.ErrFenced) {
			t.Errorf("old holder's %s(token %d) error = %v, want ErrFenced", o.name, old, err)
		}
	}
	sameRecord(t, "Get after the old holder's writes", get(t, st, "merchant-1", "key-1"), rec)
	complete(t, st, "merchant-1", "key-1", "txn-1", rec.Token)
	claimWant(t, st, r, idempotency.Completed)
}

func (s *suite) releaseResumes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		expireFirst   bool // the key is resumed after an expiry, then released
		uncertain     bool
		wantUncertain bool
		wantClaims    int
	}{
		{"Certain", false, false, false, 2},
		{"Uncertain", false, true, true, 2},
		{"UncertainStays", true, false, true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.newStore(t)
			r := with("key-1", "txn-1")
			first := r
			if tc.expireFirst {
				first.Lease = s.lease
			}
			token := claimWant(t, st, first, idempotency.Acquired).Record.Token
			if tc.expireFirst {
				s.outlive()
				rec := claimWant(t, st, r, idempotency.Resumed).Record
				wantTakeoverToken(t, "Claim after expiry", rec, token)
				token = rec.Token
			}
			release(t, st, "merchant-1", "key-1", "txn-1", token, tc.uncertain)
			rec := get(t, st, "merchant-1", "key-1")
			if rec.State != idempotency.StateReleased || rec.Holder != "" || !rec.LeaseUntil.IsZero() || rec.Uncertain != tc.wantUncertain {
				t.Errorf("Get after Release = state %q, holder %q, lease until %v, uncertain %t; want released, no holder, no lease, %t",
					rec.State, rec.Holder, rec.LeaseUntil, rec.Uncertain, tc.wantUncertain)
			}
			// Release freed the transaction lock.
			other := claimWant(t, st, with("key-2", "txn-1"), idempotency.Acquired)
			complete(t, st, "merchant-1", "key-2", "txn-1", other.Record.Token)

			r.Holder = "worker-b"
			c := claimWant(t, st, r, idempotency.Resumed)
			if c.Record.Uncertain != tc.wantUncertain || c.Record.Claims != tc.wantClaims || c.Record.Holder != "worker-b" {
				t.Errorf("Claim after Release = uncertain %t, claims %d, holder %q; want %t, %d, worker-b",
					c.Record.Uncertain, c.Record.Claims, c.Record.Holder, tc.wantUncertain, tc.wantClaims)
			}
			wantTakeoverToken(t, "Claim after Release", c.Record, token)
			if c.Settle {
				t.Errorf("Claim after Release: Settle = true, want false (a releaser has no call in flight)")
			}
		})
	}
}

func (s *suite) renewKeepsLease(t *testing.T) {
	st := s.newStore(t)
	r := with("key-1", "txn-1")
	r.Lease = s.lease
	first := claimWant(t, st, r, idempotency.Acquired).Record
	deadline := time.Now().Add(3 * s.lease)
	for time.Now().Before(deadline) {
		time.Sleep(s.lease / 5)
		if err := st.Renew(t.Context(), "merchant-1", "key-1", "txn-1", first.Token, s.lease); err != nil {
			t.Fatalf("Renew(token %d) error = %v", first.Token, err)
		}
	}
	rec := get(t, st, "merchant-1", "key-1")
	if !rec.LeaseUntil.After(first.LeaseUntil.Add(2 * s.lease)) {
		t.Errorf("LeaseUntil after renewals = %v, want after %v", rec.LeaseUntil, first.LeaseUntil.Add(2*s.lease))
	}
	if rec.Token != first.Token || rec.Claims != 1 {
		t.Errorf("after renewals token, claims = %d, %d; want %d (unchanged), 1", rec.Token, rec.Claims, first.Token)
	}
	r2 := with("key-1", "txn-1")
	r2.Holder = "worker-b"
	claimWant(t, st, r2, idempotency.Busy)
	// The transaction lock was renewed too.
	claimWant(t, st, with("key-2", "txn-1"), idempotency.Busy)

	s.outlive()
	wantTakeoverToken(t, "Claim after the renewals stopped", claimWant(t, st, r2, idempotency.Resumed).Record, first.Token)
}

func (s *suite) scopesAreIndependent(t *testing.T) {
	st := s.newStore(t)
	// Characters KV keys and Redis key syntax give meaning to, in keys and
	// transactions.
	key, txn := "order.1/a:b*>{x} é", "txn.1 */>"
	var tokens []int64
	for i, scope := range []string{"merchant-1", "merchant.2 x/y", "merchant-1:key"} {
		r := request()
		r.Scope, r.Key, r.TxnLock = scope, key, txn
		r.Fingerprint = fmt.Sprintf("fp-%d", i)
		c := claimWant(t, st, r, idempotency.Acquired)
		tokens = append(tokens, c.Record.Token)
	}
	for _, token := range tokens {
		if token <= 0 {
			t.Errorf("tokens of one key in three scopes = %v, want each a first claim's (> 0)", tokens)
			break
		}
	}
	if err := st.Complete(t.Context(), "merchant-1", key, txn, tokens[0], outcome("evt-1", `{}`)); err != nil {
		t.Fatalf("Complete(merchant-1) error = %v", err)
	}
	if got := get(t, st, "merchant.2 x/y", key); got.State != idempotency.StateInProgress || got.Fingerprint != "fp-1" {
		t.Errorf("other scope after Complete = state %q, fingerprint %q; want in_progress, fp-1", got.State, got.Fingerprint)
	}
	wantMissing(t, st, "merchant-2", key)
}

func (s *suite) txnLockSerialises(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lease time.Duration
		free  func(t *testing.T, st idempotency.Store, token int64)
	}{
		{"FreedByComplete", long, func(t *testing.T, st idempotency.Store, token int64) {
			complete(t, st, "merchant-1", "key-a", "txn-1", token)
		}},
		{"FreedByRelease", long, func(t *testing.T, st idempotency.Store, token int64) {
			release(t, st, "merchant-1", "key-a", "txn-1", token, true)
		}},
		{"FreedByExpiry", s.lease, func(t *testing.T, st idempotency.Store, token int64) { s.outlive() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.newStore(t)
			a := with("key-a", "txn-1")
			a.Lease = tc.lease
			token := claimWant(t, st, a, idempotency.Acquired).Record.Token

			b := with("key-b", "txn-1")
			c := claimWant(t, st, b, idempotency.Busy)
			wantRetryAfter(t, c, tc.lease)
			if c.Record.Token != 0 {
				t.Errorf("Busy Claim.Record = %+v, want the zero record (key-b has none)", c.Record)
			}
			wantMissing(t, st, "merchant-1", "key-b")
			// Another transaction is free.
			claimWant(t, st, with("key-c", "txn-2"), idempotency.Acquired)

			tc.free(t, st, token)
			claimWant(t, st, b, idempotency.Acquired)
			claimWant(t, st, with("key-d", "txn-1"), idempotency.Busy)
		})
	}
}

// txnLockBusyKeepsOwnRecord: a key busy on its transaction gets its own
// record back, unchanged.
func (s *suite) txnLockBusyKeepsOwnRecord(t *testing.T) {
	st := s.newStore(t)
	b := with("key-b", "txn-1")
	token := claimWant(t, st, b, idempotency.Acquired).Record.Token
	release(t, st, "merchant-1", "key-b", "txn-1", token, true)
	released := get(t, st, "merchant-1", "key-b")

	claimWant(t, st, with("key-a", "txn-1"), idempotency.Acquired)
	c := claimWant(t, st, b, idempotency.Busy)
	wantRetryAfter(t, c, long)
	sameRecord(t, "Busy Claim.Record", c.Record, released)
	sameRecord(t, "Get after Busy claim", get(t, st, "merchant-1", "key-b"), released)
}

// txnLockAfterExpiry: when A's lease ends, B takes the transaction; A,
// still alive, may no longer renew, and A's Complete (its token still the
// record's) does not free B's lock.
func (s *suite) txnLockAfterExpiry(t *testing.T) {
	st := s.newStore(t)
	a := with("key-a", "txn-1")
	a.Lease = s.lease
	tokenA := claimWant(t, st, a, idempotency.Acquired).Record.Token
	s.outlive()
	tokenB := claimWant(t, st, with("key-b", "txn-1"), idempotency.Acquired).Record.Token

	if err := st.Renew(t.Context(), "merchant-1", "key-a", "txn-1", tokenA, long); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("Renew(key-a) after key-b took the transaction error = %v, want ErrFenced", err)
	}
	complete(t, st, "merchant-1", "key-a", "txn-1", tokenA)
	claimWant(t, st, with("key-c", "txn-1"), idempotency.Busy)
	complete(t, st, "merchant-1", "key-b", "txn-1", tokenB)
	claimWant(t, st, with("key-c", "txn-1"), idempotency.Acquired)

	// A key whose own lease ended takes its transaction back when resumed.
	d := with("key-d", "txn-2")
	d.Lease = s.lease
	claimWant(t, st, d, idempotency.Acquired)
	s.outlive()
	claimWant(t, st, with("key-d", "txn-2"), idempotency.Resumed)
	claimWant(t, st, with("key-e", "txn-2"), idempotency.Busy)
}

// lostRecordFencesOldHolder: the store loses a record (and its transaction
// lock) behind its holder's back, as a Redis failover or restart that loses
// the last writes does. The key is claimed afresh with a larger token, so the
// old holder's writes, still naming its token, are fenced instead of landing
// on the new claim.
func (s *suite) lostRecordFencesOldHolder(t *testing.T) {
	if s.lose == nil {
		t.Skip("Options.Lose is nil: the store cannot lose a record on demand")
	}
	st := s.newStore(t)
	r := with("key-1", "txn-1")
	a := claimWant(t, st, r, idempotency.Acquired).Record
	if a.Token <= 0 {
		t.Fatalf("first Claim.Record.Token = %d, want > 0", a.Token)
	}
	s.lose(t, st, r.Scope, r.Key)
	wantMissing(t, st, r.Scope, r.Key)
	// A loss is never instantaneous (a failover takes seconds): let the
	// store's clock, which the new token is read from, move on.
	time.Sleep(10 * time.Millisecond)

	r2 := with("key-1", "txn-1")
	r2.Holder, r2.CommandID = "worker-b", "cmd-redelivered"
	b := claimWant(t, st, r2, idempotency.Acquired).Record
	if b.Token <= a.Token || b.Claims != 1 || b.Holder != "worker-b" || b.CommandID != "cmd-redelivered" {
		t.Fatalf("Claim after the loss = token %d, claims %d, holder %q, command %q; want a token above the lost record's %d, 1, worker-b, cmd-redelivered",
			b.Token, b.Claims, b.Holder, b.CommandID, a.Token)
	}
	for _, o := range fencingOps {
		if err := o.do(t, st, r.Key, r.TxnLock, a.Token); !errors.Is(err, idempotency.ErrFenced) {
			t.Errorf("old holder's %s(token %d) on the new claim (token %d) error = %v, want ErrFenced", o.name, a.Token, b.Token, err)
		}
	}
	sameRecord(t, "Get after the old holder's writes", get(t, st, r.Scope, r.Key), b)
	// The old holder's Release did not free the new holder's transaction lock.
	claimWant(t, st, with("key-2", "txn-1"), idempotency.Busy)

	complete(t, st, r.Scope, r.Key, r.TxnLock, b.Token)
	if c := claimWant(t, st, r, idempotency.Completed); c.Record.Token != b.Token || c.Record.Outcome == nil || c.Record.Outcome.EventID != "evt-key-1" {
		t.Errorf("Claim after the new holder's Complete = token %d, outcome %+v; want token %d, event evt-key-1", c.Record.Token, c.Record.Outcome, b.Token)
	}
	claimWant(t, st, with("key-2", "txn-1"), idempotency.Acquired)
}

// wrongTxnIsRefused: Renew, Complete and Release name the transaction their
// claim locked; naming another (or none, or one when the claim locked none)
// is a caller's bug, refused with an error that is not ErrFenced and that
// changes nothing. The right transaction still works afterwards.
func (s *suite) wrongTxnIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name          string
		locked, named string
	}{
		{"OtherTxn", "txn-1", "txn-2"},
		{"NoTxnNamed", "txn-1", ""},
		{"TxnNamedNoneLocked", "", "txn-1"},
	} {
		for _, o := range fencingOps {
			t.Run(tc.name+"/"+o.name, func(t *testing.T) {
				st := s.newStore(t)
				r := with("key-1", tc.locked)
				token := claimWant(t, st, r, idempotency.Acquired).Record.Token
				before := get(t, st, r.Scope, r.Key)
				err := o.do(t, st, r.Key, tc.named, token)
				if err == nil || errors.Is(err, idempotency.ErrFenced) {
					t.Fatalf("%s(txn %q) of a claim that locked %q error = %v, want an error other than ErrFenced", o.name, tc.named, tc.locked, err)
				}
				sameRecord(t, "Get after "+o.name+" with the wrong txn", get(t, st, r.Scope, r.Key), before)
				if tc.locked != "" {
					// The lock is still held by key-1.
					claimWant(t, st, with("key-2", tc.locked), idempotency.Busy)
				}
				if err := o.do(t, st, r.Key, tc.locked, token); err != nil {
					t.Errorf("%s(txn %q) after the refusal error = %v, want nil", o.name, tc.locked, err)
				}
			})
		}
	}
}

func (s *suite) getMissing(t *testing.T) {
	st := s.newStore(t)
	wantMissing(t, st, "merchant-1", "key-1")
}

func (s *suite) invalidRequests(t *testing.T) {
	st := s.newStore(t)
	for _, tc := range []struct {
		name string
		edit func(r *idempotency.ClaimRequest)
	}{
		{"EmptyScope", func(r *idempotency.ClaimRequest) { r.Scope = "" }},
		{"EmptyKey", func(r *idempotency.ClaimRequest) { r.Key = "" }},
		{"NoLease", func(r *idempotency.ClaimRequest) { r.Lease = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request()
			tc.edit(&r)
			c, err := st.Claim(t.Context(), r)
			if err == nil || errors.Is(err, idempotency.ErrFenced) {
				t.Errorf("Claim(%s) = %+v, %v; want an error other than ErrFenced", tc.name, c, err)
			}
		})
	}
	wantMissing(t, st, "merchant-1", "key-1")
}

func (s *suite) ping(t *testing.T) {
	st := s.newStore(t)
	if err := st.Ping(t.Context()); err != nil {
		t.Errorf("Ping() error = %v, want nil", err)
	}
}

const workers = 20

func (s *suite) concurrentClaimsOneKey(t *testing.T) {
	st := s.newStore(t)
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		counts [int(idempotency.Busy) + 1]atomic.Int32
		token  atomic.Int64 // the acquired claim's
		errs   = make(chan error, workers)
	)
	for i := range workers {
		wg.Go(func() {
			r := with("key-1", "txn-1")
			r.Holder = fmt.Sprintf("worker-%d", i)
			<-start
			c, err := st.Claim(t.Context(), r)
			if err != nil {
				errs <- err
				return
			}
			counts[c.Status].Add(1)
			if c.Status == idempotency.Acquired {
				token.Store(c.Record.Token)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Claim error = %v", err)
	}
	if got, busy := counts[idempotency.Acquired].Load(), counts[idempotency.Busy].Load(); got != 1 || busy != workers-1 {
		t.Errorf("%d concurrent claims of one key: %d acquired, %d busy; want 1, %d", workers, got, busy, workers-1)
	}
	if rec := get(t, st, "merchant-1", "key-1"); rec.Token != token.Load() || rec.Token <= 0 || rec.Claims != 1 {
		t.Errorf("record after concurrent claims: token %d, claims %d; want %d (the acquired claim's), 1", rec.Token, rec.Claims, token.Load())
	}
}

func (s *suite) concurrentClaimsOneTxn(t *testing.T) {
	st := s.newStore(t)
	var (
		wg        sync.WaitGroup
		start     = make(chan struct{})
		inFlight  atomic.Int32
		maxFlight atomic.Int32
		done      atomic.Int32
		errs      = make(chan error, workers)
	)
	deadline := time.Now().Add(20 * time.Second)
	for i := range workers {
		wg.Go(func() {
			r := with(fmt.Sprintf("key-%d", i), "txn-1")
			<-start
			for {
				if time.Now().After(deadline) {
					errs <- fmt.Errorf("%s never acquired txn-1", r.Key)
					return
				}
				c, err := st.Claim(t.Context(), r)
				if err != nil {
					errs <- err
					return
				}
				if c.Status == idempotency.Busy {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				if c.Status != idempotency.Acquired {
					errs <- fmt.Errorf("Claim(%s).Status = %v, want acquired or busy", r.Key, c.Status)
					return
				}
				n := inFlight.Add(1)
				for m := maxFlight.Load(); n > m && !maxFlight.CompareAndSwap(m, n); m = maxFlight.Load() {
				}
				time.Sleep(time.Millisecond)
				inFlight.Add(-1)
				if err := st.Complete(t.Context(), r.Scope, r.Key, r.TxnLock, c.Record.Token, outcome("evt", `{}`)); err != nil {
					errs <- err
					return
				}
				done.Add(1)
				return
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := maxFlight.Load(); got != 1 {
		t.Errorf("keys holding txn-1 at once = %d at most, want 1", got)
	}
	if got := done.Load(); got != workers {
		t.Errorf("keys completed = %d, want %d", got, workers)
	}
}
