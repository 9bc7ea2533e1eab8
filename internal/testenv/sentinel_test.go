//go:build unix

package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestSentinelFailover writes a key that the replica has acknowledged (not
// while paused, once resumed), kills the master, and reads the key back
// through the same failover client from the replica the sentinels promoted;
// the old master, restarted, follows the new one.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a Sentinel failover takes seconds; skipped with -short")
	}
	begin := time.Now()
	s := StartSentinel(t, 1, 3)
	t.Logf("started 1 master, 1 replica, 3 sentinels in %v", time.Since(begin).Round(time.Millisecond))

	ctx := t.Context()
	if got, want := s.MasterAddr(t), s.NodeAddrs[0]; got != want {
		t.Fatalf("MasterAddr() = %s, want %s", got, want)
	}
	c := s.Client(t)
	key := Name(t)
	if err := c.Set(ctx, key, "before failover", 0).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	// A paused replica acknowledges nothing; resumed, it catches up.
	replica := s.Node(t, s.NodeAddrs[1])
	replica.Pause(t)
	if n, err := c.Wait(ctx, 1, 200*time.Millisecond).Result(); err != nil || n != 0 {
		replica.Resume(t)
		t.Fatalf("WAIT 1 200 with the replica paused = %d, %v, want 0", n, err)
	}
	replica.Resume(t)
	if n, err := c.Wait(ctx, 1, 2*time.Second).Result(); err != nil || n < 1 {
		t.Fatalf("WAIT 1 2000 = %d, %v, want 1", n, err)
	}

	old := s.KillMaster(t)
	killed := time.Now()
	master := s.WaitFailover(t, old, 30*time.Second)
	t.Logf("failover from %s to %s in %v", old, master, time.Since(killed).Round(time.Millisecond))
	if master == old {
		t.Fatalf("WaitFailover(%s) = %s, want another master", old, master)
	}

	// The client's pooled connections to the killed master fail until it
	// has asked the sentinels again.
	got := retry(t, 10*time.Second, func() (string, error) { return c.Get(ctx, key).Result() })
	if want := "before failover"; got != want {
		t.Fatalf("GET %s after failover = %q, want %q", key, got, want)
	}
	direct := redis.NewClient(&redis.Options{Addr: master})
	defer direct.Close()
	if err := c.Set(ctx, key, "after failover", 0).Err(); err != nil {
		t.Fatalf("SET %s after failover: %v", key, err)
	}
	if got, err := direct.Get(ctx, key).Result(); err != nil || got != "after failover" {
		t.Fatalf("GET %s on new master %s = %q, %v, want %q", key, master, got, err, "after failover")
	}

	s.Node(t, old).Restart(t)
	if n, err := c.Wait(ctx, 1, 2*time.Second).Result(); err != nil || n < 1 {
		t.Fatalf("WAIT 1 2000 after restarting %s = %d, %v, want 1", old, n, err)
	}
	restarted := redis.NewClient(&redis.Options{Addr: old})
	defer restarted.Close()
	if got, err := restarted.Get(context.Background(), key).Result(); err != nil || got != "after failover" {
		t.Fatalf("GET %s on restarted old master %s = %q, %v, want %q", key, old, got, err, "after failover")
	}
	if role, err := infoField(old, "role"); err != nil || role != "slave" {
		t.Fatalf("role of restarted old master %s = %q, %v, want slave", old, role, err)
	}
}

// retry calls f until it succeeds or timeout passes, and returns its result.
func retry(t *testing.T, timeout time.Duration, f func() (string, error)) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, err := f()
		if err == nil {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSentinelFailoverURL(t *testing.T) {
	s := &Sentinel{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}}
	got := s.FailoverURL()
	if want := "redis://127.0.0.1:1?master_name=m&addr=127.0.0.1:2&addr=127.0.0.1:3"; got != want {
		t.Fatalf("FailoverURL() = %s, want %s", got, want)
	}
	opt, err := redis.ParseFailoverURL(got)
	if err != nil {
		t.Fatalf("ParseFailoverURL(%s): %v", got, err)
	}
	if opt.MasterName != "m" || len(opt.SentinelAddrs) != 3 || opt.SentinelAddrs[2] != "127.0.0.1:3" {
		t.Fatalf("ParseFailoverURL(%s) = master %q, sentinels %v, want m and all three", got, opt.MasterName, opt.SentinelAddrs)
	}
}
