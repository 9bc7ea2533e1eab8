package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
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
	"github.com/payworker/payworker/internal/worker"
	"github.com/payworker/payworker/schemas"
)

// system is one worker wired to real servers: in-process NATS with JetStream,
// a real Redis (or the JetStream KV store), and the sandbox gateway over HTTP.
type system struct {
	t       testing.TB
	nats    *testenv.NATS
	js      jetstream.JetStream
	streams streams.Config
	sandbox *sandbox.Sandbox
	store   idempotency.Store
	gateway *paymentoptions.Client

	mu     sync.Mutex
	events []received
}

// received is one event read back from PAYMENT_EVENTS.
type received struct {
	Subject string
	MsgID   string
	Event   events.Event
	Raw     []byte
}

type options struct {
	kv    bool
	retry handlers.Retry
	lease time.Duration
	// workers is the number of worker instances sharing the consumer.
	workers int
	// concurrency is each worker's commands in flight.
	concurrency int
}

func defaultOptions() options {
	return options{
		retry:       handlers.Retry{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond, MaxElapsed: 5 * time.Second, MaxAttempts: 10},
		lease:       5 * time.Second,
		workers:     1,
		concurrency: 16,
	}
}

func start(t testing.TB, o options) *system {
	t.Helper()
	s := &system{t: t, streams: streams.Default()}
	s.nats = testenv.StartNATS(t)
	_, s.js = s.nats.Connect(t)
	ctx := context.Background()
	if err := streams.Provision(ctx, s.js, s.streams); err != nil {
		t.Fatal(err)
	}
	if o.kv {
		kv, err := idempotency.NewKV(ctx, s.js, idempotency.KVOptions{TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		s.store = kv
	} else {
		r := testenv.StartRedis(t)
		s.store = idempotency.NewRedis(r.Client(t), idempotency.RedisOptions{Prefix: r.Prefix, TTL: time.Hour})
	}
	s.sandbox = sandbox.New(sandbox.Options{APIKey: "k", XAPIKey: "x", Seed: 1})
	base, stop, err := s.sandbox.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop(context.Background()) })
	u, _ := url.Parse(base)
	s.gateway, err = paymentoptions.New(paymentoptions.Config{BaseURL: u, APIKey: "k", XAPIKey: "x", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range o.workers {
		s.startWorker(t, fmt.Sprintf("w%d", i), o)
	}
	s.follow(t)
	return s
}

func (s *system) startWorker(t testing.TB, id string, o options) {
	t.Helper()
	h := handlers.New(handlers.Config{
		JetStream:      s.js,
		Streams:        s.streams,
		Store:          s.store,
		Gateways:       map[string]handlers.Gateway{"paymentoptions": s.gateway},
		DefaultGateway: "paymentoptions",
		Retry:          o.retry,
		Lease:          o.lease,
		AckWait:        5 * time.Second,
		Holder:         id,
		Source:         "urn:payworker:test:" + id,
	})
	w := worker.New(worker.Config{JetStream: s.js, Streams: s.streams, Handler: h, Concurrency: o.concurrency,
		AckWait: 5 * time.Second, ShutdownTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker %s: %v", id, err)
		}
	})
}

// follow reads every event into s.events and checks each against its schema.
func (s *system) follow(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := s.js.OrderedConsumer(ctx, s.streams.Events, jetstream.OrderedConsumerConfig{})
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
		s.events = append(s.events, received{Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Event: ev, Raw: m.Data()})
		s.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

// cmd is a command as published: a map so tests can also send invalid ones.
type cmd map[string]any

func (s *system) publish(t testing.TB, typ string, c cmd) {
	t.Helper()
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	s.publishRaw(t, s.streams.CommandSubject(typ), body, fmt.Sprint(c["command_id"]))
}

func (s *system) publishRaw(t testing.TB, subject string, body []byte, msgID string) {
	t.Helper()
	m := &nats.Msg{Subject: subject, Data: body}
	var opts []jetstream.PublishOpt
	if msgID != "" && msgID != "<nil>" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := s.js.PublishMsg(context.Background(), m, opts...); err != nil {
		t.Fatalf("publish to %s: %v", subject, err)
	}
}

// eventsFor returns the events whose data names the merchant and key, or
// whose subject is the transaction, in arrival order.
func (s *system) eventsFor(merchant, key string) []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []received
	for _, r := range s.events {
		if r.Event.Data.MerchantID == merchant && r.Event.Data.IdempotencyKey == key {
			out = append(out, r)
		}
	}
	return out
}

// waitEvents waits until pred holds over the events of (merchant, key).
func (s *system) waitEvents(t testing.TB, merchant, key string, what string, pred func([]received) bool) []received {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := s.eventsFor(merchant, key)
		if pred(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s of %s/%s; have %d events: %s", what, merchant, key, len(got), kinds(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *system) waitKind(t testing.TB, merchant, key string, kind events.Kind) received {
	t.Helper()
	got := s.waitEvents(t, merchant, key, string(kind), func(rs []received) bool { return count(rs, kind) > 0 })
	for _, r := range got {
		if r.Event.Type == kind.Type() {
			return r
		}
	}
	panic("unreachable")
}

// settle waits until the consumer has no message pending or unacked.
func (s *system) settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := s.js.Consumer(context.Background(), s.streams.Commands, s.streams.Consumer)
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

func count(rs []received, kind events.Kind) int {
	n := 0
	for _, r := range rs {
		if r.Event.Type == kind.Type() {
			n++
		}
	}
	return n
}

func kinds(rs []received) string {
	out := ""
	for _, r := range rs {
		out += r.Event.Type + " "
	}
	return out
}
