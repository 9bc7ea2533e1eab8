package tracing

import (
	"context"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TestTransportOffIsNotWrapped: with no provider or the no-op one, the
// gateway transport is the one given, not a wrapper around it.
func TestTransportOffIsNotWrapped(t *testing.T) {
	base := &http.Transport{}
	for _, tp := range []trace.TracerProvider{nil, noop.NewTracerProvider()} {
		if got := Transport(tp, base); got != http.RoundTripper(base) {
			t.Errorf("Transport(%T, base) = %T, want base itself", tp, got)
		}
	}
}

// TestGatewayCallOffAllocatesNothing: without a recording span GatewayCall
// returns its context as it is.
func TestGatewayCallOffAllocatesNothing(t *testing.T) {
	ctx := Start(context.Background(), nil) // the worker's context with tracing off
	if got := GatewayCall(ctx, "paymentoptions", "capture"); got != ctx {
		t.Errorf("GatewayCall without a recording span returned a new context")
	}
	if n := testing.AllocsPerRun(100, func() { _ = GatewayCall(ctx, "paymentoptions", "capture") }); n != 0 {
		t.Errorf("GatewayCall without a recording span: %v allocations, want 0", n)
	}
}

// TestTransportSpans: with the SDK, each request made for a recording span
// is one CLIENT span, child of it, named for its GatewayCall (the method
// without one), with the method, a url.full without query, fragment or
// user info, the status, and the call's names; the request reaches the
// server as sent (query included) but without trace context headers.
func TestTransportSpans(t *testing.T) {
	var gotQuery, gotTraceparent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery = append(gotQuery, r.URL.RawQuery)
		gotTraceparent = append(gotTraceparent, r.Header.Get("Traceparent")+r.Header.Get("traceparent"))
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	client := &http.Client{Transport: Transport(tp, http.DefaultTransport)}

	ctx, parent := tp.Tracer("test").Start(context.Background(), "process", trace.WithSpanKind(trace.SpanKindConsumer))
	steps := []struct {
		ctx      context.Context
		method   string
		url      string
		wantName string
		wantURL  string
		wantOp   string
	}{
		{GatewayCall(ctx, "paymentoptions", "capture"), "POST", srv.URL + "/capture", "gateway capture", srv.URL + "/capture", "capture"},
		{GatewayCall(ctx, "sibs", "status"), "GET", srv.URL + "/status?api_key=s3cr3t#frag", "gateway status", srv.URL + "/status", "status"},
		{ctx, "POST", strings.Replace(srv.URL, "://", "://user:pw@", 1) + "/token?client_secret=s3cr3t", "POST", srv.URL + "/token", ""},
	}
	// Requests without a recording span (no command's, or one not
	// sampled) are sent without a span of their own.
	unsampled := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSpanProcessor(rec))
	uctx, _ := unsampled.Tracer("test").Start(context.Background(), "process")
	for _, ctx := range []context.Context{context.Background(), GatewayCall(uctx, "paymentoptions", "capture")} {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/quiet", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := len(rec.Ended()); n != 0 || len(gotQuery) != 2 {
		t.Fatalf("%d spans for %d requests without a recording span, want the requests sent and no span", n, len(gotQuery))
	}
	gotQuery, gotTraceparent = nil, nil

	for _, st := range steps {
		req, err := http.NewRequestWithContext(st.ctx, st.method, st.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	parent.End()
	if gotQuery[1] != "api_key=s3cr3t" {
		t.Errorf("the server got query %q, want the request's own api_key=s3cr3t", gotQuery[1])
	}
	for i, h := range gotTraceparent {
		if h != "" {
			t.Errorf("request %d carried traceparent %q to the gateway, want none", i, h)
		}
	}

	var clients []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			clients = append(clients, s)
		}
	}
	if len(clients) != len(steps) {
		t.Fatalf("%d CLIENT spans, want %d", len(clients), len(steps))
	}
	for i, s := range clients {
		st := steps[i]
		a := map[string]string{}
		for _, kv := range s.Attributes() {
			a[string(kv.Key)] = kv.Value.String()
			if v := kv.Value.String(); strings.Contains(v, "s3cr3t") || strings.Contains(v, "pw@") {
				t.Errorf("span %s: %s = %q holds a secret", s.Name(), kv.Key, v)
			}
		}
		if s.Name() != st.wantName || s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %d = %s, parent %s; want %s under %s", i, s.Name(), s.Parent().SpanID(), st.wantName, parent.SpanContext().SpanID())
		}
		if a["url.full"] != st.wantURL || a["http.request.method"] != st.method || a["http.response.status_code"] != "202" ||
			a[string(AttrOperation)] != st.wantOp {
			t.Errorf("span %s attributes %v, want url.full %s, method %s, status 202, operation %q", s.Name(), a, st.wantURL, st.method, st.wantOp)
		}
	}
}

// TestConsumeSpan: with the SDK, Consume's span is a CONSUMER child of the
// command's span, with the caller's and the messaging attributes.
func TestConsumeSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := Consume(context.Background(), tp.Tracer("test"), nats.Header{HeaderTraceparent: {parent}}, "process payments.cmd.capture",
		attribute.String("messaging.destination.name", "payments.cmd.capture"))
	span.End()
	got := rec.Ended()
	if len(got) != 1 || got[0].SpanKind() != trace.SpanKindConsumer || got[0].Parent().SpanID().String() != "00f067aa0ba902b7" ||
		trace.SpanContextFromContext(ctx).SpanID() != got[0].SpanContext().SpanID() {
		t.Fatalf("spans %v, want one CONSUMER child of 00f067aa0ba902b7, in the returned context", got)
	}
	a := map[string]string{}
	for _, kv := range got[0].Attributes() {
		a[string(kv.Key)] = kv.Value.String()
	}
	want := map[string]string{"messaging.destination.name": "payments.cmd.capture", "messaging.system": "nats", "messaging.operation.type": "process"}
	if !maps.Equal(a, want) {
		t.Errorf("CONSUMER attributes %v, want %v", a, want)
	}
}
