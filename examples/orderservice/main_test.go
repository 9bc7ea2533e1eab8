package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/systemtest"
)

// TestRun runs the example order service against the zero-configuration
// system (embedded NATS, the key-value idempotency store, the sandbox over
// HTTP, a worker): every shipment is captured once at the gateway, and the
// fulfilment emitted twice is answered as a duplicate without a second
// gateway call.
func TestRun(t *testing.T) {
	z, err := systemtest.StartZero()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := map[string]string{"NATS_URL": z.NATSURL, "SANDBOX_URL": z.SandboxURL, "SANDBOX_API_KEY": z.SandboxKey}
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"orderservice", "--timeout", "30s"}, func(k string) string { return env[k] }, &out, &errOut); err != nil {
		t.Fatalf("run = %v\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
	}
	t.Log("\n" + out.String())
	text := out.String()
	if got := strings.Count(text, " captured "); got != 3 {
		t.Errorf("%d captures printed, want 3:\n%s", got, text)
	}
	if got := strings.Count(text, "duplicate: done before (succeeded"); got != 1 {
		t.Errorf("%d duplicates of a success printed, want 1:\n%s", got, text)
	}
	for _, want := range []string{"checkout   order-", "warehouse  orders.fulfilled emitted for", "(again)",
		"4 fulfilments emitted for 3 shipments: 3 captures, 1 answered as duplicates"} {
		if !strings.Contains(text, want) {
			t.Errorf("output does not contain %q:\n%s", want, text)
		}
	}
	if got := z.Sandbox.Calls(sandbox.EndpointCapture); got != 3 {
		t.Errorf("captures at the gateway = %d, want 3: one per shipment, none for the repeat", got)
	}

	// Run again: new orders, the same outcome; the stream and the worker's
	// state from the first run change nothing.
	out.Reset()
	if err := run(ctx, []string{"orderservice"}, func(k string) string { return env[k] }, &out, &errOut); err != nil {
		t.Fatalf("second run = %v\n%s", err, &out)
	}
	if got := z.Sandbox.Calls(sandbox.EndpointCapture); got != 6 {
		t.Errorf("captures at the gateway after two runs = %d, want 6", got)
	}
}

func TestRunWithoutWorker(t *testing.T) {
	ctx := context.Background()
	env := map[string]string{"NATS_URL": "nats://127.0.0.1:1", "SANDBOX_URL": "http://127.0.0.1:1/api/v1"}
	var out bytes.Buffer
	err := run(ctx, []string{"orderservice"}, func(k string) string { return env[k] }, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "go run ./cmd/worker") {
		t.Errorf("run without a worker = %v, want an error that says to start it", err)
	}
}
