package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/paymentoptions"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/internal/tracing"
)

// tracingRound is the number of captures each mode handles per round.
const tracingRound = 1000

// BenchmarkTracing measures what tracing costs one worker (64 in flight,
// in-process NATS, a redis-server process, the sandbox and the real
// PaymentOptions adapter over HTTP), as BenchmarkCaptureEndToEnd's burst
// does, in four modes side by side in the same run, each on servers of its
// own:
//
//   - baseline: the worker without OpenTelemetry (no tracer, the adapter's
//     own HTTP client), as the handlers ran before it;
//   - off: the worker as run builds it with no OTEL_* variable: the no-op
//     provider's tracer and the gateway client through tracing.Transport,
//     which leaves it unwrapped;
//   - on: the SDK sampling every command, spans batched as the worker
//     batches them (tracing.BatchOptions) and exported over OTLP/HTTP to a
//     receiver in the benchmark process, the gateway client under otelhttp;
//   - on-10pct: the same sampling one command in ten
//     (OTEL_TRACES_SAMPLER=parentbased_traceidratio, 0.1).
//
// Each iteration is one round: tracingRound captures through each mode in
// turn (the order rotates), each published at once and timed from the first
// publish to the last capture.succeeded; a traced mode is timed until its
// spans are exported too (ForceFlush). It reports each mode's commands/s
// over all rounds and its throughput ratio to baseline, over all rounds and
// the median of the rounds' own, and the ratio of the process's CPU time
// per command (the machine is shared: a round's throughput moves with
// whatever else runs beside, its CPU time much less). Many short rounds in
// rotating order give each mode the same share of the machine's good and
// bad moments. The bounds: on/baseline at least 0.90; off/baseline
// 1 within the noise. It also checks that every span of "on" was exported
// (none dropped by a full queue).
//
//	go test -run '^$' -bench BenchmarkTracing -benchtime 30x ./internal/worker
func BenchmarkTracing(b *testing.B) {
	if os.Getenv("GOGC") == "" {
		// As the worker runs without GOGC (cmd/worker defaultGCPercent).
		defer debug.SetGCPercent(debug.SetGCPercent(200))
	}
	ctx := context.Background()
	full, counted, recv := otlpProvider(b, sdktrace.AlwaysSample())
	tenth, _, _ := otlpProvider(b, sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1)))

	// Each system's goroutines, and those they start, carry a pprof label
	// mode=<name>: go test -cpuprofile, then pprof -tagfocus mode=on.
	modes := []*tracedSystem{
		startTraced(b, "baseline", nil),
		startTraced(b, "off", noop.NewTracerProvider()),
		startTraced(b, "on", full),
		startTraced(b, "on-10pct", tenth),
	}
	on := modes[2]
	for _, m := range modes { // warm up: connections, pools, cache-cold paths
		m.round(b, 200)
	}
	if err := full.ForceFlush(ctx); err != nil {
		b.Fatal(err)
	}
	counted.spans.Store(0)
	recv.bytes.Store(0)

	ratios := map[string][]float64{}
	b.ResetTimer()
	for i := range b.N {
		secs := map[string]float64{}
		for j := range modes {
			m := modes[(i+j)%len(modes)]
			b.StopTimer()
			runtime.GC() // each round pays for its own garbage
			b.StartTimer()
			cpu0, alloc0 := processCPU(), totalAlloc()
			d := m.round(b, tracingRound)
			if m.tp != nil {
				start := time.Now()
				if err := m.tp.ForceFlush(ctx); err != nil {
					b.Fatal(err)
				}
				d += time.Since(start)
			}
			m.cpu += processCPU() - cpu0
			m.alloc += totalAlloc() - alloc0
			m.elapsed += d
			m.done += tracingRound
			secs[m.name] = d.Seconds()
		}
		for _, m := range modes[1:] {
			ratios[m.name] = append(ratios[m.name], secs["baseline"]/secs[m.name])
		}
	}
	b.StopTimer()
	base := modes[0]
	baseRate, baseCPU := float64(base.done)/base.elapsed.Seconds(), base.cpu.Seconds()/float64(base.done)
	b.ReportMetric(baseCPU*1e6, "baseline-cpu-us/cmd")
	for _, m := range modes {
		rate, cpu := float64(m.done)/m.elapsed.Seconds(), m.cpu.Seconds()/float64(m.done)
		b.ReportMetric(rate, m.name+"-commands/s")
		b.ReportMetric(float64(m.alloc)/float64(m.done), m.name+"-B/cmd")
		if m != base {
			b.ReportMetric(rate/baseRate, m.name+"/baseline")
			b.ReportMetric(median(ratios[m.name]), m.name+"/baseline-median")
			b.ReportMetric(cpu/baseCPU, m.name+"/baseline-cpu")
		}
	}
	b.ReportMetric(0, "ns/op")

	// Every span of the measured rounds reached the receiver, none dropped
	// by a full queue: CONSUMER, claim, CLIENT and PRODUCER per command.
	// The last CONSUMER spans end just after their event is read: wait for
	// them.
	time.Sleep(200 * time.Millisecond)
	if err := full.ForceFlush(ctx); err != nil {
		b.Fatal(err)
	}
	spans, cmds := counted.spans.Load(), int64(on.done)
	b.ReportMetric(float64(spans)/float64(cmds), "on-spans/cmd")
	b.ReportMetric(float64(recv.bytes.Load())/float64(cmds), "on-otlp-B/cmd")
	if spans < 4*cmds {
		b.Errorf("%d spans exported for %d commands, want 4 a command: spans were dropped", spans, cmds)
	}
}

// otlpProvider is an SDK provider sampling with sampler and exporting over
// OTLP/HTTP, with the worker's batch settings, to a receiver of its own in
// the benchmark's process; its export goroutine carries the pprof label
// mode=export.
func otlpProvider(b *testing.B, sampler sdktrace.Sampler) (*sdktrace.TracerProvider, *countingExporter, *otlpSink) {
	ctx := context.Background()
	recv := &otlpSink{}
	srv := httptest.NewServer(recv)
	b.Cleanup(srv.Close)
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"))
	if err != nil {
		b.Fatal(err)
	}
	counted := &countingExporter{SpanExporter: exp}
	var tp *sdktrace.TracerProvider
	pprof.Do(ctx, pprof.Labels("mode", "export"), func(context.Context) {
		tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(counted, tracing.BatchOptions(os.Getenv)...))
	})
	b.Cleanup(func() { _ = tp.Shutdown(ctx) })
	return tp, counted, recv
}

// tracedSystem is one worker with its own servers, in one mode.
type tracedSystem struct {
	name    string
	tp      *sdktrace.TracerProvider // nil: no SDK
	sys     *systemtest.System
	got     atomic.Int64
	want    atomic.Int64
	done    int
	elapsed time.Duration
	cpu     time.Duration // of the benchmark's process, over its rounds
	alloc   uint64        // bytes the process allocated over its rounds
	signal  chan struct{}
	seq     int
}

// startTraced starts a system whose worker traces with tp: nil is the
// baseline (no tracer, the adapter's own client).
func startTraced(b *testing.B, name string, tp trace.TracerProvider) (m *tracedSystem) {
	pprof.Do(context.Background(), pprof.Labels("mode", name), func(context.Context) { m = startTracedLabelled(b, name, tp) })
	m.tp, _ = tp.(*sdktrace.TracerProvider)
	return m
}

func startTracedLabelled(b *testing.B, name string, tp trace.TracerProvider) *tracedSystem {
	o := systemtest.DefaultOptions()
	o.Concurrency = 64
	o.Workers = 0
	s := systemtest.Start(b, o)
	if tp != nil {
		o.Tracer = tp.Tracer("bench")
		u, _ := url.Parse(s.GatewayURL)
		gw, err := paymentoptions.New(paymentoptions.Config{BaseURL: u, APIKey: "k", XAPIKey: "x", Timeout: 2 * time.Second,
			HTTPClient: &http.Client{Transport: tracing.Transport(tp, gateway.Transport(o.Concurrency))}})
		if err != nil {
			b.Fatal(err)
		}
		s.Gateway = gw
	}
	s.StartWorker(b, "w0", o)
	m := &tracedSystem{name: name, sys: s, signal: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	c, err := s.JS.OrderedConsumer(ctx, s.Streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.Streams.EventSubject(string(events.CaptureSucceeded))},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := c.Consume(func(jetstream.Msg) {
		if m.got.Add(1) == m.want.Load() {
			m.signal <- struct{}{}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	return m
}

// round publishes n captures at once and returns the time until the last
// capture.succeeded arrived. The authorisations are made before the clock
// starts.
func (m *tracedSystem) round(b *testing.B, n int) time.Duration {
	b.StopTimer()
	bodies := make([][]byte, n)
	ids := make([]string, n)
	for i := range bodies {
		m.seq++
		ids[i] = fmt.Sprintf("%s-%d", m.name, m.seq)
		bodies[i], _ = json.Marshal(systemtest.Cmd{"command_id": ids[i], "type": "capture", "merchant_id": merchant,
			"transaction_id": m.sys.Sandbox.Authorise(merchant, 1000, "JPY"), "amount": 1000, "currency": "JPY"})
	}
	m.want.Add(int64(n))
	b.StartTimer()
	start := time.Now()
	for i, body := range bodies {
		if _, err := m.sys.JS.PublishMsgAsync(&nats.Msg{Subject: m.sys.Streams.CommandSubject("capture"), Data: body}, jetstream.WithMsgID(ids[i])); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-m.signal:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%s: only %d of %d results", m.name, m.got.Load(), m.want.Load())
	}
	return time.Since(start)
}

// countingExporter counts the spans handed to the exporter.
type countingExporter struct {
	sdktrace.SpanExporter
	spans atomic.Int64
}

func (c *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	c.spans.Add(int64(len(spans)))
	return c.SpanExporter.ExportSpans(ctx, spans)
}

// otlpSink is an OTLP/HTTP receiver that reads and discards each export,
// counting its bytes.
type otlpSink struct{ bytes atomic.Int64 }

func (o *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	o.bytes.Add(n)
	w.Header().Set("Content-Type", "application/x-protobuf")
}

// processCPU is the CPU time (user and system) of the benchmark's process
// so far: the worker, NATS, the sandbox, the OTLP receiver and the
// benchmark's own publishing and reading, but not redis-server.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// totalAlloc is the bytes the process has allocated so far.
func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// median is the middle value of xs (the mean of the two middle ones).
func median(xs []float64) float64 {
	xs = slices.Sorted(slices.Values(xs))
	n := len(xs)
	if n == 0 {
		return 0
	}
	return (xs[(n-1)/2] + xs[n/2]) / 2
}
