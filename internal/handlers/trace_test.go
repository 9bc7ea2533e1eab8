package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/paymentoptions"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/sibs"
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
	return newTracedWith(t, tracer, nil)
}

// newTracedWith is newTraced in front of gws instead of the fake gateway
// when gws is not nil; the default gateway is paymentoptions.
func newTracedWith(t *testing.T, tracer trace.Tracer, gws map[string]handlers.Gateway) *traced {
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
	if gws == nil {
		gws = map[string]handlers.Gateway{"paymentoptions": tr.gw}
	}
	tr.h = handlers.New(handlers.Config{
		JetStream: js, Streams: cfg, Store: store,
		Gateways: gws, DefaultGateway: "paymentoptions",
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

// Secrets of the gateways in TestSpanTree: none may show in a span.
const (
	spanPOKey    = "po-basic-key-7f3a9c"
	spanPOXKey   = "po-x-api-key-91c2e4"
	spanSIBSTok  = "sibs-bearer-5d8b17"
	spanSIBSID   = "sibs-client-id-c3e0"
	spanPAN      = "5200000000001005" // the sandbox's card
	spanPANShown = "520000******1005" // as the gateway masks it
)

// TestSpanTree: with the OpenTelemetry SDK, handling a command with a
// traceparent makes a CONSUMER span that is a child of the command's span,
// and under it the store claim, one CLIENT span per gateway HTTP call (made
// by the gateway client's otelhttp transport, tracing.Transport, with the
// method, the URL, the status and the gateway call's names), reconciliation
// status calls included, and a PRODUCER span for the event; the event's
// traceparent names the CONSUMER span. No attribute of any span holds the
// card number, masked or not, an API key or a token: the gateways get
// them in bodies and headers, which no span records.
func TestSpanTree(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	sb := sandbox.New(sandbox.Options{APIKey: spanPOKey, XAPIKey: spanPOXKey, SIBSToken: spanSIBSTok, SIBSClientID: spanSIBSID, Seed: 1})
	base, stop, err := sb.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop(context.Background()) })
	traced := func() *http.Client { return &http.Client{Transport: tracing.Transport(tp, gateway.Transport(4))} }
	poURL, _ := url.Parse(base)
	po, err := paymentoptions.New(paymentoptions.Config{BaseURL: poURL, APIKey: spanPOKey, XAPIKey: spanPOXKey,
		Timeout: 2 * time.Second, HTTPClient: traced()})
	if err != nil {
		t.Fatal(err)
	}
	sibsURL, _ := url.Parse(sb.SIBSBaseURL())
	sc, err := sibs.New(sibs.Config{BaseURL: sibsURL, ClientID: spanSIBSID, TerminalID: "1", Token: spanSIBSTok,
		Timeout: 2 * time.Second, HTTPClient: traced()})
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracedWith(t, tp.Tracer("test"), map[string]handlers.Gateway{"paymentoptions": po, "sibs": sc})

	// call is a CLIENT span expected under the CONSUMER span.
	type call struct {
		name, method, url string
		status            int // 0: no answer, an error span
	}
	poOp := strings.TrimRight(base, "/") + "/api/v1/server-to-server-interface/"
	sibsOp := strings.TrimSuffix(strings.TrimRight(sb.SIBSBaseURL(), "/"), "/api/v1") + "/api/v1/payments/"
	steps := []struct {
		name    string
		gateway string
		faults  sandbox.Faults
		calls   func(auth string) []call
	}{
		{"paymentoptions capture", "paymentoptions", sandbox.Faults{}, func(string) []call {
			return []call{{"gateway capture", "POST", poOp + "capture", 201}}
		}},
		{"paymentoptions capture reconciled", "paymentoptions", sandbox.Faults{ApplyThenDropRate: 1}, func(auth string) []call {
			return []call{{"gateway capture", "POST", poOp + "capture", 0}, {"gateway status", "GET", poOp + "transaction/status/" + auth, 200}}
		}},
		// SIBS reads the authorisation's status before a capture, within
		// the capture call: two HTTP calls, two spans.
		{"sibs capture", "sibs", sandbox.Faults{}, func(auth string) []call {
			return []call{{"gateway capture", "GET", sibsOp + auth + "/status", 200}, {"gateway capture", "POST", sibsOp + auth + "/capture", 200}}
		}},
	}
	for i, st := range steps {
		rec.Reset()
		sb.SetFaults(st.faults)
		auth := sb.Authorise(merchant, 1000, "EUR")
		parent := fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e47%02d-00f067aa0ba902b7-01", i)
		body, _ := json.Marshal(map[string]any{"command_id": fmt.Sprint("span-", i), "type": "capture", "merchant_id": merchant,
			"transaction_id": auth, "amount": 1000, "currency": "EUR", "gateway": st.gateway})
		got := tr.handle(tr.cfg.CommandSubject("capture"), body, nats.Header{"traceparent": {parent}})
		if len(got) != 1 || got[0].event.Type != events.CaptureSucceeded.Type() {
			t.Fatalf("%s: events %+v, want capture.succeeded", st.name, got)
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
			t.Fatalf("%s: no CONSUMER span among %v", st.name, names(rec.Ended()))
		}
		wantTrace := fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e47%02d", i)
		if p := consumer.Parent(); p.TraceID().String() != wantTrace || p.SpanID().String() != "00f067aa0ba902b7" {
			t.Errorf("%s: CONSUMER span's parent = %s/%s, want the command's span", st.name, p.TraceID(), p.SpanID())
		}
		if got[0].event.TraceParent != "00-"+wantTrace+"-"+consumer.SpanContext().SpanID().String()+"-01" {
			t.Errorf("%s: event traceparent %q, want the CONSUMER span %s", st.name, got[0].event.TraceParent, consumer.SpanContext().SpanID())
		}
		childOf := func(s sdktrace.ReadOnlySpan) bool {
			return s.Parent().SpanID() == consumer.SpanContext().SpanID() && s.SpanContext().TraceID() == consumer.SpanContext().TraceID()
		}

		want := st.calls(auth)
		clients := byKind[trace.SpanKindClient]
		if len(clients) != len(want) {
			t.Errorf("%s: CLIENT spans %v, want %d", st.name, names(clients), len(want))
		}
		// The recorder holds spans in the order they ended; a CLIENT span
		// ends when its answer is read, before the next call starts.
		for j, c := range clients[:min(len(clients), len(want))] {
			w := want[j]
			a := attrs(c)
			if c.Name() != w.name || !childOf(c) {
				t.Errorf("%s: CLIENT span %d = %s (parent %s), want %s under the CONSUMER span %s",
					st.name, j, c.Name(), c.Parent().SpanID(), w.name, consumer.SpanContext().SpanID())
			}
			for k, v := range map[string]string{"http.request.method": w.method, "url.full": w.url, "server.address": "127.0.0.1",
				"payworker.gateway": st.gateway, "payworker.gateway.operation": strings.TrimPrefix(w.name, "gateway ")} {
				if a[k] != v {
					t.Errorf("%s: CLIENT span %s: %s = %q, want %q", st.name, c.Name(), k, a[k], v)
				}
			}
			if w.status != 0 {
				if a["http.response.status_code"] != fmt.Sprint(w.status) || c.Status().Code == codes.Error {
					t.Errorf("%s: CLIENT span %s: status code %q (span status %v), want %d", st.name, c.Name(), a["http.response.status_code"], c.Status(), w.status)
				}
			} else if _, ok := a["http.response.status_code"]; ok || c.Status().Code != codes.Error || a["error.type"] == "" {
				t.Errorf("%s: CLIENT span %s: status code %q, span status %v, error.type %q; want no answer: an error",
					st.name, c.Name(), a["http.response.status_code"], c.Status(), a["error.type"])
			}
		}
		if p := byKind[trace.SpanKindProducer]; len(p) != 1 || !childOf(p[0]) || p[0].Name() != "send payments.evt.capture.succeeded" {
			t.Errorf("%s: PRODUCER spans %v, want one send payments.evt.capture.succeeded under the CONSUMER span", st.name, names(p))
		} else if a := attrs(p[0]); a["messaging.system"] != "nats" || a["messaging.destination.name"] != "payments.evt.capture.succeeded" || a["messaging.message.id"] == "" {
			t.Errorf("%s: PRODUCER span attributes %v, want messaging.system nats, the destination and the message id", st.name, a)
		}
		var claim bool
		for _, s := range byKind[trace.SpanKindInternal] {
			claim = claim || (s.Name() == "idempotency claim" && childOf(s))
		}
		if !claim {
			t.Errorf("%s: INTERNAL spans %v, want an idempotency claim under the CONSUMER span", st.name, names(byKind[trace.SpanKindInternal]))
		}
		for _, s := range rec.Ended() {
			for k, v := range attrs(s) {
				for _, secret := range []string{spanPOKey, spanPOXKey, spanSIBSTok, spanSIBSID, spanPAN, spanPANShown} {
					if strings.Contains(v, secret) {
						t.Errorf("%s: span %s attribute %s = %q holds a secret (%s)", st.name, s.Name(), k, v, secret)
					}
				}
			}
		}
	}
}

// attrs are a span's attributes as text, the last value of a key set twice.
func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, a := range s.Attributes() {
		m[string(a.Key)] = a.Value.String()
	}
	return m
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name()+" ("+s.SpanKind().String()+")")
	}
	return out
}
