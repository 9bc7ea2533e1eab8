package main

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

// TestWorkerOnCluster runs the worker against a 3-node JetStream cluster
// with STREAM_REPLICAS=3:
//   - the three streams, the KV store's bucket and, with Redis, the scope
//     registry's bucket get 3 replicas;
//   - when the leader of the shared consumer crashes, /readyz says not ready
//     until a new leader answers, then ready again, without a restart;
//   - STREAM_REPLICAS=5 fails at start with an error naming it (exit 2).
func TestWorkerOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node JetStream cluster and waits out an election")
	}
	cl := testenv.StartNATSCluster(t, 3)
	_, js := cl.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	clusterEnv := func() env {
		return env{"NATS_URL": cl.URL(), "STREAM_REPLICAS": "3", "HTTP_ADDR": freeAddr(t), "SANDBOX_ADDR": freeAddr(t),
			"LOG_FORMAT": "json", "DATA_DIR": t.TempDir(), "ACK_WAIT": "5s", "LEASE_DURATION": "5s"}
	}

	w := startRun(t, clusterEnv())
	w.waitReady(t)
	sc := streams.Default()
	for _, name := range []string{sc.Commands, sc.Events, sc.DLQ, "KV_payworker_idempotency"} {
		if got := peers(t, js, name); got != 3 {
			t.Errorf("stream %s has %d peers, want 3", name, got)
		}
	}
	if _, err := exec.LookPath("redis-server"); err == nil {
		e := clusterEnv()
		e["REDIS_URL"] = testenv.StartRedis(t).URL
		r := startRun(t, e)
		r.waitReady(t)
		if got := peers(t, js, "KV_payworker_scopes"); got != 3 {
			t.Errorf("scope registry bucket has %d peers, want 3", got)
		}
		if _, err := r.stop(); err != nil {
			t.Errorf("worker with Redis: stop = %v", err)
		}
	} else {
		t.Log("redis-server not on PATH: the scope registry's replicas are not checked here")
	}

	// The consumer's leader crashes: not ready until another server leads it.
	c, err := js.Consumer(ctx, sc.Commands, sc.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("consumer info = %+v, %v; want a leader", info, err)
	}
	leader := info.Cluster.Leader
	base := "http://" + w.env["HTTP_ADDR"]
	cl.Kill(leader)
	began := time.Now()
	poll(t, 30*time.Second, "/readyz 503 after the consumer's leader crashed", func() (bool, string) {
		code, body := get(base + "/readyz")
		return code == http.StatusServiceUnavailable, body
	})
	notReady := time.Since(began)
	poll(t, 60*time.Second, "/readyz 200 once another server leads the consumer", func() (bool, string) {
		code, body := get(base + "/readyz")
		return code == http.StatusOK, body
	})
	t.Logf("consumer leader %s killed: /readyz 503 after %v, 200 again after %v",
		leader, notReady.Round(10*time.Millisecond), time.Since(began).Round(10*time.Millisecond))
	if err, done := w.exited(); done {
		t.Fatalf("worker exited during the election: %v", err)
	}
	cl.Restart(leader)
	cl.WaitJetStream(30 * time.Second)

	e := clusterEnv()
	e["STREAM_REPLICAS"] = "5"
	// A context of its own: the election above may have used most of ctx on
	// a loaded machine.
	rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
	defer rcancel()
	err = run(rctx, []string{"worker"}, e.get, &strings.Builder{}, &testenv.LogBuffer{})
	var ue usageError
	if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "STREAM_REPLICAS: 5 replicas: the NATS servers of NATS_URL cannot place them") {
		t.Errorf("run(STREAM_REPLICAS=5 on 3 servers) = %v, want a usage error naming STREAM_REPLICAS", err)
	}
}

// TestStreamReplicasOnOneServer checks that STREAM_REPLICAS=3 against a
// single server fails at start with an error naming the variable.
func TestStreamReplicasOnOneServer(t *testing.T) {
	n := testenv.StartNATS(t)
	e := env{"NATS_URL": n.URL, "STREAM_REPLICAS": "3", "HTTP_ADDR": "off", "SANDBOX_ADDR": freeAddr(t), "DATA_DIR": t.TempDir()}
	err := run(context.Background(), []string{"worker"}, e.get, &strings.Builder{}, &testenv.LogBuffer{})
	var ue usageError
	if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "STREAM_REPLICAS: 3 replicas") ||
		!strings.Contains(err.Error(), "replicas > 1 not supported in non-clustered mode") {
		t.Errorf("run(STREAM_REPLICAS=3 on one server) = %v, want a usage error naming STREAM_REPLICAS and JetStream's reason", err)
	}
}

// peers returns how many servers hold stream: its leader and replicas.
func peers(t *testing.T, js jetstream.JetStream, stream string) int {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream %s info: %+v, %v", stream, info, err)
	}
	return 1 + len(info.Cluster.Replicas)
}
