package tracing

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TestBatchOptionsYieldToTheVariables: the worker's queue and batch sizes
// apply where OTEL_BSP_* do not say, and leave the SDK to read them where
// they do.
func TestBatchOptionsYieldToTheVariables(t *testing.T) {
	for _, c := range []struct {
		env              map[string]string
		queue, batchSize int // 0: not set by an option
	}{
		{nil, MaxQueueSize, MaxExportBatchSize},
		{map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, 0, MaxExportBatchSize},
		{map[string]string{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10"}, MaxQueueSize, 0},
	} {
		var o sdktrace.BatchSpanProcessorOptions
		for _, opt := range BatchOptions(func(k string) string { return c.env[k] }) {
			opt(&o)
		}
		if o.MaxQueueSize != c.queue || o.MaxExportBatchSize != c.batchSize {
			t.Errorf("BatchOptions(%v): queue %d, batch %d; want %d, %d", c.env, o.MaxQueueSize, o.MaxExportBatchSize, c.queue, c.batchSize)
		}
	}
}
