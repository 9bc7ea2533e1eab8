//go:build unix

package worker_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/internal/testenv"
)

// TestRedisClusterExactlyOnce: the worker over an idempotency store on a
// 3-master Redis Cluster. Twelve merchants, four per master (their hash
// tags chosen so), ten captures each; every capture is published twice, the
// same key under another command_id. Each key reaches the gateway once
// (one capture in the sandbox's ledger, one call), ends with exactly one
// terminal event, and its other command is answered command.duplicate
// naming that event. The records are checked to live on every master.
func TestRedisClusterExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-master Redis Cluster; skipped with -short")
	}
	cluster := testenv.StartRedisCluster(t, 3)
	rc := cluster.Client(t)

	o := systemtest.DefaultOptions()
	o.Workers = 0
	o.Concurrency = 32
	o.Lease = 2 * time.Second // a busy duplicate waits at most this
	s := systemtest.Start(t, o)
	reg, err := idempotency.NewKVScopeRegistry(t.Context(), s.JS, "cluster_scopes", 1)
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "payworker:"
	s.Store = idempotency.NewRedis(rc, idempotency.RedisOptions{TTL: time.Hour, Registry: reg})
	var calls callLog
	startRecordedWorker(t, s, o, &calls)

	// Four merchants per master: a merchant's keys share its hash tag, so
	// the epoch marker tells which master holds them all.
	perMaster := map[string][]string{}
	var merchants []string
	for i := 0; len(merchants) < 12; i++ {
		m := fmt.Sprintf("CL%03d", i)
		master := cluster.MasterOf(t, rc, prefix+"{"+m+"}:epoch")
		if len(perMaster[master]) < 4 {
			perMaster[master] = append(perMaster[master], m)
			merchants = append(merchants, m)
		}
		if i > 1000 {
			t.Fatalf("no 4 merchants per master among 1000 names: %v", perMaster)
		}
	}

	type order struct{ merchant, auth, key string }
	var orders []order
	for _, m := range merchants {
		for j := range 10 {
			orders = append(orders, order{m, s.Sandbox.Authorise(m, 1000, "JPY"), fmt.Sprintf("k%d", j)})
		}
	}
	for _, round := range []string{"first", "again"} {
		for _, o := range orders {
			s.Publish(t, "capture", systemtest.Cmd{"command_id": round + "-" + o.merchant + "-" + o.key, "idempotency_key": o.key,
				"type": "capture", "merchant_id": o.merchant, "transaction_id": o.auth, "amount": 1000, "currency": "JPY"})
		}
	}
	for _, o := range orders {
		s.WaitEvents(t, o.merchant, o.key, "a terminal event and a duplicate", func(rs []systemtest.Received) bool {
			return systemtest.Count(rs, events.CaptureSucceeded) >= 1 && systemtest.Count(rs, events.Duplicate) >= 1
		})
	}
	s.Settle(t)

	for _, o := range orders {
		if ops := s.Sandbox.Applied(o.auth); len(ops) != 1 || ops[0].Amount != 1000 {
			t.Errorf("%s/%s: ledger %s, want one capture of 1000", o.merchant, o.key, ledgerOf(s.Sandbox, o.auth))
		}
		evs := s.EventsFor(o.merchant, o.key)
		if len(evs) != 2 || systemtest.Count(evs, events.CaptureSucceeded) != 1 || systemtest.Count(evs, events.Duplicate) != 1 {
			t.Errorf("%s/%s: events %s, want one capture.succeeded and one command.duplicate", o.merchant, o.key, systemtest.Kinds(evs))
			continue
		}
		var terminal, dup events.Event
		for _, r := range evs {
			if r.Event.Type == events.CaptureSucceeded.Type() {
				terminal = r.Event
			} else {
				dup = r.Event
			}
		}
		if dup.Data.OriginalEventID != terminal.ID || dup.Data.CommandID == terminal.Data.CommandID {
			t.Errorf("%s/%s: duplicate of command %s names %q, want the terminal event %q of the other command %s",
				o.merchant, o.key, dup.Data.CommandID, dup.Data.OriginalEventID, terminal.ID, terminal.Data.CommandID)
		}
	}
	// calls are logged by idempotency key, which merchants share.
	for j := range 10 {
		key := fmt.Sprintf("k%d", j)
		if got := calls.of(key); len(got) != len(merchants) || slices.ContainsFunc(got, func(c string) bool { return c != "capture" }) {
			t.Errorf("gateway calls for %s across the %d merchants: %v, want one capture each", key, len(merchants), got)
		}
	}

	// The records are spread over every master, each merchant's on its own.
	records := map[string]int{}
	for _, addr := range cluster.Addrs {
		node := redis.NewClient(&redis.Options{Addr: addr})
		keys, err := node.Keys(t.Context(), prefix+"{*}:key:*").Result()
		node.Close()
		if err != nil {
			t.Fatalf("KEYS on %s: %v", addr, err)
		}
		records[addr] = len(keys)
		for _, k := range keys {
			m := k[strings.IndexByte(k, '{')+1 : strings.IndexByte(k, '}')]
			if !slices.Contains(perMaster[addr], m) {
				t.Errorf("record %s on %s, want it on its merchant's master (merchants there: %v)", k, addr, perMaster[addr])
			}
		}
	}
	for _, addr := range cluster.Addrs {
		if records[addr] != 40 {
			t.Errorf("records per master %v, want 40 on each (4 merchants × 10 keys)", records)
			break
		}
	}
}
