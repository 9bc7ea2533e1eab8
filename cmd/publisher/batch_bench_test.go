package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/natsserver"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

// writeBenchBatch writes a CSV batch of n captures (about 200 bytes of
// command JSON each) and returns its path.
func writeBenchBatch(tb testing.TB, dir string, n int) string {
	tb.Helper()
	path := filepath.Join(dir, fmt.Sprintf("bench-%d.csv", n))
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "type,merchant_id,transaction_id,amount,currency,metadata.order")
	for i := range n {
		fmt.Fprintf(w, "capture,M%04d,%08x-fec0-40dd-994d-%012x,%d,JPY,order-%d\n", i%100, i, i, 100+i%10000, i)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

// heapPeak samples the bytes of live heap objects until stop is called and
// returns the largest sample.
func heapPeak() (stop func() uint64) {
	const name = "/memory/classes/heap/objects:bytes"
	sample := []metrics.Sample{{Name: name}}
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak {
				peak = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak
	}
}

// batchMeasure is what one batch run cost.
type batchMeasure struct {
	rows       int
	elapsed    time.Duration
	bytesAlloc uint64        // heap bytes allocated during the run
	allocs     uint64        // heap objects allocated
	peakHeap   uint64        // largest live heap seen
	baseHeap   uint64        // live heap before the run
	cpu        time.Duration // CPU time (user and system) of the process
}

// cpuTime returns the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureBatch runs `publisher batch` on path against natsURL.
func measureBatch(tb testing.TB, natsURL, path string, rows int, extra ...string) batchMeasure {
	tb.Helper()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	stopPeak := heapPeak()
	cpu0 := cpuTime()
	start := time.Now()
	getenv := func(k string) string {
		if k == "NATS_URL" {
			return natsURL
		}
		return ""
	}
	args := append([]string{"publisher", "batch", "--file", path, "--quiet"}, extra...)
	err := run(context.Background(), args, getenv, strings.NewReader(""), io.Discard, io.Discard)
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	peak := stopPeak()
	runtime.ReadMemStats(&after)
	if err != nil {
		tb.Fatalf("batch of %d rows: %v", rows, err)
	}
	return batchMeasure{
		rows:       rows,
		elapsed:    elapsed,
		bytesAlloc: after.TotalAlloc - before.TotalAlloc,
		allocs:     after.Mallocs - before.Mallocs,
		peakHeap:   peak,
		baseHeap:   before.HeapAlloc,
		cpu:        cpu,
	}
}

// resetStreams deletes and provisions the streams again, so that a run
// stores every row anew (no duplicate from the previous run).
func resetStreams(tb testing.TB, n *testenv.NATS) {
	tb.Helper()
	_, js := n.Connect(tb)
	cfg := streams.Default()
	ctx := context.Background()
	for _, s := range []string{cfg.Commands, cfg.Events, cfg.DLQ} {
		_ = js.DeleteStream(ctx, s)
	}
	if err := streams.Provision(ctx, js, cfg); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkBatchPublish publishes a generated CSV of 200,000 captures with
// `publisher batch` (both passes: check, then asynchronous publication) to
// an in-process JetStream server, with no worker. It reports rows/s, bytes
// and allocations per row, the CPU time per row, and the peak live heap of
// the process; the last three include the in-process server
// (TestBatchMemoryFlat measures the publisher alone).
//
//	go test -run '^$' -bench BenchmarkBatchPublish -benchtime 1x ./cmd/publisher
func BenchmarkBatchPublish(b *testing.B) {
	const rows = 200_000
	path := writeBenchBatch(b, b.TempDir(), rows)
	n := testenv.StartNATS(b)
	var total batchMeasure
	for b.Loop() {
		b.StopTimer()
		resetStreams(b, n)
		b.StartTimer()
		m := measureBatch(b, n.URL, path, rows)
		total.rows += m.rows
		total.elapsed += m.elapsed
		total.bytesAlloc += m.bytesAlloc
		total.allocs += m.allocs
		total.peakHeap = max(total.peakHeap, m.peakHeap)
		total.cpu += m.cpu
	}
	b.ReportMetric(float64(total.rows)/total.elapsed.Seconds(), "rows/s")
	b.ReportMetric(float64(total.bytesAlloc)/float64(total.rows), "B/row")
	b.ReportMetric(float64(total.allocs)/float64(total.rows), "allocs/row")
	b.ReportMetric(float64(total.peakHeap)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(total.cpu.Microseconds())/float64(total.rows), "cpu-µs/row")
}

// serverEnv asks the test binary to run as a NATS server (see
// TestBatchHelperNATSServer).
const serverEnv = "PAYWORKER_BATCH_NATS_SERVER_DIR"

// TestBatchHelperNATSServer is not a test: run by startNATSProcess in a
// child process, it serves NATS with JetStream until its stdin closes, so
// that the memory of the publisher can be measured without the server's.
func TestBatchHelperNATSServer(t *testing.T) {
	dir := os.Getenv(serverEnv)
	if dir == "" {
		t.Skip("helper process for TestBatchMemoryFlat")
	}
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: dir, ServerName: "bench"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("url:", ns.ClientURL())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ns.Shutdown()
	ns.WaitForShutdown()
	os.Exit(0)
}

// startNATSProcess runs a NATS server in a child process (this test binary
// running TestBatchHelperNATSServer) and returns its URL.
func startNATSProcess(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestBatchHelperNATSServer$")
	cmd.Env = append(os.Environ(), serverEnv+"="+t.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "url: ")
	if err != nil || !ok {
		t.Fatalf("NATS server process: %q, %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return url
}

// TestBatchMemoryFlat publishes 50,000 and then 200,000 rows and checks that
// the peak heap of the publisher does not grow with the file: the 200,000
// rows' peak stays under twice the 50,000 rows' plus 16 MiB of slack. The
// server runs in a child process, so its memory (the stream's duplicate
// window holds every Nats-Msg-Id) is not counted.
func TestBatchMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 250,000 rows; skipped with -short")
	}
	url := startNATSProcess(t)
	nc, js := connectURL(t, url)
	defer nc.Close()
	if err := streams.Provision(context.Background(), js, streams.Default()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	small := measureBatch(t, url, writeBenchBatch(t, dir, 50_000), 50_000)
	large := measureBatch(t, url, writeBenchBatch(t, dir, 200_000), 200_000)
	for _, m := range []batchMeasure{small, large} {
		t.Logf("%7d rows: %s (%.0f rows/s, %.1f µs CPU/row), peak heap %.1f MiB (%.1f MiB before), %.0f B/row, %.1f allocs/row",
			m.rows, m.elapsed.Round(time.Millisecond), float64(m.rows)/m.elapsed.Seconds(), float64(m.cpu.Microseconds())/float64(m.rows),
			float64(m.peakHeap)/(1<<20), float64(m.baseHeap)/(1<<20),
			float64(m.bytesAlloc)/float64(m.rows), float64(m.allocs)/float64(m.rows))
	}
	const slack = 16 << 20
	if large.peakHeap > 2*small.peakHeap+slack {
		t.Errorf("peak heap for 200,000 rows = %.1f MiB, want < 2 × %.1f MiB (50,000 rows) + 16 MiB: memory grows with the file",
			float64(large.peakHeap)/(1<<20), float64(small.peakHeap)/(1<<20))
	}
}

// connectURL connects to the NATS server at url.
func connectURL(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	return nc, js
}
