package tracing

import (
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The worker's batch span processor settings where the standard variables
// (OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE) do not say. The
// SDK's defaults (2,048 and 512) hold about half a second of spans at the
// worker's rate on 2 cores (4 spans a command, some 4,000 commands/s): a
// burst, or an exporter that takes a moment, fills the queue and the spans
// of the commands beyond it are dropped. 16,384 spans (a few MB) ride out
// about 1 s; batches of 2,048 (some 0.5 MB of OTLP) make a quarter as many
// export requests.
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
