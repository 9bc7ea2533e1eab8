package testenv_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/testenv"
)

// TestNATSCluster checks the cluster helper: an R3 stream has a leader and
// three current replicas; after Kill of its leader another server leads and
// takes publishes; after Restart, on the same ports and store, the killed
// server is a current replica again and holds every message. Stop does the
// same cleanly: the leader hands over at once instead of after an election
// timeout.
func TestNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node JetStream cluster and waits out elections")
	}
	c := testenv.StartNATSCluster(t, 3)
	if got := strings.Count(c.URL(), ","); got != 2 {
		t.Fatalf("URL() = %q, want 3 comma-separated URLs", c.URL())
	}
	_, js := c.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("CreateStream(R3) error = %v", err)
	}
	sent := 0
	publish := func(n int) {
		t.Helper()
		for range n {
			id := fmt.Sprint("m", sent)
			// An election may be running: the same id makes a retry safe.
			for try := 0; ; try++ {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, "s.x", []byte(id), jetstream.WithMsgID(id))
				cancel()
				if err == nil {
					break
				}
				if try == 30 {
					t.Fatalf("publish %s: %v", id, err)
				}
			}
			sent++
		}
	}
	publish(10)

	for _, how := range []string{"kill", "stop"} {
		leader := c.WaitStreamLeader(js, "S", 30*time.Second)
		if got, err := c.Leader(ctx, js, "S"); err != nil || got != leader {
			t.Fatalf("Leader(S) = %q, %v; want %q", got, err, leader)
		}
		began := time.Now()
		if how == "kill" {
			c.Kill(leader)
		} else {
			c.Stop(leader)
		}
		if c.Running(leader) || c.Server(leader) != nil {
			t.Fatalf("%s(%s): server still running", how, leader)
		}
		next := c.WaitStreamLeader(js, "S", 30*time.Second)
		t.Logf("%s %s: %s leads after %v", how, leader, next, time.Since(began).Round(10*time.Millisecond))
		if next == leader {
			t.Fatalf("after %s(%s), leader = %s, want another server", how, leader, next)
		}
		publish(10)
		c.Restart(leader)
		c.WaitJetStream(30 * time.Second)
		c.WaitStreamLeader(js, "S", 30*time.Second)
		waitCurrent(t, c, leader, "S")
	}

	s, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Msgs; got != uint64(sent) {
		t.Errorf("stream holds %d messages, want %d (every publish once)", got, sent)
	}
	if n := len(info.Cluster.Replicas) + 1; n != 3 {
		t.Errorf("stream has %d peers, want 3", n)
	}
}

// waitCurrent waits until the server name is a current replica of stream.
func waitCurrent(t *testing.T, c *testenv.NATSCluster, name, stream string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s := c.Server(name); s != nil && s.JetStreamIsStreamCurrent("$G", stream) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %s: not a current replica of %s after 30s", name, stream)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
