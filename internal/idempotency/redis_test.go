package idempotency_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/idempotency/storetest"
	"github.com/payworker/payworker/internal/testenv"
)

var prefixes atomic.Int64

// newRedisStore returns a store with a prefix of its own on r, and a scope
// registry of its own.
func newRedisStore(t *testing.T, r *testenv.Redis, rdb redis.UniversalClient, ttl time.Duration) (*idempotency.RedisStore, string) {
	t.Helper()
	prefix := fmt.Sprintf("%s%d:", r.Prefix, prefixes.Add(1))
	return idempotency.NewRedis(rdb, idempotency.RedisOptions{Prefix: prefix, TTL: ttl, Registry: newRegistry(t)}), prefix
}

// newRegistry returns a scope registry on a NATS server of the test's own.
func newRegistry(t *testing.T) idempotency.ScopeRegistry {
	t.Helper()
	_, js := testenv.StartNATS(t).Connect(t)
	reg, err := idempotency.NewKVScopeRegistry(t.Context(), js, "", 1)
	if err != nil {
		t.Fatalf("scope registry: %v", err)
	}
	return reg
}

func TestRedisStore(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		s, _ := newRedisStore(t, r, rdb, time.Hour)
		return s
	}, storetest.Options{Lose: loseRedisRecord(rdb)})
}

// loseRedisRecord deletes a record and the transaction lock it names behind
// the store's back (storetest.Options.Lose).
func loseRedisRecord(rdb redis.UniversalClient) func(t *testing.T, st idempotency.Store, scope, key string) {
	return func(t *testing.T, st idempotency.Store, scope, key string) {
		t.Helper()
		s := st.(*idempotency.RedisStore)
		keys := []string{s.RecordKey(scope, key)}
		rec, err := s.Get(t.Context(), scope, key)
		switch {
		case err == nil && rec.TxnLock != "":
			keys = append(keys, s.TxnKey(scope, rec.TxnLock))
		case err != nil && !errors.Is(err, idempotency.ErrNotFound):
			t.Fatalf("Get(%s/%s) before losing it: %v", scope, key, err)
		}
		if err := rdb.Del(t.Context(), keys...).Err(); err != nil {
			t.Fatalf("DEL %v: %v", keys, err)
		}
	}
}

// TestRedisKeys checks the key layout, the hash tags and the expiries.
func TestRedisKeys(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	const ttl = 2 * time.Hour
	s, prefix := newRedisStore(t, r, rdb, ttl)
	ctx := t.Context()
	recordKey := prefix + "{merchant-1}:key:order-1"
	txnKey := prefix + "{merchant-1}:txn:txn-1"

	c, err := s.Claim(ctx, idempotency.ClaimRequest{Scope: "merchant-1", Key: "order-1", Fingerprint: "fp", Holder: "w", Lease: 30 * time.Second, TxnLock: "txn-1"})
	if err != nil || c.Status != idempotency.Acquired {
		t.Fatalf("Claim = %v, %v; want acquired", c.Status, err)
	}
	for _, tc := range []struct {
		key      string
		min, max time.Duration
	}{
		{recordKey, ttl - time.Minute, ttl},
		{txnKey, 29 * time.Second, 30 * time.Second},
	} {
		if got := rdb.PTTL(ctx, tc.key).Val(); got < tc.min || got > tc.max {
			t.Errorf("PTTL(%s) = %v, want in [%v, %v]", tc.key, got, tc.min, tc.max)
		}
	}

	// The record is the Record JSON format and nothing more.
	raw, err := rdb.Get(ctx, recordKey).Bytes()
	if err != nil {
		t.Fatalf("GET %s: %v", recordKey, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var rec idempotency.Record
	if err := dec.Decode(&rec); err != nil {
		t.Errorf("record %s = %s: decode as Record: %v", recordKey, raw, err)
	}
	var lock struct {
		Key   string `json:"key"`
		Token int64  `json:"token"`
	}
	if err := json.Unmarshal([]byte(rdb.Get(ctx, txnKey).Val()), &lock); err != nil || lock.Key != "order-1" || lock.Token != c.Record.Token {
		t.Errorf("lock %s = %+v, %v; want key order-1, token %d", txnKey, lock, err, c.Record.Token)
	}
	// The token is the server's clock in milliseconds, whole in the JSON
	// (no exponent, no rounding).
	if rec.Token != c.Record.Token || rec.Token != rec.CreatedAt.UnixMilli() || !bytes.Contains(raw, []byte(fmt.Sprintf(`"token":%d`, rec.Token))) {
		t.Errorf("record %s = %s: token %d, want %d, the claim's and CreatedAt's (%v) in ms", recordKey, raw, rec.Token, c.Record.Token, rec.CreatedAt)
	}

	// Completion frees the lock and keeps the record for the TTL from now.
	rdb.PExpire(ctx, recordKey, time.Minute)
	if err := s.Complete(ctx, "merchant-1", "order-1", "txn-1", c.Record.Token, idempotency.Outcome{EventID: "e", Event: json.RawMessage(`{}`)}); err != nil {
		t.Fatalf("Complete error = %v", err)
	}
	if got := rdb.PTTL(ctx, recordKey).Val(); got < ttl-time.Minute || got > ttl {
		t.Errorf("PTTL(%s) after Complete = %v, want in [%v, %v]", recordKey, got, ttl-time.Minute, ttl)
	}
	if got := rdb.Exists(ctx, txnKey).Val(); got != 0 {
		t.Errorf("EXISTS %s after Complete = %d, want 0", txnKey, got)
	}
}

// TestRedisDefaultPrefix checks "payworker:" is the default prefix.
func TestRedisDefaultPrefix(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	s := idempotency.NewRedis(rdb, idempotency.RedisOptions{TTL: time.Minute})
	scope := strings.ReplaceAll(r.Prefix, ":", "-") // unique on a shared server
	if _, err := s.Claim(t.Context(), idempotency.ClaimRequest{Scope: scope, Key: "k", Lease: time.Second}); err != nil {
		t.Fatalf("Claim error = %v", err)
	}
	key := "payworker:{" + scope + "}:key:k"
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	if got := rdb.Exists(t.Context(), key).Val(); got != 1 {
		t.Errorf("EXISTS %s = %d, want 1", key, got)
	}
}

// TestRedisTime checks the scripts' calendar against Go's: records keep
// the Record JSON time format.
func TestRedisTime(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	script := redis.NewScript(idempotency.LuaLib + `return {fmt_ms(tonumber(ARGV[1])), parse_ms(ARGV[2]), parse_ms(ARGV[3])}`)
	cases := []time.Time{
		time.Unix(0, 0),
		time.Date(2000, 2, 29, 23, 59, 59, 999e6, time.UTC),
		time.Date(2000, 3, 1, 0, 0, 0, 1e6, time.UTC),
		time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC),
		time.Date(2024, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2100, 2, 28, 23, 59, 59, 999e6, time.UTC),
		time.Date(2100, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC),
		time.Now().Truncate(time.Millisecond),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		cases = append(cases, time.UnixMilli(rng.Int64N(7258118400000))) // 1970–2200
	}
	for _, tm := range cases {
		ms := tm.UnixMilli()
		want := tm.UTC().Format("2006-01-02T15:04:05.000Z")
		res, err := script.Run(t.Context(), rdb, nil, ms, tm.UTC().Format(time.RFC3339Nano), want).Slice()
		if err != nil {
			t.Fatalf("script(%d) error = %v", ms, err)
		}
		if got := res[0]; got != want {
			t.Errorf("fmt_ms(%d) = %v, want %s", ms, got, want)
		}
		for i, in := range []string{tm.UTC().Format(time.RFC3339Nano), want} {
			if got := res[1+i]; got != ms {
				t.Errorf("parse_ms(%s) = %v, want %d", in, got, ms)
			}
		}
	}
}

// TestRedisServerRunID checks the scripts' name for the server process
// against the run_id INFO gives a client: the lost-record check compares it
// with the one a merchant's epoch marker holds.
func TestRedisServerRunID(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	got, err := redis.NewScript(idempotency.LuaLib+`return server_run_id()`).Run(t.Context(), rdb, nil).Text()
	if err != nil {
		t.Fatalf("server_run_id() error = %v", err)
	}
	info, err := rdb.Info(t.Context(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(info, "run_id:")
	want, _, _ := strings.Cut(rest, "\r\n")
	if len(want) != 40 || got != want {
		t.Errorf("server_run_id() = %q, want INFO's run_id %q", got, want)
	}
}

// TestRedisUnavailable: with Redis down every call fails with an error that
// is neither ErrFenced nor ErrNotFound (the caller fails closed); when it is
// back, the same client works again, and a record lost with the server is
// never resurrected by its old holder.
func TestRedisUnavailable(t *testing.T) {
	r := testenv.StartRedis(t)
	if !r.Own {
		t.Skip("REDIS_URL is set: cannot stop a shared server")
	}
	// No retries, so that the calls with Redis down fail at once.
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	s, _ := newRedisStore(t, r, rdb, time.Hour)
	req := idempotency.ClaimRequest{Scope: "m", Key: "k", Fingerprint: "fp", Lease: time.Minute, TxnLock: "t"}
	c, err := s.Claim(t.Context(), req)
	if err != nil || c.Status != idempotency.Acquired {
		t.Fatalf("Claim = %v, %v; want acquired", c.Status, err)
	}
	token := c.Record.Token

	r.Stop()
	ops := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"Claim", func(ctx context.Context) error { _, err := s.Claim(ctx, req); return err }},
		{"Renew", func(ctx context.Context) error { return s.Renew(ctx, "m", "k", "t", token, time.Minute) }},
		{"Complete", func(ctx context.Context) error {
			return s.Complete(ctx, "m", "k", "t", token, idempotency.Outcome{EventID: "e", Event: json.RawMessage(`{}`)})
		}},
		{"Release", func(ctx context.Context) error { return s.Release(ctx, "m", "k", "t", token, true) }},
		{"Get", func(ctx context.Context) error { _, err := s.Get(ctx, "m", "k"); return err }},
		{"Ping", func(ctx context.Context) error { return s.Ping(ctx) }},
	}
	for _, op := range ops {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := op.do(ctx)
		cancel()
		if err == nil || errors.Is(err, idempotency.ErrFenced) || errors.Is(err, idempotency.ErrNotFound) {
			t.Errorf("%s with Redis down error = %v, want a store error", op.name, err)
		}
	}

	r.Start()
	deadline := time.Now().Add(10 * time.Second)
	for s.Ping(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("Ping still failing 10s after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The server kept nothing: the old token is fenced, nothing is written.
	for _, op := range ops[1:4] {
		if err := op.do(t.Context()); !errors.Is(err, idempotency.ErrFenced) {
			t.Errorf("%s on the lost record error = %v, want ErrFenced", op.name, err)
		}
	}
	if _, err := s.Get(t.Context(), "m", "k"); !errors.Is(err, idempotency.ErrNotFound) {
		t.Errorf("Get of the lost record error = %v, want ErrNotFound", err)
	}
	// The scripts are loaded again (EVALSHA falls back to EVAL), and the
	// new claim's token is above the lost one's.
	c, err = s.Claim(t.Context(), req)
	if err != nil || c.Status != idempotency.Acquired || c.Record.Token <= token {
		t.Fatalf("Claim after restart = %v, token %d, %v; want acquired, token above the lost record's %d", c.Status, c.Record.Token, err, token)
	}
	// The old holder's writes do not land on the new claim.
	for _, op := range ops[1:4] {
		if err := op.do(t.Context()); !errors.Is(err, idempotency.ErrFenced) {
			t.Errorf("%s(token %d) on the new claim (token %d) error = %v, want ErrFenced", op.name, token, c.Record.Token, err)
		}
	}
	if got, err := s.Get(t.Context(), "m", "k"); err != nil || got.Token != c.Record.Token || got.State != idempotency.StateInProgress {
		t.Errorf("Get after the old holder's writes = token %d, state %q, %v; want token %d, in_progress", got.Token, got.State, err, c.Record.Token)
	}
}

func TestRedisInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts idempotency.RedisOptions
	}{
		{"NoTTL", idempotency.RedisOptions{}},
		{"BraceInPrefix", idempotency.RedisOptions{Prefix: "a{b}:", TTL: time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("NewRedis(%+v) did not panic", tc.opts)
				}
			}()
			idempotency.NewRedis(redis.NewClient(&redis.Options{}), tc.opts)
		})
	}
	t.Run("BraceInScope", func(t *testing.T) {
		r := testenv.StartRedis(t)
		s, _ := newRedisStore(t, r, r.Client(t), time.Hour)
		for _, scope := range []string{"m}", "{m"} {
			_, err := s.Claim(t.Context(), idempotency.ClaimRequest{Scope: scope, Key: "k", Lease: time.Second})
			if err == nil || errors.Is(err, idempotency.ErrFenced) {
				t.Errorf("Claim(scope %q) error = %v, want a validation error", scope, err)
			}
		}
	})
}
