package worker_test

import (
	"context"
	"testing"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/systemtest"
)

// TestConsumerDeletedIsBoundAgain deletes the shared consumer under a running
// worker: the worker binds it again by itself and goes on, instead of
// stopping quietly while the process stays up.
func TestConsumerDeletedIsBoundAgain(t *testing.T) {
	s := systemtest.Start(t, systemtest.DefaultOptions())
	before := s.Sandbox.Authorise(merchant, 100, "EUR")
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "before", "type": "capture", "merchant_id": merchant,
		"transaction_id": before, "amount": 100, "currency": "EUR"})
	s.WaitKind(t, merchant, "before", events.CaptureSucceeded)
	s.Settle(t)

	if err := s.JS.DeleteConsumer(context.Background(), s.Streams.Commands, s.Streams.Consumer); err != nil {
		t.Fatalf("delete consumer: %v", err)
	}
	after := s.Sandbox.Authorise(merchant, 200, "EUR")
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "after", "type": "capture", "merchant_id": merchant,
		"transaction_id": after, "amount": 200, "currency": "EUR"})
	s.WaitKind(t, merchant, "after", events.CaptureSucceeded)
	s.Settle(t)

	for _, auth := range []string{before, after} {
		if ops := s.Sandbox.Applied(auth); len(ops) != 1 {
			t.Errorf("ledger of %s = %+v, want exactly one capture", auth, ops)
		}
	}
	// The new consumer starts from the stream's first message: "before" is
	// delivered again and recognised as done, never sent to the gateway.
	if n := s.Sandbox.Calls("capture"); n != 2 {
		t.Errorf("capture calls = %d, want 2", n)
	}
	if n := systemtest.Count(s.EventsFor(merchant, "before"), events.CaptureSucceeded); n != 1 {
		t.Errorf("terminal events of before = %d, want 1", n)
	}
}
