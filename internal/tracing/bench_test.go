package tracing

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// answer is a gateway's answer without a network: the transport under test
// is the only work.
type answer struct{}

func (answer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusCreated, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(`{"success":true}`)), Request: r}, nil
}

// BenchmarkCommandTracing is the tracing work of one capture, as the
// handlers do it, without the servers: the CONSUMER span from the command's
// headers, the claim span, the gateway call through Transport (to a
// RoundTripper that answers at once), the PRODUCER span, and the trace
// context written on the event (Attributes) and its headers (Inject).
// "baseline" is the gateway call alone, without any of it (what "off" adds
// to it is what tracing costs a worker without OTEL_*); "off" is the no-op
// provider (what the worker runs without OTEL_*); "on"
// the SDK sampling everything into the worker's batch processor settings,
// the spans dropped by the exporter (the export itself is measured by
// internal/worker's BenchmarkTracing).
//
//	go test -run '^$' -bench BenchmarkCommandTracing -benchmem ./internal/tracing
func BenchmarkCommandTracing(b *testing.B) {
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(tracetest.NewNoopExporter(), BatchOptions(func(string) string { return "" })...))
	b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	b.Run("baseline", func(b *testing.B) {
		client := &http.Client{Transport: answer{}}
		payload := []byte(`{"merchant_id":"M0001","transaction_id":"5185faa7-e63a-44c3-bab4-ddc9021f33be","amount":1000,"currency":"JPY"}`)
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost,
				"https://gateway.example/api/v1/server-to-server-interface/capture", bytes.NewReader(payload))
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			_ = nats.Header{}
		}
	})
	for _, c := range []struct {
		name string
		tp   trace.TracerProvider
	}{{"off", noop.NewTracerProvider()}, {"on", sdk}} {
		b.Run(c.name, func(b *testing.B) {
			tracer := c.tp.Tracer("bench")
			client := &http.Client{Transport: Transport(c.tp, answer{})}
			hdr := nats.Header{HeaderTraceparent: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
			payload := []byte(`{"merchant_id":"M0001","transaction_id":"5185faa7-e63a-44c3-bab4-ddc9021f33be","amount":1000,"currency":"JPY"}`)
			const subject = "payments.cmd.capture"
			b.ReportAllocs()
			for b.Loop() {
				ctx, span := Consume(context.Background(), tracer, hdr, "process "+subject, attribute.String("messaging.destination.name", subject))
				_, claim := tracer.Start(ctx, "idempotency claim")
				claim.End()
				req, _ := http.NewRequestWithContext(GatewayCall(ctx, "paymentoptions", "capture"), http.MethodPost,
					"https://gateway.example/api/v1/server-to-server-interface/capture", bytes.NewReader(payload))
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				_, _ = Attributes(ctx)
				out := nats.Header{}
				Inject(ctx, out)
				_, send := tracer.Start(ctx, "send payments.evt.capture.succeeded", trace.WithSpanKind(trace.SpanKindProducer),
					trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", "payments.evt.capture.succeeded"),
						attribute.String("messaging.message.id", "6ca247e8-edcf-54ed-82e6-bd78a3a47895")))
				send.End()
				span.End()
			}
		})
	}
}
