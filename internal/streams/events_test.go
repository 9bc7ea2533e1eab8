package streams_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

// TestNotProvisioned: a missing stream reads as ErrNotProvisioned, naming
// the stream; other errors pass unchanged.
func TestNotProvisioned(t *testing.T) {
	ctx := context.Background()
	_, js := testenv.StartNATS(t).Connect(t)
	_, err := js.Stream(ctx, "PAYMENT_EVENTS")
	got := streams.NotProvisioned("PAYMENT_EVENTS", err)
	if !errors.Is(got, streams.ErrNotProvisioned) || got.Error() != "stream PAYMENT_EVENTS: "+streams.ErrNotProvisioned.Error() {
		t.Errorf("NotProvisioned(missing stream) = %v, want ErrNotProvisioned naming the stream", got)
	}
	other := errors.New("connection closed")
	if got := streams.NotProvisioned("PAYMENT_EVENTS", other); got != other {
		t.Errorf("NotProvisioned(%v) = %v, want it unchanged", other, got)
	}
}

// TestDeleteConsumer: an ordered consumer's server-side consumer is gone at
// once, not at its inactivity threshold.
func TestDeleteConsumer(t *testing.T) {
	ctx := context.Background()
	_, js := testenv.StartNATS(t).Connect(t)
	c := streams.Default()
	if err := streams.Provision(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, c.Events, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Info(ctx); err != nil { // creates the server-side consumer
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, c.Events)
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	if n := count(); n != 1 {
		t.Fatalf("consumers on %s = %d before, want 1", c.Events, n)
	}
	streams.DeleteConsumer(js, c.Events, cons)
	if n := count(); n != 0 {
		t.Errorf("consumers on %s = %d after DeleteConsumer, want 0", c.Events, n)
	}
}
