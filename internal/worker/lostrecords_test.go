package worker_test

import (
	"context"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/sibs"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/internal/worker"
)

// callLog records, per idempotency key, the gateway calls the handler made
// ("capture", "void" or "status"), in order.
type callLog struct {
	mu    sync.Mutex
	calls map[string][]string
}

func (l *callLog) add(key, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.calls == nil {
		l.calls = map[string][]string{}
	}
	l.calls[key] = append(l.calls[key], what)
}

func (l *callLog) of(key string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.calls[key]...)
}

func (l *callLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = nil
}

// recorded is a gateway adapter whose calls are logged.
type recorded struct {
	handlers.Gateway
	log *callLog
}

func (r recorded) Execute(ctx context.Context, req gateway.Request) gateway.Result {
	r.log.add(req.Reference, string(req.Operation))
	return r.Gateway.Execute(ctx, req)
}

func (r recorded) Status(ctx context.Context, req gateway.Request) (gateway.Status, error) {
	r.log.add(req.Reference, "status")
	return r.Gateway.Status(ctx, req)
}

// startRecordedWorker runs a worker over s with both gateways, SIBS for
// sibsMerchant, every call logged in calls; stop stops it (also at cleanup).
func startRecordedWorker(t *testing.T, s *systemtest.System, o systemtest.Options, calls *callLog) (stop func()) {
	t.Helper()
	base, err := url.Parse(s.Sandbox.SIBSBaseURL())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sibs.New(sibs.Config{BaseURL: base, ClientID: "c", TerminalID: "1", Token: "t", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h := handlers.New(handlers.Config{
		JetStream: s.JS, Streams: s.Streams, Store: s.Store,
		Gateways: map[string]handlers.Gateway{
			"paymentoptions": recorded{s.Gateway, calls},
			"sibs":           recorded{sc, calls},
		},
		Routes:         map[string]string{sibsMerchant: "sibs"},
		DefaultGateway: "paymentoptions",
		Retry:          o.Retry, Lease: o.Lease, AckWait: 5 * time.Second,
		Holder: "recorded", Source: "urn:payworker:test:recorded",
	})
	w := worker.New(worker.Config{JetStream: s.JS, Streams: s.Streams, Handler: h, Concurrency: o.Concurrency,
		AckWait: 5 * time.Second, ShutdownTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestLostRedisRecordsNeverResendBlind is issue 9's scenario: 60
// PaymentOptions captures and 40 SIBS partial captures (2.00 of a 5.00 PLN
// authorisation) succeed; Redis then loses its data; the order service
// re-emits the same fulfilments, the same keys under new command ids. No
// capture may reach the gateway again without a status call first, every
// SIBS authorisation stays captured once (2.00, not 4.00), and no event
// contradicts the gateway.
func TestLostRedisRecordsNeverResendBlind(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, s *systemtest.System)
	}{
		{"FLUSHALL", func(t *testing.T, s *systemtest.System) {
			if !s.Redis.Own {
				t.Skip("REDIS_URL is set: FLUSHALL would wipe other tests' keys")
			}
			if err := s.Redis.Client(t).FlushAll(t.Context()).Err(); err != nil {
				t.Fatal(err)
			}
		}},
		{"restart without persistence", func(t *testing.T, s *systemtest.System) {
			if !s.Redis.Own {
				t.Skip("REDIS_URL is set: the test cannot restart a shared server")
			}
			s.Redis.Stop()
			s.Redis.Start()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := systemtest.DefaultOptions()
			o.Workers = 0
			o.Concurrency = 32
			s := systemtest.Start(t, o)
			var calls callLog
			startRecordedWorker(t, s, o, &calls)

			var orders []order
			for i := range 60 {
				orders = append(orders, order{poMerchant, s.Sandbox.Authorise(poMerchant, 1000, "JPY"), "po-" + strconv.Itoa(i), 1000, "JPY"})
			}
			for i := range 40 {
				orders = append(orders, order{sibsMerchant, s.Sandbox.Authorise(sibsMerchant, 500, "PLN"), "sibs-" + strconv.Itoa(i), 200, "PLN"})
			}
			emit := func(round string) { emitOrders(t, s, round, orders) }
			emit("first")
			for _, o := range orders {
				s.WaitKind(t, o.merchant, o.key, events.CaptureSucceeded)
			}
			s.Settle(t)

			tc.lose(t, s)
			calls.reset()
			emit("again")
			s.Settle(t)

			checkOnceStatusFirst(t, s, &calls, orders, "the loss")
		})
	}
}

// TestLostRecordUnprovableIsDeadLettered: when the status answer cannot tell
// whether our partial capture happened (a SIBS that does not list an
// authorisation's operations), a key whose record was lost is dead-lettered
// as outcome_unknown: never resent, never marked failed.
func TestLostRecordUnprovableIsDeadLettered(t *testing.T) {
	o := systemtest.DefaultOptions()
	o.Workers = 0
	o.Retry.MaxElapsed = time.Second
	s := systemtest.Start(t, o)
	if !s.Redis.Own {
		t.Skip("REDIS_URL is set: the test cannot restart a shared server")
	}
	var calls callLog
	startRecordedWorker(t, s, o, &calls)
	auth := s.Sandbox.Authorise(sibsMerchant, 500, "PLN")
	capture := func(id string) {
		s.Publish(t, "capture", systemtest.Cmd{"command_id": id, "idempotency_key": "k", "type": "capture",
			"merchant_id": sibsMerchant, "transaction_id": auth, "amount": 200, "currency": "PLN"})
	}
	capture("first")
	s.WaitKind(t, sibsMerchant, "k", events.CaptureSucceeded)
	s.Settle(t)

	s.Redis.Stop()
	s.Redis.Start()
	s.Sandbox.SetFaults(sandbox.Faults{SIBSUnlisted: true})
	calls.reset()
	capture("again")
	dl := s.WaitKind(t, sibsMerchant, "k", events.DeadLettered)
	s.Settle(t)
	if e := dl.Event.Data.Error; e == nil || e.Code != "outcome_unknown" {
		t.Errorf("dead letter error = %+v, want outcome_unknown", dl.Event.Data.Error)
	}
	for _, c := range calls.of("k") {
		if c != "status" {
			t.Errorf("gateway calls after the loss %v: want status calls only", calls.of("k"))
			break
		}
	}
	if ops := s.Sandbox.Applied(auth); len(ops) != 1 {
		t.Errorf("ledger %s, want the one capture from before the loss", ledgerOf(s.Sandbox, auth))
	}
	if n := systemtest.Count(s.EventsFor(sibsMerchant, "k"), events.CaptureFailed); n != 0 {
		t.Errorf("%d capture.failed events, want none", n)
	}
}

// order is one capture of the lost-record tests: its key, the
// authorisation it captures and how much.
type order struct {
	merchant, auth, key string
	amount              int64
	currency            string
}

// emitOrders publishes a capture for each order, command ids prefixed with
// round, keys the orders' own.
func emitOrders(t *testing.T, s *systemtest.System, round string, orders []order) {
	t.Helper()
	for _, o := range orders {
		s.Publish(t, "capture", systemtest.Cmd{"command_id": round + "-" + o.key, "idempotency_key": o.key, "type": "capture",
			"merchant_id": o.merchant, "transaction_id": o.auth, "amount": o.amount, "currency": o.currency})
	}
}

// checkOnceStatusFirst checks, after the store lost records (what names
// the event) and the orders were emitted again: each authorisation captured
// once for its amount, every key's first gateway call since a status call,
// exactly one succeeded event per key and none that contradicts the gateway.
func checkOnceStatusFirst(t *testing.T, s *systemtest.System, calls *callLog, orders []order, what string) {
	t.Helper()
	for _, o := range orders {
		ops := s.Sandbox.Applied(o.auth)
		var captured int64
		for _, op := range ops {
			captured += op.Amount
		}
		if len(ops) != 1 || captured != o.amount {
			t.Errorf("%s: ledger %s, want one capture of %d", o.key, ledgerOf(s.Sandbox, o.auth), o.amount)
		}
		if got := calls.of(o.key); len(got) == 0 || got[0] != "status" {
			t.Errorf("%s: gateway calls after %s %v, want a status call first", o.key, what, got)
		}
		evs := s.EventsFor(o.merchant, o.key)
		if n := systemtest.Count(evs, events.CaptureSucceeded); n != 1 {
			t.Errorf("%s: %d succeeded events (%s), want exactly one", o.key, n, systemtest.Kinds(evs))
		}
		for _, k := range []events.Kind{events.CaptureFailed, events.DeadLettered, events.Rejected} {
			if n := systemtest.Count(evs, k); n != 0 {
				t.Errorf("%s: %d %s events (%s): the events contradict the gateway", o.key, n, k.Type(), systemtest.Kinds(evs))
			}
		}
	}
}
