package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
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
