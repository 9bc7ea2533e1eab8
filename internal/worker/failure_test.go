package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/sibs"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/internal/worker"
)

// stores are the idempotency stores every failure test runs against.
var stores = []struct {
	name string
	kv   bool
}{{"redis", false}, {"jetstream-kv", true}}

// shortLease is the lease and ack wait of the failure tests: short, so that
// a "dead" worker's key and message come back within the test.
const shortLease = time.Second

// failureOptions are systemtest options with a short lease and ack wait and
// a retry budget that outlasts every injected fault.
func failureOptions(kv bool) systemtest.Options {
	o := systemtest.DefaultOptions()
	o.KV = kv
	o.Lease = shortLease
	o.AckWait = shortLease
	o.Retry.MaxElapsed = 20 * time.Second
	return o
}

func captureCmd(id, key, auth string, amount int64) systemtest.Cmd {
	return systemtest.Cmd{"command_id": id, "type": "capture", "idempotency_key": key, "merchant_id": merchant,
		"transaction_id": auth, "amount": amount, "currency": "JPY"}
}

func voidCmd(id, key, auth string) systemtest.Cmd {
	return systemtest.Cmd{"command_id": id, "type": "void", "idempotency_key": key, "merchant_id": merchant,
		"transaction_id": auth}
}

// storedEvent is one message of PAYMENT_EVENTS as the stream holds it.
type storedEvent struct {
	Subject string
	MsgID   string
	Event   events.Event
	Raw     []byte
}

// readStream reads every message of stream, first to last.
func readStream(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	str, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	want := int(info.State.Msgs)
	if want == 0 {
		return nil
	}
	c, err := str.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("stream %s: ordered consumer: %v", stream, err)
	}
	var out []jetstream.Msg
	for len(out) < want {
		batch, err := c.Fetch(min(want-len(out), 500), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("stream %s: fetch: %v", stream, err)
		}
		n := len(out)
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("stream %s: fetch: %v", stream, err)
		}
		if len(out) == n {
			t.Fatalf("stream %s: read %d of %d messages, then nothing more", stream, len(out), want)
		}
	}
	return out
}

// readEvents reads the whole PAYMENT_EVENTS stream.
func readEvents(t testing.TB, s *systemtest.System) []storedEvent {
	t.Helper()
	var out []storedEvent
	for _, m := range readStream(t, s.JS, s.Streams.Events) {
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("event on %s is not JSON: %v", m.Subject(), err)
		}
		out = append(out, storedEvent{Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Event: ev, Raw: m.Data()})
	}
	return out
}

// eventsOf returns the stored events of (merchant, key), in stream order.
func eventsOf(evs []storedEvent, merchant, key string) []storedEvent {
	var out []storedEvent
	for _, e := range evs {
		if e.Event.Data.MerchantID == merchant && e.Event.Data.IdempotencyKey == key {
			out = append(out, e)
		}
	}
	return out
}

// terminals returns the terminal events among evs.
func terminals(evs []storedEvent) []storedEvent {
	var out []storedEvent
	for _, e := range evs {
		if k, ok := events.KindOfType(e.Event.Type); ok && k.Terminal() {
			out = append(out, e)
		}
	}
	return out
}

// countType counts the events of kind among evs.
func countType(evs []storedEvent, kind events.Kind) int {
	n := 0
	for _, e := range evs {
		if e.Event.Type == kind.Type() {
			n++
		}
	}
	return n
}

func typesOf(evs []storedEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Event.Type)
	}
	return out
}

// settleWithin waits until the consumer has no message pending or unacked.
func settleWithin(t testing.TB, s *systemtest.System, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		c, err := s.JS.Consumer(context.Background(), s.Streams.Commands, s.Streams.Consumer)
		if err == nil {
			info, err := c.Info(context.Background())
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
			if err == nil {
				last = fmt.Sprintf("%d pending, %d unacked, %d redelivered", info.NumPending, info.NumAckPending, info.NumRedelivered)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("commands not settled after %v: %s", d, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUntil polls cond until it holds, failing the test after d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantOneOp checks that the ledger of auth holds exactly one operation, op of
// amount (any amount when 0).
func wantOneOp(t testing.TB, s *systemtest.System, auth, op string, amount int64) {
	t.Helper()
	ops := s.Sandbox.Applied(auth)
	if len(ops) != 1 || string(ops[0].Operation) != op || (amount != 0 && ops[0].Amount != amount) {
		t.Errorf("ledger of %s = %+v, want exactly one %s of %d", auth, ops, op, amount)
	}
}

// wantCapturedTotal checks that the sandbox's authorisation auth has
// captured exactly amount in all: where the gateway accepts a second
// capture (SIBS), a capture applied twice shows as twice the amount.
func wantCapturedTotal(t testing.TB, s *systemtest.System, auth string, amount int64) {
	t.Helper()
	a, ok := s.Sandbox.Authorisation(auth)
	if !ok {
		t.Fatalf("authorisation %s is unknown to the sandbox", auth)
	}
	if a.CapturedAmount != amount {
		t.Errorf("authorisation %s captured %d in all (ledger %q), want %d: captured exactly once",
			auth, a.CapturedAmount, ledgerOf(s.Sandbox, auth), amount)
	}
}

// crashGateway is the gateway a TestCrashPoints case captures through.
type crashGateway struct {
	name               string // the gateway's name in commands and events
	merchant, currency string
	authorised, amount int64
	// capture and status name its endpoints as sandbox.Calls counts them.
	capture, status string
}

// crashGateways: PaymentOptions, whose sandbox refuses a second capture of
// an authorisation (412), and SIBS, which applies a second partial capture
// of 2.00 of a 5.00 PLN authorisation: there a resend shows in the ledger
// as 4.00 captured, not only in the call counts.
var crashGateways = []crashGateway{
	{name: "paymentoptions", merchant: merchant, currency: "JPY", authorised: 1000, amount: 1000,
		capture: sandbox.EndpointCapture, status: sandbox.EndpointStatus},
	{name: "sibs", merchant: sibsMerchant, currency: "PLN", authorised: 500, amount: 200,
		capture: sandbox.EndpointSIBSCapture, status: sandbox.EndpointSIBSStatus},
}

// startSIBSWorker runs one worker as systemtest.StartWorker does (o's
// lease, ack wait, retry budget and hook), with SIBS on s's sandbox besides
// PaymentOptions and sibsMerchant routed to SIBS. It stops the way SIGTERM
// does at the end of the test.
func startSIBSWorker(t *testing.T, s *systemtest.System, o systemtest.Options) {
	t.Helper()
	base, err := url.Parse(s.Sandbox.SIBSBaseURL())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sibs.New(sibs.Config{BaseURL: base, ClientID: "c", TerminalID: "1", Token: "t", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hc := handlers.Config{
		JetStream:      s.JS,
		Streams:        s.Streams,
		Store:          s.Store,
		Gateways:       map[string]handlers.Gateway{"paymentoptions": s.Gateway, "sibs": sc},
		Routes:         map[string]string{sibsMerchant: "sibs"},
		DefaultGateway: "paymentoptions",
		Retry:          o.Retry,
		Lease:          o.Lease,
		AckWait:        o.AckWait,
		Holder:         "w0",
		Source:         "urn:payworker:test:w0",
	}
	var crashes *systemtest.Crashes
	if o.Hook != nil {
		crashes = systemtest.NewCrashes(o.Hook, s.Streams)
		crashes.Wrap(&hc)
	}
	h := handlers.New(hc)
	w := worker.New(worker.Config{JetStream: s.JS, Streams: s.Streams, Handler: h, Concurrency: o.Concurrency,
		AckWait: o.AckWait, ShutdownTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		if crashes != nil {
			crashes.Release()
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// crashAt is a systemtest crash hook that "kills" the worker the first time a
// command reaches point, and counts every visit of every point.
type crashAt struct {
	point string
	// onDeath runs when the worker "dies" (to change the sandbox's faults
	// for the next delivery).
	onDeath func()

	mu     sync.Mutex
	visits map[string]int
	died   bool
}

func (c *crashAt) hook(point, _ string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.visits == nil {
		c.visits = map[string]int{}
	}
	c.visits[point]++
	if point != c.point || c.died {
		return false
	}
	c.died = true
	if c.onDeath != nil {
		c.onDeath()
	}
	return true
}

func (c *crashAt) count(point string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.visits[point]
}

func (c *crashAt) dead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.died
}

// TestCrashPoints proves the crash table of docs/design.md row by row: the
// worker dies at the row's point (systemtest.Crashes stops it there: no
// ack, no nak, no release, no further write), and the next
// delivery does what the table's "what the next delivery does" column says.
// The last row, a paused worker, is TestTakeoverRaceFencing.
//
// Every row runs on both stores and through both gateways (crashGateways):
// a full capture through PaymentOptions, and a partial capture of 2.00 of a
// 5.00 PLN authorisation through SIBS, which would apply a second capture.
// Either way the sandbox's ledger must show the amount captured once.
func TestCrashPoints(t *testing.T) {
	type want struct {
		claims      int  // claims of the key: 2 when the next delivery took it over
		uncertain   bool // the takeover reconciled first
		captures    int  // capture calls that reached the sandbox, faulted ones included
		statuses    int  // status calls
		reconciled  bool // the success was learnt from the status call
		deliveries  int  // deliveries of the command, at least
		exactly     bool // deliveries is exact
		dlqEntries  int
		replayNoops bool // a replay of the DLQ copy finds the key completed
	}
	rows := []struct {
		row    string // the table's "the worker dies…" cell
		point  string
		faults sandbox.Faults // injected until the worker dies
		// attempts is the retry budget's MaxAttempts; 0 keeps the default.
		attempts int
		want     want
	}{
		{row: "after decoding, before the claim", point: systemtest.PointDecoded,
			// claims normally (acquired); being a redelivery, it asks the
			// status call first ("authorised") in case the record was lost
			want: want{claims: 1, captures: 1, statuses: 1, deliveries: 2, exactly: true}},
		{row: "after the claim, before any gateway call", point: systemtest.PointClaimed,
			// busy until the lease expires, then resumed with uncertain →
			// status call → "authorised" → sends
			want: want{claims: 2, uncertain: true, captures: 1, statuses: 1, deliveries: 2}},
		{row: "during the gateway call, or after the gateway applied it", point: systemtest.PointGatewayDone,
			// resumed with uncertain → status call → "captured for our
			// amount" → success event, no second call
			want: want{claims: 2, uncertain: true, captures: 1, statuses: 1, reconciled: true, deliveries: 2}},
		{row: "after recording the outcome, before publishing", point: systemtest.PointRecorded,
			// completed, same command, redelivered → republishes the
			// stored event bytes under the same id
			want: want{claims: 1, captures: 1, deliveries: 2, exactly: true}},
		{row: "after publishing, before the ack", point: systemtest.PointPublished,
			// the same → republish is dropped by the stream
			want: want{claims: 1, captures: 1, deliveries: 2, exactly: true}},
		{row: "after the ack", point: "",
			// nothing is redelivered
			want: want{claims: 1, captures: 1, deliveries: 1, exactly: true}},
		{row: "while waiting between retries", point: systemtest.PointRetryWait,
			// as "during the gateway call": the first attempt was applied
			// and its answer dropped; the next holder reconciles
			faults: sandbox.Faults{ApplyThenDropRate: 1},
			want:   want{claims: 2, uncertain: true, captures: 1, statuses: 1, reconciled: true, deliveries: 2}},
		{row: "after the DLQ copy, before the ack", point: systemtest.PointDeadLettered,
			// resumed (its lease expires) → reconciles → may complete;
			// the DLQ copy replayed later finds the key completed
			faults:   sandbox.Faults{ErrorRate: 1, ErrorStatus: 503},
			attempts: 2,
			want:     want{claims: 2, uncertain: true, captures: 3, statuses: 1, deliveries: 2, dlqEntries: 1, replayNoops: true}},
	}
	for _, st := range stores {
		for _, gw := range crashGateways {
			for _, r := range rows {
				t.Run(st.name+"/"+gw.name+"/"+r.row, func(t *testing.T) {
					o := failureOptions(st.kv)
					if r.attempts != 0 {
						o.Retry.MaxAttempts = r.attempts
					}
					crash := &crashAt{point: r.point}
					o.Hook = crash.hook
					if gw.name == "sibs" {
						o.Workers = 0
					}
					s := systemtest.Start(t, o)
					if gw.name == "sibs" {
						startSIBSWorker(t, s, o)
					}
					crash.onDeath = func() { s.Sandbox.SetFaults(sandbox.Faults{}) }
					s.Sandbox.SetFaults(r.faults)

					auth := s.Sandbox.Authorise(gw.merchant, gw.authorised, gw.currency)
					const key = "crash-key"
					c := systemtest.Cmd{"command_id": "crash-1", "type": "capture", "idempotency_key": key, "merchant_id": gw.merchant,
						"transaction_id": auth, "amount": gw.amount, "currency": gw.currency}
					if gw.name == "sibs" {
						// With the authorisation's time in the command, the SIBS
						// adapter sends each attempt as one POST, with no status
						// call of its own first: every status call counted below
						// is a reconciliation, as with PaymentOptions.
						a, _ := s.Sandbox.Authorisation(auth)
						c["original_transaction_time"] = a.AuthorisedAt.Format(time.RFC3339Nano)
					}
					s.Publish(t, "capture", c)
					got := s.WaitKind(t, gw.merchant, key, events.CaptureSucceeded)
					settleWithin(t, s, 20*time.Second)
					if r.point == "" {
						// Outlive the ack wait: a death after the ack changes nothing.
						time.Sleep(3 * o.AckWait)
						settleWithin(t, s, 20*time.Second)
					}
					if r.point != "" && !crash.dead() {
						t.Fatalf("the worker never reached %s", r.point)
					}

					all := readEvents(t, s)
					evs := eventsOf(all, gw.merchant, key)
					if term := terminals(evs); len(term) != 1 || len(evs) != 1 {
						t.Fatalf("events of the key in PAYMENT_EVENTS = %v, want exactly one capture.succeeded", typesOf(evs))
					}
					stored := evs[0]
					if want := events.TerminalID(gw.merchant, key); stored.MsgID != want || stored.Event.ID != want {
						t.Errorf("terminal event id %q, Nats-Msg-Id %q, want both %q", stored.Event.ID, stored.MsgID, want)
					}
					if stored.Event.Data.Reconciled != r.want.reconciled || got.Event.Data.Reconciled != r.want.reconciled {
						t.Errorf("event reconciled = %t, want %t", stored.Event.Data.Reconciled, r.want.reconciled)
					}
					if d := stored.Event.Data; d.Gateway != gw.name || d.Amount == nil || *d.Amount != gw.amount {
						t.Errorf("event gateway %q amount %v, want %s %d", d.Gateway, d.Amount, gw.name, gw.amount)
					}
					// The ledger: the capture applied once, for its amount
					// (by the key, at SIBS), and nothing else.
					wantOneOp(t, s, auth, "capture", gw.amount)
					wantCapturedTotal(t, s, auth, gw.amount)
					if ops := s.Sandbox.Applied(auth); gw.name == "sibs" && len(ops) == 1 && ops[0].Reference != key {
						t.Errorf("SIBS capture reference = %q, want the key %q", ops[0].Reference, key)
					}
					if got, want := s.Sandbox.Calls(gw.capture), r.want.captures; got != want {
						t.Errorf("%s calls = %d, want %d", gw.capture, got, want)
					}
					if got, want := s.Sandbox.Calls(gw.status), r.want.statuses; got != want {
						t.Errorf("%s calls = %d, want %d", gw.status, got, want)
					}

					rec, err := s.Store.Get(context.Background(), gw.merchant, key)
					if err != nil {
						t.Fatalf("Get(%s) = %v", key, err)
					}
					if rec.State != idempotency.StateCompleted || rec.Outcome == nil || !rec.Outcome.Succeeded {
						t.Fatalf("record = %+v, want completed with a success", rec)
					}
					if rec.Claims != r.want.claims || rec.Uncertain != r.want.uncertain {
						t.Errorf("record claims %d, uncertain %t; want %d, %t", rec.Claims, rec.Uncertain, r.want.claims, r.want.uncertain)
					}
					if string(stored.Raw) != string(rec.Outcome.Event) {
						t.Errorf("stored event bytes\n%s\nare not the recorded outcome's\n%s", stored.Raw, rec.Outcome.Event)
					}

					deliveries := crash.count(systemtest.PointDecoded)
					if deliveries < r.want.deliveries || (r.want.exactly && deliveries != r.want.deliveries) {
						t.Errorf("deliveries = %d, want %d (exactly: %t)", deliveries, r.want.deliveries, r.want.exactly)
					}

					dlq := readStream(t, s.JS, s.Streams.DLQ)
					if len(dlq) != r.want.dlqEntries {
						t.Fatalf("DLQ entries = %d, want %d", len(dlq), r.want.dlqEntries)
					}
					if n := countType(all, events.DeadLettered); n != 0 {
						t.Errorf("dead_lettered events = %d, want 0: the worker died before announcing it", n)
					}
					if !r.want.replayNoops {
						return
					}
					// Publish the DLQ copy again under a new message id: the same
					// command (same command_id) finds its key completed by itself,
					// so the stored terminal event is ensured (the stream drops it
					// as the copy it is) and nothing reaches the gateway.
					calls := s.Sandbox.Calls(gw.capture) + s.Sandbox.Calls(gw.status)
					s.PublishRaw(t, s.Streams.CommandSubject("capture"), dlq[0].Data(), "replay-1")
					settleWithin(t, s, 20*time.Second)
					evs = eventsOf(readEvents(t, s), gw.merchant, key)
					if n := len(terminals(evs)); n != 1 {
						t.Errorf("terminal events after the replay = %d (%v), want 1", n, typesOf(evs))
					}
					// The same command, delivered as a new message, is not a
					// duplicate of itself.
					if n := countType(evs, events.Duplicate); n != 0 {
						t.Errorf("duplicate events after the same command again = %d (%v), want 0", n, typesOf(evs))
					}
					if got := s.Sandbox.Calls(gw.capture) + s.Sandbox.Calls(gw.status); got != calls {
						t.Errorf("gateway calls after the replay = %d, want %d (none)", got, calls)
					}
					wantCapturedTotal(t, s, auth, gw.amount)
				})
			}
		}
	}
}

// TestApplyThenDropEveryCall: the gateway applies every capture and void
// and drops the connection before answering. The worker never resends: it
// asks the status call, finds the operation applied and reports success,
// reconciled, with a single effective operation.
func TestApplyThenDropEveryCall(t *testing.T) {
	for _, st := range stores {
		for _, tc := range []struct {
			name       string
			typ        string
			authorised int64
			amount     int64 // 0 for a void
			kind       events.Kind
			endpoint   string
		}{
			{"full capture", "capture", 1000, 1000, events.CaptureSucceeded, sandbox.EndpointCapture},
			{"partial capture", "capture", 1000, 400, events.CaptureSucceeded, sandbox.EndpointCapture},
			{"void", "void", 700, 0, events.VoidSucceeded, sandbox.EndpointVoid},
		} {
			t.Run(st.name+"/"+tc.name, func(t *testing.T) {
				o := systemtest.DefaultOptions()
				o.KV = st.kv
				s := systemtest.Start(t, o)
				s.Sandbox.SetFaults(sandbox.Faults{ApplyThenDropRate: 1})
				auth := s.Sandbox.Authorise(merchant, tc.authorised, "JPY")
				c := captureCmd("drop-1", "drop", auth, tc.amount)
				if tc.typ == "void" {
					c = voidCmd("drop-1", "drop", auth)
				}
				s.Publish(t, tc.typ, c)
				got := s.WaitKind(t, merchant, "drop", tc.kind)
				settleWithin(t, s, 20*time.Second)

				if d := got.Event.Data; !d.Reconciled {
					t.Errorf("event data = %+v, want reconciled", d)
				}
				evs := eventsOf(readEvents(t, s), merchant, "drop")
				if len(evs) != 1 || evs[0].Event.Type != tc.kind.Type() {
					t.Errorf("events of the key = %v, want exactly one %s", typesOf(evs), tc.kind.Type())
				}
				wantOneOp(t, s, auth, tc.typ, tc.amount)
				if n := s.Sandbox.Calls(tc.endpoint); n != 1 {
					t.Errorf("%s calls = %d, want 1: an unknown outcome is never resent blind", tc.endpoint, n)
				}
				if n := s.Sandbox.Calls(sandbox.EndpointStatus); n < 1 {
					t.Errorf("status calls = %d, want at least 1", n)
				}
			})
		}
	}
}

// storeSpy wraps a worker's store: it records the token of every claim it
// won and every fenced write, and can hold Renew calls (a worker whose lease renewals stall, as in a GC pause or
// a network partition) until released.
type storeSpy struct {
	handlers.Store

	mu      sync.Mutex
	claimed []int64  // tokens of the Acquired and Resumed claims
	fenced  []string // "op token"
	hold    chan struct{}
}

func (s *storeSpy) Claim(ctx context.Context, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	c, err := s.Store.Claim(ctx, req)
	if err == nil && (c.Status == idempotency.Acquired || c.Status == idempotency.Resumed) {
		s.mu.Lock()
		s.claimed = append(s.claimed, c.Record.Token)
		s.mu.Unlock()
	}
	return c, err
}

func (s *storeSpy) claimedTokens() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.claimed)
}

func (s *storeSpy) note(op string, token int64, err error) {
	if errors.Is(err, idempotency.ErrFenced) {
		s.mu.Lock()
		s.fenced = append(s.fenced, fmt.Sprintf("%s %d", op, token))
		s.mu.Unlock()
	}
}

// holdRenewals makes Renew wait until the returned release is called.
func (s *storeSpy) holdRenewals() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (s *storeSpy) Renew(ctx context.Context, scope, key, txn string, token int64, lease time.Duration) error {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	err := s.Store.Renew(ctx, scope, key, txn, token, lease)
	s.note("renew", token, err)
	return err
}

func (s *storeSpy) Complete(ctx context.Context, scope, key, txn string, token int64, out idempotency.Outcome) error {
	err := s.Store.Complete(ctx, scope, key, txn, token, out)
	s.note("complete", token, err)
	return err
}

func (s *storeSpy) Release(ctx context.Context, scope, key, txn string, token int64, uncertain bool) error {
	err := s.Store.Release(ctx, scope, key, txn, token, uncertain)
	s.note("release", token, err)
	return err
}

func (s *storeSpy) fencedWrites() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.fenced)
}

// TestTakeoverRaceFencing: worker w1 holds a key and stalls past its lease;
// worker w2 takes the key over, reconciles and completes it. When w1 wakes up
// its writes are refused by the fencing token (ErrFenced): it records nothing
// and publishes no terminal event. Exactly one capture is applied and exactly
// one terminal event, w2's, is stored.
func TestTakeoverRaceFencing(t *testing.T) {
	for _, st := range stores {
		for _, tc := range []struct {
			name string
			// pauseAfterGateway pauses w1 after the gateway answered it;
			// otherwise w1's renewals stall while its gateway call, slower
			// than the lease, is in flight.
			pauseAfterGateway bool
		}{
			{"paused after the gateway answered", true},
			{"lease expires during the gateway call", false},
		} {
			t.Run(st.name+"/"+tc.name, func(t *testing.T) {
				o := failureOptions(st.kv)
				o.Workers = 0
				s := systemtest.Start(t, o)
				auth := s.Sandbox.Authorise(merchant, 1000, "JPY")

				spy1, spy2 := &storeSpy{}, &storeSpy{}
				o1 := o
				o1.Concurrency = 1 // w1's one slot stays busy while it is paused
				w1log := &testenv.LogBuffer{}
				o1.Logger = slog.New(slog.NewJSONHandler(w1log, nil))
				o1.WrapStore = func(st handlers.Store) handlers.Store { spy1.Store = st; return spy1 }
				paused := make(chan struct{})
				wake := make(chan struct{})
				var wakeOnce sync.Once
				wakeUp := func() { wakeOnce.Do(func() { close(wake) }) }
				t.Cleanup(wakeUp)
				var release func()
				if tc.pauseAfterGateway {
					var once sync.Once
					o1.Hook = func(point, _ string) bool {
						if point == systemtest.PointGatewayDone {
							once.Do(func() { close(paused); <-wake })
						}
						return false
					}
				} else {
					// w1's call outlasts the lease (but not the client's
					// 2s timeout), and its renewals stall meanwhile.
					release = spy1.holdRenewals()
					t.Cleanup(release)
					s.Sandbox.SetFaults(sandbox.Faults{Latency: 1800 * time.Millisecond})
				}
				s.StartWorker(t, "w1", o1)
				s.Publish(t, "capture", captureCmd("race-1", "race", auth, 1000))
				if tc.pauseAfterGateway {
					select {
					case <-paused:
					case <-time.After(20 * time.Second):
						t.Fatal("w1 never reached the gateway")
					}
				} else {
					waitUntil(t, 20*time.Second, "w1's capture call", func() bool { return s.Sandbox.Calls(sandbox.EndpointCapture) == 1 })
					s.Sandbox.SetFaults(sandbox.Faults{}) // w2's calls are fast
				}

				o2 := o
				o2.WrapStore = func(st handlers.Store) handlers.Store { spy2.Store = st; return spy2 }
				s.StartWorker(t, "w2", o2)
				got := s.WaitKind(t, merchant, "race", events.CaptureSucceeded)
				if src := got.Event.Source; src != "urn:payworker:test:w2" {
					t.Errorf("terminal event source = %q, want w2's: w1 lost the key", src)
				}

				// Wake w1 up: its late writes must be fenced.
				wakeUp()
				if release != nil {
					release()
				}
				waitUntil(t, 20*time.Second, "w1's fenced write", func() bool { return len(spy1.fencedWrites()) > 0 })
				settleWithin(t, s, 20*time.Second)
				time.Sleep(2 * o.AckWait) // let any late publication of w1 land
				settleWithin(t, s, 20*time.Second)

				tok1, tok2 := spy1.claimedTokens(), spy2.claimedTokens()
				if len(tok1) != 1 || len(tok2) != 1 || tok2[0] <= tok1[0] {
					t.Fatalf("claims won: w1 tokens %v, w2 tokens %v; want one each, w2's above w1's", tok1, tok2)
				}
				for _, w := range spy1.fencedWrites() {
					if w != fmt.Sprintf("renew %d", tok1[0]) && w != fmt.Sprintf("complete %d", tok1[0]) {
						t.Errorf("w1 fenced write %q, want only token %d's renew or complete", w, tok1[0])
					}
				}
				if f := spy2.fencedWrites(); len(f) != 0 {
					t.Errorf("w2's fenced writes = %v, want none", f)
				}
				// w1 announced no outcome of its own: it recorded none.
				if l := w1log.String(); strings.Contains(l, `"msg":"command done"`) || !strings.Contains(l, `"msg":"outcome not recorded"`) && !strings.Contains(l, `"msg":"command handed back"`) {
					t.Errorf("w1's log does not show it abandoning the key, or shows it completing it:\n%s", l)
				}
				evs := eventsOf(readEvents(t, s), merchant, "race")
				if term := terminals(evs); len(term) != 1 || term[0].Event.Type != events.CaptureSucceeded.Type() || term[0].Event.Source != "urn:payworker:test:w2" {
					t.Errorf("events of the key = %v, want exactly one capture.succeeded, w2's", typesOf(evs))
				}
				if n := countType(evs, events.CaptureFailed); n != 0 {
					t.Errorf("capture.failed events = %d, want 0", n)
				}
				wantOneOp(t, s, auth, "capture", 1000)
				rec, err := s.Store.Get(context.Background(), merchant, "race")
				if err != nil {
					t.Fatal(err)
				}
				if rec.State != idempotency.StateCompleted || rec.Token != tok2[0] || rec.Claims != 2 || rec.Outcome == nil || !rec.Outcome.Succeeded {
					t.Errorf("record = state %s, token %d, claims %d, outcome %+v; want completed by w2's token %d of 2 claims, succeeded",
						rec.State, rec.Token, rec.Claims, rec.Outcome, tok2[0])
				}
			})
		}
	}
}

// TestRedisDownFailsClosed stops Redis in the middle of a run and starts it
// again empty (the test's redis-server keeps nothing: every record written
// before is lost, as in a failover that loses the last writes). At the stop,
// captures are in flight at the gateway and voids are retrying 503s. While
// Redis is down the store's Ping fails, the holders stop calling the gateway
// once their leases can no longer be proven, and no other command reaches it.
// After, every command completes exactly once: the captures in flight at
// the stop, whose records are lost, are reconciled through the status call,
// never resent.
func TestRedisDownFailsClosed(t *testing.T) {
	o := failureOptions(false)
	o.Retry = handlers.Retry{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond, MaxElapsed: 60 * time.Second, MaxAttempts: 1000}
	s := systemtest.Start(t, o)
	if s.Redis == nil || !s.Redis.Own {
		t.Skip("needs a redis-server of its own to stop (REDIS_URL is set)")
	}
	ctx := context.Background()
	type command struct {
		key, typ, auth string
		kind           events.Kind
	}
	var cmds []command
	publish := func(group, typ string, n int) []command {
		var out []command
		for i := range n {
			c := command{key: fmt.Sprintf("%s-%d", group, i), typ: typ, kind: events.CaptureSucceeded}
			c.auth = s.Sandbox.Authorise(merchant, 1000, "JPY")
			body := captureCmd(c.key, c.key, c.auth, 1000)
			if typ == "void" {
				c.kind = events.VoidSucceeded
				body = voidCmd(c.key, c.key, c.auth)
			}
			s.Publish(t, typ, body)
			out = append(out, c)
		}
		cmds = append(cmds, out...)
		return out
	}
	captures := func() int { return s.Sandbox.Calls(sandbox.EndpointCapture) }
	calls := func() int {
		return captures() + s.Sandbox.Calls(sandbox.EndpointVoid) + s.Sandbox.Calls(sandbox.EndpointStatus)
	}

	// Before: commands that complete normally.
	before := publish("before", "capture", 4)
	for _, c := range before {
		s.WaitKind(t, merchant, c.key, c.kind)
	}

	// In flight: the gateway holds these captures for a while (and applies
	// them); then voids that the gateway keeps refusing with 503.
	s.Sandbox.SetFaults(sandbox.Faults{Latency: 300 * time.Millisecond})
	inflight := publish("inflight", "capture", 6)
	waitUntil(t, 20*time.Second, "the in-flight captures", func() bool { return captures() == len(before)+len(inflight) })
	s.Sandbox.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 503})
	retrying := publish("retrying", "void", 3)
	waitUntil(t, 20*time.Second, "the voids to retry", func() bool { return s.Sandbox.Calls(sandbox.EndpointVoid) >= 2*len(retrying) })
	s.Redis.Stop()
	if err := s.Store.Ping(ctx); err == nil {
		t.Errorf("Ping with Redis down = nil, want an error (/readyz fails)")
	}

	// The holders' leases run out within one lease of the stop; from then
	// on nothing reaches the gateway: not the retrying voids, not the
	// redeliveries, not the commands published during the outage.
	time.Sleep(o.Lease + o.Lease/2)
	atStop := calls()
	during := publish("during", "capture", 6)
	time.Sleep(3 * o.Lease)
	if got := calls(); got != atStop {
		t.Errorf("gateway calls while Redis was down = %d, want 0 (fail closed)", got-atStop)
	}
	if err := s.Store.Ping(ctx); err == nil {
		t.Errorf("Ping with Redis down = nil, want an error")
	}

	s.Sandbox.SetFaults(sandbox.Faults{})
	s.Redis.Start()
	// The client probes a server it could not dial about once a second.
	waitUntil(t, 10*time.Second, "Ping to answer after Redis restarted", func() bool { return s.Store.Ping(ctx) == nil })
	for _, c := range cmds {
		s.WaitKind(t, merchant, c.key, c.kind)
	}
	settleWithin(t, s, 30*time.Second)

	all := readEvents(t, s)
	for _, c := range cmds {
		evs := eventsOf(all, merchant, c.key)
		if term := terminals(evs); len(term) != 1 || term[0].Event.Type != c.kind.Type() {
			t.Errorf("%s: events %v, want exactly one %s", c.key, typesOf(evs), c.kind.Type())
		}
		wantOneOp(t, s, c.auth, c.typ, 0)
	}
	// Nothing was resent blind: one capture call per capture command. The
	// in-flight ones, whose records were lost, were reconciled by status.
	if got, want := captures(), len(before)+len(inflight)+len(during); got != want {
		t.Errorf("capture calls = %d, want %d: a capture whose record was lost was resent", got, want)
	}
	for _, c := range inflight {
		evs := terminals(eventsOf(all, merchant, c.key))
		if len(evs) == 1 && !evs[0].Event.Data.Reconciled {
			t.Errorf("%s: in flight at the stop, its event is not reconciled: %+v", c.key, evs[0].Event.Data)
		}
	}
}
