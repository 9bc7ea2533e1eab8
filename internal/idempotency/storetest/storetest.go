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
}

// long is the lease of cases in which no lease may end.
const long = time.Minute

// Run runs the contract suite. newStore returns a store of its own to each
// subtest (a fresh key prefix or bucket), whose cases run in parallel.
func Run(t *testing.T, newStore func(t *testing.T) idempotency.Store, opts Options) {
	if opts.Lease <= 0 {
		opts.Lease = 200 * time.Millisecond
	}
	s := &suite{newStore: newStore, lease: opts.Lease}
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

func complete(t *testing.T, s idempotency.Store, scope, key string, token int64) {
	t.Helper()
	if err := s.Complete(t.Context(), scope, key, token, outcome("evt-"+key, `{"id":"evt"}`)); err != nil {
		t.Fatalf("Complete(%s/%s, token %d) error = %v", scope, key, token, err)
	}
}

func release(t *testing.T, s idempotency.Store, scope, key string, token int64, uncertain bool) {
	t.Helper()
	if err := s.Release(t.Context(), scope, key, token, uncertain); err != nil {
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
		{"Record.Token", rec.Token, int64(1)},
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
			t.Errorf("Claim(new key): %s = %v, want %v", f.name, f.got, f.want)
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
		setup func(t *testing.T, st idempotency.Store)
	}{
		{"InProgress", func(t *testing.T, st idempotency.Store) {}},
		{"Completed", func(t *testing.T, st idempotency.Store) { complete(t, st, "merchant-1", "key-1", 1) }},
		{"Released", func(t *testing.T, st idempotency.Store) { release(t, st, "merchant-1", "key-1", 1, false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.newStore(t)
			claimWant(t, st, with("key-1", "txn-1"), idempotency.Acquired)
			tc.setup(t, st)
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
			claimWant(t, st, with("key-1", "txn-1"), idempotency.Acquired)
			out := idempotency.Outcome{Succeeded: true, EventID: "evt-1", Subject: "payments.evt.capture.succeeded", Event: json.RawMessage(tc.event)}
			if err := st.Complete(t.Context(), "merchant-1", "key-1", 1, out); err != nil {
				t.Fatalf("Complete(token 1) error = %v", err)
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
				if rec.State != idempotency.StateCompleted || rec.Holder != "" || !rec.LeaseUntil.IsZero() || rec.Token != 1 || rec.CommandID != "cmd-key-1" {
					t.Errorf("%s = state %q, holder %q, lease until %v, token %d, command %q; want completed, no holder, no lease, token 1, command cmd-key-1",
						what, rec.State, rec.Holder, rec.LeaseUntil, rec.Token, rec.CommandID)
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
	do   func(t *testing.T, st idempotency.Store, key string, token int64) error
}

var (
	renewOp = op{"Renew", func(t *testing.T, st idempotency.Store, key string, token int64) error {
		return st.Renew(t.Context(), "merchant-1", key, token, long)
	}}
	completeOp = op{"Complete", func(t *testing.T, st idempotency.Store, key string, token int64) error {
		return st.Complete(t.Context(), "merchant-1", key, token, outcome("evt-stale", `{"stale":true}`))
	}}
	releaseOp = op{"Release", func(t *testing.T, st idempotency.Store, key string, token int64) error {
		return st.Release(t.Context(), "merchant-1", key, token, false)
	}}
	fencingOps = []op{renewOp, completeOp, releaseOp}
)

func (s *suite) staleTokenIsFenced(t *testing.T) {
	type state struct {
		name  string
		setup func(t *testing.T, st idempotency.Store) // leaves key-1 with token 1 or absent
		token int64
	}
	states := []state{
		{"InProgressWrongToken", func(t *testing.T, st idempotency.Store) {
			claimWant(t, st, request(), idempotency.Acquired)
		}, 2},
		{"InProgressZeroToken", func(t *testing.T, st idempotency.Store) {
			claimWant(t, st, request(), idempotency.Acquired)
		}, 0},
		{"Completed", func(t *testing.T, st idempotency.Store) {
			claimWant(t, st, request(), idempotency.Acquired)
			complete(t, st, "merchant-1", "key-1", 1)
		}, 1},
		{"Missing", func(t *testing.T, st idempotency.Store) {}, 1},
	}
	for _, sc := range states {
		for _, o := range fencingOps {
			t.Run(sc.name+"/"+o.name, func(t *testing.T) {
				st := s.newStore(t)
				sc.setup(t, st)
				before, beforeErr := st.Get(t.Context(), "merchant-1", "key-1")
				if err := o.do(t, st, "key-1", sc.token); !errors.Is(err, idempotency.ErrFenced) {
					t.Fatalf("%s(token %d) error = %v, want ErrFenced", o.name, sc.token, err)
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
			claimWant(t, st, request(), idempotency.Acquired)
			release(t, st, "merchant-1", "key-1", 1, false)
			if err := o.do(t, st, "key-1", 1); !errors.Is(err, idempotency.ErrFenced) {
				t.Fatalf("%s(token 1) after Release error = %v, want ErrFenced", o.name, err)
			}
		})
	}
}

// repeatedWritesAreHarmless covers a write repeated because its reply was
// lost: the same Complete or Release again succeeds and changes nothing.
func (s *suite) repeatedWritesAreHarmless(t *testing.T) {
	t.Run("Complete", func(t *testing.T) {
		st := s.newStore(t)
		claimWant(t, st, request(), idempotency.Acquired)
		out := outcome("evt-1", `{"id":"evt-1"}`)
		for i := range 2 {
			if err := st.Complete(t.Context(), "merchant-1", "key-1", 1, out); err != nil {
				t.Fatalf("Complete #%d error = %v, want nil", i+1, err)
			}
		}
		if got := get(t, st, "merchant-1", "key-1"); got.Outcome == nil || got.Outcome.EventID != "evt-1" {
			t.Errorf("Get.Outcome = %+v, want event evt-1", got.Outcome)
		}
		// Another outcome under the same token is not a repetition.
		if err := st.Complete(t.Context(), "merchant-1", "key-1", 1, outcome("evt-2", `{}`)); !errors.Is(err, idempotency.ErrFenced) {
			t.Errorf("Complete(other outcome) error = %v, want ErrFenced", err)
		}
	})
	t.Run("Release", func(t *testing.T) {
		st := s.newStore(t)
		claimWant(t, st, request(), idempotency.Acquired)
		release(t, st, "merchant-1", "key-1", 1, true)
		release(t, st, "merchant-1", "key-1", 1, false)
		c := claimWant(t, st, request(), idempotency.Resumed)
		if !c.Record.Uncertain || c.Record.Token != 2 {
			t.Errorf("Claim after two releases = uncertain %t, token %d; want true, 2", c.Record.Uncertain, c.Record.Token)
		}
	})
}

func (s *suite) expiredLeaseResumes(t *testing.T) {
	st := s.newStore(t)
	r := with("key-1", "txn-1")
	r.Lease = s.lease
	claimWant(t, st, r, idempotency.Acquired)
	s.outlive()

	r2 := with("key-1", "txn-1")
	r2.Holder, r2.CommandID = "worker-b", "cmd-redelivered"
	c := claimWant(t, st, r2, idempotency.Resumed)
	rec := c.Record
	if rec.Token != 2 || rec.Claims != 2 || !rec.Uncertain || rec.Holder != "worker-b" || rec.CommandID != "cmd-key-1" || rec.State != idempotency.StateInProgress {
		t.Errorf("Claim after expiry = token %d, claims %d, uncertain %t, holder %q, command %q, state %q; want 2, 2, true, worker-b, cmd-key-1, in_progress",
			rec.Token, rec.Claims, rec.Uncertain, rec.Holder, rec.CommandID, rec.State)
	}
	for _, o := range fencingOps {
		if err := o.do(t, st, "key-1", 1); !errors.Is(err, idempotency.ErrFenced) {
			t.Errorf("old holder's %s(token 1) error = %v, want ErrFenced", o.name, err)
		}
	}
	sameRecord(t, "Get after the old holder's writes", get(t, st, "merchant-1", "key-1"), rec)
	complete(t, st, "merchant-1", "key-1", 2)
	claimWant(t, st, r, idempotency.Completed)
}

func (s *suite) releaseResumes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		expireFirst   bool // the key is resumed after an expiry, then released
		uncertain     bool
		wantUncertain bool
		wantToken     int64
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
				token = claimWant(t, st, r, idempotency.Resumed).Record.Token
			}
			release(t, st, "merchant-1", "key-1", token, tc.uncertain)
			rec := get(t, st, "merchant-1", "key-1")
			if rec.State != idempotency.StateReleased || rec.Holder != "" || !rec.LeaseUntil.IsZero() || rec.Uncertain != tc.wantUncertain {
				t.Errorf("Get after Release = state %q, holder %q, lease until %v, uncertain %t; want released, no holder, no lease, %t",
					rec.State, rec.Holder, rec.LeaseUntil, rec.Uncertain, tc.wantUncertain)
			}
			// Release freed the transaction lock.
			other := claimWant(t, st, with("key-2", "txn-1"), idempotency.Acquired)
			complete(t, st, "merchant-1", "key-2", other.Record.Token)

			r.Holder = "worker-b"
			c := claimWant(t, st, r, idempotency.Resumed)
			if c.Record.Uncertain != tc.wantUncertain || c.Record.Token != tc.wantToken || c.Record.Holder != "worker-b" {
				t.Errorf("Claim after Release = uncertain %t, token %d, holder %q; want %t, %d, worker-b",
					c.Record.Uncertain, c.Record.Token, c.Record.Holder, tc.wantUncertain, tc.wantToken)
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
		if err := st.Renew(t.Context(), "merchant-1", "key-1", 1, s.lease); err != nil {
			t.Fatalf("Renew(token 1) error = %v", err)
		}
	}
	rec := get(t, st, "merchant-1", "key-1")
	if !rec.LeaseUntil.After(first.LeaseUntil.Add(2 * s.lease)) {
		t.Errorf("LeaseUntil after renewals = %v, want after %v", rec.LeaseUntil, first.LeaseUntil.Add(2*s.lease))
	}
	if rec.Token != 1 || rec.Claims != 1 {
		t.Errorf("after renewals token, claims = %d, %d; want 1, 1", rec.Token, rec.Claims)
	}
	r2 := with("key-1", "txn-1")
	r2.Holder = "worker-b"
	claimWant(t, st, r2, idempotency.Busy)
	// The transaction lock was renewed too.
	claimWant(t, st, with("key-2", "txn-1"), idempotency.Busy)

	s.outlive()
	claimWant(t, st, r2, idempotency.Resumed)
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
	if fmt.Sprint(tokens) != "[1 1 1]" {
		t.Errorf("tokens of one key in three scopes = %v, want [1 1 1]", tokens)
	}
	if err := st.Complete(t.Context(), "merchant-1", key, 1, outcome("evt-1", `{}`)); err != nil {
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
		free  func(t *testing.T, st idempotency.Store)
	}{
		{"FreedByComplete", long, func(t *testing.T, st idempotency.Store) { complete(t, st, "merchant-1", "key-a", 1) }},
		{"FreedByRelease", long, func(t *testing.T, st idempotency.Store) { release(t, st, "merchant-1", "key-a", 1, true) }},
		{"FreedByExpiry", s.lease, func(t *testing.T, st idempotency.Store) { s.outlive() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.newStore(t)
			a := with("key-a", "txn-1")
			a.Lease = tc.lease
			claimWant(t, st, a, idempotency.Acquired)

			b := with("key-b", "txn-1")
			c := claimWant(t, st, b, idempotency.Busy)
			wantRetryAfter(t, c, tc.lease)
			if c.Record.Token != 0 {
				t.Errorf("Busy Claim.Record = %+v, want the zero record (key-b has none)", c.Record)
			}
			wantMissing(t, st, "merchant-1", "key-b")
			// Another transaction is free.
			claimWant(t, st, with("key-c", "txn-2"), idempotency.Acquired)

			tc.free(t, st)
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
	claimWant(t, st, b, idempotency.Acquired)
	release(t, st, "merchant-1", "key-b", 1, true)
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
	claimWant(t, st, a, idempotency.Acquired)
	s.outlive()
	claimWant(t, st, with("key-b", "txn-1"), idempotency.Acquired)

	if err := st.Renew(t.Context(), "merchant-1", "key-a", 1, long); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("Renew(key-a) after key-b took the transaction error = %v, want ErrFenced", err)
	}
	complete(t, st, "merchant-1", "key-a", 1)
	claimWant(t, st, with("key-c", "txn-1"), idempotency.Busy)
	complete(t, st, "merchant-1", "key-b", 1)
	claimWant(t, st, with("key-c", "txn-1"), idempotency.Acquired)

	// A key whose own lease ended takes its transaction back when resumed.
	d := with("key-d", "txn-2")
	d.Lease = s.lease
	claimWant(t, st, d, idempotency.Acquired)
	s.outlive()
	claimWant(t, st, with("key-d", "txn-2"), idempotency.Resumed)
	claimWant(t, st, with("key-e", "txn-2"), idempotency.Busy)
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
	if rec := get(t, st, "merchant-1", "key-1"); rec.Token != 1 || rec.Claims != 1 {
		t.Errorf("record after concurrent claims: token %d, claims %d; want 1, 1", rec.Token, rec.Claims)
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
				if err := st.Complete(t.Context(), r.Scope, r.Key, c.Record.Token, outcome("evt", `{}`)); err != nil {
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
