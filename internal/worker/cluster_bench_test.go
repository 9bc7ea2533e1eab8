package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkCluster compares the throughput of 3 workers on a 3-node
// JetStream cluster (every stream and bucket R3) with 1 worker on one
// server (R1), on the same machine: b.N captures published at once, from
// the first publish until the events stream holds b.N events. Each worker
// runs in-process with its own NATS connection, WORKER_CONCURRENCY 64, a
// real redis-server (or the KV store: kv=true), and the sandbox gateway
// over HTTP with no latency, so the figure is what the CPU allows: on a
// small machine the cluster does three times the replication work on the
// same cores.
//
//	go test -run '^$' -bench BenchmarkCluster -benchtime 5000x ./internal/worker
func BenchmarkCluster(b *testing.B) {
	for _, kv := range []bool{false, true} {
		store := "redis"
		if kv {
			store = "kv"
		}
		b.Run(fmt.Sprintf("store=%s/1-worker-1-node", store), func(b *testing.B) {
			benchCluster(b, clusterOptions{nodes: 1, workers: 1, concurrency: 64, kv: kv, lease: 30 * time.Second, ackWait: 30 * time.Second})
		})
		b.Run(fmt.Sprintf("store=%s/3-workers-3-nodes", store), func(b *testing.B) {
			benchCluster(b, clusterOptions{nodes: 3, workers: 3, concurrency: 64, kv: kv, lease: 30 * time.Second, ackWait: 30 * time.Second})
		})
	}
}

func benchCluster(b *testing.B, o clusterOptions) {
	s := startClusterSystem(b, o)
	caps := make([]*capture, b.N)
	for i := range caps {
		c := &capture{merchant: fmt.Sprintf("M%02d", i%8), key: fmt.Sprintf("b%06d", i), amount: 1000}
		c.auth, c.id = s.sb.Authorise(c.merchant, c.amount, "JPY"), c.key
		caps[i] = c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	subject := s.sc.CommandSubject("capture")

	b.ResetTimer()
	start := time.Now()
	for _, c := range caps {
		if _, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: c.body(c.id)}, jetstream.WithMsgID(c.id)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-s.js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("publishes not acknowledged")
	}
	for {
		st, err := s.js.Stream(ctx, s.sc.Events)
		if err != nil {
			b.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.State.Msgs >= uint64(b.N) {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("%d of %d events", info.State.Msgs, b.N)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commands/s")
	b.ReportMetric(0, "ns/op")
}
