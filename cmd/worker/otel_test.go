package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/payworker/payworker/internal/events"
)

func TestTracingOffWithoutEndpoint(t *testing.T) {
	for _, e := range []env{
		{},
		{"OTEL_SERVICE_NAME": "x"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"},
	} {
		tp, shutdown, err := setupTracing(context.Background(), e.get)
		if err != nil {
			t.Fatalf("setupTracing(%v) = %v", e, err)
		}
		if _, ok := tp.(noop.TracerProvider); !ok {
			t.Errorf("setupTracing(%v) = %T, want the no-op provider", e, tp)
		}
		if err := shutdown(context.Background()); err != nil {
			t.Errorf("shutdown = %v", err)
		}
	}
	if _, _, err := setupTracing(context.Background(), env{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}.get); err == nil {
		t.Errorf("setupTracing with an unknown protocol = nil error")
	}
}

// TestTracingExportsOTLP: with an endpoint, spans reach an OTLP/HTTP
// receiver when the provider shuts down, with service.name from
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES applied.
func TestTracingExportsOTLP(t *testing.T) {
	var (
		mu   sync.Mutex
		reqs []*coltracepb.ExportTraceServiceRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		reqs = append(reqs, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "payworker-test")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")

	tp, shutdown, err := setupTracing(context.Background(), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(context.Background(), "process payments.cmd.capture", trace.WithSpanKind(trace.SpanKindConsumer))
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown = %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(reqs) == 0 {
		t.Fatal("the receiver got no spans")
	}
	attrs := map[string]string{}
	var spans []string
	for _, rs := range reqs[0].GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			attrs[a.GetKey()] = a.GetValue().GetStringValue()
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				spans = append(spans, s.GetName())
			}
		}
	}
	if attrs["service.name"] != "payworker-test" || attrs["deployment.environment"] != "ci" {
		t.Errorf("resource attributes %v, want service.name payworker-test and deployment.environment ci", attrs)
	}
	if len(spans) != 1 || spans[0] != "process payments.cmd.capture" {
		t.Errorf("spans %v, want process payments.cmd.capture", spans)
	}
}

// TestGatewayClientWrappedOnlyWhenTracing: with tracing off the adapters
// get no client (they build their own, unwrapped); with it on, their pool
// under otelhttp's transport.
func TestGatewayClientWrappedOnlyWhenTracing(t *testing.T) {
	if c := gatewayClient(noop.NewTracerProvider(), 8); c != nil {
		t.Errorf("gatewayClient(no-op) = %+v, want nil", c)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	tp, shutdown, err := setupTracing(context.Background(), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	c := gatewayClient(tp, 8)
	if c == nil {
		t.Fatal("gatewayClient(SDK) = nil, want a client under otelhttp")
	}
	if _, ok := c.Transport.(*otelhttp.Transport); !ok {
		t.Errorf("gatewayClient(SDK).Transport = %T, want *otelhttp.Transport", c.Transport)
	}
}

// otlpReceiver is an OTLP/HTTP trace receiver: it keeps every span it gets
// with its resource's service.name.
type otlpReceiver struct {
	mu      sync.Mutex
	spans   []*tracepb.Span
	service map[string]bool
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				o.service[a.GetValue().GetStringValue()] = true
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
}

// TestRunExportsTheSpanTree runs the worker with an OTLP endpoint and the
// in-process sandbox: a capture with a traceparent reaches the receiver,
// by the time run returns, as a CONSUMER span child of the command's span
// with the gateway HTTP call under it as one CLIENT span (otelhttp's, the
// method, URL and status on it) and the event's PRODUCER span, all of
// service OTEL_SERVICE_NAME; no attribute holds the card number or the
// gateway's keys.
func TestRunExportsTheSpanTree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a worker")
	}
	recv := &otlpReceiver{service: map[string]bool{}}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	// The exporter reads the process environment, as the SDK does; run's
	// getenv decides that tracing is on.
	otel := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_SERVICE_NAME": "payworker-span-tree", "OTEL_BSP_SCHEDULE_DELAY": "100"}
	for k, v := range otel {
		t.Setenv(k, v)
	}
	e := env{
		"EMBEDDED_NATS_ADDR": freeAddr(t),
		"SANDBOX_ADDR":       freeAddr(t),
		"HTTP_ADDR":          freeAddr(t),
		"DATA_DIR":           t.TempDir(),
		"LOG_FORMAT":         "json",
		"WORKER_ID":          "traced",
	}
	for k, v := range otel {
		e[k] = v
	}
	w := startRun(t, e)
	w.waitReady(t)

	const merchant = "M0001"
	auth := authoriseOverHTTP(t, e["SANDBOX_ADDR"], merchant, 1000, "JPY")
	js := connect(t, "nats://"+e["EMBEDDED_NATS_ADDR"])
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	body, _ := json.Marshal(map[string]any{"command_id": "traced-1", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1000, "currency": "JPY"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "payments.cmd.capture", Data: body,
		Header: nats.Header{"traceparent": {"00-" + traceID + "-" + parentID + "-01"}}}); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "capture.succeeded", func() (bool, string) {
		got := readEvents(t, js)
		return len(got) == 1 && got[0].Event.Type == events.CaptureSucceeded.Type(), fmt.Sprint(byKey(got))
	})
	if _, err := w.stop(); err != nil {
		t.Fatalf("run after SIGTERM = %v", err)
	}

	recv.mu.Lock()
	defer recv.mu.Unlock()
	if !recv.service["payworker-span-tree"] || len(recv.service) != 1 {
		t.Errorf("service.name %v, want payworker-span-tree", recv.service)
	}
	var consumer *tracepb.Span
	byKind := map[tracepb.Span_SpanKind][]*tracepb.Span{}
	for _, s := range recv.spans {
		if hex.EncodeToString(s.GetTraceId()) != traceID {
			continue
		}
		byKind[s.GetKind()] = append(byKind[s.GetKind()], s)
		if s.GetKind() == tracepb.Span_SPAN_KIND_CONSUMER {
			consumer = s
		}
	}
	if consumer == nil || hex.EncodeToString(consumer.GetParentSpanId()) != parentID {
		t.Fatalf("CONSUMER span %v in trace %s, want one child of %s", consumer, traceID, parentID)
	}
	under := func(s *tracepb.Span) bool { return string(s.GetParentSpanId()) == string(consumer.GetSpanId()) }
	clients := byKind[tracepb.Span_SPAN_KIND_CLIENT]
	if len(clients) != 1 || !under(clients[0]) || clients[0].GetName() != "gateway capture" {
		t.Fatalf("CLIENT spans %v, want one gateway capture under the CONSUMER span", clients)
	}
	a := map[string]string{}
	for _, kv := range clients[0].GetAttributes() {
		a[kv.GetKey()] = otlpValue(kv.GetValue())
	}
	// The adapter's own path under the sandbox's base URL.
	if u := a["url.full"]; a["http.request.method"] != "POST" || !strings.HasPrefix(u, "http://"+e["SANDBOX_ADDR"]+"/") ||
		!strings.HasSuffix(u, "/server-to-server-interface/capture") || a["http.response.status_code"] != "201" ||
		a["payworker.gateway"] != "paymentoptions" || a["payworker.gateway.operation"] != "capture" {
		t.Errorf("CLIENT span attributes %v, want POST to the sandbox's capture, 201, paymentoptions capture", a)
	}
	if p := byKind[tracepb.Span_SPAN_KIND_PRODUCER]; len(p) != 1 || !under(p[0]) {
		t.Errorf("PRODUCER spans %v, want one under the CONSUMER span", p)
	}
	for _, s := range recv.spans {
		for _, kv := range s.GetAttributes() {
			v := otlpValue(kv.GetValue())
			if strings.Contains(v, "5200000000001005") || strings.Contains(v, "Basic") || strings.Contains(v, "sandbox") {
				t.Errorf("span %s attribute %s = %s holds the card number or a key", s.GetName(), kv.GetKey(), v)
			}
		}
	}
}

// otlpValue is an OTLP attribute value as text.
func otlpValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	}
	return v.String()
}
