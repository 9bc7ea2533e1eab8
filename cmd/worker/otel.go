package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/tracing"
)

// defaultServiceName is service.name when OTEL_SERVICE_NAME does not say.
const defaultServiceName = "payworker"

// setupTracing builds the tracer provider from OpenTelemetry's standard
// variables alone. With neither OTEL_EXPORTER_OTLP_ENDPOINT nor
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, or OTEL_SDK_DISABLED=true, it is
// the no-op provider: nothing is recorded or exported, and the commands'
// trace context still goes on their events. Otherwise spans go in batches to
// the OTLP endpoint over OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf, the
// default, or grpc); OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the
// resource and OTEL_TRACES_SAMPLER samples. The exporter, the resource and
// the sampler read their variables from the process environment themselves,
// as the SDK does; getenv decides only whether to export. shutdown flushes
// the spans not yet sent.
func setupTracing(ctx context.Context, getenv func(string) string) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	none := func(context.Context) error { return nil }
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") ||
		(getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "") {
		return noop.NewTracerProvider(), none, nil
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdktrace.SpanExporter
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, none, usageError{fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not http/protobuf or grpc", proto)}
	}
	if err != nil {
		return nil, none, fmt.Errorf("OpenTelemetry exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", defaultServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME: last, so they win
	)
	if err != nil {
		return nil, none, usageError{fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)}
	}
	p := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, tracing.BatchOptions(getenv)...), sdktrace.WithResource(res))
	return p, p.Shutdown, nil
}

// gatewayClient is the HTTP client a gateway adapter sends with, for
// maxConns calls in flight. With tracing off (tp the no-op provider) it is
// nil: the adapter builds its own (gateway.NoRedirects), exactly as without
// OpenTelemetry, and nothing wraps its transport. With tracing on it is the
// same sized pool (gateway.Transport) under tracing.Transport, so that each
// gateway HTTP call of a sampled command, status calls included, is a
// CLIENT span.
func gatewayClient(tp trace.TracerProvider, maxConns int) *http.Client {
	if _, off := tp.(noop.TracerProvider); off {
		return nil
	}
	return &http.Client{Transport: tracing.Transport(tp, gateway.Transport(maxConns))}
}
