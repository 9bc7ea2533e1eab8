package benchproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/payworker/payworker/internal/streams"
)

// The keys the sandbox requires and the worker sends.
const (
	apiKey  = "benchproc-key"
	xAPIKey = "benchproc-x-key"
)

// system is one of each server as a process, and the benchmark's own NATS
// connection to it.
type system struct {
	b    *testing.B
	dir  string
	nats *proc
	// redis, sandbox and worker are the other processes.
	redis, sandbox, worker *proc
	// concurrency is the worker's WORKER_CONCURRENCY (set, or its default).
	concurrency int
	gateway     *gatewayClient
	store       *floorStore // the store floor's, on the worker's redis-server
	metricsURL  string
	streams     streams.Config
	nc          *nats.Conn
	js          jetstream.JetStream
	events      *collector
	// asyncErrs collects the failures of the benchmark's asynchronous
	// publishes (commands and floor commands).
	asyncErrs *errList
}

// startSystem starts nats-server, redis-server, the sandbox (no added
// latency: the benchmark sets it with POST /_sandbox/faults once the
// authorisations are made) and one worker, which provisions the streams;
// it returns once the worker's /readyz answers. concurrency 0 leaves
// WORKER_CONCURRENCY unset (the worker's default).
func startSystem(b *testing.B, bins binaries, concurrency int) *system {
	b.Helper()
	s := &system{b: b, dir: b.TempDir(), streams: streams.Default(), concurrency: concurrency}

	natsPort := freePort(b)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	s.nats = startProc(b, s.dir, "nats-server", bins.natsServer,
		[]string{"-js", "-sd", filepath.Join(s.dir, "jetstream"), "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort)})

	redisPort := freePort(b)
	s.redis = startProc(b, s.dir, "redis-server", bins.redisServer,
		[]string{"--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"})

	sbPort := freePort(b)
	sbURL := fmt.Sprintf("http://127.0.0.1:%d", sbPort)
	s.sandbox = startProc(b, s.dir, "sandbox", bins.sandbox, nil,
		"SANDBOX_ADDR=127.0.0.1:"+strconv.Itoa(sbPort), "SANDBOX_API_KEY="+apiKey, "SANDBOX_X_API_KEY="+xAPIKey,
		"SANDBOX_LATENCY=0s", "LOG_FORMAT=json", "LOG_LEVEL=warn",
		// The sandbox keeps every payment: a collection marks tens of
		// megabytes and, on two busy cores, holds its answers back for
		// 30 – 50 ms. Collected before the half-load phase (collectGarbage),
		// with this much room it does not collect again during it.
		"GOGC=400")

	ctx := context.Background()
	waitUntil(b, "nats-server", 30*time.Second, func() error {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		_, err = js.AccountInfo(ctx)
		return err
	}, s.nats)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(redisPort)})
	defer rdb.Close()
	waitUntil(b, "redis-server", 30*time.Second, func() error { return rdb.Ping(ctx).Err() }, s.redis)
	waitUntil(b, "sandbox", 30*time.Second, func() error {
		_, err := httpGet(ctx, sbURL+"/_sandbox/faults")
		return err
	}, s.sandbox)

	metricsAddr := "127.0.0.1:" + strconv.Itoa(freePort(b))
	s.metricsURL = "http://" + metricsAddr + "/metrics"
	env := []string{
		"NATS_URL=" + natsURL,
		"REDIS_URL=redis://127.0.0.1:" + strconv.Itoa(redisPort),
		"PAYMENTOPTIONS_BASE_URL=" + sbURL + "/api/v1",
		"PAYMENTOPTIONS_API_KEY=" + apiKey,
		"PAYMENTOPTIONS_X_API_KEY=" + xAPIKey,
		"HTTP_ADDR=" + metricsAddr,
		// As a user runs it: JSON logs at the default level (one line per
		// command), to a file.
		"LOG_FORMAT=json",
		"WORKER_ID=benchproc",
		"SHUTDOWN_TIMEOUT=5s",
	}
	// BENCHPROC_WORKER_ENV adds settings to the worker's environment, for
	// experiments (e.g. "GOGC=200 WORKER_CONCURRENCY=128").
	env = append(env, strings.Fields(os.Getenv("BENCHPROC_WORKER_ENV"))...)
	if concurrency > 0 {
		env = append(env, "WORKER_CONCURRENCY="+strconv.Itoa(concurrency))
	} else {
		s.concurrency = bins.defaultConcurrency
	}
	s.worker = startProc(b, s.dir, "worker", bins.worker, nil, env...)
	waitUntil(b, "worker /readyz", 60*time.Second, func() error {
		_, err := httpGet(ctx, "http://"+metricsAddr+"/readyz")
		return err
	}, s.worker, s.nats, s.redis)

	nc, err := nats.Connect(natsURL, nats.Name("benchproc"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	s.nc = nc
	s.asyncErrs = &errList{}
	s.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishWindow),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			s.asyncErrs.add(fmt.Errorf("publish to %s: %w", m.Subject, err))
		}))
	if err != nil {
		b.Fatal(err)
	}
	s.gateway = newGatewayClient(sbURL, max(s.concurrency, authoriseParallel))
	s.store = newFloorStore("127.0.0.1:"+strconv.Itoa(redisPort), s.concurrency)
	b.Cleanup(func() { _ = s.store.close() })
	s.events, err = follow(ctx, s.js, s.streams, s.asyncErrs)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.events.stop)
	return s
}

// publishWindow bounds the benchmark's asynchronous publishes awaiting
// their PubAck.
const publishWindow = 1024

// cpu is a snapshot of every process's CPU time and the machine's.
type cpu struct {
	at      time.Time
	procs   map[string]time.Duration // by process name; "bench" is this one
	machine machineCPU
}

func (s *system) cpuSnapshot() cpu {
	s.b.Helper()
	c := cpu{at: time.Now(), procs: make(map[string]time.Duration)}
	for _, p := range []*proc{s.nats, s.redis, s.sandbox, s.worker} {
		d, err := cpuTime(p.pid())
		if err != nil {
			s.b.Fatalf("CPU time of %s: %v", p.name, err)
		}
		c.procs[p.name] = d
	}
	self, err := cpuTime(0)
	if err != nil {
		s.b.Fatal(err)
	}
	c.procs["bench"] = self
	if c.machine, err = readMachineCPU(); err != nil {
		s.b.Fatal(err)
	}
	return c
}

// cpuUse is what was spent between two snapshots.
type cpuUse struct {
	wall    time.Duration
	procs   map[string]time.Duration
	machine machineCPU
}

func (c cpu) until(end cpu) cpuUse {
	u := cpuUse{wall: end.at.Sub(c.at), procs: make(map[string]time.Duration)}
	for name, d := range end.procs {
		u.procs[name] = d - c.procs[name]
	}
	u.machine = machineCPU{
		busy:   end.machine.busy - c.machine.busy,
		system: end.machine.system - c.machine.system,
		total:  end.machine.total - c.machine.total,
	}
	return u
}

// perItem is a process's CPU time per item, in µs.
func (u cpuUse) perItem(name string, n int) float64 {
	return float64(u.procs[name].Microseconds()) / float64(n)
}

// busyPercent and systemPercent are the machine's busy and kernel CPU, in
// percent of all its cores.
func (u cpuUse) busyPercent() float64 {
	return 100 * float64(u.machine.busy) / float64(max(u.machine.total, 1))
}

func (u cpuUse) systemPercent() float64 {
	return 100 * float64(u.machine.system) / float64(max(u.machine.total, 1))
}

// describe lists the CPU µs per item of each process and the machine's load.
func (u cpuUse) describe(n int) string {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "CPU µs/item:")
	for _, name := range []string{"worker", "nats-server", "redis-server", "sandbox", "bench"} {
		fmt.Fprintf(&buf, " %s %.0f", name, u.perItem(name, n))
	}
	fmt.Fprintf(&buf, "; machine busy %.0f%% (system %.0f%%)", u.busyPercent(), u.systemPercent())
	return buf.String()
}

// scrape reads the worker's /metrics.
func (s *system) scrape(ctx context.Context) []byte {
	s.b.Helper()
	body, err := httpGet(ctx, s.metricsURL)
	if err != nil {
		s.b.Fatal(err)
	}
	return body
}

// allocatedBytes is the worker's go_memstats_alloc_bytes_total.
func (s *system) allocatedBytes(ctx context.Context) float64 {
	s.b.Helper()
	v, err := metricValue(s.scrape(ctx), "go_memstats_alloc_bytes_total")
	if err != nil {
		s.b.Fatal(err)
	}
	return v
}

// checkAlive fails the benchmark if a server has exited.
func (s *system) checkAlive() {
	s.b.Helper()
	if err := s.exited(); err != nil {
		s.b.Fatal(err)
	}
}

// gatewayClient calls the sandbox over HTTP with keep-alive connections,
// as a shop (authorise) and as the floor's worker (capture).
type gatewayClient struct {
	root string // http://host:port
	http *http.Client
}

// authoriseParallel is how many authorisations are requested at once.
const authoriseParallel = 32

func newGatewayClient(root string, conns int) *gatewayClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	return &gatewayClient{root: root, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (g *gatewayClient) post(ctx context.Context, path string, body any, want int, answer any) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.root+path, bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic "+apiKey)
	req.Header.Set("x-api-key", xAPIKey)
	resp, err := g.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("POST %s: read answer: %w", path, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: %s, want %d: %s", path, resp.Status, want, bytes.TrimSpace(raw))
	}
	if answer == nil {
		return nil
	}
	if err := json.Unmarshal(raw, answer); err != nil {
		return fmt.Errorf("POST %s: answer: %w", path, err)
	}
	return nil
}

const (
	opPath   = "/api/v1/server-to-server-interface/"
	merchant = "benchproc"
	amount   = 1000
	currency = "JPY"
)

// gatewayAnswer is the part of a payment or capture answer the benchmark reads.
type gatewayAnswer struct {
	Success            bool `json:"success"`
	TransactionDetails struct {
		ID string `json:"id"`
	} `json:"transaction_details"`
}

// authorise makes n authorisations of amount JPY through the payment
// endpoint and returns their transaction ids.
func (g *gatewayClient) authorise(ctx context.Context, n int) ([]string, error) {
	ids := make([]string, n)
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(authoriseParallel)
	for i := range ids {
		eg.Go(func() error {
			var a gatewayAnswer
			err := g.post(ctx, opPath+"payment", map[string]any{
				"amount": strconv.Itoa(amount), "currency": currency, "merchant_id": merchant,
				"merchant_txn_ref": "benchproc-" + strconv.Itoa(i), "customer_ip": "127.0.0.1",
				"card": map[string]string{"number": "5200000000001005", "name": "John Doe",
					"expiry_month": "12", "expiry_year": "30", "cvc": "100"},
			}, http.StatusCreated, &a)
			if err == nil && a.TransactionDetails.ID == "" {
				err = errors.New("payment answer without transaction_details.id")
			}
			ids[i] = a.TransactionDetails.ID
			return err
		})
	}
	return ids, eg.Wait()
}

// capture captures amount of the authorisation txn once and returns the
// gateway's id of the capture.
func (g *gatewayClient) capture(ctx context.Context, txn string) (string, error) {
	var a gatewayAnswer
	if err := g.post(ctx, opPath+"capture", map[string]any{
		"transactionId": txn, "amount": amount, "merchant_id": merchant,
	}, http.StatusCreated, &a); err != nil {
		return "", err
	}
	if !a.Success {
		return "", fmt.Errorf("capture %s: success false", txn)
	}
	return a.TransactionDetails.ID, nil
}

// setLatency sets the latency the sandbox adds to every payment, capture
// and void (POST /_sandbox/faults), the same wait as SANDBOX_LATENCY.
func (g *gatewayClient) setLatency(ctx context.Context, d time.Duration) error {
	return g.post(ctx, "/_sandbox/faults", map[string]string{"latency": d.String()}, http.StatusOK, nil)
}

// collectGarbage has the sandbox run its garbage collector now, so that it
// does not run during the latency measurement that follows: a gateway that
// answers at once does not pause for it.
func (g *gatewayClient) collectGarbage(ctx context.Context) error {
	return g.post(ctx, "/_sandbox/gc", nil, http.StatusNoContent, nil)
}

// errList collects errors from callbacks.
type errList struct {
	mu   sync.Mutex
	errs []error
}

func (l *errList) add(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err)
	}
}

func (l *errList) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.errs...)
}
