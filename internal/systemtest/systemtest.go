// Package systemtest wires a whole payworker system for tests: in-process NATS
// with JetStream, a real redis-server (or the JetStream KV store), the sandbox
// gateway over HTTP, the real adapter, handlers and workers. Only tests import it.
package systemtest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/paymentoptions"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/internal/worker"
	"github.com/payworker/payworker/schemas"
)

// System is one worker wired to real servers: in-process NATS with JetStream,
// a real Redis (or the JetStream KV store), and the sandbox gateway over HTTP.
type System struct {
	t       testing.TB
	NATS    *testenv.NATS
	JS      jetstream.JetStream
	Streams streams.Config
	Sandbox *sandbox.Sandbox
	Store   idempotency.Store
	Gateway *paymentoptions.Client
	// GatewayURL is the sandbox's base URL, for workers run as processes.
	GatewayURL string
	// Redis is the redis-server behind Store; nil with the KV store.
	Redis *testenv.Redis

	mu     sync.Mutex
	events []Received
}

// Received is one event read back from PAYMENT_EVENTS.
type Received struct {
	Subject string
	MsgID   string
	Event   events.Event
	Raw     []byte
}

// Options shape a System; start from DefaultOptions.
type Options struct {
	KV    bool
	Retry handlers.Retry
	Lease time.Duration
	// Workers is the number of worker instances sharing the consumer.
	Workers int
	// Concurrency is each worker's commands in flight.
	Concurrency int
	// AckWait is the consumer's ack wait; 0 means 5s.
	AckWait time.Duration
	// Hook is asked at each crash point (see Crashes) with the command's
	// idempotency key; true "kills" the worker there. nil for none.
	Hook func(point, key string) bool
	// WrapStore, when set, wraps the store each worker's handler uses (to
	// observe or delay its writes).
	WrapStore func(handlers.Store) handlers.Store
	// Logger receives the workers' logs; nil discards them.
	Logger *slog.Logger
	// Guard, when set, puts gateway protection (circuit breakers, rate
	// limits, SIBS beside PaymentOptions) in each worker; see protect.go.
	Guard *Guard
	// Tracer, when set, makes the handlers' spans; nil is the no-op tracer.
	Tracer trace.Tracer
}

// DefaultOptions are a Redis store,, one worker of 16, a 5s lease and a fast retry budget.
func DefaultOptions() Options {
	return Options{
		Retry:       handlers.Retry{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond, MaxElapsed: 5 * time.Second, MaxAttempts: 10},
		Lease:       5 * time.Second,
		Workers:     1,
		Concurrency: 16,
	}
}

// Start runs the servers and o.Workers workers; all stop when the test ends.
func Start(t testing.TB, o Options) *System {
	t.Helper()
	s := &System{t: t, Streams: streams.Default()}
	s.NATS = testenv.StartNATS(t)
	_, s.JS = s.NATS.Connect(t)
	ctx := context.Background()
	if err := streams.Provision(ctx, s.JS, s.Streams); err != nil {
		t.Fatal(err)
	}
	if o.KV {
		kv, err := idempotency.NewKV(ctx, s.JS, idempotency.KVOptions{TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		s.Store = kv
	} else {
		r := testenv.StartRedis(t)
		s.Redis = r
		reg, err := idempotency.NewKVScopeRegistry(ctx, s.JS, "", 1)
		if err != nil {
			t.Fatal(err)
		}
		s.Store = idempotency.NewRedis(r.Client(t), idempotency.RedisOptions{Prefix: r.Prefix, TTL: time.Hour, Registry: reg})
	}
	s.Sandbox = sandbox.New(sandbox.Options{APIKey: "k", XAPIKey: "x", Seed: 1})
	base, stop, err := s.Sandbox.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop(context.Background()) })
	s.GatewayURL = base
	u, _ := url.Parse(base)
	s.Gateway, err = paymentoptions.New(paymentoptions.Config{BaseURL: u, APIKey: "k", XAPIKey: "x", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range o.Workers {
		s.StartWorker(t, fmt.Sprintf("w%d", i), o)
	}
	if o.Workers > 0 {
		s.waitConsumer(t)
	}
	s.follow(t)
	return s
}

// waitConsumer waits until a worker has created the shared consumer, so that
// a test may read its state (the ack floor) as soon as Start returns.
func (s *System) waitConsumer(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.JS.Consumer(context.Background(), s.Streams.Commands, s.Streams.Consumer)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no worker created the shared consumer %s: %v", s.Streams.Consumer, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartWorker runs one more worker named id; stop (also run at cleanup) stops it
// the way SIGTERM does.
func (s *System) StartWorker(t testing.TB, id string, o Options) (stop func()) {
	t.Helper()
	ackWait := o.AckWait
	if ackWait <= 0 {
		ackWait = 5 * time.Second
	}
	var store handlers.Store = s.Store
	if o.WrapStore != nil {
		store = o.WrapStore(store)
	}
	log := o.Logger
	if log != nil {
		log = log.With(slog.String("worker_id", id))
	}
	hc := handlers.Config{
		JetStream:      s.JS,
		Streams:        s.Streams,
		Store:          store,
		Gateways:       map[string]handlers.Gateway{"paymentoptions": s.Gateway},
		DefaultGateway: "paymentoptions",
		Retry:          o.Retry,
		Lease:          o.Lease,
		AckWait:        ackWait,
		Holder:         id,
		Source:         "urn:payworker:test:" + id,
		Logger:         log,
		Tracer:         o.Tracer,
	}
	if o.Guard != nil {
		s.guard(t, id, o.Guard, &hc)
	}
	var crashes *Crashes
	if o.Hook != nil {
		crashes = NewCrashes(o.Hook, s.Streams)
		crashes.Wrap(&hc)
	}
	h := handlers.New(hc)
	w := worker.New(worker.Config{JetStream: s.JS, Streams: s.Streams, Handler: h, Concurrency: o.Concurrency,
		AckWait: ackWait, ShutdownTimeout: 5 * time.Second, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if crashes != nil {
				crashes.Release() // a call that died ends as its worker stops
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker %s: %v", id, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// follow reads every event into s.events and checks each against its schema.
func (s *System) follow(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := s.JS.OrderedConsumer(ctx, s.Streams.Events, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Errorf("event on %s is not JSON: %v", m.Subject(), err)
			return
		}
		if err := schemas.ValidateEventJSON(m.Data()); err != nil {
			t.Errorf("event %s on %s does not validate: %v\n%s", ev.ID, m.Subject(), err, m.Data())
		}
		s.mu.Lock()
		s.events = append(s.events, Received{Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Event: ev, Raw: m.Data()})
		s.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

// Cmd is a command as published: a map so tests can also send invalid ones.
type Cmd map[string]any

// Publish sends a command to its subject with Nats-Msg-Id = command_id.
func (s *System) Publish(t testing.TB, typ string, c Cmd) {
	t.Helper()
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	s.PublishRaw(t, s.Streams.CommandSubject(typ), body, fmt.Sprint(c["command_id"]))
}

// PublishRaw sends raw bytes; an empty msgID sends no Nats-Msg-Id.
func (s *System) PublishRaw(t testing.TB, subject string, body []byte, msgID string) {
	t.Helper()
	m := &nats.Msg{Subject: subject, Data: body}
	var opts []jetstream.PublishOpt
	if msgID != "" && msgID != "<nil>" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := s.JS.PublishMsg(context.Background(), m, opts...); err != nil {
		t.Fatalf("publish to %s: %v", subject, err)
	}
}

// EventsFor returns the events whose data names the merchant and key, or
// whose subject is the transaction, in arrival order.
func (s *System) EventsFor(merchant, key string) []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Received
	for _, r := range s.events {
		if r.Event.Data.MerchantID == merchant && r.Event.Data.IdempotencyKey == key {
			out = append(out, r)
		}
	}
	return out
}

// WaitEvents waits until pred holds over the events of (merchant, key).
func (s *System) WaitEvents(t testing.TB, merchant, key string, what string, pred func([]Received) bool) []Received {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := s.EventsFor(merchant, key)
		if pred(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s of %s/%s; have %d events: %s", what, merchant, key, len(got), Kinds(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitKind waits for the first event of kind for (merchant, key).
func (s *System) WaitKind(t testing.TB, merchant, key string, kind events.Kind) Received {
	t.Helper()
	got := s.WaitEvents(t, merchant, key, string(kind), func(rs []Received) bool { return Count(rs, kind) > 0 })
	for _, r := range got {
		if r.Event.Type == kind.Type() {
			return r
		}
	}
	panic("unreachable")
}

// Settle waits until the consumer has no message pending or unacked.
func (s *System) Settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := s.JS.Consumer(context.Background(), s.Streams.Commands, s.Streams.Consumer)
		if err == nil {
			info, err := c.Info(context.Background())
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("commands not settled after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Count counts the events of kind.
func Count(rs []Received, kind events.Kind) int {
	n := 0
	for _, r := range rs {
		if r.Event.Type == kind.Type() {
			n++
		}
	}
	return n
}

// Kinds lists the event types, for failure messages.
func Kinds(rs []Received) string {
	out := ""
	for _, r := range rs {
		out += r.Event.Type + " "
	}
	return out
}

// Events returns a copy of every event received so far, in arrival order.
func (s *System) Events() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.events...)
}
