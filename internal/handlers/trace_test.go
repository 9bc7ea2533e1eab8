package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/internal/tracing"
)

// traced is a handler over real NATS and Redis in front of a fake gateway,
// fed one message at a time.
type traced struct {
	t    *testing.T
	js   jetstream.JetStream
	cfg  streams.Config
	cons jetstream.Consumer
	gw   *fakeGateway
	h    *handlers.Handler
	last uint64 // last event stream sequence read
}

func newTraced(t *testing.T, tracer trace.Tracer) *traced {
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
	r := testenv.StartRedis(t)
	scopes, err := idempotency.NewKVScopeRegistry(ctx, js, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	store := idempotency.NewRedis(r.Client(t), idempotency.RedisOptions{Prefix: r.Prefix, TTL: time.Hour, Registry: scopes})
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	tr := &traced{t: t, js: js, cfg: cfg, cons: cons, gw: &fakeGateway{}}
	tr.h = handlers.New(handlers.Config{
		JetStream: js, Streams: cfg, Store: store,
		Gateways: map[string]handlers.Gateway{"paymentoptions": tr.gw}, DefaultGateway: "paymentoptions",
		Retry: fastRetry, Lease: 30 * time.Second, AckWait: 30 * time.Second,
		Holder: "test", Source: "urn:payworker:test", Now: c.Now, Sleep: c.Sleep, Tracer: tracer,
	})
	return tr
}

// tracedEvent is an event as stored, with its headers.
type tracedEvent struct {
	subject string
	header  nats.Header
	event   events.Event
}

// handle publishes body on subject with headers hdr, handles it, and
// returns the events it published.
func (tr *traced) handle(subject string, body []byte, hdr nats.Header) []tracedEvent {
	t := tr.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tr.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: body, Header: hdr}); err != nil {
		t.Fatal(err)
	}
	batch, err := tr.cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := <-batch.Messages()
	if !ok {
		t.Fatalf("no message: %v", batch.Error())
	}
	tr.h.Handle(ctx, &spy{Msg: msg})
	evs, err := tr.js.Stream(ctx, tr.cfg.Events)
	if err != nil {
		t.Fatal(err)
	}
	info, err := evs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []tracedEvent
	for seq := tr.last + 1; seq <= info.State.LastSeq; seq++ {
		raw, err := evs.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		e := tracedEvent{subject: raw.Subject, header: raw.Header}
		if err := json.Unmarshal(raw.Data, &e.event); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	tr.last = info.State.LastSeq
	return out
}

func captureBody(key string) []byte { return captureBodyID(key, key) }

// captureBodyID is a capture of key under command id id.
func captureBodyID(id, key string) []byte {
	body, _ := json.Marshal(map[string]any{"command_id": id, "idempotency_key": key, "type": "capture", "merchant_id": merchant,
		"transaction_id": "auth-" + key, "amount": 1000, "currency": "EUR"})
	return body
}

// TestEventsCarryTheCommandsTrace: every event published for a command
// (succeeded, duplicate, rejected, dead-lettered) carries the trace id of
// the command's traceparent, in its traceparent header and in its
// CloudEvents traceparent attribute, with a span id of the worker's own and
// the command's tracestate; a command without one gets a fresh trace.
func TestEventsCarryTheCommandsTrace(t *testing.T) {
	tr := newTraced(t, nil)
	parent := func(i int) nats.Header {
		return nats.Header{"traceparent": {fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e47%02d-00f067aa0ba902b7-01", i)},
			"tracestate": {"congo=t61rcWkgMzE"}}
	}
	capture := tr.cfg.CommandSubject("capture")
	steps := []struct {
		name    string
		subject string
		body    []byte
		hdr     nats.Header
		down    bool // the gateway answers 503 to every attempt
		kind    events.Kind
	}{
		{"succeeded", capture, captureBody("k1"), parent(1), false, events.CaptureSucceeded},
		{"duplicate", capture, captureBodyID("k1-again", "k1"), parent(2), false, events.Duplicate},
		{"rejected", capture, []byte(`{"type":"capture"`), parent(3), false, events.Rejected},
		{"dead-lettered", capture, captureBody("k4"), parent(4), true, events.DeadLettered},
		{"canonical header spelling", capture, captureBody("k5"), nats.Header{"Traceparent": parent(5)["traceparent"]}, false, events.CaptureSucceeded},
	}
	for i, st := range steps {
		tr.gw.set()
		if st.down {
			tr.gw.set(busy, busy, busy, busy, busy, busy, busy, busy)
		}
		got := tr.handle(st.subject, st.body, st.hdr)
		if len(got) != 1 || got[0].event.Type != st.kind.Type() {
			t.Fatalf("%s: events %+v, want one %s", st.name, got, st.kind)
		}
		e := got[0]
		want := fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e47%02d", i+1)
		if id := tracing.TraceID(e.header.Get("traceparent")); id != want {
			t.Errorf("%s: traceparent header %q, want trace %s", st.name, e.header.Get("traceparent"), want)
		}
		if e.event.TraceParent != e.header.Get("traceparent") {
			t.Errorf("%s: CloudEvents traceparent %q, header %q, want the same", st.name, e.event.TraceParent, e.header.Get("traceparent"))
		}
		if e.event.TraceParent == st.hdr.Get("traceparent") {
			t.Errorf("%s: traceparent %q is the command's own span, want the worker's", st.name, e.event.TraceParent)
		}
		if st.hdr.Get("tracestate") != "" && (e.event.TraceState != "congo=t61rcWkgMzE" || e.header.Get("tracestate") != "congo=t61rcWkgMzE") {
			t.Errorf("%s: tracestate %q (header %q), want congo=t61rcWkgMzE", st.name, e.event.TraceState, e.header.Get("tracestate"))
		}
	}

	var ids []string
	for _, key := range []string{"n1", "n2"} {
		got := tr.handle(capture, captureBody(key), nil)
		if len(got) != 1 {
			t.Fatalf("no traceparent: events %+v, want one", got)
		}
		id := tracing.TraceID(got[0].header.Get("traceparent"))
		if id == "" || got[0].event.TraceParent != got[0].header.Get("traceparent") {
			t.Errorf("no traceparent: header %q, attribute %q, want the same valid one", got[0].header.Get("traceparent"), got[0].event.TraceParent)
		}
		ids = append(ids, id)
	}
	if ids[0] == ids[1] {
		t.Errorf("two commands without traceparent share trace %s, want a fresh trace each", ids[0])
	}
}

// TestSpanTree: with the OpenTelemetry SDK, handling a command with a
// traceparent makes a CONSUMER span that is a child of the command's span,
// and under it the store claim, one CLIENT span per gateway call and a
// PRODUCER span for the event; the event's traceparent names the CONSUMER
// span.
func TestSpanTree(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := newTraced(t, tp.Tracer("test"))
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	got := tr.handle(tr.cfg.CommandSubject("capture"), captureBody("s1"), nats.Header{"traceparent": {parent}})
	if len(got) != 1 || got[0].event.Type != events.CaptureSucceeded.Type() {
		t.Fatalf("events %+v, want capture.succeeded", got)
	}

	var consumer sdktrace.ReadOnlySpan
	byKind := map[trace.SpanKind][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byKind[s.SpanKind()] = append(byKind[s.SpanKind()], s)
		if s.SpanKind() == trace.SpanKindConsumer {
			consumer = s
		}
	}
	if consumer == nil {
		t.Fatalf("no CONSUMER span among %d", len(rec.Ended()))
	}
	if p := consumer.Parent(); p.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || p.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("CONSUMER span's parent = %s/%s, want the command's span", p.TraceID(), p.SpanID())
	}
	if id := tracing.TraceID(got[0].event.TraceParent); id != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		got[0].event.TraceParent != "00-4bf92f3577b34da6a3ce929d0e0e4736-"+consumer.SpanContext().SpanID().String()+"-01" {
		t.Errorf("event traceparent %q, want the CONSUMER span %s", got[0].event.TraceParent, consumer.SpanContext().SpanID())
	}
	childOf := func(s sdktrace.ReadOnlySpan) bool { return s.Parent().SpanID() == consumer.SpanContext().SpanID() }
	if c := byKind[trace.SpanKindClient]; len(c) != 1 || !childOf(c[0]) || c[0].Name() != "gateway capture" {
		t.Errorf("CLIENT spans %v, want one gateway capture under the CONSUMER span", names(c))
	}
	if p := byKind[trace.SpanKindProducer]; len(p) != 1 || !childOf(p[0]) || p[0].Name() != "send payments.evt.capture.succeeded" {
		t.Errorf("PRODUCER spans %v, want one send payments.evt.capture.succeeded under the CONSUMER span", names(p))
	}
	var claim bool
	for _, s := range byKind[trace.SpanKindInternal] {
		claim = claim || (s.Name() == "idempotency claim" && childOf(s))
	}
	if !claim {
		t.Errorf("INTERNAL spans %v, want an idempotency claim under the CONSUMER span", names(byKind[trace.SpanKindInternal]))
	}
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if v := a.Value.Emit(); strings.Contains(v, "auth-s1") {
				t.Errorf("span %s attribute %s = %q carries the transaction", s.Name(), a.Key, v)
			}
		}
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name()+" ("+s.SpanKind().String()+")")
	}
	return out
}
