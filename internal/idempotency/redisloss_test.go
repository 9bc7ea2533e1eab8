package idempotency_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/testenv"
)

// doubts records what a store's OnDoubt reports.
type doubts struct {
	mu      sync.Mutex
	reasons []string
}

func (d *doubts) add(scope, reason string, _ time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reasons = append(d.reasons, scope+": "+reason)
}

func (d *doubts) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.reasons...)
}

func lossRequest(scope, key string) idempotency.ClaimRequest {
	return idempotency.ClaimRequest{Scope: scope, Key: key, Fingerprint: "fp-" + key, CommandID: "cmd-" + key,
		Holder: "w", Lease: time.Minute, TxnLock: "txn-" + key}
}

// TestRedisLostRecordsAreInDoubt: whatever way Redis loses a merchant's
// records, the next claim of any of its keys, with a record or without,
// comes back Uncertain (the caller asks the gateway's status first), and a
// merchant Redis never held records for is not put in doubt.
func TestRedisLostRecordsAreInDoubt(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lose makes Redis lose (or possibly lose) what it holds.
		lose func(t *testing.T, r *lossServer)
		// kept: the records survive (the server restarted with them).
		kept bool
	}{
		{name: "FLUSHALL", lose: func(t *testing.T, r *lossServer) { r.rdb.FlushAll(t.Context()) }},
		{name: "restart without persistence", lose: func(t *testing.T, r *lossServer) { r.restart(t) }},
		{name: "restart with persistence (a new server process)", kept: true, lose: func(t *testing.T, r *lossServer) { r.restart(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startLossServer(t, tc.kept)
			var d doubts
			s := idempotency.NewRedis(r.rdb, idempotency.RedisOptions{TTL: time.Hour, Registry: newRegistry(t), OnDoubt: d.add})
			ctx := t.Context()

			// Before the loss: one key completed, one released after a
			// certain failure, one key never seen.
			done := claimStatus(t, s, lossRequest("M1", "done"), idempotency.Acquired)
			if done.Record.Uncertain {
				t.Fatalf("first claim of a new merchant is uncertain; want certain")
			}
			if err := s.Complete(ctx, "M1", "done", "txn-done", done.Record.Token, idempotency.Outcome{Succeeded: true, EventID: "e1", Event: json.RawMessage(`{}`)}); err != nil {
				t.Fatal(err)
			}
			rel := claimStatus(t, s, lossRequest("M1", "released"), idempotency.Acquired)
			if err := s.Release(ctx, "M1", "released", "txn-released", rel.Record.Token, false); err != nil {
				t.Fatal(err)
			}
			if got := d.list(); len(got) != 0 {
				t.Fatalf("doubts before the loss: %q", got)
			}

			tc.lose(t, r)

			// A key whose record is gone (or survives) is uncertain now,
			// and so is a key the merchant never used: its record may be
			// what was lost.
			if tc.kept {
				claimStatus(t, s, lossRequest("M1", "done"), idempotency.Completed)
				c := claimStatus(t, s, lossRequest("M1", "released"), idempotency.Resumed)
				if !c.Record.Uncertain || !c.Settle {
					t.Errorf("released key after the restart: uncertain %v, settle %v; want both", c.Record.Uncertain, c.Settle)
				}
			} else {
				for _, key := range []string{"done", "released"} {
					c := claimStatus(t, s, lossRequest("M1", key), idempotency.Acquired)
					if !c.Record.Uncertain {
						t.Errorf("claim of %s after the loss: uncertain = false, want true", key)
					}
				}
			}
			c := claimStatus(t, s, lossRequest("M1", "new"), idempotency.Acquired)
			if !c.Record.Uncertain {
				t.Errorf("claim of a new key after the loss: uncertain = false, want true (its record may be what was lost)")
			}
			// The doubt is recorded on the record, so whoever takes the key
			// over reconciles too.
			if err := s.Release(ctx, "M1", "new", "txn-new", c.Record.Token, false); err != nil {
				t.Fatal(err)
			}
			if rec, err := s.Get(ctx, "M1", "new"); err != nil || !rec.Uncertain {
				t.Errorf("Get after Release = uncertain %v, %v; want true", rec.Uncertain, err)
			}
			// Another merchant, never seen before: no doubt.
			if c := claimStatus(t, s, lossRequest("M2", "first"), idempotency.Acquired); c.Record.Uncertain {
				t.Errorf("first claim of another, new merchant after the loss: uncertain = true, want false")
			}
			if got := d.list(); len(got) != 1 || !strings.HasPrefix(got[0], "M1: ") {
				t.Errorf("OnDoubt calls = %q, want one for M1", got)
			}
		})
	}
}

// TestRedisWithoutRegistryDoubtsNewScopes: with no registry a missing
// marker cannot be told from a lost one, and is taken as lost.
func TestRedisWithoutRegistryDoubtsNewScopes(t *testing.T) {
	r := testenv.StartRedis(t)
	s := idempotency.NewRedis(r.Client(t), idempotency.RedisOptions{Prefix: r.Prefix, TTL: time.Hour})
	if c := claimStatus(t, s, lossRequest("M1", "k"), idempotency.Acquired); !c.Record.Uncertain {
		t.Errorf("claim without a registry: uncertain = false, want true")
	}
}

// TestRedisConcurrentFirstClaimsOfAMerchant: workers racing on a new
// merchant's first keys neither fail nor put it in doubt.
func TestRedisConcurrentFirstClaimsOfAMerchant(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	reg := newRegistry(t)
	var d doubts
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := idempotency.NewRedis(rdb, idempotency.RedisOptions{Prefix: r.Prefix, TTL: time.Hour, Registry: reg, OnDoubt: d.add})
			c, err := s.Claim(context.Background(), lossRequest("M-race", "k"+strconv.Itoa(i)))
			if err != nil || c.Status != idempotency.Acquired || c.Record.Uncertain {
				t.Errorf("claim %d = %v uncertain %v, %v; want acquired, certain", i, c.Status, c.Record.Uncertain, err)
			}
		}()
	}
	wg.Wait()
	if got := d.list(); len(got) != 0 {
		t.Errorf("doubts = %q, want none", got)
	}
}

// TestRedisWaitReplicas: a claim counts only when the replicas asked for
// acknowledge it; otherwise it fails closed and gives the key back.
func TestRedisWaitReplicas(t *testing.T) {
	r := startLossServer(t, false)
	reg := newRegistry(t)
	s := idempotency.NewRedis(r.rdb, idempotency.RedisOptions{TTL: time.Hour, Registry: reg, WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond})
	_, err := s.Claim(t.Context(), lossRequest("M1", "k"))
	if !errors.Is(err, idempotency.ErrNotDurable) {
		t.Fatalf("claim with no replica = %v, want ErrNotDurable", err)
	}
	if rec, err := s.Get(t.Context(), "M1", "k"); err != nil || rec.State != idempotency.StateReleased {
		t.Errorf("record after a claim that was not durable = %q, %v; want released", rec.State, err)
	}

	startReplica(t, r.addr)
	// A loaded machine may take a moment to acknowledge: give it time.
	s = idempotency.NewRedis(r.rdb, idempotency.RedisOptions{TTL: time.Hour, Registry: reg, WaitReplicas: 1, WaitTimeout: 3 * time.Second})
	c := claimStatus(t, s, lossRequest("M1", "k2"), idempotency.Acquired)
	if c.Record.Uncertain {
		t.Errorf("durable claim is uncertain")
	}
	claimStatus(t, s, lossRequest("M1", "k"), idempotency.Resumed)
}

func claimStatus(t *testing.T, s idempotency.Store, r idempotency.ClaimRequest, want idempotency.ClaimStatus) idempotency.Claim {
	t.Helper()
	c, err := s.Claim(t.Context(), r)
	if err != nil || c.Status != want {
		t.Fatalf("Claim(%s/%s) = %v, %v; want %v", r.Scope, r.Key, c.Status, err, want)
	}
	return c
}

// lossServer is a redis-server of the test's own that it can restart, with
// or without an append-only file (appendfsync always: nothing acknowledged
// is lost by a restart).
type lossServer struct {
	addr string
	dir  string
	args []string
	cmd  *exec.Cmd
	rdb  *redis.Client
}

func startLossServer(t *testing.T, persistent bool) *lossServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("redis-server not on PATH: %v", err)
	}
	port := testenv.FreePort(t)
	r := &lossServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: t.TempDir()}
	r.args = []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--dir", r.dir,
		"--logfile", filepath.Join(r.dir, "redis.log"), "--repl-diskless-sync-delay", "0", "--appendonly", "no"}
	if persistent {
		r.args[len(r.args)-1] = "yes"
		r.args = append(r.args, "--appendfsync", "always")
	}
	r.start(t)
	r.rdb = redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	t.Cleanup(func() {
		r.rdb.Close()
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	})
	return r
}

func (r *lossServer) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command("redis-server", r.args...)
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitRedis(t, r.addr)
}

// restart stops the server (SHUTDOWN NOSAVE: the append-only file, if any,
// already holds every write) and starts it again on the same port and dir.
func (r *lossServer) restart(t *testing.T) {
	t.Helper()
	_ = r.rdb.ShutdownNoSave(t.Context()).Err()
	_ = r.cmd.Wait()
	r.start(t)
}

func startReplica(t *testing.T, master string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(master)
	p := testenv.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	dir := t.TempDir()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--replicaof", host, port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitRedis(t, addr)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	m := redis.NewClient(&redis.Options{Addr: master})
	defer m.Close()
	for !strings.Contains(c.Info(t.Context(), "replication").Val(), "master_link_status:up") ||
		!strings.Contains(m.Info(t.Context(), "replication").Val(), "state=online") {
		if time.Now().After(deadline) {
			t.Fatalf("replica %s never linked to %s", addr, master)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitRedis(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := redis.NewClient(&redis.Options{Addr: addr})
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s not ready: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
