package benchproc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// burst is the number of captures of each throughput measurement.
const burst = 10_000

// pacedFor is how long the half-capacity load lasts.
const pacedFor = 3 * time.Second

// BenchmarkProcess measures one worker process against three floors, every
// server its own process (nats-server built from the module, redis-server,
// the sandbox gateway, the worker binary), on the same servers in the same
// run (issue 10):
//
//  1. the raw JetStream floor: a pull consumer with 1,024 messages pending,
//     consume → publish one event and wait for its PubAck → Ack;
//  2. the gateway floor: the same plus one capture call to the sandbox per
//     message (keep-alive client, idle pool = in flight), as many in flight
//     as the worker (WORKER_CONCURRENCY);
//     2b. the store floor: the gateway floor plus the least Redis traffic of
//     an idempotent pipeline, as a plain Watermill one makes (issue 10): per
//     message SET claim NX with a 30s lease before the call (a command
//     already claimed is acked without a call) and SET of the outcome, about
//     200 bytes, before publishing the event; on the worker's redis-server,
//     keys of its own, a connection per message in flight;
//  3. the worker: 10,000 captures published at once, from the first publish
//     to the 10,000th capture.succeeded event read from PAYMENT_EVENTS;
//     3b. the worker measured as the floors are: 10,000 captures published
//     and stored while its consumer is paused, from resuming it to the
//     10,000th event, so that their publication (by the benchmark, stored
//     by nats-server) is outside the clock, as the floors' is.
//
// Then the worker again at half its measured rate for 3s (paced publishing)
// for the command-to-event latency. It reports the four rates, the worker's
// ratio to each floor (and, for default settings at 100ms, to Little's law,
// concurrency ÷ latency), p50/p99 at half capacity, and per command of the
// burst: the CPU time of the worker (and of each server, and of the
// machine) and the bytes the worker allocated. It logs, for the burst and
// the half-load phase, the worker's own mean timings from its /metrics:
// handling, gateway, claim, completion and, in the burst, the time a slot
// waits between two commands. Each iteration of b.N measures everything
// once on the same servers; run it with -benchtime 1x:
//
//	go test -run '^$' -bench BenchmarkProcess -benchtime 1x ./internal/benchproc
//
// It builds the binaries from the working tree, and is skipped when
// redis-server is not installed. With BENCHPROC_PERF=<dir> it also records
// the worker with `perf record -g` during each burst and at half load (the
// worker serves no pprof endpoint); BENCHPROC_PERF_PROC records another
// process instead.
func BenchmarkProcess(b *testing.B) {
	bins := buildBinaries(b, b.TempDir())
	for _, tc := range []struct {
		name    string
		latency time.Duration
		// concurrency is WORKER_CONCURRENCY and the gateway floor's in
		// flight; 0 leaves the worker's default.
		concurrency int
		littlesLaw  bool
	}{
		{name: "latency=0ms", latency: 0},
		{name: "latency=100ms-conc=1024", latency: 100 * time.Millisecond, concurrency: 1024},
		{name: "latency=100ms-default", latency: 100 * time.Millisecond, littlesLaw: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := startSystem(b, bins, tc.concurrency)
			ctx := context.Background()
			s.createFloorStreams(ctx)
			b.Logf("gateway latency %s, WORKER_CONCURRENCY %d, worker pid %d", tc.latency, s.concurrency, s.worker.pid())
			var sum figures
			b.ResetTimer()
			for round := range b.N {
				sum.add(s.round(ctx, fmt.Sprintf("r%d", round), tc.latency))
			}
			b.StopTimer()
			f := sum.mean(b.N)
			b.ReportMetric(f.jsFloor, "jsfloor-msgs/s")
			b.ReportMetric(f.gwFloor, "gwfloor-captures/s")
			b.ReportMetric(f.storeFloor, "storefloor-captures/s")
			b.ReportMetric(f.worker, "worker-captures/s")
			b.ReportMetric(f.worker/f.gwFloor, "worker/gwfloor")
			b.ReportMetric(f.worker/f.storeFloor, "worker/storefloor")
			b.ReportMetric(f.worker/f.jsFloor, "worker/jsfloor")
			b.ReportMetric(f.workerStored, "worker-stored-captures/s")
			b.ReportMetric(f.workerStored/f.gwFloor, "worker-stored/gwfloor")
			b.ReportMetric(f.workerStored/f.storeFloor, "worker-stored/storefloor")
			if tc.littlesLaw {
				little := float64(s.concurrency) / tc.latency.Seconds()
				b.ReportMetric(f.worker/little, "worker/littleslaw")
			}
			b.ReportMetric(f.pacedRate, "half-load-captures/s")
			b.ReportMetric(f.p50, "p50-ms")
			b.ReportMetric(f.p99, "p99-ms")
			b.ReportMetric(f.workerCPU, "worker-cpu-us/cmd")
			b.ReportMetric(f.alloc, "worker-alloc-B/cmd")
			b.ReportMetric(f.sandboxCPU, "sandbox-cpu-us/cmd")
			b.ReportMetric(f.natsCPU, "nats-cpu-us/cmd")
			b.ReportMetric(f.redisCPU, "redis-cpu-us/cmd")
			b.ReportMetric(f.busy, "machine-busy-%")
			b.ReportMetric(f.system, "machine-sys-%")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// figures are one round's results (or their sum, or mean).
type figures struct {
	jsFloor, gwFloor, storeFloor, worker float64 // per second
	// workerStored is the worker's rate on commands stored before its
	// clock starts, as the floors' are (per second).
	workerStored        float64
	pacedRate, p50, p99 float64 // per second, ms, ms
	// Per command of the worker's burst: CPU µs of each process, bytes the
	// worker allocated; the machine's busy and system CPU in percent.
	workerCPU, sandboxCPU, natsCPU, redisCPU, alloc float64
	busy, system                                    float64
}

func (f *figures) add(g figures) {
	f.jsFloor += g.jsFloor
	f.gwFloor += g.gwFloor
	f.storeFloor += g.storeFloor
	f.worker += g.worker
	f.workerStored += g.workerStored
	f.pacedRate += g.pacedRate
	f.p50 += g.p50
	f.p99 += g.p99
	f.workerCPU += g.workerCPU
	f.sandboxCPU += g.sandboxCPU
	f.natsCPU += g.natsCPU
	f.redisCPU += g.redisCPU
	f.alloc += g.alloc
	f.busy += g.busy
	f.system += g.system
}

func (f figures) mean(n int) figures {
	d := float64(n)
	return figures{
		jsFloor: f.jsFloor / d, gwFloor: f.gwFloor / d, storeFloor: f.storeFloor / d, worker: f.worker / d,
		workerStored: f.workerStored / d,
		pacedRate:    f.pacedRate / d, p50: f.p50 / d, p99: f.p99 / d,
		workerCPU: f.workerCPU / d, sandboxCPU: f.sandboxCPU / d, natsCPU: f.natsCPU / d,
		redisCPU: f.redisCPU / d, alloc: f.alloc / d, busy: f.busy / d, system: f.system / d,
	}
}

// round measures the floors, the worker's burst and the worker at half
// that rate, with fresh authorisations (made with no gateway latency, which
// is then set to latency) and command ids starting with prefix.
func (s *system) round(ctx context.Context, prefix string, latency time.Duration) figures {
	b := s.b
	auths := func(n int) []string {
		if err := s.gateway.setLatency(ctx, 0); err != nil {
			b.Fatal(err)
		}
		ids, err := s.gateway.authorise(ctx, n)
		if err != nil {
			b.Fatalf("authorise: %v", err)
		}
		if err := s.gateway.setLatency(ctx, latency); err != nil {
			b.Fatal(err)
		}
		return ids
	}
	floorAuths, storeAuths, workerAuths, storedAuths := auths(burst), auths(burst), auths(burst), auths(burst)
	var f figures

	var use cpuUse
	f.jsFloor, use = s.floor(ctx, prefix+"-raw", captures(prefix+"-raw", floorAuths), floorPending, nil, nil)
	b.Logf("%s raw JetStream floor (%d pending): %.0f msgs/s; %s", prefix, floorPending, f.jsFloor, use.describe(burst))
	perfName := strings.NewReplacer("/", "_", "=", "").Replace(b.Name()) + "-" + prefix
	perfProc := s.perfProc()
	stopPerf := func() {} // the worker is idle during the floors
	if perfProc != s.worker {
		stopPerf = perfRecord(b, perfProc.pid(), perfName+"-gwfloor-"+perfProc.name)
	}
	f.gwFloor, use = s.floor(ctx, prefix+"-gw", captures(prefix+"-gw", floorAuths), s.concurrency, s.gateway, nil)
	stopPerf()
	b.Logf("%s gateway floor (%d in flight): %.0f captures/s; %s", prefix, s.concurrency, f.gwFloor, use.describe(burst))
	f.storeFloor, use = s.floor(ctx, prefix+"-store", captures(prefix+"-store", storeAuths), s.concurrency, s.gateway, s.store)
	b.Logf("%s store floor (%d in flight, Redis SET NX + SET): %.0f captures/s; %s", prefix, s.concurrency, f.storeFloor, use.describe(burst))

	stopPerf = perfRecord(b, perfProc.pid(), perfName+"-"+perfProc.name)
	before := s.scrape(ctx)
	w := s.load(ctx, captures(prefix+"-w", workerAuths), 0, 100*time.Second)
	stopPerf()
	b.Logf("%s worker's own timings in the burst, from its /metrics: %s", prefix,
		describeTimings(before, s.scrape(ctx), float64(s.concurrency)/w.rate()))
	f.worker = w.rate()
	f.workerCPU = w.cpu.perItem("worker", w.n)
	f.sandboxCPU = w.cpu.perItem("sandbox", w.n)
	f.natsCPU = w.cpu.perItem("nats-server", w.n)
	f.redisCPU = w.cpu.perItem("redis-server", w.n)
	f.alloc = w.alloc / float64(w.n)
	f.busy, f.system = w.cpu.busyPercent(), w.cpu.systemPercent()
	b.Logf("%s worker, %d at once: %.0f captures/s in %s; %s", prefix, w.n, f.worker, w.elapsed.Round(time.Millisecond), w.cpu.describe(w.n))

	st := s.loadStored(ctx, captures(prefix+"-s", storedAuths), 100*time.Second)
	f.workerStored = st.rate()
	b.Logf("%s worker, %d stored first (consumer paused): %.0f captures/s in %s; %s", prefix, st.n, f.workerStored, st.elapsed.Round(time.Millisecond), st.cpu.describe(st.n))

	pace := f.worker / 2
	n := max(100, int(pace*pacedFor.Seconds()))
	halfAuths := auths(n)
	if err := s.gateway.collectGarbage(ctx); err != nil {
		b.Fatal(err)
	}
	stopPerf = perfRecord(b, perfProc.pid(), perfName+"-half-"+perfProc.name)
	before = s.scrape(ctx)
	p := s.load(ctx, captures(prefix+"-p", halfAuths), pace, pacedFor+60*time.Second)
	stopPerf()
	b.Logf("%s worker's own timings at half load: %s", prefix,
		describeTimings(before, s.scrape(ctx), 0))
	f.pacedRate = p.rate()
	f.p50 = float64(p.percentile(0.50).Microseconds()) / 1000
	f.p99 = float64(p.percentile(0.99).Microseconds()) / 1000
	b.Logf("%s worker at half rate (%.0f/s, %d): p50 %.1f ms, p99 %.1f ms, max %s; %s", prefix, pace, n,
		f.p50, f.p99, p.lats[len(p.lats)-1].Round(100*time.Microsecond), p.cpu.describe(p.n))
	s.checkAlive()
	return f
}
