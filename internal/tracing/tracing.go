// Package tracing carries W3C Trace Context (traceparent, tracestate)
// through NATS messages: it reads a command's context from its headers,
// gives the handling of the command a span context of its own in the same
// trace (a new trace when the command has none), and writes it on every
// message published for the command, in the headers and as the CloudEvents
// distributed-tracing attributes of the event.
//
// The trace context's functions use the OpenTelemetry API only. Without an
// SDK installed no span is recorded, so Start mints the span id itself;
// with one, a span started from Start's context is a child of the command's
// span. Transport puts the gateway clients' HTTP calls under otelhttp's
// CLIENT spans when tracing is on, and BatchOptions are the worker's
// settings of the SDK's batch span processor.
package tracing

import (
	"context"
	crand "crypto/rand"
	"log/slog"
	"net/textproto"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The W3C Trace Context header names, as written on NATS (lower case, as
// the specification spells them; NATS headers are case-sensitive).
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

var propagator = propagation.TraceContext{}

// Carrier is a nats.Header as an OpenTelemetry TextMapCarrier. It writes
// the lower-case names and reads both the lower-case and the canonical
// (Traceparent) spelling, which HTTP-minded propagators write.
type Carrier nats.Header

// Get returns the first value of key in either spelling.
func (c Carrier) Get(key string) string {
	var canonical string
	switch key {
	case HeaderTraceparent: // what the propagator asks, without a new string a call
		canonical = "Traceparent"
	case HeaderTracestate:
		canonical = "Tracestate"
	default:
		key, canonical = strings.ToLower(key), textproto.CanonicalMIMEHeaderKey(key)
	}
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	if v := c[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces key's values with value, under the lower-case name.
func (c Carrier) Set(key, value string) {
	switch key {
	case HeaderTraceparent: // what the propagator sets, without a new string a call
		delete(c, "Traceparent")
	case HeaderTracestate:
		delete(c, "Tracestate")
	default:
		delete(c, textproto.CanonicalMIMEHeaderKey(key))
		key = strings.ToLower(key)
	}
	c[key] = []string{value}
}

// Keys lists the header names.
func (c Carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Start returns ctx carrying the span context of handling a message with
// headers hdr: a new span id in the trace of hdr's traceparent, keeping its
// flags and tracestate, or a new sampled trace when hdr has no valid
// traceparent.
func Start(ctx context.Context, hdr nats.Header) context.Context {
	parent := trace.SpanContextFromContext(propagator.Extract(ctx, Carrier(hdr)))
	cfg := trace.SpanContextConfig{TraceFlags: trace.FlagsSampled}
	if parent.IsValid() {
		cfg.TraceID, cfg.TraceFlags, cfg.TraceState = parent.TraceID(), parent.TraceFlags(), parent.TraceState()
	} else {
		crand.Read(cfg.TraceID[:])
	}
	crand.Read(cfg.SpanID[:])
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(cfg))
}

// Consume starts the handling of a message with headers hdr: with a tracer
// of the OpenTelemetry SDK, a span of kind CONSUMER, child of the span that
// hdr's traceparent names (a root span without one), with attrs and the
// messaging attributes when it records (nothing is allocated for them when
// the sampler leaves the command out); with a no-op tracer, no span but a
// span context of its own all the same (Start). The caller ends the span.
func Consume(ctx context.Context, tracer trace.Tracer, hdr nats.Header, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if _, off := tracer.(noop.Tracer); !off {
		pctx := propagator.Extract(ctx, Carrier(hdr))
		sctx, span := tracer.Start(pctx, name, trace.WithSpanKind(trace.SpanKindConsumer))
		if span.IsRecording() { // not for a command the sampler left out
			all := make([]attribute.KeyValue, 0, len(attrs)+2)
			span.SetAttributes(append(append(all, attrs...),
				attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "process"))...)
		}
		if sc := span.SpanContext(); sc.IsValid() && sc.SpanID() != trace.SpanContextFromContext(pctx).SpanID() {
			return sctx, span
		}
	}
	ctx = Start(ctx, hdr)
	return ctx, trace.SpanFromContext(ctx)
}

// Inject writes ctx's span context to hdr (traceparent, and tracestate when
// there is one). A ctx without one writes nothing.
func Inject(ctx context.Context, hdr nats.Header) {
	propagator.Inject(ctx, Carrier(hdr))
}

// Attributes are the CloudEvents distributed-tracing extension attributes
// of ctx's span context: traceparent and tracestate, empty without one.
func Attributes(ctx context.Context) (traceparent, tracestate string) {
	var p pair
	propagator.Inject(ctx, &p)
	return p.traceparent, p.tracestate
}

// pair is a TextMapCarrier of the two trace context values alone: Attributes
// writes no header map to read them back.
type pair struct{ traceparent, tracestate string }

func (p *pair) Get(string) string { return "" }
func (p *pair) Keys() []string    { return nil }
func (p *pair) Set(key, value string) {
	switch key {
	case HeaderTraceparent:
		p.traceparent = value
	case HeaderTracestate:
		p.tracestate = value
	}
}

// LogArgs are the trace_id and span_id attributes of ctx's span context
// for slog's With; none without one.
func LogArgs(ctx context.Context) []any {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []any{slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String())}
}

// NewTraceparent is the traceparent of a new sampled trace: for a command
// sent by a program that has no trace of its own.
func NewTraceparent() string {
	tp, _ := Attributes(Start(context.Background(), nil))
	return tp
}

// TraceID is the trace id of a traceparent header value, "" when it is not
// a valid one.
func TraceID(traceparent string) string {
	sc := trace.SpanContextFromContext(propagator.Extract(context.Background(), Carrier{HeaderTraceparent: {traceparent}}))
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
