package main

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
)

// TestProvisionSettings checks that provision honours the stream settings
// the worker reads, from flags and the environment: a new stream gets them;
// an existing one keeps an operator's limits (printed) unless
// --update-limits; a bad value is a usage error naming the variable; more
// replicas than a single server takes fail naming the cause.
func TestProvisionSettings(t *testing.T) {
	h := newHarness(t, false)
	ctx := testContext(t)
	h.env["EVENTS_MAX_BYTES"] = "512MiB"
	stdout, _, err := h.run(ctx, "provision", "--dlq-max-age", "200h", "--duplicate-window", "5m")
	if err != nil {
		t.Fatalf("provision = %v", err)
	}
	if want := "created: PAYMENT_COMMANDS, PAYMENT_EVENTS, PAYMENT_DLQ"; !strings.Contains(stdout, want) {
		t.Errorf("provision printed %q, want %q", stdout, want)
	}
	d := streams.Default()
	evts, dlq := streamCfg(t, h, d.Events), streamCfg(t, h, d.DLQ)
	if evts.MaxBytes != 512<<20 || dlq.MaxAge.Hours() != 200 || dlq.Duplicates.Minutes() != 5 {
		t.Errorf("events max bytes %d, DLQ max age %v, duplicate window %v; want 512MiB, 200h, 5m", evts.MaxBytes, dlq.MaxAge, dlq.Duplicates)
	}

	delete(h.env, "EVENTS_MAX_BYTES")
	_, stderr, err := h.run(ctx, "provision")
	if err != nil {
		t.Fatalf("provision again = %v", err)
	}
	if want := "kept PAYMENT_EVENTS max_bytes: 536870912, configured 10737418240"; !strings.Contains(stderr, want) {
		t.Errorf("provision over an operator's limit printed %q to stderr, want %q", stderr, want)
	}
	if got := streamCfg(t, h, d.Events).MaxBytes; got != 512<<20 {
		t.Errorf("events max bytes = %d after provision, want the operator's 512MiB kept", got)
	}
	stdout, _, err = h.run(ctx, "provision", "--update-limits")
	if err != nil {
		t.Fatalf("provision --update-limits = %v", err)
	}
	if want := "updated PAYMENT_EVENTS max_bytes: 536870912, configured 10737418240"; !strings.Contains(stdout, want) {
		t.Errorf("provision --update-limits printed %q, want %q", stdout, want)
	}
	if got := streamCfg(t, h, d.Events).MaxBytes; got != 10<<30 {
		t.Errorf("events max bytes = %d after --update-limits, want 10GiB", got)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--stream-replicas", "7"}, "--stream-replicas (STREAM_REPLICAS): must be between 1 and 5, got 7"},
		{[]string{"--events-max-bytes", "10GB"}, `--events-max-bytes (EVENTS_MAX_BYTES): "10GB" is not a size`},
		{[]string{"--duplicate-window", "200h"}, "DUPLICATE_WINDOW: 200h0m0s is longer than COMMANDS_MAX_AGE"},
	} {
		_, _, err := h.run(ctx, append([]string{"provision"}, tc.args...)...)
		if exitStatus(err) != exitUsage || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("provision %q = %v (exit %d), want a usage error containing %q", tc.args, err, exitStatus(err), tc.want)
		}
	}
	h.env["STREAM_REPLICAS"] = "3"
	_, _, err = h.run(ctx, "provision")
	if !streams.PlacementRefused(err) || exitStatus(err) != exitFailed {
		t.Errorf("provision with STREAM_REPLICAS=3 on one server = %v (exit %d), want JetStream's refusal, exit 1", err, exitStatus(err))
	}
}

func streamCfg(t *testing.T, h *harness, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := h.js.Stream(t.Context(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}
