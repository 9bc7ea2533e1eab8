package worker

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Lag is how far the shared consumer is behind, from its info.
type Lag struct {
	// Pending is the number of commands in the stream not yet delivered
	// to any worker (the consumer's num_pending).
	Pending uint64
	// AckPending is the number of commands delivered and not yet
	// acknowledged (num_ack_pending): being handled, or waiting for
	// redelivery after a Nak with delay.
	AckPending uint64
}

// Lag asks the bound consumer's leader for its pending and ack-pending
// counts. It fails while the consumer is not bound or has no leader.
func (w *Worker) Lag(ctx context.Context) (Lag, error) {
	c := w.cons.Load()
	if c == nil {
		return Lag{}, errors.New("consumer not bound")
	}
	info, err := (*c).Info(ctx)
	if err != nil {
		return Lag{}, fmt.Errorf("consumer: %w", err)
	}
	return Lag{Pending: info.NumPending, AckPending: uint64(info.NumAckPending)}, nil
}

// PollLag calls Lag every interval, and once at once, and passes each answer
// to record until ctx ends. An answer that fails is skipped: the last
// recorded values stay (readiness says the consumer is unreachable).
func (w *Worker) PollLag(ctx context.Context, interval time.Duration, record func(Lag)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, min(interval, 2*time.Second))
		lag, err := w.Lag(qctx)
		cancel()
		if err == nil {
			record(lag)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
