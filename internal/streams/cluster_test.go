package streams_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

// TestEnsureOnCluster runs Ensure against a 3-node JetStream cluster: R3
// streams are created with three peers; a worker or publisher left at the
// default of 1 replica neither scales them down nor undoes an operator's
// limit, and reports both; more replicas than servers fail with an error
// PlacementRefused knows; a stream created R1 is raised to R3.
func TestEnsureOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node JetStream cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := testenv.StartNATSCluster(t, 3)
	_, js := cl.Connect(t)
	r3 := streams.Default()
	r3.Replicas = 3
	rep, err := streams.Ensure(ctx, js, r3, streams.EnsureOptions{})
	if err != nil {
		t.Fatalf("Ensure(R3) error = %v", err)
	}
	if want := []string{r3.Commands, r3.Events, r3.DLQ}; !slices.Equal(rep.Created, want) {
		t.Errorf("Ensure(R3).Created = %q, want %q", rep.Created, want)
	}
	wantPeers(t, js, 3, r3.Commands, r3.Events, r3.DLQ)

	// An operator halves the events' byte bound.
	evts := streamConfig(t, js, r3.Events)
	evts.MaxBytes = 5 << 30
	if _, err := js.UpdateStream(ctx, evts); err != nil {
		t.Fatalf("UpdateStream(events, 5 GiB) error = %v", err)
	}
	r1 := streams.Default()
	rep, err = streams.Ensure(ctx, js, r1, streams.EnsureOptions{})
	if err != nil {
		t.Fatalf("Ensure(R1) over R3 streams error = %v", err)
	}
	want := []string{
		"PAYMENT_COMMANDS replicas: 3, configured 1 (replicas are never lowered)",
		"PAYMENT_EVENTS replicas: 3, configured 1 (replicas are never lowered)",
		"PAYMENT_EVENTS max_bytes: 5368709120, configured 10737418240",
		"PAYMENT_DLQ replicas: 3, configured 1 (replicas are never lowered)",
	}
	if got := drifts(rep.Drift); !slices.Equal(got, want) || len(rep.Updated) != 0 {
		t.Errorf("Ensure(R1) = updated %q, drift\n%s\nwant no update, drift\n%s", drifts(rep.Updated), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantPeers(t, js, 3, r3.Commands, r3.Events, r3.DLQ)
	if got := streamConfig(t, js, r3.Events).MaxBytes; got != 5<<30 {
		t.Errorf("events max bytes = %d after Ensure, want the operator's %d", got, int64(5<<30))
	}

	r5 := streams.Default()
	r5.Replicas = 5
	if _, err := streams.Ensure(ctx, js, r5, streams.EnsureOptions{}); !streams.PlacementRefused(err) {
		t.Errorf("Ensure(R5 on 3 servers) error = %v, want one PlacementRefused recognises", err)
	}

	if err := js.DeleteStream(ctx, r3.DLQ); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Ensure(ctx, js, r1, streams.EnsureOptions{}); err != nil {
		t.Fatalf("Ensure(R1) creating the DLQ error = %v", err)
	}
	wantPeers(t, js, 1, r3.DLQ)
	rep, err = streams.Ensure(ctx, js, r3, streams.EnsureOptions{})
	if err != nil {
		t.Fatalf("Ensure(R3) over an R1 DLQ error = %v", err)
	}
	if got, want := drifts(rep.Updated), []string{"PAYMENT_DLQ replicas: 1, configured 3"}; !slices.Equal(got, want) {
		t.Errorf("Ensure(R3).Updated = %q, want %q", got, want)
	}
	wantPeers(t, js, 3, r3.DLQ)
}

// wantPeers checks that each stream has n peers: its leader and n-1
// replicas (a change of replicas takes a moment to show).
func wantPeers(t *testing.T, js jetstream.JetStream, n int, names ...string) {
	t.Helper()
	for _, name := range names {
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := 0
			if s, err := js.Stream(context.Background(), name); err == nil {
				if info, err := s.Info(context.Background()); err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
					got = 1 + len(info.Cluster.Replicas)
				}
			}
			if got == n {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("stream %s has %d peers, want %d", name, got, n)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
