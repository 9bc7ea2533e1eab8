package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/systemtest"
)

// BenchmarkCaptureEndToEnd drives b.N captures through one worker (in-process
// NATS with JetStream, a real redis-server, the sandbox gateway over HTTP with
// no latency) and reports throughput and the latency from publishing a
// command to its result event being stored. "burst" publishes everything at
// once (throughput; its latencies are mostly queueing), "paced-1000" publishes
// 1,000 commands a second, below capacity (latency of one command).
//
//	go test -run '^$' -bench BenchmarkCaptureEndToEnd -benchtime 5000x ./internal/worker
func BenchmarkCaptureEndToEnd(b *testing.B) {
	b.Run("burst", func(b *testing.B) { benchCaptures(b, 0) })
	b.Run("paced-1000", func(b *testing.B) { benchCaptures(b, 1000) })
}

func benchCaptures(b *testing.B, perSecond int) {
	o := systemtest.DefaultOptions()
	o.Concurrency = 64 // WORKER_CONCURRENCY's default
	s := systemtest.Start(b, o)
	auths := make([]string, b.N)
	for i := range auths {
		auths[i] = s.Sandbox.Authorise(merchant, 1000, "JPY")
	}
	var mu sync.Mutex
	published := make(map[string]time.Time, b.N)
	latencies := make([]time.Duration, 0, b.N)
	done := make(chan struct{})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := s.JS.OrderedConsumer(ctx, s.Streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.Streams.EventSubject(string(events.CaptureSucceeded))},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if t0, ok := published[ev.Data.CommandID]; ok {
			latencies = append(latencies, now.Sub(t0))
			if len(latencies) == b.N {
				close(done)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	b.ResetTimer()
	start := time.Now()
	var tick *time.Ticker
	if perSecond > 0 {
		tick = time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
	}
	for i := range b.N {
		if tick != nil {
			<-tick.C
		}
		id := fmt.Sprintf("bench-%d", i)
		body, _ := json.Marshal(systemtest.Cmd{"command_id": id, "type": "capture", "merchant_id": merchant,
			"transaction_id": auths[i], "amount": 1000, "currency": "JPY"})
		mu.Lock()
		published[id] = time.Now()
		mu.Unlock()
		if _, err := s.JS.PublishMsgAsync(&nats.Msg{Subject: s.Streams.CommandSubject("capture"), Data: body}, jetstream.WithMsgID(id)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-s.JS.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d results", len(latencies), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commands/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
