//go:build unix

package worker_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/internal/testenv"
)

// TestSentinelFailoverLosingWritesNeverResendsBlind: Redis behind Sentinel,
// one master and one replica. The replica stops receiving (paused) while
// captures are claimed and completed on the master; the master is then
// killed and the stale replica promoted: the claims and outcomes of those
// captures are gone, but the merchants' epoch markers survive, written by
// the old master. The same keys re-emitted under new command ids are
// checked at the gateway's status before anything is sent: PaymentOptions
// and SIBS authorisations are each captured once, and no event contradicts
// the gateway.
func TestSentinelFailoverLosingWritesNeverResendsBlind(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis Sentinel and fails it over; skipped with -short")
	}
	sen := testenv.StartSentinel(t, 1, 3)
	o := systemtest.DefaultOptions()
	o.Workers = 0
	o.Concurrency = 16
	s := systemtest.Start(t, o)
	reg, err := idempotency.NewKVScopeRegistry(t.Context(), s.JS, "sentinel_scopes", 1)
	if err != nil {
		t.Fatal(err)
	}
	var doubts atomic.Int64
	s.Store = idempotency.NewRedis(sen.Client(t), idempotency.RedisOptions{TTL: time.Hour, Registry: reg,
		OnDoubt: func(string, string, time.Time) { doubts.Add(1) }})
	var calls callLog
	startRecordedWorker(t, s, o, &calls)

	newOrder := func(merchant, key string) order {
		if merchant == sibsMerchant {
			return order{merchant, s.Sandbox.Authorise(merchant, 500, "PLN"), key, 200, "PLN"}
		}
		return order{merchant, s.Sandbox.Authorise(merchant, 1000, "JPY"), key, 1000, "JPY"}
	}
	emit := func(round string, orders []order) { emitOrders(t, s, round, orders) }
	waitDone := func(orders []order) {
		for _, o := range orders {
			s.WaitKind(t, o.merchant, o.key, events.CaptureSucceeded)
		}
		s.Settle(t)
	}

	// Both merchants' markers reach the replica.
	warm := []order{newOrder(poMerchant, "warm-po"), newOrder(sibsMerchant, "warm-sibs")}
	emit("first", warm)
	waitDone(warm)
	if n, err := sen.Client(t).Do(t.Context(), "wait", 1, 5000).Int64(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v", n, err)
	}

	// Stop the replica and cut its link, so what follows stays on the
	// master alone (a paused replica would still find in its socket what
	// the master sent before dying).
	replica := sen.Node(t, sen.NodeAddrs[1])
	replica.Pause(t)
	master := redis.NewClient(&redis.Options{Addr: sen.MasterAddr(t)})
	defer master.Close()
	if err := master.ClientKillByFilter(t.Context(), "TYPE", "replica").Err(); err != nil {
		t.Fatalf("CLIENT KILL TYPE replica: %v", err)
	}
	var orders []order
	for i := range 20 {
		orders = append(orders, newOrder(poMerchant, "po-"+strconv.Itoa(i)), newOrder(sibsMerchant, "sibs-"+strconv.Itoa(i)))
	}
	emit("first", orders)
	waitDone(orders)
	old := sen.KillMaster(t)
	replica.Resume(t)
	if now := sen.WaitFailover(t, old, 30*time.Second); now != sen.NodeAddrs[1] {
		t.Fatalf("new master %s, want the replica %s", now, sen.NodeAddrs[1])
	}
	if n, _ := sen.Client(t).Exists(t.Context(), "payworker:{"+poMerchant+"}:key:po-0").Result(); n != 0 {
		t.Fatalf("the promoted replica has po-0's record: the failover lost nothing, the test proves nothing")
	}

	calls.reset()
	emit("again", orders)
	s.Settle(t)
	checkOnceStatusFirst(t, s, &calls, orders, "the failover")
	if doubts.Load() == 0 {
		t.Errorf("no doubt reported after the failover")
	}
}
