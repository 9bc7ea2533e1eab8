package tracing

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestStartKeepsTheTrace(t *testing.T) {
	for _, name := range []string{"traceparent", "Traceparent"} {
		hdr := nats.Header{name: {parent}, "tracestate": {"congo=t61rcWkgMzE"}}
		ctx := Start(context.Background(), hdr)
		out := nats.Header{}
		Inject(ctx, out)
		got := out.Get("traceparent")
		if TraceID(got) != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("%s: injected traceparent %q, want trace 4bf92f3577b34da6a3ce929d0e0e4736", name, got)
		}
		if strings.Contains(got, "00f067aa0ba902b7") || !strings.HasSuffix(got, "-01") {
			t.Errorf("%s: injected traceparent %q, want a span id of its own and the sampled flag", name, got)
		}
		if got := out.Get("tracestate"); got != "congo=t61rcWkgMzE" {
			t.Errorf("%s: tracestate = %q, want congo=t61rcWkgMzE", name, got)
		}
		if _, ok := out["Traceparent"]; ok {
			t.Errorf("%s: Inject wrote the canonical spelling: %v", name, out)
		}
		tp, ts := Attributes(ctx)
		if tp != got || ts != "congo=t61rcWkgMzE" {
			t.Errorf("Attributes = %q, %q, want %q, congo=t61rcWkgMzE", tp, ts, got)
		}
	}
}

func TestStartWithoutParentStartsATrace(t *testing.T) {
	for _, hdr := range []nats.Header{nil, {}, {"traceparent": {"garbage"}}, {"traceparent": {"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}}} {
		a, _ := Attributes(Start(context.Background(), hdr))
		b, _ := Attributes(Start(context.Background(), hdr))
		if TraceID(a) == "" || TraceID(b) == "" || TraceID(a) == TraceID(b) {
			t.Errorf("Start(%v): traceparents %q and %q, want two fresh valid traces", hdr, a, b)
		}
	}
}

func TestLogArgs(t *testing.T) {
	if got := LogArgs(context.Background()); got != nil {
		t.Errorf("LogArgs without a span context = %v, want none", got)
	}
	args := LogArgs(Start(context.Background(), nats.Header{"traceparent": {parent}}))
	if len(args) != 2 || !strings.Contains(args[0].(interface{ String() string }).String(), "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Errorf("LogArgs = %v, want trace_id and span_id", args)
	}
}

func TestNewTraceparent(t *testing.T) {
	a, b := NewTraceparent(), NewTraceparent()
	if TraceID(a) == "" || TraceID(b) == "" || TraceID(a) == TraceID(b) || !strings.HasSuffix(a, "-01") {
		t.Errorf("NewTraceparent() = %q, %q, want two valid sampled traces", a, b)
	}
}
