package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/internal/worker"
)

// holdHandler keeps every message it is given, unacknowledged, until
// release; then it acks them all.
type holdHandler struct {
	mu      sync.Mutex
	held    int
	release chan struct{}
}

func (h *holdHandler) Handle(ctx context.Context, msg jetstream.Msg) {
	h.mu.Lock()
	h.held++
	h.mu.Unlock()
	select {
	case <-h.release:
		_ = msg.Ack()
	case <-ctx.Done():
		_ = msg.Nak()
	}
}

// TestLagCountsPendingAndAckPending publishes five commands to a worker that
// can hold two at a time and keeps them: the consumer's lag is three pending
// and two ack-pending, then nothing once they are acked. PollLag reports the
// same and stops when its ctx ends.
func TestLagCountsPendingAndAckPending(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := streams.Default()
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	h := &holdHandler{release: make(chan struct{})}
	w := worker.New(worker.Config{JetStream: js, Streams: cfg, Handler: h, Concurrency: 2,
		AckWait: time.Minute, MaxDeliver: -1, ShutdownTimeout: time.Second, FetchWait: 200 * time.Millisecond})

	if _, err := w.Lag(ctx); err == nil {
		t.Errorf("Lag before Run = nil error, want consumer not bound")
	}

	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-ran
	})

	for i := range 5 {
		if _, err := js.Publish(ctx, cfg.CommandSubject("capture"), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	waitLag(t, w, worker.Lag{Pending: 3, AckPending: 2})

	got := make(chan worker.Lag, 100)
	pctx, pstop := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		w.PollLag(pctx, 50*time.Millisecond, func(l worker.Lag) { got <- l })
	}()
	select {
	case l := <-got:
		if want := (worker.Lag{Pending: 3, AckPending: 2}); l != want {
			t.Errorf("PollLag recorded %+v, want %+v", l, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("PollLag recorded nothing within 5s")
	}

	close(h.release)
	waitLag(t, w, worker.Lag{})
	deadline := time.After(5 * time.Second)
	for l := (worker.Lag{Pending: 1}); l != (worker.Lag{}); {
		select {
		case l = <-got:
		case <-deadline:
			t.Fatalf("PollLag still records %+v, want zero lag", l)
		}
	}

	pstop()
	select {
	case <-polled:
	case <-time.After(2 * time.Second):
		t.Fatal("PollLag did not return after its ctx ended")
	}
}

func waitLag(t *testing.T, w *worker.Worker, want worker.Lag) {
	t.Helper()
	var (
		got worker.Lag
		err error
	)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got, err = w.Lag(context.Background())
		if err == nil && got == want {
			return
		}
	}
	t.Fatalf("Lag() = %+v, %v; want %+v", got, err, want)
}
