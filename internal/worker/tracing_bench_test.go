package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/systemtest"
)

// BenchmarkTracing drives b.N captures through one worker, as
// BenchmarkCaptureEndToEnd's burst does, with tracing off (no SDK: the
// commands' trace context only) and on (the SDK sampling every command,
// spans batched to an exporter that drops them), and reports throughput.
// The bound: on costs at most 10 %.
//
//	go test -run '^$' -bench BenchmarkTracing -benchtime 3000x -count 3 ./internal/worker
func BenchmarkTracing(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchTraced(b, false) })
	b.Run("on-100pct", func(b *testing.B) { benchTraced(b, true) })
}

func benchTraced(b *testing.B, on bool) {
	o := systemtest.DefaultOptions()
	o.Concurrency = 64
	if on {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		o.Tracer = tp.Tracer("bench")
	}
	s := systemtest.Start(b, o)
	auths := make([]string, b.N)
	for i := range auths {
		auths[i] = s.Sandbox.Authorise(merchant, 1000, "JPY")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := s.JS.OrderedConsumer(ctx, s.Streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.Streams.EventSubject(string(events.CaptureSucceeded))},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	cc, err := c.Consume(func(jetstream.Msg) {
		if got.Add(1) == int64(b.N) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		id := fmt.Sprintf("bench-%d", i)
		body, _ := json.Marshal(systemtest.Cmd{"command_id": id, "type": "capture", "merchant_id": merchant,
			"transaction_id": auths[i], "amount": 1000, "currency": "JPY"})
		if _, err := s.JS.PublishMsgAsync(&nats.Msg{Subject: s.Streams.CommandSubject("capture"), Data: body}, jetstream.WithMsgID(id)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d results", got.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commands/s")
	b.ReportMetric(0, "ns/op")
}
