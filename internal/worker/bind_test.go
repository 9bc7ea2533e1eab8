package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/internal/testenv"
)

// TestBindKeepsAnExistingConsumer starts workers against a shared consumer
// an operator configured otherwise (a longer ack wait, fewer acks pending):
// they bind it as it is, warn once each about the differences, and work
// through it; its configuration is never rewritten.
func TestBindKeepsAnExistingConsumer(t *testing.T) {
	o := systemtest.DefaultOptions()
	o.Workers = 0
	s := systemtest.Start(t, o)
	ctx := context.Background()
	operator := jetstream.ConsumerConfig{
		Durable:       s.Streams.Consumer,
		FilterSubject: s.Streams.CommandWildcard(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1,
		MaxAckPending: 500,
	}
	if _, err := s.JS.CreateConsumer(ctx, s.Streams.Commands, operator); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s.StartWorker(t, "w1", o)
	s.StartWorker(t, "w2", o)

	auth := s.Sandbox.Authorise(merchant, 100, "EUR")
	s.Publish(t, "capture", captureCmd("bind-1", "bind-1", auth, 100))
	s.WaitKind(t, merchant, "bind-1", events.CaptureSucceeded)
	s.Settle(t)

	c, err := s.JS.Consumer(ctx, s.Streams.Commands, s.Streams.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	got := c.CachedInfo().Config
	if got.AckWait != operator.AckWait || got.MaxAckPending != operator.MaxAckPending {
		t.Errorf("consumer ack wait %v, max ack pending %d after the workers bound it; want the operator's %v, %d",
			got.AckWait, got.MaxAckPending, operator.AckWait, operator.MaxAckPending)
	}
	warned := strings.Count(logs.String(), "the shared consumer differs from this worker's configuration")
	if warned != 2 || !strings.Contains(logs.String(), "ack_wait 1m0s (configured 5s)") ||
		!strings.Contains(logs.String(), "max_ack_pending 500 (configured 1000)") {
		t.Errorf("warnings = %d, log:\n%s\nwant one per worker naming ack_wait and max_ack_pending", warned, logs)
	}
}
