package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

// TestKVOnCluster runs the KV store and the scope registry on a 3-node
// JetStream cluster: their buckets get the replicas asked for, a later
// start asking for fewer leaves them as they are, one asking for more raises
// them, and more replicas than servers fail with an error
// streams.PlacementRefused knows. Then the leader of the store's bucket
// crashes: a claim and a registration made at once wait out the election
// (each request with its own timeout, sent again) and succeed, and what was
// written before the crash is still there.
func TestKVOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node JetStream cluster and waits out an election")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := testenv.StartNATSCluster(t, 3)
	_, js := cl.Connect(t)

	opts := idempotency.KVOptions{Bucket: "idem_r3", TTL: time.Hour, Replicas: 3, RetryFor: 45 * time.Second}
	s := newKVStore(t, js, opts)
	reg, err := idempotency.NewKVScopeRegistry(ctx, js, "scopes_r3", 3)
	if err != nil {
		t.Fatalf("NewKVScopeRegistry(R3) error = %v", err)
	}
	bucketPeers(t, js, 3, "KV_idem_r3", "KV_scopes_r3")
	newKVStore(t, js, idempotency.KVOptions{Bucket: "idem_r3", TTL: time.Hour, Replicas: 1})
	if _, err := idempotency.NewKVScopeRegistry(ctx, js, "scopes_r3", 1); err != nil {
		t.Fatalf("NewKVScopeRegistry(R1) over R3 error = %v", err)
	}
	bucketPeers(t, js, 3, "KV_idem_r3", "KV_scopes_r3")

	newKVStore(t, js, idempotency.KVOptions{Bucket: "idem_r1", TTL: time.Hour})
	if _, err := idempotency.NewKVScopeRegistry(ctx, js, "scopes_r1", 1); err != nil {
		t.Fatal(err)
	}
	bucketPeers(t, js, 1, "KV_idem_r1", "KV_scopes_r1")
	newKVStore(t, js, idempotency.KVOptions{Bucket: "idem_r1", TTL: time.Hour, Replicas: 3})
	if _, err := idempotency.NewKVScopeRegistry(ctx, js, "scopes_r1", 3); err != nil {
		t.Fatal(err)
	}
	bucketPeers(t, js, 3, "KV_idem_r1", "KV_scopes_r1")

	if _, err := idempotency.NewKV(ctx, js, idempotency.KVOptions{Bucket: "idem_r5", TTL: time.Hour, Replicas: 5}); !streams.PlacementRefused(err) {
		t.Errorf("NewKV(5 replicas on 3 servers) error = %v, want one streams.PlacementRefused recognises", err)
	}
	if _, err := idempotency.NewKVScopeRegistry(ctx, js, "scopes_r5", 5); !streams.PlacementRefused(err) {
		t.Errorf("NewKVScopeRegistry(5 replicas on 3 servers) error = %v, want one streams.PlacementRefused recognises", err)
	}

	claim := func(key string) idempotency.Claim {
		t.Helper()
		c, err := s.Claim(ctx, idempotency.ClaimRequest{Scope: "M1", Key: key, Fingerprint: "fp-" + key,
			CommandID: "c-" + key, Holder: "w1", Lease: time.Minute, TxnLock: "txn-" + key})
		if err != nil {
			t.Fatalf("Claim(%s) error = %v", key, err)
		}
		return c
	}
	if c := claim("before"); c.Status != idempotency.Acquired {
		t.Fatalf("Claim(before) = %v, want acquired", c.Status)
	}
	if known, err := reg.Register(ctx, "M-before"); err != nil || known {
		t.Fatalf("Register(M-before) = %t, %v; want new", known, err)
	}

	leader := cl.WaitStreamLeader(js, "KV_idem_r3", 30*time.Second)
	regLeader := cl.WaitStreamLeader(js, "KV_scopes_r3", 30*time.Second)
	cl.Kill(leader)
	began := time.Now()
	if c := claim("during"); c.Status != idempotency.Acquired {
		t.Errorf("Claim(during), made as the bucket's leader %s crashed = %v, want acquired", leader, c.Status)
	}
	t.Logf("leader %s of KV_idem_r3 killed (it also led KV_scopes_r3: %t); a claim made at once took %v",
		leader, regLeader == leader, time.Since(began).Round(10*time.Millisecond))
	if known, err := reg.Register(ctx, "M-during"); err != nil || known {
		t.Errorf("Register(M-during) = %t, %v; want new", known, err)
	}
	for _, scope := range []string{"M-before", "M-during"} {
		if known, err := reg.Register(ctx, scope); err != nil || !known {
			t.Errorf("Register(%s) again = %t, %v; want known", scope, known, err)
		}
	}
	for _, key := range []string{"before", "during"} {
		if c := claim(key); c.Status != idempotency.Busy {
			t.Errorf("Claim(%s) again = %v, want busy (held under a live lease)", key, c.Status)
		}
		rec, err := s.Get(ctx, "M1", key)
		if err != nil || rec.Holder != "w1" || rec.State != idempotency.StateInProgress {
			t.Errorf("Get(%s) = %+v, %v; want in progress, held by w1", key, rec, err)
		}
	}
	cl.Restart(leader)
	cl.WaitJetStream(30 * time.Second)
}

// bucketPeers checks that each bucket's stream has n peers.
func bucketPeers(t *testing.T, js jetstream.JetStream, n int, names ...string) {
	t.Helper()
	for _, name := range names {
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := 0
			if s, err := js.Stream(t.Context(), name); err == nil {
				if info, err := s.Info(t.Context()); err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
					got = 1 + len(info.Cluster.Replicas)
				}
			}
			if got == n {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("bucket stream %s has %d peers, want %d", name, got, n)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
