package main

import (
	"context"
	"time"

	"github.com/payworker/payworker/internal/ops"
	"github.com/payworker/payworker/internal/worker"
)

// probeInterval is how often the worker records, as metrics, whether it is
// ready, whether the idempotency store answers and how far the shared
// consumer is behind (payworker_ready, payworker_idempotency_store_up,
// payworker_consumer_pending, payworker_consumer_ack_pending). Tests shorten it.
var probeInterval = 5 * time.Second

// probe records readiness and the store's reachability every interval until
// ctx ends, so alerts see them without anyone calling /readyz.
func (a *app) probe(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, ops.ReadyTimeout)
		storeErr := a.store.Ping(pctx)
		readyErr := a.ready(pctx)
		cancel()
		if ctx.Err() != nil {
			// Shutting down: a check cut short says nothing.
			return
		}
		a.metrics.SetStoreUp(storeErr == nil)
		a.metrics.SetReady(readyErr == nil)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollLag records the shared consumer's lag every interval until ctx ends.
func (a *app) pollLag(ctx context.Context, interval time.Duration) {
	a.worker.PollLag(ctx, interval, func(l worker.Lag) { a.metrics.ConsumerLag(l.Pending, l.AckPending) })
}
