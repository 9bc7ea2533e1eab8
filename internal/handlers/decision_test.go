package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/paymentoptions"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/schemas"
)

// step is what the scripted gateway does with one capture call.
type step struct {
	// refuse: the connection is refused (a real closed port): nothing sent.
	refuse bool
	// status, with header and body, is answered instead of the sandbox's
	// answer; 0 lets the sandbox answer.
	status int
	header map[string]string
	body   string
	// apply has the sandbox apply the capture first; then status/body (if
	// set) replace its answer, or drop closes the connection unanswered.
	apply bool
	drop  bool
	// applyAfter answers 504 at once and has the sandbox apply the
	// capture that long after (real time): a gateway still processing.
	applyAfter time.Duration
}

// answer is a step answering status with body, not applied.
func answer(status int, body string, header ...string) step {
	s := step{status: status, body: body, header: map[string]string{}}
	for i := 0; i+1 < len(header); i += 2 {
		s.header[header[i]] = header[i+1]
	}
	return s
}

// refusal is a 4xx or 2xx refusal body in the gateway's shape.
func refusal(status int, code, message, responseCode string) string {
	pd := ""
	if responseCode != "" {
		pd = fmt.Sprintf(`,"payment_details":{"response_code":%q}`, responseCode)
	}
	return fmt.Sprintf(`{"success":false,"status_code":%d,"transaction_type":"CAPTURE","gateway_response":{"type":"ERROR","code":%q,"message":%q}%s}`,
		status, code, message, pd)
}

// scripted is the gateway of these tests: the sandbox over real HTTP, behind
// a server and a transport that follow a script for the capture calls
// (status calls always reach the sandbox), counting every call.
type scripted struct {
	sb     *sandbox.Sandbox
	srv    *httptest.Server
	closed string // a loopback address nothing listens on

	mu   sync.Mutex
	plan []step
	// statusPlan scripts the status calls the same way; past its end
	// (and for a step with no status) the sandbox answers them.
	statusPlan []step
	captures   int // capture attempts, refused ones included
	statuses   int
}

// statusStep numbers status calls apart from capture calls.
const statusStep = 1000

func startScripted(t *testing.T) (*scripted, *paymentoptions.Client) {
	t.Helper()
	g := &scripted{sb: sandbox.New(sandbox.Options{APIKey: "k", XAPIKey: "x", Seed: 1})}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.closed = l.Addr().String()
	l.Close()

	dialer := &net.Dialer{Timeout: time.Second}
	tr := &http.Transport{
		DisableKeepAlives: true, // every call dials, so a refusal is a real one
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if refuse, _ := ctx.Value(refuseKey{}).(bool); refuse {
				addr = g.closed
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}
	base, _ := url.Parse(g.srv.URL + "/api/v1")
	po, err := paymentoptions.New(paymentoptions.Config{BaseURL: base, APIKey: "k", XAPIKey: "x", Timeout: 5 * time.Second,
		HTTPClient: &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			i := g.count(r.URL.Path)
			if s, ok := g.step(i, r.URL.Path); ok {
				r = r.Clone(context.WithValue(r.Context(), refuseKey{}, s.refuse))
				r.Header.Set("X-Step", strconv.Itoa(i))
			}
			return tr.RoundTrip(r)
		})}})
	if err != nil {
		t.Fatal(err)
	}
	return g, po
}

type refuseKey struct{}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// reset starts a new case: a new script, counters at zero.
func (g *scripted) reset(plan, statusPlan []step) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.plan, g.statusPlan, g.captures, g.statuses = plan, statusPlan, 0, 0
}

func (g *scripted) counts() (captures, statuses int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.captures, g.statuses
}

// count counts a call and returns its number, from 0 for captures and from
// statusStep for status calls.
func (g *scripted) count(path string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if strings.HasSuffix(path, "/capture") {
		g.captures++
		return g.captures - 1
	}
	g.statuses++
	return statusStep + g.statuses - 1
}

func (g *scripted) step(i int, path string) (step, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if i >= statusStep && !strings.HasSuffix(path, "/capture") && i-statusStep < len(g.statusPlan) {
		return g.statusPlan[i-statusStep], true
	}
	if !strings.HasSuffix(path, "/capture") || i < 0 || i >= len(g.plan) {
		return step{}, false
	}
	return g.plan[i], true
}

func (g *scripted) serve(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.Atoi(r.Header.Get("X-Step"))
	s, ok := g.step(i, r.URL.Path)
	if err != nil || !ok {
		g.sb.Handler().ServeHTTP(w, r)
		return
	}
	if s.apply {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		g.sb.Handler().ServeHTTP(rec, r)
		if rec.Code != http.StatusCreated {
			panic(fmt.Sprintf("sandbox did not apply the scripted capture: %d %s", rec.Code, rec.Body))
		}
	}
	if s.applyAfter > 0 {
		// The gateway is still processing: it answers 504 now and applies
		// the capture a little later.
		body, _ := io.ReadAll(r.Body)
		late := r.Clone(context.WithoutCancel(r.Context()))
		go func() {
			time.Sleep(s.applyAfter)
			late.Body = io.NopCloser(bytes.NewReader(body))
			g.sb.Handler().ServeHTTP(httptest.NewRecorder(), late)
		}()
		w.WriteHeader(http.StatusGatewayTimeout)
		return
	}
	if s.status == 0 && !s.drop {
		g.sb.Handler().ServeHTTP(w, r)
		return
	}
	if s.drop {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
		return
	}
	for k, v := range s.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(s.status)
	io.WriteString(w, s.body)
}

// clock is the handler's injected clock: Sleep records the duration asked
// for and moves Now on by it, at once.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
	// real: Sleep also sleeps, for tests against a gateway acting in
	// real time.
	real bool
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Sleep(ctx context.Context, d time.Duration) error {
	if c.real {
		time.Sleep(d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return ctx.Err()
}

func (c *clock) take() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sleeps
	c.sleeps = nil
	return s
}

// spy is a real JetStream message whose settlement is recorded.
type spy struct {
	jetstream.Msg
	mu      sync.Mutex
	settled []string
}

func (m *spy) record(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settled = append(m.settled, s)
}

func (m *spy) Ack() error                          { m.record("ack"); return m.Msg.Ack() }
func (m *spy) DoubleAck(ctx context.Context) error { m.record("ack"); return m.Msg.DoubleAck(ctx) }
func (m *spy) Nak() error                          { m.record("nak"); return m.Msg.Nak() }
func (m *spy) NakWithDelay(d time.Duration) error {
	m.record("nak_with_delay")
	return m.Msg.NakWithDelay(d)
}
func (m *spy) Term() error                   { m.record("term"); return m.Msg.Term() }
func (m *spy) TermWithReason(r string) error { m.record("term"); return m.Msg.TermWithReason(r) }
func (m *spy) String() string                { m.mu.Lock(); defer m.mu.Unlock(); return strings.Join(m.settled, ",") }

// bench is one handler wired to real NATS, a real Redis and the scripted
// gateway through the real PaymentOptions adapter, with a fake clock.
type bench struct {
	t       *testing.T
	js      jetstream.JetStream
	cons    jetstream.Consumer
	gw      *scripted
	clock   *clock
	h       *handlers.Handler
	events  jetstream.Stream
	lastSeq uint64
	n       int
}

const merchant = "M0001"

func newBench(t *testing.T, retry handlers.Retry) *bench {
	t.Helper()
	return newBenchSettled(t, retry, 0)
}

// newBenchSettled is newBench with a settle delay for the gateway, and a
// clock whose Sleep also sleeps for real when settle is set, so that what
// the gateway does in real time is seen in its order.
func newBenchSettled(t *testing.T, retry handlers.Retry, settle time.Duration) *bench {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	cfg := streams.Default()
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Commands, jetstream.ConsumerConfig{Durable: "test",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, FilterSubject: cfg.CommandWildcard()})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := js.Stream(ctx, cfg.Events)
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.StartRedis(t)
	reg, err := idempotency.NewKVScopeRegistry(ctx, js, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	store := idempotency.NewRedis(r.Client(t), idempotency.RedisOptions{Prefix: r.Prefix, TTL: time.Hour, Registry: reg})
	gw, po := startScripted(t)
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), real: settle > 0}
	h := handlers.New(handlers.Config{
		Settle:    map[string]time.Duration{"paymentoptions": settle},
		JetStream: js, Streams: cfg, Store: store,
		Gateways: map[string]handlers.Gateway{"paymentoptions": po}, DefaultGateway: "paymentoptions",
		Retry: retry, Lease: 30 * time.Second, AckWait: 30 * time.Second,
		Holder: "test", Source: "urn:payworker:test",
		Now: c.Now, Sleep: c.Sleep,
	})
	return &bench{t: t, js: js, cons: cons, gw: gw, clock: c, h: h, events: evs}
}

// outcome is what handling one capture came to.
type outcome struct {
	settled  string
	captures int // capture attempts, refused ones included
	statuses int
	event    events.Event
	kind     string // the event's type
	sleeps   []time.Duration
}

// capture authorises 1000 EUR cents, publishes a capture of amount under a
// new key, has the handler handle it with plan as the gateway's script, and
// returns what came of it: its settlement, the gateway calls, its one event.
func (b *bench) capture(plan []step, amount int64) outcome {
	return b.captureScripted(plan, nil, amount)
}

// captureScripted is capture with the status calls scripted too.
func (b *bench) captureScripted(plan, statusPlan []step, amount int64) outcome {
	t := b.t
	t.Helper()
	b.n++
	key := "key-" + strconv.Itoa(b.n)
	auth := b.gw.sb.Authorise(merchant, 1000, "EUR")
	b.gw.reset(plan, statusPlan)
	b.clock.take()
	body, _ := json.Marshal(map[string]any{"command_id": key, "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": amount, "currency": "EUR"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.js.PublishMsg(ctx, &nats.Msg{Subject: "payments.cmd.capture", Data: body}, jetstream.WithMsgID(key)); err != nil {
		t.Fatal(err)
	}
	batch, err := b.cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := <-batch.Messages()
	if !ok {
		t.Fatalf("no message: %v", batch.Error())
	}
	m := &spy{Msg: msg}
	b.h.Handle(ctx, m)

	var out outcome
	out.settled = m.String()
	out.captures, out.statuses = b.gw.counts()
	out.sleeps = b.clock.take()
	// The event is stored before the message is settled: read what is new.
	info, err := b.events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found []events.Event
	for seq := b.lastSeq + 1; seq <= info.State.LastSeq; seq++ {
		raw, err := b.events.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		if err := schemas.ValidateEventJSON(raw.Data); err != nil {
			t.Errorf("event %d does not validate: %v\n%s", seq, err, raw.Data)
		}
		var ev events.Event
		if err := json.Unmarshal(raw.Data, &ev); err != nil {
			t.Fatal(err)
		}
		found = append(found, ev)
	}
	b.lastSeq = info.State.LastSeq
	if len(found) != 1 || found[0].Data.IdempotencyKey != key {
		t.Fatalf("events of %s: %+v, want exactly one", key, found)
	}
	out.event, out.kind = found[0], found[0].Type
	if ops := b.gw.sb.Applied(auth); out.kind == events.CaptureSucceeded.Type() && len(ops) != 1 ||
		out.kind != events.CaptureSucceeded.Type() && len(ops) != 0 {
		t.Errorf("ledger = %+v after %s, want one capture exactly when it succeeded", ops, out.kind)
	}
	return out
}

// TestRetryClassificationAsTheHandlerApplies drives one capture per answer
// class through Handle and checks the decision the handler takes: succeeded
// at once, failed with no retry, retried (how many calls), or reconciled
// through the status call before anything is sent again.
func TestRetryClassificationAsTheHandlerApplies(t *testing.T) {
	b := newBench(t, handlers.Retry{Initial: 100 * time.Millisecond, Max: 5 * time.Second, MaxElapsed: 2 * time.Minute, MaxAttempts: 10})
	var (
		succeeded = events.CaptureSucceeded.Type()
		failed    = events.CaptureFailed.Type()
		dead      = events.DeadLettered.Type()
		unclear   = refusal(200, "ERR0680", "Transaction result is unclear", "680")
	)
	for _, tc := range []struct {
		name       string
		plan       []step
		statusPlan []step
		amount     int64
		// want
		kind       string
		captures   int
		statuses   int
		reconciled bool
		// confirmed: the status call that settled it followed a decline at
		// once (an answer, nothing to wait for), not an unknown outcome.
		confirmed bool
		errCode   string
	}{
		{name: "201 success", kind: succeeded, captures: 1},
		{name: "4xx decline: 404 unknown transaction", plan: []step{answer(404, refusal(404, "ERR0404", "Transaction not found", "404"))},
			kind: failed, captures: 1, errCode: "gateway_declined"},
		{name: "4xx decline: 412 wrong state", plan: []step{answer(412, refusal(412, "ERR0412", "Transaction already captured", "412"))},
			kind: failed, captures: 1, errCode: "gateway_declined"},
		{name: "4xx decline from the sandbox: 836 amount above the authorised", amount: 1001,
			kind: failed, captures: 1, errCode: "gateway_declined"},
		{name: "success false on a 2xx", plan: []step{answer(200, refusal(200, "ERR0001", "Declined", ""))},
			kind: failed, captures: 1, errCode: "gateway_declined"},
		{name: "risk block Err3005", plan: []step{answer(200, refusal(200, "Err3005", "Blocked by risk rules", ""))},
			kind: failed, captures: 1, errCode: "gateway_declined"},
		{name: "429 then success", plan: []step{answer(429, refusal(429, "ERR0429", "Too many requests", ""), "Retry-After", "1")},
			kind: succeeded, captures: 2},
		{name: "503 twice then success", plan: []step{answer(503, refusal(503, "ERR0503", "Service unavailable", "")), answer(503, "")},
			kind: succeeded, captures: 3},
		{name: "500 not applied: status, then sent again", plan: []step{answer(500, refusal(500, "ERR0500", "Server error", ""))},
			kind: succeeded, captures: 2, statuses: 1},
		{name: "502 not applied: status, then sent again", plan: []step{answer(502, "<html>bad gateway</html>")},
			kind: succeeded, captures: 2, statuses: 1},
		{name: "504 not applied: status, then sent again", plan: []step{answer(504, "")},
			kind: succeeded, captures: 2, statuses: 1},
		{name: "500 after applying: reconciled, not sent again", plan: []step{{apply: true, status: 500, body: refusal(500, "ERR0500", "Server error", "")}},
			kind: succeeded, captures: 1, statuses: 1, reconciled: true},
		{name: "connection refused twice then success", plan: []step{{refuse: true}, {refuse: true}},
			kind: succeeded, captures: 3},
		{name: "applied then connection dropped (EOF): reconciled", plan: []step{{apply: true, drop: true}},
			kind: succeeded, captures: 1, statuses: 1, reconciled: true},
		{name: "dropped before applying: status, then sent again", plan: []step{{drop: true}},
			kind: succeeded, captures: 2, statuses: 1},
		{name: "response_code 450 try again", plan: []step{answer(200, refusal(200, "ERR0450", "Try again", "450"))},
			kind: succeeded, captures: 2},
		{name: "response_code 443 then 460 try again", plan: []step{answer(400, refusal(400, "ERR0443", "Try again", "443")), answer(200, refusal(200, "ERR0460", "Try again", "460"))},
			kind: succeeded, captures: 3},
		{name: "response_code 680 unclear, not applied: status, then sent again", plan: []step{answer(200, unclear)},
			kind: succeeded, captures: 2, statuses: 1},
		{name: "response_code 680 unclear, applied: reconciled", plan: []step{{apply: true, status: 200, body: unclear}},
			kind: succeeded, captures: 1, statuses: 1, reconciled: true},
		{name: "response_code 705 unclear, applied: reconciled", plan: []step{{apply: true, status: 200, body: refusal(200, "ERR0705", "Unclear", "705")}},
			kind: succeeded, captures: 1, statuses: 1, reconciled: true},
		{name: "response_code 94 duplicate transmission: reconciled", plan: []step{{apply: true, status: 200, body: refusal(200, "ERR0094", "Duplicate transmission", "94")}},
			kind: succeeded, captures: 1, statuses: 1, reconciled: true},
		// The resend after an unclear attempt is refused as "already
		// captured" because the first attempt took effect late: one more
		// status call tells that echo from a real refusal.
		{name: "504, then a 412 that echoes our own capture: confirmed by status", plan: []step{answer(504, ""), {apply: true, status: 412, body: refusal(412, "ERR0412", "Transaction already captured", "412")}},
			kind: succeeded, captures: 2, statuses: 2, reconciled: true, confirmed: true},
		// A decline after an unclear attempt is not believed until a
		// status answer says the operation did not take effect; a status
		// call that fails or is unclear is asked again, and at the end of
		// the budget the outcome is unknown, never a failure.
		{name: "504, then a 412, status failing to the end: outcome_unknown, not failed",
			plan:       []step{answer(504, ""), answer(412, refusal(412, "ERR0412", "Transaction already captured", "412"))},
			statusPlan: append([]step{{}}, repeat(answer(503, ""), 9)...),
			kind:       dead, captures: 2, statuses: 8, errCode: "outcome_unknown"},
		{name: "504, then a real 412, status failing once: asked again, then failed",
			plan:       []step{answer(504, ""), answer(412, refusal(412, "ERR0412", "Transaction already captured", "412"))},
			statusPlan: []step{{}, answer(503, "")},
			kind:       failed, captures: 2, statuses: 3, reconciled: true, errCode: "gateway_declined"},
		{name: "503 on every call: dead-lettered after RETRY_MAX_ATTEMPTS", plan: repeat(answer(503, ""), 10),
			kind: dead, captures: 10, errCode: "retries_exhausted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.t = t
			amount := tc.amount
			if amount == 0 {
				amount = 1000
			}
			got := b.captureScripted(tc.plan, tc.statusPlan, amount)
			if got.kind != tc.kind {
				t.Errorf("event = %s (%+v), want %s", got.kind, got.event.Data.Error, tc.kind)
			}
			if got.settled != "ack" {
				t.Errorf("message settled with %q, want ack", got.settled)
			}
			if got.captures != tc.captures || got.statuses != tc.statuses {
				t.Errorf("gateway calls: %d captures, %d status, want %d and %d", got.captures, got.statuses, tc.captures, tc.statuses)
			}
			d := got.event.Data
			if want := tc.captures + tc.statuses; d.Attempts != want {
				t.Errorf("event attempts = %d, want %d", d.Attempts, want)
			}
			if d.Reconciled != tc.reconciled {
				t.Errorf("event reconciled = %v, want %v", d.Reconciled, tc.reconciled)
			}
			gotCode := ""
			if d.Error != nil {
				gotCode = d.Error.Code
				if wantRetryable := tc.kind == dead; d.Error.Retryable != wantRetryable {
					t.Errorf("error retryable = %v, want %v", d.Error.Retryable, wantRetryable)
				}
			}
			if gotCode != tc.errCode {
				t.Errorf("error code = %q, want %q", gotCode, tc.errCode)
			}
			// One backoff sleep after every capture attempt but the last
			// (before the status call when its outcome was unknown).
			wantSleeps := tc.captures - 1
			if tc.reconciled && !tc.confirmed {
				wantSleeps++
			}
			if tc.kind != dead && len(got.sleeps) != wantSleeps {
				t.Errorf("slept %d times (%v), want %d", len(got.sleeps), got.sleeps, wantSleeps)
			}
		})
	}
}

func repeat(s step, n int) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestRetryAfterIsHonoured checks, through the injected clock and with no
// real sleeping, that the sleep after a 429 or 503 with Retry-After is at
// least what the gateway asked for, even beyond RETRY_MAX_INTERVAL, and never
// beyond what is left of RETRY_MAX_ELAPSED.
func TestRetryAfterIsHonoured(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		maxElapsed time.Duration
		wantSleep  time.Duration // the least first sleep
		wantMax    time.Duration // the most first sleep
		// beyond: the Retry-After is longer than the budget left: no
		// sleep, no second call, the command is dead-lettered at once.
		beyond bool
	}{
		{name: "429 Retry-After 7", status: 429, retryAfter: "7", maxElapsed: 2 * time.Minute, wantSleep: 7 * time.Second, wantMax: 2 * time.Minute},
		{name: "503 Retry-After 3", status: 503, retryAfter: "3", maxElapsed: 2 * time.Minute, wantSleep: 3 * time.Second, wantMax: 2 * time.Minute},
		{name: "429 Retry-After 30, above RETRY_MAX_INTERVAL", status: 429, retryAfter: "30", maxElapsed: 2 * time.Minute, wantSleep: 30 * time.Second, wantMax: 2 * time.Minute},
		{name: "429 Retry-After 7, 5s of budget", status: 429, retryAfter: "7", maxElapsed: 5 * time.Second, beyond: true},
		{name: "429 without Retry-After: the backoff", status: 429, maxElapsed: 2 * time.Minute, wantSleep: 50 * time.Millisecond, wantMax: 150 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBench(t, handlers.Retry{Initial: 100 * time.Millisecond, Max: 5 * time.Second, MaxElapsed: tc.maxElapsed, MaxAttempts: 10})
			var hdr []string
			if tc.retryAfter != "" {
				hdr = []string{"Retry-After", tc.retryAfter}
			}
			got := b.capture([]step{answer(tc.status, refusal(tc.status, "ERR"+strconv.Itoa(tc.status), "Slow down", ""), hdr...)}, 1000)
			if tc.beyond {
				if len(got.sleeps) != 0 || got.captures != 1 || got.kind != events.DeadLettered.Type() {
					t.Errorf("sleeps %v, %d captures, event %s; want no sleep, 1 capture, dead_lettered", got.sleeps, got.captures, got.kind)
				}
				return
			}
			if len(got.sleeps) == 0 {
				t.Fatalf("no sleep after %d; event %s", tc.status, got.kind)
			}
			if s := got.sleeps[0]; s < tc.wantSleep || s > tc.wantMax {
				t.Errorf("first sleep = %s, want between %s and %s", s, tc.wantSleep, tc.wantMax)
			}
			if got.captures != 2 || got.kind != events.CaptureSucceeded.Type() {
				t.Errorf("%d captures, event %s; want the second to succeed", got.captures, got.kind)
			}
		})
	}
}

// TestSettleDelayBeforeStatus: a gateway that answers 504 while it is still
// processing the capture, and applies it 300 ms later. A status call asked
// at once would read "not applied" and the capture would be sent again; with
// a settle delay the status call sees it applied, and nothing is resent.
func TestSettleDelayBeforeStatus(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settle   time.Duration
		captures int
	}{
		{name: "settle 1s: reconciled, not resent", settle: time.Second, captures: 1},
		{name: "settle 0: read as not applied, resent", settle: 0, captures: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBenchSettled(t, handlers.Retry{Initial: 20 * time.Millisecond, Max: time.Second, MaxElapsed: time.Minute, MaxAttempts: 10}, tc.settle)
			b.clock.real = true
			got := b.capture([]step{{applyAfter: 300 * time.Millisecond}}, 1000)
			if got.kind != events.CaptureSucceeded.Type() || got.captures != tc.captures || got.statuses != 1 {
				t.Errorf("event %s, %d captures, %d status; want succeeded, %d and 1", got.kind, got.captures, got.statuses, tc.captures)
			}
			if tc.settle > 0 {
				var slept time.Duration
				for _, d := range got.sleeps {
					slept += d
				}
				if slept < tc.settle {
					t.Errorf("slept %v before the status call, want at least the settle delay %v", got.sleeps, tc.settle)
				}
			}
			time.Sleep(400 * time.Millisecond) // let the late apply land before the test ends
		})
	}
}
