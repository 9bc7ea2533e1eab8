package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

// behaviour is what the gateway front does with one capture or void call.
type behaviour struct {
	// before is waited before the sandbox sees the call: a call cut then is
	// not applied.
	before time.Duration
	// after is waited after the sandbox applied the call and before its
	// answer goes out: a call cut then is applied, its outcome unknown.
	after time.Duration
	// rateLimit answers 429 with Retry-After: 1 instead (not applied).
	rateLimit bool
}

// front is the gateway the workers call: the sandbox over HTTP, behind a
// layer that delays or rate-limits chosen calls and counts every call per
// endpoint and transaction.
type front struct {
	sb  *sandbox.Sandbox
	srv *httptest.Server

	mu    sync.Mutex
	calls map[string]map[string]int // endpoint → transaction → calls
	seq   map[string]int            // endpoint → calls
	plan  func(endpoint, txn string, nth int) behaviour
}

func startFront(t testing.TB) *front {
	t.Helper()
	f := &front{
		sb:    sandbox.New(sandbox.Options{APIKey: "k", XAPIKey: "x", Seed: 1}),
		calls: map[string]map[string]int{},
		seq:   map[string]int{},
		plan:  func(string, string, int) behaviour { return behaviour{} },
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// baseURL is PAYMENTOPTIONS_BASE_URL for the front.
func (f *front) baseURL() string { return f.srv.URL + "/api/v1" }

// setPlan changes the behaviour of the calls to come; nth counts the calls of
// the endpoint for that transaction, from 1.
func (f *front) setPlan(plan func(endpoint, txn string, nth int) behaviour) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plan = plan
}

// count is the number of calls of endpoint for txn ("" for all).
func (f *front) count(endpoint, txn string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if txn == "" {
		return f.seq[endpoint]
	}
	return f.calls[endpoint][txn]
}

func (f *front) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	endpoint, txn := "", ""
	switch {
	case strings.Contains(r.URL.Path, "/transaction/status/"):
		endpoint, txn = "status", r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	case strings.HasSuffix(r.URL.Path, "/capture"), strings.HasSuffix(r.URL.Path, "/void"):
		endpoint = r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		var req struct {
			TransactionID string `json:"transactionId"`
		}
		_ = json.Unmarshal(body, &req)
		txn = req.TransactionID
	}
	f.mu.Lock()
	if f.calls[endpoint] == nil {
		f.calls[endpoint] = map[string]int{}
	}
	f.calls[endpoint][txn]++
	f.seq[endpoint]++
	var b behaviour
	if endpoint == "capture" || endpoint == "void" {
		b = f.plan(endpoint, txn, f.calls[endpoint][txn])
	}
	f.mu.Unlock()

	if b.rateLimit {
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"success":false,"status_code":429,"gateway_response":{"type":"ERROR","code":"ERR0429","message":"Too many requests"}}`)
		return
	}
	if !wait(r.Context(), b.before) {
		return // cut before the gateway saw it: not applied
	}
	rec := httptest.NewRecorder()
	f.sb.Handler().ServeHTTP(rec, r)
	if !wait(r.Context(), b.after) {
		return // applied, but the caller hung up before the answer
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// system is what several runs of the worker share: a NATS server, Redis and
// the gateway front.
type system struct {
	nats     *testenv.NATS
	redis    *testenv.Redis
	gw       *front
	js       jetstream.JetStream
	merchant string
	auths    []string
}

func startSystem(t testing.TB) *system {
	t.Helper()
	s := &system{nats: testenv.StartNATS(t), redis: testenv.StartRedis(t), gw: startFront(t)}
	s.js = connect(t, s.nats.URL)
	s.merchant = "M" + strconv.Itoa(testenv.FreePort(t)) // unique on a shared REDIS_URL
	return s
}

// env is a worker's environment; kv pairs override the defaults.
func (s *system) env(t testing.TB, id string, kv ...string) env {
	t.Helper()
	e := env{
		"NATS_URL":                 s.nats.URL,
		"REDIS_URL":                s.redis.URL,
		"PAYMENTOPTIONS_BASE_URL":  s.gw.baseURL(),
		"PAYMENTOPTIONS_API_KEY":   "k",
		"PAYMENTOPTIONS_X_API_KEY": "x",
		"HTTP_ADDR":                freeAddr(t),
		"LOG_FORMAT":               "json",
		"WORKER_ID":                id,
		"RETRY_INITIAL_INTERVAL":   "20ms",
		"RETRY_MAX_INTERVAL":       "200ms",
		"RETRY_MAX_ELAPSED":        "1m",
		"RETRY_MAX_ATTEMPTS":       "20",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		e[kv[i]] = kv[i+1]
	}
	return e
}

// authorise creates n authorisations, of 100, 101, ... cents.
func (s *system) authorise(n int) {
	for i := range n {
		s.auths = append(s.auths, s.gw.sb.Authorise(s.merchant, int64(100+i), "EUR"))
	}
}

// publishCaptures publishes one full capture of each authorisation.
func (s *system) publishCaptures(t testing.TB) {
	t.Helper()
	for i, auth := range s.auths {
		publishCommand(t, s.js, "capture", map[string]any{"command_id": s.key(i), "type": "capture",
			"merchant_id": s.merchant, "transaction_id": auth, "amount": 100 + i, "currency": "EUR"})
	}
}

func (s *system) key(i int) string { return fmt.Sprintf("%s-%d", s.merchant, i) }

// consumer reads the shared consumer's state.
func (s *system) consumer(t testing.TB) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.js.Consumer(ctx, "PAYMENT_COMMANDS", "payworker")
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return info
}

// terminalCount counts the terminal events stored so far.
func (s *system) terminalCount(t testing.TB) int {
	t.Helper()
	n := 0
	for _, e := range readEvents(t, s.js) {
		if e.Event.Type == events.CaptureSucceeded.Type() || e.Event.Type == events.CaptureFailed.Type() {
			n++
		}
	}
	return n
}

// waitAllDone waits until every command is acked and every key has an
// event, polling the cheap stream and consumer counters.
func (s *system) waitAllDone(t testing.TB, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, "every command acked with its event", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := s.js.Stream(ctx, "PAYMENT_EVENTS")
		if err != nil {
			return false, err.Error()
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		c, err := s.js.Consumer(ctx, "PAYMENT_COMMANDS", "payworker")
		if err != nil {
			return false, err.Error()
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs >= uint64(len(s.auths)) && ci.NumPending == 0 && ci.NumAckPending == 0,
			fmt.Sprintf("%d events, consumer pending %d, ack pending %d", info.State.Msgs, ci.NumPending, ci.NumAckPending)
	})
}

// checkExactlyOnce checks the guarantees over the whole run: one applied
// capture of the right amount per authorisation, and per key exactly one
// event, capture.succeeded.
func (s *system) checkExactlyOnce(t testing.TB) {
	t.Helper()
	got := byKey(readEvents(t, s.js))
	for i, auth := range s.auths {
		if ops := s.gw.sb.Applied(auth); len(ops) != 1 || ops[0].Amount != int64(100+i) {
			t.Errorf("ledger of %s = %+v, want exactly one capture of %d", s.key(i), ops, 100+i)
		}
		if evs := got[s.key(i)]; len(evs) != 1 || evs[0] != events.CaptureSucceeded.Type() {
			t.Errorf("events of %s = %v, want exactly one %s", s.key(i), evs, events.CaptureSucceeded.Type())
		}
		delete(got, s.key(i))
	}
	if len(got) != 0 {
		t.Errorf("events of unknown keys: %v", got)
	}
}

// ackWait is long in the shutdown tests, so that a command the stopped worker
// did not hand back would be redelivered only after handBackWithin: the next
// worker would not finish in time.
const (
	ackWait        = "2m"
	handBackWithin = 45 * time.Second
)

// TestShutdownFinishesInFlightAndHandsBackTheRest is SIGTERM with 200
// commands published against a slow gateway (300ms a call), all of them in
// flight or some waiting in the stream, and 20 more published just after the
// SIGTERM (they reach the pull request still open, and are handed back, or
// stay in the stream): run returns nil well within SHUTDOWN_TIMEOUT, every
// gateway call in flight is finished and announced, nothing is left waiting
// for ACK_WAIT, and a second worker does the rest, each command exactly once.
func TestShutdownFinishesInFlightAndHandsBackTheRest(t *testing.T) {
	for _, concurrency := range []int{64, 256} {
		t.Run("concurrency="+strconv.Itoa(concurrency), func(t *testing.T) {
			s := startSystem(t)
			s.gw.setPlan(func(string, string, int) behaviour { return behaviour{before: 300 * time.Millisecond} })
			const shutdownTimeout = 10 * time.Second
			first := startRun(t, s.env(t, "first", "WORKER_CONCURRENCY", strconv.Itoa(concurrency),
				"SHUTDOWN_TIMEOUT", shutdownTimeout.String(), "ACK_WAIT", ackWait))
			first.waitReady(t)
			s.authorise(220)
			late := s.auths[200:]
			s.auths = s.auths[:200]
			s.publishCaptures(t)
			inFlight := min(concurrency, 200)
			poll(t, 30*time.Second, strconv.Itoa(inFlight)+" captures in flight", func() (bool, string) {
				n := s.gw.count("capture", "")
				return n >= inFlight, strconv.Itoa(n)
			})

			start := time.Now()
			first.cancel() // SIGTERM
			s.auths = append(s.auths, late...)
			for i := 200; i < len(s.auths); i++ {
				publishCommand(t, s.js, "capture", map[string]any{"command_id": s.key(i), "type": "capture",
					"merchant_id": s.merchant, "transaction_id": s.auths[i], "amount": 100 + i, "currency": "EUR"})
			}
			_, err := first.stop()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("run after SIGTERM = %v, want nil (exit 0)", err)
			}
			if took >= shutdownTimeout {
				t.Errorf("run took %s after SIGTERM, want less than SHUTDOWN_TIMEOUT %s: the calls in flight take 300ms", took, shutdownTimeout)
			}
			// Every capture the gateway applied was finished: recorded,
			// announced and acked, none cut short.
			applied, announced := len(s.gw.sb.Ledger()), s.terminalCount(t)
			if applied != announced || applied < inFlight {
				t.Errorf("after shutdown: %d captures applied, %d announced; want the same, at least %d", applied, announced, inFlight)
			}
			t.Logf("first worker: %d commands done, returned %s after SIGTERM", applied, took)

			// What was delivered but not finished was handed back: the next
			// worker gets it at once, not after ACK_WAIT.
			s.gw.setPlan(func(string, string, int) behaviour { return behaviour{} })
			second := startRun(t, s.env(t, "second", "WORKER_CONCURRENCY", "64", "ACK_WAIT", ackWait))
			s.waitAllDone(t, handBackWithin)
			s.checkExactlyOnce(t)
			if n, want := s.gw.count("capture", ""), len(s.auths); n != want {
				t.Errorf("capture calls = %d, want %d: nothing finished was sent again", n, want)
			}
			if _, err := second.stop(); err != nil {
				t.Errorf("second run after SIGTERM = %v, want nil", err)
			}
		})
	}
}

// TestShutdownTimeoutCutsCallsAndNextWorkerReconciles is SIGTERM with a
// SHUTDOWN_TIMEOUT shorter than the gateway calls in flight: the calls are
// cut, the keys released as uncertain, and the next worker asks the status
// endpoint before anything else: a capture the gateway applied before the cut
// is found and announced (never sent again), one it did not is sent again.
func TestShutdownTimeoutCutsCallsAndNextWorkerReconciles(t *testing.T) {
	s := startSystem(t)
	// Odd transactions are cut before the gateway applies them, even ones
	// after it did, before its answer.
	odd := map[string]bool{}
	var mu sync.Mutex
	s.gw.setPlan(func(_, txn string, _ int) behaviour {
		mu.Lock()
		defer mu.Unlock()
		if odd[txn] {
			return behaviour{before: time.Minute}
		}
		return behaviour{after: time.Minute}
	})
	const shutdownTimeout = 300 * time.Millisecond
	first := startRun(t, s.env(t, "first", "WORKER_CONCURRENCY", "64", "SHUTDOWN_TIMEOUT", shutdownTimeout.String(), "ACK_WAIT", ackWait))
	first.waitReady(t)
	s.authorise(40)
	mu.Lock()
	for i, a := range s.auths {
		odd[a] = i%2 == 1
	}
	mu.Unlock()
	s.publishCaptures(t)
	poll(t, 30*time.Second, "40 captures in flight", func() (bool, string) {
		n := s.gw.count("capture", "")
		return n == 40, strconv.Itoa(n)
	})

	took, err := first.stop()
	if err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil (exit 0)", err)
	}
	if took > shutdownTimeout+5*time.Second {
		t.Errorf("run took %s after SIGTERM, want SHUTDOWN_TIMEOUT %s and little more", took, shutdownTimeout)
	}
	if n := s.terminalCount(t); n != 0 {
		t.Errorf("%d terminal events before any answer came back, want 0", n)
	}
	if n := len(s.gw.sb.Ledger()); n != 20 {
		t.Fatalf("captures applied before the cut = %d, want the 20 even ones", n)
	}

	s.gw.setPlan(func(string, string, int) behaviour { return behaviour{} })
	second := startRun(t, s.env(t, "second", "ACK_WAIT", ackWait))
	s.waitAllDone(t, handBackWithin)
	s.checkExactlyOnce(t)

	evs := readEvents(t, s.js)
	reconciled := map[string]bool{}
	for _, e := range evs {
		reconciled[e.Event.Data.TransactionID] = e.Event.Data.Reconciled
	}
	for i, auth := range s.auths {
		wantCalls := 1 // applied before the cut: found by the status call, not resent
		if i%2 == 1 {
			wantCalls = 2 // not applied: the status call says so, then it is sent again
		}
		if got := s.gw.count("capture", auth); got != wantCalls {
			t.Errorf("%s: capture calls = %d, want %d", s.key(i), got, wantCalls)
		}
		if got := s.gw.count("status", auth); got < 1 {
			t.Errorf("%s: status calls = %d, want the reconciliation first", s.key(i), got)
		}
		if got, want := reconciled[auth], i%2 == 0; got != want {
			t.Errorf("%s: event reconciled = %v, want %v", s.key(i), got, want)
		}
	}
	if _, err := second.stop(); err != nil {
		t.Errorf("second run after SIGTERM = %v, want nil", err)
	}
}

// TestNATSRestartMidRun restarts the NATS server (same port, same store) while
// commands are being processed: the worker reconnects and goes on pulling by
// itself, and every command completes exactly once, with either store.
func TestNATSRestartMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a NATS server")
	}
	for _, tc := range []struct {
		name  string
		redis bool
	}{{"redis", true}, {"jetstream-kv", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSystem(t)
			s.gw.setPlan(func(string, string, int) behaviour { return behaviour{before: 50 * time.Millisecond} })
			kv := []string{"WORKER_CONCURRENCY", "16", "ACK_WAIT", "3s", "LEASE_DURATION", "3s"}
			if !tc.redis {
				kv = append(kv, "REDIS_URL", "")
			}
			w := startRun(t, s.env(t, "restart", kv...))
			w.waitReady(t)
			s.authorise(300)
			s.publishCaptures(t)
			for _, after := range []int{20, 150} {
				poll(t, 60*time.Second, strconv.Itoa(after)+" commands done", func() (bool, string) {
					n := len(s.gw.sb.Ledger())
					return n >= after, strconv.Itoa(n)
				})
				s.nats.Restart()
				if err, ok := w.exited(); ok {
					t.Fatalf("run returned %v when NATS restarted", err)
				}
			}
			s.waitAllDone(t, 90*time.Second)
			if n := len(s.gw.sb.Ledger()); n < 150 {
				t.Fatalf("only %d commands done before the second restart", n)
			}
			s.checkExactlyOnce(t)
			w.waitReady(t)
			if _, err := w.stop(); err != nil {
				t.Errorf("run after SIGTERM = %v, want nil", err)
			}
		})
	}
}

// TestRetriesLongerThanAckWaitAreNotRedelivered runs two workers with an
// ACK_WAIT of 1s on commands whose retries (three 429s with Retry-After: 1)
// take over 3s: the running command's ack deadline is extended, and no
// command waits unstarted while its ack timer runs, so JetStream redelivers
// nothing: each command is delivered once and makes one sequence of calls.
func TestRetriesLongerThanAckWaitAreNotRedelivered(t *testing.T) {
	s := startSystem(t)
	s.gw.setPlan(func(_, _ string, nth int) behaviour { return behaviour{rateLimit: nth <= 3} })
	// The commands wait in the stream before the workers start, so that
	// the first pulls find more than the workers can run at once.
	if err := streams.Provision(context.Background(), s.js, streams.Default()); err != nil {
		t.Fatal(err)
	}
	s.authorise(32) // two rounds of the two workers' slots
	s.publishCaptures(t)
	kv := []string{"WORKER_CONCURRENCY", "8", "ACK_WAIT", "1s", "LEASE_DURATION", "10s"}
	a := startRun(t, s.env(t, "a", kv...))
	b := startRun(t, s.env(t, "b", kv...))
	a.waitReady(t)
	b.waitReady(t)
	s.waitAllDone(t, 60*time.Second)
	s.checkExactlyOnce(t)

	for i, auth := range s.auths {
		if got := s.gw.count("capture", auth); got != 4 {
			t.Errorf("%s: capture calls = %d, want 4 (three 429s, one success)", s.key(i), got)
		}
	}
	if ci := s.consumer(t); ci.Delivered.Consumer != uint64(len(s.auths)) {
		t.Errorf("deliveries = %d, want %d: one per command, no redelivery", ci.Delivered.Consumer, len(s.auths))
	}
	for _, w := range []*running{a, b} {
		_, body := get("http://" + w.env["HTTP_ADDR"] + "/metrics")
		for _, result := range []string{"busy", "completed", "resumed"} {
			if v, ok := metricValue(body, "payworker_idempotency_claims_total", `result="`+result+`"`); ok && v != "0" {
				t.Errorf("worker %s: %s claims = %s, want none", w.env["WORKER_ID"], result, v)
			}
		}
	}
}
