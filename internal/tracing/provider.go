package tracing

import (
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The worker's batch span processor settings where the standard variables
// (OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE) do not say. A
// worker on 2 cores makes some 20,000 spans a second (4 a command, 5,000
// commands/s): the SDK's queue of 2,048 holds a tenth of a second of them,
// and as the exporter sends one batch at a time, batches of 512 to a
// collector 100 ms away carry at most about 5,000 spans/s; the spans beyond
// are dropped. 16,384 spans (a few MB) ride out about a second; batches of
// 2,048 (some 0.5 MB of OTLP) carry four times as many.
const (
	MaxQueueSize       = 16384
	MaxExportBatchSize = 2048
)

// BatchOptions are the worker's options of the SDK's batch span processor:
// MaxQueueSize and MaxExportBatchSize, each unless getenv gives its
// standard variable, which the SDK then reads itself (an option would
// override it).
func BatchOptions(getenv func(string) string) []sdktrace.BatchSpanProcessorOption {
	var opts []sdktrace.BatchSpanProcessorOption
	if getenv("OTEL_BSP_MAX_QUEUE_SIZE") == "" {
		opts = append(opts, sdktrace.WithMaxQueueSize(MaxQueueSize))
	}
	if getenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") == "" {
		opts = append(opts, sdktrace.WithMaxExportBatchSize(MaxExportBatchSize))
	}
	return opts
}
