package ratelimit

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// Local paces the calls of this worker to one gateway at its share of the
// fleet's rate: floor(Rate ÷ workers), Margin under it. Each worker keeps
// its calls at least that far apart, so in any second each makes at most its
// share and the fleet at most the rate, however their schedules line up.
// The number of workers is told by SetWorkers (internal/fleet counts the
// live ones); a 429 slows every worker through the Broadcast it is given.
//
// The schedule is the same GCRA as the Redis pacer's, kept in the process
// and counted from when each call actually goes. golang.org/x/time/rate
// counts from when each call was due instead: a caller that wakes late is
// followed at once by the next one, and the calls bunch up, so a second
// seen by the gateway can hold one call too many.
type Local struct {
	rate      int
	onWait    func(time.Duration)
	broadcast func(ctx context.Context, until time.Time)
	// turn is held by the caller waiting on the schedule.
	turn chan struct{}

	mu        sync.Mutex
	workers   int
	interval  time.Duration
	burst     int
	tat       time.Time // theoretical arrival time of the next call
	slowUntil time.Time
}

// LocalOptions configure a Local pacer.
type LocalOptions struct {
	// Rate is the gateway's limit for the whole fleet, in requests per
	// second (> 0).
	Rate int
	// Workers is the number of workers sharing it until SetWorkers says
	// otherwise [1].
	Workers int
	// OnWait, when set, is told how long each Wait waited.
	OnWait func(time.Duration)
	// Broadcast, when set, tells the other workers of a Slow (they call
	// SlowUntil).
	Broadcast func(ctx context.Context, until time.Time)
}

// NewLocal returns the pacer of one gateway in this worker.
func NewLocal(o LocalOptions) *Local {
	if o.Rate <= 0 {
		panic(fmt.Sprintf("ratelimit: rate %d is not positive", o.Rate))
	}
	l := &Local{rate: o.Rate, onWait: o.OnWait, broadcast: o.Broadcast, turn: make(chan struct{}, 1)}
	l.SetWorkers(max(o.Workers, 1))
	return l
}

// Share is this worker's pace for n workers, in calls per second.
func Share(limit, n int) float64 {
	return perWorker(limit, n) * (1 - Margin)
}

// perWorker is a worker's whole share of limit among n workers.
func perWorker(limit, n int) float64 {
	per := math.Floor(float64(limit) / float64(max(n, 1)))
	if per < 1 {
		// More workers than calls per second: each keeps an even share,
		// and a second may hold up to one call per worker.
		per = float64(limit) / float64(n)
	}
	return per
}

// SetWorkers sets the number of live workers sharing the rate.
func (l *Local) SetWorkers(n int) {
	n = max(n, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == l.workers {
		return
	}
	l.workers = n
	l.interval = time.Duration(float64(time.Second) / Share(l.rate, n))
	l.burst = burst(perWorker(l.rate, n))
}

// Workers is the number of workers the pace is shared by.
func (l *Local) Workers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.workers
}

// Wait blocks until this call's turn, or until ctx ends (its error).
func (l *Local) Wait(ctx context.Context) error {
	start := time.Now()
	defer func() {
		if l.onWait != nil {
			l.onWait(time.Since(start))
		}
	}()
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.turn }()
	for {
		l.mu.Lock()
		now := time.Now()
		allowAt := l.tat.Add(-time.Duration(l.burst-1) * l.interval)
		if l.slowUntil.After(allowAt) {
			allowAt = l.slowUntil
		}
		if !now.Before(allowAt) {
			if l.tat.Before(now) {
				l.tat = now
			}
			l.tat = l.tat.Add(l.interval)
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		if err := sleep(ctx, allowAt.Sub(now)); err != nil {
			return err
		}
	}
}

// Slow holds back this worker's calls for d (at least a second) and tells
// the others: the gateway answered 429 with Retry-After d.
func (l *Local) Slow(ctx context.Context, d time.Duration) {
	until := time.Now().Add(slowFor(d))
	l.SlowUntil(until)
	if l.broadcast != nil {
		l.broadcast(ctx, until)
	}
}

// SlowUntil holds back this worker's calls until t (another worker met a 429).
func (l *Local) SlowUntil(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.After(l.slowUntil) {
		l.slowUntil = t
	}
}
