package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The attributes that name the gateway call of a CLIENT span.
const (
	AttrGateway   = attribute.Key("payworker.gateway")
	AttrOperation = attribute.Key("payworker.gateway.operation")
)

// call names the gateway call a request belongs to; see GatewayCall.
type call struct{ gateway, operation string }

type callKey struct{}

// GatewayCall returns ctx naming the gateway call about to be made with it
// (gateway "paymentoptions", operation "capture", "void" or "status"), for
// the CLIENT spans of Transport: their name is "gateway <operation>" and
// they carry AttrGateway and AttrOperation. When ctx's span is not
// recording (tracing off, or a command not sampled) there is nothing to
// name and ctx itself is returned: the call costs no allocation.
func GatewayCall(ctx context.Context, gateway, operation string) context.Context {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx
	}
	return context.WithValue(ctx, callKey{}, call{gateway, operation})
}

// Transport returns the RoundTripper of the gateway clients: base itself
// when tp is nil or OpenTelemetry's no-op provider (tracing off: not
// wrapped, nothing slower), otherwise base wrapped by otelhttp so that
// every request made within a recording span (a sampled command's) is one
// span of kind CLIENT, child of that span (the command's CONSUMER span),
// ended when the answer's body is closed.
//
// A span carries http.request.method, url.full, server.address,
// server.port, network.protocol.version and http.response.status_code
// (error.type and an error status for no answer or a status of 400 or
// more), and the gateway and operation of GatewayCall. A request whose
// context's span is not recording (a command not sampled, a request of no
// command) gets no span and costs nothing more than the pool's own work.
// It records no header (the API keys and tokens travel in headers) and no body (the card
// data travels in bodies); url.full loses any query, fragment or user info
// (the adapters' URLs have none: gateway.CheckBaseURL refuses them, and
// the paths hold only transaction ids). No trace context is sent to the
// gateway: it is a third party that reports to no collector of ours. The
// transport records no OpenTelemetry metrics: the worker's own Prometheus
// metrics count the gateway calls.
func Transport(tp trace.TracerProvider, base http.RoundTripper) http.RoundTripper {
	if tp == nil {
		return base
	}
	if _, off := tp.(noop.TracerProvider); off {
		return base
	}
	return otelhttp.NewTransport(labeler{base},
		otelhttp.WithFilter(recording),
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator()),
		otelhttp.WithSpanNameFormatter(spanName),
	)
}

// recording is otelhttp's filter: a request made for a command whose span
// is not recording (not sampled, with the standard parent-based samplers)
// goes straight to the pool, without the span, attributes and metric
// attributes otelhttp would compute for a span that records nothing.
func recording(r *http.Request) bool {
	return trace.SpanFromContext(r.Context()).IsRecording()
}

// spanName is "gateway <operation>" for a request of a GatewayCall, the
// method alone (as the HTTP conventions name a span without a route) for
// any other made within a recording span.
func spanName(_ string, r *http.Request) string {
	if c, ok := r.Context().Value(callKey{}).(call); ok {
		return "gateway " + c.operation
	}
	return r.Method
}

// labeler is the RoundTripper under otelhttp's: it sees the request with
// the CLIENT span in its context, and adds the gateway call's attributes
// and a url.full without secrets to it.
type labeler struct{ base http.RoundTripper }

func (l labeler) RoundTrip(r *http.Request) (*http.Response, error) {
	span := trace.SpanFromContext(r.Context())
	if span.IsRecording() {
		if c, ok := r.Context().Value(callKey{}).(call); ok {
			span.SetAttributes(AttrGateway.String(c.gateway), AttrOperation.String(c.operation))
		}
		if u := r.URL; u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
			bare := *u
			bare.RawQuery, bare.ForceQuery, bare.Fragment, bare.RawFragment, bare.User = "", false, "", "", nil
			span.SetAttributes(attribute.String("url.full", bare.String()))
		}
	}
	return l.base.RoundTrip(r)
}
