package fleet_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/fleet"
	"github.com/payworker/payworker/internal/testenv"
)

// member is one worker's Fleet, run until stop or the end of the test.
type member struct {
	f    *fleet.Fleet
	stop func()

	mu    sync.Mutex
	slows map[string]time.Time
}

func join(t *testing.T, js jetstream.JetStream, id string, ttl time.Duration) *member {
	t.Helper()
	m := &member{slows: map[string]time.Time{}}
	f, err := fleet.Join(context.Background(), js, fleet.Options{
		WorkerID: id, Period: 100 * time.Millisecond, TTL: ttl,
		OnSlow: func(gw string, until time.Time) {
			m.mu.Lock()
			m.slows[gw] = until
			m.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.f = f
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	m.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(m.stop)
	select {
	case <-f.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("fleet not ready after 5s")
	}
	return m
}

func waitWorkers(t *testing.T, m *member, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for m.f.Workers() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Workers() = %d after %v, want %d", m.f.Workers(), within, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMembership(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	a := join(t, js, "worker a", time.Second)
	waitWorkers(t, a, 1, time.Second)
	b := join(t, js, "worker-b", time.Second)
	// b reads a from the bucket; a sees b through the watch.
	waitWorkers(t, b, 2, 200*time.Millisecond)
	waitWorkers(t, a, 2, 200*time.Millisecond)
	c := join(t, js, "worker-b", time.Second) // the same id: still another worker
	waitWorkers(t, a, 3, 200*time.Millisecond)
	// A clean stop deletes its key: counted out at once.
	c.stop()
	waitWorkers(t, a, 2, 300*time.Millisecond)
	waitWorkers(t, b, 2, 300*time.Millisecond)
}

func TestSilentWorkerIsCountedOutAfterTTL(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	a := join(t, js, "a", 600*time.Millisecond)
	// A worker that put one heartbeat and died: no Run, no goodbye.
	if _, err := fleet.Join(context.Background(), js, fleet.Options{WorkerID: "dead", TTL: 600 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitWorkers(t, a, 2, 300*time.Millisecond)
	start := time.Now()
	waitWorkers(t, a, 1, 2*time.Second)
	if d := time.Since(start); d > 1200*time.Millisecond {
		t.Errorf("a dead worker was counted out after %v, want about the TTL (600ms)", d)
	}
}

func TestSlowReachesEveryWorker(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	a := join(t, js, "a", time.Second)
	b := join(t, js, "b", time.Second)
	until := time.Now().Add(3 * time.Second).Round(time.Millisecond)
	if err := a.f.Slow(context.Background(), "paymentoptions", until); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		b.mu.Lock()
		got := b.slows["paymentoptions"]
		b.mu.Unlock()
		if got.Equal(until) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b was told slow until %v, want %v", got, until)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A worker that joins during the slow-down reads it from the bucket.
	c := join(t, js, "c", time.Second)
	c.mu.Lock()
	got := c.slows["paymentoptions"]
	c.mu.Unlock()
	if !got.Equal(until) {
		t.Errorf("a worker joining during a slow-down was told %v, want %v", got, until)
	}
}
