package idempotency

import (
	"context"
	"encoding/json"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/testenv"
)

// newScopes is a ScopeRegistry to which every scope is new: claims are not
// in doubt.
type newScopes struct{}

func (newScopes) Register(context.Context, string) (bool, error) { return false, nil }

// redisRecords runs the scripts against a real Redis and returns the records
// they store, raw, in each state: claimed (with and without a transaction
// lock, a holder cjson escapes, in doubt), released (certain and uncertain),
// resumed and completed with an outcome.
func redisRecords(t *testing.T) map[string][]byte {
	t.Helper()
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	ctx := t.Context()
	s := NewRedis(rdb, RedisOptions{Prefix: r.Prefix + "a:", TTL: time.Hour, Registry: newScopes{}})
	doubt := NewRedis(rdb, RedisOptions{Prefix: r.Prefix + "b:", TTL: time.Hour})
	out := map[string][]byte{}
	get := func(s *RedisStore, name, key string) {
		t.Helper()
		raw, err := rdb.Get(ctx, s.recordKey("M1", key)).Bytes()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = raw
	}
	claim := func(s *RedisStore, key, txn, holder string) Claim {
		t.Helper()
		c, err := s.Claim(ctx, ClaimRequest{Scope: "M1", Key: key, Fingerprint: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			CommandID: "cmd-" + key, Holder: holder, Lease: 30 * time.Second, TxnLock: txn})
		if err != nil {
			t.Fatalf("claim %s: %v", key, err)
		}
		return c
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	event := json.RawMessage(`{"specversion":"1.0","id":"evt-1","type":"payment.captured","source":"payworker",` +
		`"data":{"amount":12.5,"currency":"EUR","note":"<b>Café & Co</b>","codes":[0,-1,1e3,true,null]}}`)

	claim(s, "claimed", "", "worker-1")
	get(s, "claimed", "claimed")
	claim(s, "locked", "txn-42", "worker-1")
	get(s, "claimed with txn lock", "locked")
	claim(s, "slash", "", "host/worker-1")
	get(s, "claimed by a holder with a slash", "slash")
	claim(s, "anon", "", "")
	get(s, "claimed without holder", "anon")
	claim(doubt, "doubt", "", "worker-1")
	get(doubt, "claimed in doubt", "doubt")

	c := claim(s, "released", "", "worker-1")
	must(s.Release(ctx, "M1", "released", "", c.Record.Token, false))
	get(s, "released", "released")
	c = claim(s, "uncertain", "txn-7", "worker-1")
	must(s.Release(ctx, "M1", "uncertain", "txn-7", c.Record.Token, true))
	get(s, "released uncertain", "uncertain")
	c = claim(s, "uncertain", "txn-7", "worker-2")
	get(s, "resumed", "uncertain")
	must(s.Complete(ctx, "M1", "uncertain", "txn-7", c.Record.Token, Outcome{Succeeded: true, EventID: "evt-1", Subject: "payments.events.M1", Event: event}))
	get(s, "completed after resume", "uncertain")
	c = claim(s, "declined", "", "worker-1")
	must(s.Complete(ctx, "M1", "declined", "", c.Record.Token, Outcome{EventID: "evt-2", Subject: "payments.events.M1", Event: json.RawMessage(" \n[1, 2]\t")}))
	get(s, "completed declined", "declined")

	for name, raw := range maps.Clone(out) {
		rec, err := unmarshalRecordJSON(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		kv, err := marshalRecordJSON(rec)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name+" (Go)"] = kv
	}
	return out
}

// TestDecodeRedisRecords checks that the records the scripts and the KV
// store write take the fast path and decode as json.Unmarshal decodes them.
func TestDecodeRedisRecords(t *testing.T) {
	for name, raw := range redisRecords(t) {
		want, err := unmarshalRecordJSON(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, ok := decodeRecord(raw)
		if !ok {
			t.Errorf("%s: fast path declined %s", name, raw)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: fast %+v, json %+v", name, got, want)
		}
	}
}
