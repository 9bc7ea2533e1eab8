package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/breaker"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/schemas"
)

// fakeGateway answers each capture with the next result of its script
// (success past its end) and each status with an open authorisation; while
// down, nothing answers.
type fakeGateway struct {
	mu     sync.Mutex
	script []gateway.Result
	calls  []string
	down   bool
}

func (g *fakeGateway) Execute(_ context.Context, req gateway.Request) gateway.Result {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, "capture")
	if g.down {
		return reset
	}
	if len(g.script) > 0 {
		r := g.script[0]
		g.script = g.script[1:]
		return r
	}
	return gateway.Result{Outcome: gateway.Succeeded, HTTPStatus: 201, Code: "INFO0001", Amount: req.Amount, Currency: req.Currency}
}

func (g *fakeGateway) Status(_ context.Context, req gateway.Request) (gateway.Status, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, "status")
	if g.down {
		return gateway.Status{}, errors.New("paymentoptions: status: connection reset")
	}
	return gateway.Status{State: gateway.StateAuthorised, AuthorisedAmount: 1000, Currency: "EUR"}, nil
}

func (g *fakeGateway) setDown(down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
}

func (g *fakeGateway) set(script ...gateway.Result) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.script = script
}

// take returns the calls made since the last take.
func (g *fakeGateway) take() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := strings.Join(g.calls, " ")
	g.calls = nil
	return s
}

var (
	reset = gateway.Result{Outcome: gateway.Unknown, Err: errors.New("connection reset after the request was written")}
	busy  = gateway.Result{Outcome: gateway.Retryable, HTTPStatus: 503}
)

// fakePacer records its waits and slow-downs; a wait moves the fake clock
// on by turn, as a long queue for the gateway's rate would.
type fakePacer struct {
	clock *clock
	turn  time.Duration
	mu    sync.Mutex
	waits int
	slows []time.Duration
}

func (p *fakePacer) Wait(ctx context.Context) error {
	p.mu.Lock()
	p.waits++
	p.mu.Unlock()
	p.clock.mu.Lock()
	p.clock.now = p.clock.now.Add(p.turn)
	p.clock.mu.Unlock()
	return ctx.Err()
}

func (p *fakePacer) Slow(_ context.Context, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slows = append(p.slows, d)
}

// guarded is a handler with a circuit breaker (and, when set, a pacer) in
// front of a fake gateway, over real NATS and Redis, with a fake clock that
// the breaker shares.
type guarded struct {
	t       *testing.T
	js      jetstream.JetStream
	cons    jetstream.Consumer
	events  jetstream.Stream
	store   idempotency.Store
	gw      *fakeGateway
	clock   *clock
	circuit *breaker.Breaker
	h       *handlers.Handler
	lastSeq uint64
}

type guardedOptions struct {
	retry      handlers.Retry
	outageWait time.Duration
	pacer      func(*clock) handlers.Limiter
}

func newGuarded(t *testing.T, o guardedOptions) *guarded {
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
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	g := &guarded{t: t, js: js, cons: cons, events: evs, store: store, gw: &fakeGateway{}, clock: c}
	g.circuit = breaker.New(breaker.Settings{ConsecutiveFailures: 2, CoolDown: 10 * time.Second, Now: c.Now})
	hc := handlers.Config{
		JetStream: js, Streams: cfg, Store: store,
		Gateways: map[string]handlers.Gateway{"paymentoptions": g.gw}, DefaultGateway: "paymentoptions",
		Retry: o.retry, Lease: 30 * time.Second, AckWait: 30 * time.Second,
		Holder: "test", Source: "urn:payworker:test",
		Now: c.Now, Sleep: c.Sleep,
		Breakers:   map[string]*breaker.Breaker{"paymentoptions": g.circuit},
		OutageWait: o.outageWait,
	}
	if o.pacer != nil {
		hc.Limiters = map[string]handlers.Limiter{"paymentoptions": o.pacer(c)}
	}
	g.h = handlers.New(hc)
	return g
}

// handled is what handling one message came to.
type handled struct {
	settled string
	calls   string
	kinds   string // the events it published
	event   events.Event
}

// capture publishes a capture of 1000 EUR cents under key (command id
// id) and handles it.
func (g *guarded) capture(id, key string) handled {
	t := g.t
	t.Helper()
	body, _ := json.Marshal(map[string]any{"command_id": id, "idempotency_key": key, "type": "capture", "merchant_id": merchant,
		"transaction_id": "auth-" + key, "amount": 1000, "currency": "EUR"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := g.js.PublishMsg(ctx, &nats.Msg{Subject: "payments.cmd.capture", Data: body}, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
	batch, err := g.cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := <-batch.Messages()
	if !ok {
		t.Fatalf("no message: %v", batch.Error())
	}
	m := &spy{Msg: msg}
	g.gw.take()
	g.h.Handle(ctx, m)
	out := handled{settled: m.String(), calls: g.gw.take()}
	info, err := g.events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for seq := g.lastSeq + 1; seq <= info.State.LastSeq; seq++ {
		raw, err := g.events.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.ValidateEventJSON(raw.Data); err != nil {
			t.Errorf("event %d does not validate: %v\n%s", seq, err, raw.Data)
		}
		if err := json.Unmarshal(raw.Data, &out.event); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, out.event.Type)
	}
	g.lastSeq = info.State.LastSeq
	out.kinds = strings.Join(kinds, " ")
	return out
}

// record reads key's idempotency record.
func (g *guarded) record(key string) idempotency.Record {
	g.t.Helper()
	rec, err := g.store.Get(context.Background(), merchant, key)
	if err != nil {
		g.t.Fatalf("record of %s: %v", key, err)
	}
	return rec
}

var fastRetry = handlers.Retry{Initial: 100 * time.Millisecond, Max: time.Second, MaxElapsed: 2 * time.Second, MaxAttempts: 5}

// TestOpenCircuitPausesCommands: failures open the circuit; the command that
// met it and the ones after it are handed back (NakWithDelay, key released)
// without a gateway call and without a dead letter; uncertain is kept; after
// the cool-down one probe goes, closes the circuit, and the uncertain
// command reconciles through the status call before anything is sent.
func TestOpenCircuitPausesCommands(t *testing.T) {
	g := newGuarded(t, guardedOptions{retry: fastRetry, outageWait: 30 * time.Minute})

	// The gateway goes down: a capture and its status call get no answer
	// and open the circuit; the capture's outcome is unknown.
	g.gw.setDown(true)
	got := g.capture("c1", "k1")
	if got.settled != "nak_with_delay" || got.calls != "capture status" || got.kinds != "" {
		t.Fatalf("first command: settled %q, calls %q, events %q; want nak_with_delay after a capture and a status call, no event", got.settled, got.calls, got.kinds)
	}
	if g.circuit.State() != breaker.Open {
		t.Fatalf("circuit = %v after two failures, want open", g.circuit.State())
	}
	if rec := g.record("k1"); rec.State != idempotency.StateReleased || !rec.Uncertain {
		t.Errorf("record of the paused uncertain command = %s uncertain=%v, want released and uncertain", rec.State, rec.Uncertain)
	}

	// Commands meeting the open circuit make no call at all.
	for i := range 3 {
		key := "k" + strconv.Itoa(i+2)
		got := g.capture("c"+strconv.Itoa(i+2), key)
		if got.settled != "nak_with_delay" || got.calls != "" || got.kinds != "" {
			t.Fatalf("command %s during the outage: settled %q, calls %q, events %q; want handed back with no call", key, got.settled, got.calls, got.kinds)
		}
		if rec := g.record(key); rec.State != idempotency.StateReleased || rec.Uncertain {
			t.Errorf("record of %s = %s uncertain=%v, want released, not uncertain", key, rec.State, rec.Uncertain)
		}
	}
	// Long past the retry budget (2s), still no dead letter.
	g.clock.Sleep(context.Background(), 9*time.Second)
	if got := g.capture("c5", "k5"); got.settled != "nak_with_delay" || got.calls != "" {
		t.Fatalf("9s into the outage: settled %q, calls %q; want handed back", got.settled, got.calls)
	}

	// The cool-down is over: the uncertain command comes back (same key,
	// its redelivery) and probes with its status call; the gateway
	// answers, the circuit closes, and the capture goes.
	g.clock.Sleep(context.Background(), 2*time.Second)
	g.gw.setDown(false)
	got = g.capture("c1-again", "k1")
	if got.calls != "status capture" || got.kinds != events.CaptureSucceeded.Type() {
		t.Fatalf("after the outage: calls %q, events %q; want the status call first, then the capture, succeeded", got.calls, got.kinds)
	}
	if g.circuit.State() != breaker.Closed {
		t.Errorf("circuit = %v after a good probe, want closed", g.circuit.State())
	}
	// A paused command that never reached the gateway sends at once.
	if got := g.capture("c2-again", "k2"); got.calls != "capture" || got.kinds != events.CaptureSucceeded.Type() {
		t.Errorf("k2 after the outage: calls %q, events %q; want one capture, succeeded", got.calls, got.kinds)
	}
}

// TestOutageWaitOver: once the outage is older than GATEWAY_OUTAGE_WAIT, a
// command meeting the open circuit waits within its own budget and is
// dead-lettered as gateway_unavailable; with GATEWAY_OUTAGE_WAIT=0 at once.
func TestOutageWaitOver(t *testing.T) {
	for _, tc := range []struct {
		name       string
		outageWait time.Duration
		after      time.Duration // into the outage
	}{
		{"outage older than the wait", time.Minute, 61 * time.Second},
		{"no pause (GATEWAY_OUTAGE_WAIT=0)", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuarded(t, guardedOptions{retry: fastRetry, outageWait: tc.outageWait})
			g.gw.set(busy, busy)
			first := g.capture("c1", "k1")
			if tc.outageWait == 0 && first.kinds != events.DeadLettered.Type() {
				t.Errorf("first command with no pause: events %q, want dead_lettered", first.kinds)
			}
			g.clock.Sleep(context.Background(), tc.after)
			for g.circuit.State() != breaker.Open { // each probe fails
				g.gw.set(busy)
				g.capture("probe-"+g.clock.Now().String(), "probe-"+strconv.FormatInt(g.clock.Now().UnixNano(), 10))
			}
			got := g.capture("c2", "k2")
			if got.calls != "" || got.kinds != events.DeadLettered.Type() {
				t.Fatalf("calls %q, events %q; want no call and a dead letter", got.calls, got.kinds)
			}
			if e := got.event.Data.Error; e == nil || e.Code != "gateway_unavailable" {
				t.Errorf("dead letter error = %+v, want gateway_unavailable", got.event.Data.Error)
			}
		})
	}
}

// TestPacedTurnsDoNotSpendTheBudget: time spent waiting for turns in the
// gateway's rate limit is left out of RETRY_MAX_ELAPSED, and a 429 slows
// the fleet through the pacer instead of the command's own budget.
func TestPacedTurnsDoNotSpendTheBudget(t *testing.T) {
	var p *fakePacer
	g := newGuarded(t, guardedOptions{retry: fastRetry, outageWait: 30 * time.Minute,
		pacer: func(c *clock) handlers.Limiter { p = &fakePacer{clock: c, turn: 5 * time.Second}; return p }})
	// Each call waits 5s for its turn (the budget is 2s); a 503 and a
	// success: 10s in the pacer, and the command still succeeds.
	g.gw.set(busy)
	got := g.capture("c1", "k1")
	if got.calls != "capture capture" || got.kinds != events.CaptureSucceeded.Type() {
		t.Fatalf("calls %q, events %q; want two captures and success", got.calls, got.kinds)
	}
	if p.waits != 2 {
		t.Errorf("pacer waits = %d, want one per call (2)", p.waits)
	}
	// A 429 asking for 30s (past the budget): the pacer is told, and the
	// command waits for it there, not in its budget.
	p.turn = 0
	g.gw.set(gateway.Result{Outcome: gateway.Retryable, HTTPStatus: 429, RetryAfter: 30 * time.Second})
	got = g.capture("c2", "k2")
	if got.kinds != events.CaptureSucceeded.Type() {
		t.Fatalf("after a 429 with Retry-After 30s: events %q, want success", got.kinds)
	}
	if len(p.slows) != 1 || p.slows[0] != 30*time.Second {
		t.Errorf("pacer slowed for %v, want once for 30s", p.slows)
	}
	if g.circuit.State() != breaker.Closed {
		t.Errorf("circuit = %v, want closed: a 429 is an answer", g.circuit.State())
	}
}
