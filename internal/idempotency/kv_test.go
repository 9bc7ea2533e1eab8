package idempotency_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/idempotency/storetest"
	"github.com/payworker/payworker/internal/testenv"
)

var buckets atomic.Int64

func bucketName() string { return fmt.Sprintf("idem_%d", buckets.Add(1)) }

func newKVStore(t *testing.T, js jetstream.JetStream, opts idempotency.KVOptions) *idempotency.KVStore {
	t.Helper()
	s, err := idempotency.NewKV(t.Context(), js, opts)
	if err != nil {
		t.Fatalf("NewKV(%+v) error = %v", opts, err)
	}
	return s
}

func TestKVStore(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		return newKVStore(t, js, idempotency.KVOptions{Bucket: bucketName(), TTL: time.Hour})
	}, storetest.Options{Lose: func(t *testing.T, st idempotency.Store, scope, key string) {
		t.Helper()
		s := st.(*idempotency.KVStore)
		keys := []string{idempotency.RecordKVKey(scope, key)}
		rec, err := s.Get(t.Context(), scope, key)
		switch {
		case err == nil && rec.TxnLock != "":
			keys = append(keys, idempotency.TxnKVKey(scope, rec.TxnLock))
		case err != nil && !errors.Is(err, idempotency.ErrNotFound):
			t.Fatalf("Get(%s/%s) before losing it: %v", scope, key, err)
		}
		for _, k := range keys {
			if err := s.Bucket().Purge(t.Context(), k); err != nil {
				t.Fatalf("Purge(%s): %v", k, err)
			}
		}
	}})
}

// TestKVBucket checks the bucket NewKV creates, and that a second NewKV
// updates it.
func TestKVBucket(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	bucket := bucketName()
	for _, ttl := range []time.Duration{90 * time.Minute, 7 * 24 * time.Hour} {
		newKVStore(t, js, idempotency.KVOptions{Bucket: bucket, TTL: ttl})
		info, err := js.Stream(t.Context(), "KV_"+bucket)
		if err != nil {
			t.Fatalf("stream KV_%s: %v", bucket, err)
		}
		cfg := info.CachedInfo().Config
		for _, f := range []struct {
			name      string
			got, want any
		}{
			{"MaxAge", cfg.MaxAge, ttl},
			{"MaxMsgsPerSubject", cfg.MaxMsgsPerSubject, int64(1)},
			{"Storage", cfg.Storage, jetstream.FileStorage},
			{"Replicas", cfg.Replicas, 1},
		} {
			if f.got != f.want {
				t.Errorf("NewKV(TTL %v): bucket %s = %v, want %v", ttl, f.name, f.got, f.want)
			}
		}
	}
}

func TestKVDefaultBucket(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	newKVStore(t, js, idempotency.KVOptions{TTL: time.Hour})
	if _, err := js.KeyValue(t.Context(), "payworker_idempotency"); err != nil {
		t.Errorf("KeyValue(payworker_idempotency) error = %v, want the default bucket", err)
	}
}

func TestNewKVInvalid(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	for _, tc := range []struct {
		name string
		opts idempotency.KVOptions
	}{
		{"NoTTL", idempotency.KVOptions{Bucket: bucketName()}},
		{"BadBucket", idempotency.KVOptions{Bucket: "a.b", TTL: time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := idempotency.NewKV(t.Context(), js, tc.opts); err == nil {
				t.Errorf("NewKV(%+v) = %v, nil; want an error", tc.opts, s)
			}
		})
	}
}

// TestKVKeys checks the key layout and that records are the Record JSON.
func TestKVKeys(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	bucket := bucketName()
	s := newKVStore(t, js, idempotency.KVOptions{Bucket: bucket, TTL: time.Hour})
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	scope, key, txn := "merchant.1", "order/1 é", "txn>*"
	if c, err := s.Claim(t.Context(), idempotency.ClaimRequest{Scope: scope, Key: key, Fingerprint: "fp", Lease: time.Minute, TxnLock: txn}); err != nil || c.Status != idempotency.Acquired {
		t.Fatalf("Claim = %v, %v; want acquired", c.Status, err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	rk := "k." + enc([]byte(scope)) + "." + enc([]byte(key))
	tk := "t." + enc([]byte(scope)) + "." + enc([]byte(txn))
	e, err := kv.Get(t.Context(), rk)
	if err != nil {
		t.Fatalf("Get(%s) error = %v", rk, err)
	}
	dec := json.NewDecoder(bytes.NewReader(e.Value()))
	dec.DisallowUnknownFields()
	var rec idempotency.Record
	if err := dec.Decode(&rec); err != nil || rec.Fingerprint != "fp" {
		t.Errorf("record %s = %s: decode as Record: %+v, %v", rk, e.Value(), rec, err)
	}
	if _, err := kv.Get(t.Context(), tk); err != nil {
		t.Errorf("Get(%s) error = %v, want the transaction lock", tk, err)
	}
}

// TestKVDeletedIsAbsent: delete and purge markers count as absent, for
// records and locks alike, and a deleted record is never resurrected by the
// writes of its old holder.
func TestKVDeletedIsAbsent(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	enc := base64.RawURLEncoding.EncodeToString
	for _, tc := range []struct {
		name string
		del  func(kv jetstream.KeyValue, key string) error
	}{
		{"Delete", func(kv jetstream.KeyValue, key string) error { return kv.Delete(context.Background(), key) }},
		{"Purge", func(kv jetstream.KeyValue, key string) error { return kv.Purge(context.Background(), key) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bucket := bucketName()
			s := newKVStore(t, js, idempotency.KVOptions{Bucket: bucket, TTL: time.Hour})
			kv, err := js.KeyValue(t.Context(), bucket)
			if err != nil {
				t.Fatal(err)
			}
			req := idempotency.ClaimRequest{Scope: "m", Key: "a", Fingerprint: "fp", Lease: time.Minute, TxnLock: "t"}
			first, err := s.Claim(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			token := first.Record.Token
			for _, k := range []string{"k." + enc([]byte("m")) + "." + enc([]byte("a")), "t." + enc([]byte("m")) + "." + enc([]byte("t"))} {
				if err := tc.del(kv, k); err != nil {
					t.Fatalf("%s(%s) error = %v", tc.name, k, err)
				}
			}
			if err := s.Renew(t.Context(), "m", "a", "t", token, time.Minute); !errors.Is(err, idempotency.ErrFenced) {
				t.Errorf("Renew after %s error = %v, want ErrFenced", tc.name, err)
			}
			if err := s.Complete(t.Context(), "m", "a", "t", token, idempotency.Outcome{EventID: "e"}); !errors.Is(err, idempotency.ErrFenced) {
				t.Errorf("Complete after %s error = %v, want ErrFenced", tc.name, err)
			}
			if _, err := s.Get(t.Context(), "m", "a"); !errors.Is(err, idempotency.ErrNotFound) {
				t.Errorf("Get after %s error = %v, want ErrNotFound", tc.name, err)
			}
			// The lock is free for another key; the deleted key starts afresh.
			b := req
			b.Key = "b"
			var tokenB int64
			for _, r := range []idempotency.ClaimRequest{b, req} {
				want := idempotency.Acquired
				if r.Key == "a" {
					want = idempotency.Busy // b holds the transaction now
				}
				c, err := s.Claim(t.Context(), r)
				if err != nil || c.Status != want {
					t.Errorf("Claim(%s) after %s = %v, %v; want %v", r.Key, tc.name, c.Status, err, want)
				}
				if r.Key == "b" {
					tokenB = c.Record.Token
				}
			}
			if err := s.Release(t.Context(), "m", "b", "t", tokenB, false); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond) // the clock the token is read from moves on
			c, err := s.Claim(t.Context(), req)
			if err != nil || c.Status != idempotency.Acquired || c.Record.Token <= token || c.Record.Claims != 1 {
				t.Errorf("Claim(a) after %s = %v, token %d, claims %d, %v; want acquired, token above the deleted record's %d, claims 1",
					tc.name, c.Status, c.Record.Token, c.Record.Claims, err, token)
			}
			// The old holder's writes do not land on the new claim.
			if err := s.Renew(t.Context(), "m", "a", "t", token, time.Minute); !errors.Is(err, idempotency.ErrFenced) {
				t.Errorf("Renew(token %d) on the new claim error = %v, want ErrFenced", token, err)
			}
		})
	}
}

// TestKVClock checks that leases are measured by KVOptions.Now.
func TestKVClock(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	var (
		mu  sync.Mutex
		now = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	s := newKVStore(t, js, idempotency.KVOptions{Bucket: bucketName(), TTL: time.Hour, Now: clock})

	req := idempotency.ClaimRequest{Scope: "m", Key: "k", Fingerprint: "fp", Lease: time.Minute, TxnLock: "t"}
	t0 := clock()
	steps := []struct {
		advance   time.Duration
		holder    string
		release   bool // the holder then releases the key
		want      idempotency.ClaimStatus
		wantRetry time.Duration
		// wantToken is the fencing token: the clock in milliseconds, or
		// the previous token + 1 when the clock is behind it.
		wantToken int64
	}{
		{0, "a", false, idempotency.Acquired, 0, t0.UnixMilli()},
		{20 * time.Second, "b", false, idempotency.Busy, 40 * time.Second, t0.UnixMilli()},
		{41 * time.Second, "b", true, idempotency.Resumed, 0, t0.Add(61 * time.Second).UnixMilli()},
		// The clock steps back: the token still grows.
		{-time.Hour, "c", true, idempotency.Resumed, 0, t0.Add(61*time.Second).UnixMilli() + 1},
		{time.Millisecond, "d", true, idempotency.Resumed, 0, t0.Add(61*time.Second).UnixMilli() + 2},
		// The clock catches up and passes the token: the token is the clock again.
		{2 * time.Hour, "e", false, idempotency.Resumed, 0, t0.Add(61*time.Second + time.Hour + time.Millisecond).UnixMilli()},
	}
	for i, st := range steps {
		advance(st.advance)
		r := req
		r.Holder = st.holder
		c, err := s.Claim(t.Context(), r)
		if err != nil || c.Status != st.want || c.RetryAfter != st.wantRetry {
			t.Fatalf("step %d: Claim = %v after %v, %v; want %v after %v", i, c.Status, c.RetryAfter, err, st.want, st.wantRetry)
		}
		if c.Record.Token != st.wantToken {
			t.Errorf("step %d: Token = %d, want %d", i, c.Record.Token, st.wantToken)
		}
		if st.want == idempotency.Busy {
			continue
		}
		if !c.Record.LeaseUntil.Equal(clock().Add(time.Minute)) || !c.Record.UpdatedAt.Equal(clock()) {
			t.Errorf("step %d: LeaseUntil, UpdatedAt = %v, %v; want %v, %v", i, c.Record.LeaseUntil, c.Record.UpdatedAt, clock().Add(time.Minute), clock())
		}
		if st.release {
			if err := s.Release(t.Context(), "m", "k", "t", c.Record.Token, false); err != nil {
				t.Fatalf("step %d: Release(token %d) error = %v", i, c.Record.Token, err)
			}
		}
	}
}

// TestKVUnavailable: with NATS down every call fails with an error that is
// neither ErrFenced nor ErrNotFound (the caller fails closed); when it is
// back, the store works again with the records it kept on disk.
func TestKVUnavailable(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	s := newKVStore(t, js, idempotency.KVOptions{Bucket: bucketName(), TTL: time.Hour})
	req := idempotency.ClaimRequest{Scope: "m", Key: "k", Fingerprint: "fp", Lease: time.Minute, TxnLock: "t"}
	c, err := s.Claim(t.Context(), req)
	if err != nil || c.Status != idempotency.Acquired {
		t.Fatalf("Claim = %v, %v; want acquired", c.Status, err)
	}
	token := c.Record.Token
	out := idempotency.Outcome{EventID: "e", Event: json.RawMessage(`{"ok":true}`)}

	n.Stop()
	for _, op := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"Claim", func(ctx context.Context) error { _, err := s.Claim(ctx, req); return err }},
		{"Renew", func(ctx context.Context) error { return s.Renew(ctx, "m", "k", "t", token, time.Minute) }},
		{"Complete", func(ctx context.Context) error { return s.Complete(ctx, "m", "k", "t", token, out) }},
		{"Release", func(ctx context.Context) error { return s.Release(ctx, "m", "k", "t", token, true) }},
		{"Get", func(ctx context.Context) error { _, err := s.Get(ctx, "m", "k"); return err }},
		{"Ping", func(ctx context.Context) error { return s.Ping(ctx) }},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		err := op.do(ctx)
		cancel()
		if err == nil || errors.Is(err, idempotency.ErrFenced) || errors.Is(err, idempotency.ErrNotFound) {
			t.Errorf("%s with NATS down error = %v, want a store error", op.name, err)
		}
	}

	n.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := s.Ping(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ping still failing 10s after NATS came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.Complete(t.Context(), "m", "k", "t", token, out); err != nil {
		t.Fatalf("Complete after restart error = %v", err)
	}
	if c, err := s.Claim(t.Context(), req); err != nil || c.Status != idempotency.Completed {
		t.Errorf("Claim after restart = %v, %v; want completed", c.Status, err)
	}
}
