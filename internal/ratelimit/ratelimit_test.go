package ratelimit_test

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/ratelimit"
	"github.com/payworker/payworker/internal/testenv"
)

// pacer is what both implementations offer.
type pacer interface {
	Wait(ctx context.Context) error
	Slow(ctx context.Context, d time.Duration)
}

// run has callers goroutines on each pacer make calls in all, and returns the
// times the calls were let through, sorted.
func run(t *testing.T, pacers []pacer, callers, calls int) []time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
		left  = calls
	)
	for _, p := range pacers {
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					if left == 0 {
						mu.Unlock()
						return
					}
					left--
					mu.Unlock()
					if err := p.Wait(ctx); err != nil {
						t.Errorf("Wait: %v", err)
						return
					}
					mu.Lock()
					times = append(times, time.Now())
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	return times
}

// busiest is the most calls in any window of length w.
func busiest(times []time.Time, w time.Duration) int {
	most, j := 0, 0
	for i := range times {
		for times[i].Sub(times[j]) >= w {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// checkPace checks that calls went at about rate per second and that no
// second held more than rate.
func checkPace(t *testing.T, times []time.Time, rate int) {
	t.Helper()
	if b := busiest(times, time.Second); b > rate {
		t.Errorf("busiest second held %d calls, want ≤ %d", b, rate)
	}
	took := times[len(times)-1].Sub(times[0]).Seconds()
	ideal := float64(len(times)-1) / float64(rate)
	if took < ideal*0.95 || took > ideal*1.25 {
		t.Errorf("%d calls took %.2fs, want about %.2fs at %d/s", len(times), took, ideal, rate)
	}
}

func TestRedisPacesTheFleet(t *testing.T) {
	r := testenv.StartRedis(t)
	const rate = 50
	var pacers []pacer
	var waited atomic.Int64
	for range 3 { // three workers, one schedule
		pacers = append(pacers, ratelimit.NewRedis(r.Client(t), ratelimit.RedisOptions{
			Key: r.Prefix + "paymentoptions", Rate: rate,
			OnWait: func(d time.Duration) { waited.Add(int64(d)) },
		}))
	}
	times := run(t, pacers, 8, 2*rate+1)
	checkPace(t, times, rate)
	// 24 callers, 101 calls in 2 s: most of them waited.
	if w := time.Duration(waited.Load()); w < 10*time.Second {
		t.Errorf("OnWait was told of %v in all, want the callers' waits (> 10s)", w)
	}
}

func TestRedisSlowHoldsEveryWorker(t *testing.T) {
	r := testenv.StartRedis(t)
	key := r.Prefix + "sibs"
	a := ratelimit.NewRedis(r.Client(t), ratelimit.RedisOptions{Key: key, Rate: 100})
	b := ratelimit.NewRedis(r.Client(t), ratelimit.RedisOptions{Key: key, Rate: 100})
	ctx := context.Background()
	if err := a.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.Slow(ctx, 1500*time.Millisecond) // a 429 with Retry-After 1.5s seen by a
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(start); got < 1400*time.Millisecond || got > 2500*time.Millisecond {
		t.Errorf("b's next call went after %v, want about 1.5s", got)
	}
	// A Slow never brings the schedule forward.
	a.Slow(ctx, 0) // no Retry-After: a second
	start = time.Now()
	a.Slow(ctx, 10*time.Millisecond)
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(start); got < 900*time.Millisecond {
		t.Errorf("after a 1s slow-down and a shorter one, b went after %v, want about 1s", got)
	}
}

func TestRedisDownFailsClosed(t *testing.T) {
	r := testenv.StartRedis(t)
	if !r.Own {
		t.Skip("needs its own redis-server")
	}
	p := ratelimit.NewRedis(r.Client(t), ratelimit.RedisOptions{Key: r.Prefix + "po", Rate: 1000})
	r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx); err == nil {
		t.Fatalf("Wait with Redis down = nil, want the context's error: no call goes unpaced")
	}
	r.Start()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := p.Wait(ctx2); err != nil {
		t.Errorf("Wait after Redis is back = %v, want nil", err)
	}
}

func TestShare(t *testing.T) {
	for _, c := range []struct {
		limit, workers int
		want           float64
	}{
		{100, 1, 97},
		{100, 3, 33 * 0.97},
		{10, 3, 3 * 0.97},
		{2, 4, 0.5 * 0.97},
		{100, 0, 97},
	} {
		if got := ratelimit.Share(c.limit, c.workers); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("Share(%d, %d) = %v, want %v", c.limit, c.workers, got, c.want)
		}
	}
}

func TestLocalSharesTheRate(t *testing.T) {
	const rate = 60
	var pacers []pacer
	var locals []*ratelimit.Local
	for range 3 {
		l := ratelimit.NewLocal(ratelimit.LocalOptions{Rate: rate, Workers: 3})
		pacers = append(pacers, l)
		locals = append(locals, l)
	}
	times := run(t, pacers, 4, rate+1)
	if b := busiest(times, time.Second); b > rate {
		t.Errorf("busiest second held %d calls, want ≤ %d", b, rate)
	}
	took := times[len(times)-1].Sub(times[0]).Seconds()
	if took < 0.9 || took > 1.3 {
		t.Errorf("%d calls on 3 workers took %.2fs, want about 1s", len(times), took)
	}
	// One worker left: the others take its share.
	locals[0].SetWorkers(2)
	if got := locals[0].Workers(); got != 2 {
		t.Errorf("Workers() = %d, want 2", got)
	}
}

func TestLocalSlow(t *testing.T) {
	var told time.Time
	l := ratelimit.NewLocal(ratelimit.LocalOptions{Rate: 1000, Broadcast: func(_ context.Context, until time.Time) { told = until }})
	ctx := context.Background()
	start := time.Now()
	l.Slow(ctx, 300*time.Millisecond) // at least a second
	if told.Sub(start) < time.Second {
		t.Errorf("broadcast until %v after the 429, want at least a second", told.Sub(start))
	}
	other := ratelimit.NewLocal(ratelimit.LocalOptions{Rate: 1000})
	other.SlowUntil(time.Now().Add(400 * time.Millisecond)) // told by the fleet
	if err := other.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(start); got < 350*time.Millisecond {
		t.Errorf("a worker told to slow down went after %v, want ≥ 400ms", got)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Wait(cctx); err == nil {
		t.Errorf("Wait with an ended context = nil, want its error")
	}
}
