package breaker_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/breaker"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newBreaker(t *testing.T, s breaker.Settings) (*breaker.Breaker, *clock, *[]breaker.Change) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
	var changes []breaker.Change
	s.Now = c.Now
	s.OnChange = func(ch breaker.Change) { changes = append(changes, ch) }
	return breaker.New(s), c, &changes
}

// call makes one call with result r and reports whether it was allowed.
func call(b *breaker.Breaker, r breaker.Result) bool {
	p, _, ok := b.Allow()
	if ok {
		p.Done(r)
	}
	return ok
}

func TestOpensOnConsecutiveFailures(t *testing.T) {
	b, _, changes := newBreaker(t, breaker.Settings{ConsecutiveFailures: 3})
	for i, r := range []breaker.Result{breaker.Failure, breaker.Failure, breaker.Success, breaker.Failure, breaker.Failure} {
		if !call(b, r) {
			t.Fatalf("call %d refused while closed", i)
		}
	}
	if got := b.State(); got != breaker.Closed {
		t.Fatalf("after F F S F F: state = %v, want closed (the success broke the run)", got)
	}
	call(b, breaker.Failure)
	if got := b.State(); got != breaker.Open {
		t.Fatalf("after a third failure in a row: state = %v, want open", got)
	}
	if len(*changes) != 1 || (*changes)[0].From != breaker.Closed || (*changes)[0].To != breaker.Open || (*changes)[0].ConsecutiveFailures != 3 {
		t.Errorf("changes = %+v, want one closed → open after 3 failures", *changes)
	}
	if call(b, breaker.Success) {
		t.Errorf("a call was allowed through an open circuit")
	}
}

func TestOpensOnFailureRatio(t *testing.T) {
	b, _, _ := newBreaker(t, breaker.Settings{ConsecutiveFailures: 100, FailureRatio: 0.5, MinCalls: 10, Window: 10 * time.Second})
	// 9 calls, 5 failing: fewer than MinCalls.
	for i := range 9 {
		r := breaker.Success
		if i%2 == 0 {
			r = breaker.Failure
		}
		call(b, r)
	}
	if got := b.State(); got != breaker.Closed {
		t.Fatalf("9 calls: state = %v, want closed (fewer than MinCalls)", got)
	}
	call(b, breaker.Success) // 10 calls, 5 failures: 50 %
	if got := b.State(); got != breaker.Closed {
		t.Fatalf("state after a success = %v, want closed (only failures trip)", got)
	}
	call(b, breaker.Failure) // 11 calls, 6 failures
	if got := b.State(); got != breaker.Open {
		t.Fatalf("6 of 11 failed: state = %v, want open", got)
	}

	// Old calls leave the window.
	b2, c2, _ := newBreaker(t, breaker.Settings{ConsecutiveFailures: 100, FailureRatio: 0.5, MinCalls: 10, Window: 10 * time.Second})
	for range 8 {
		call(b2, breaker.Failure)
		call(b2, breaker.Success)
	}
	c2.Add(11 * time.Second)
	for range 5 {
		call(b2, breaker.Success)
	}
	call(b2, breaker.Failure)
	if got := b2.State(); got != breaker.Closed {
		t.Errorf("1 failure in 6 calls of the last window: state = %v, want closed (older calls aged out)", got)
	}
}

func TestCoolDownProbesAndBackoff(t *testing.T) {
	b, c, changes := newBreaker(t, breaker.Settings{ConsecutiveFailures: 1, CoolDown: time.Second, MaxCoolDown: 3 * time.Second})
	call(b, breaker.Failure)
	start := c.Now()
	if got := b.OutageStart(); !got.Equal(start) {
		t.Errorf("OutageStart = %v, want %v", got, start)
	}
	steps := []struct {
		wait     time.Duration // the cool-down expected
		probe    breaker.Result
		wantNext breaker.State
	}{
		{time.Second, breaker.Failure, breaker.Open},
		{2 * time.Second, breaker.Failure, breaker.Open},
		{3 * time.Second, breaker.Failure, breaker.Open}, // bounded by MaxCoolDown
		{3 * time.Second, breaker.Ignored, breaker.HalfOpen},
		{0, breaker.Success, breaker.Closed},
	}
	for i, s := range steps {
		if s.wait > 0 {
			wait, ok := b.Ready()
			if ok || wait != s.wait {
				t.Fatalf("step %d: Ready() = %v, %v; want %v, false", i, wait, ok, s.wait)
			}
			c.Add(s.wait - time.Millisecond)
			if _, ok := b.Ready(); ok {
				t.Fatalf("step %d: ready a millisecond before the cool-down ends", i)
			}
			c.Add(time.Millisecond)
		}
		if got := b.State(); got != breaker.HalfOpen {
			t.Fatalf("step %d: state after the cool-down = %v, want half-open", i, got)
		}
		p, _, ok := b.Allow()
		if !ok {
			t.Fatalf("step %d: the probe was refused", i)
		}
		if _, wait, ok := b.Allow(); ok || wait != time.Second {
			t.Fatalf("step %d: a second call while the probe is out: allowed %v, wait %v; want refused, 1s", i, ok, wait)
		}
		p.Done(s.probe)
		if got := b.State(); got != s.wantNext {
			t.Fatalf("step %d: after a %v probe: state = %v, want %v", i, s.probe, got, s.wantNext)
		}
	}
	if !b.OutageStart().IsZero() {
		t.Errorf("OutageStart after closing = %v, want zero", b.OutageStart())
	}
	var seq []string
	for _, ch := range *changes {
		seq = append(seq, ch.To.String())
		if !ch.OutageStart.Equal(start) {
			t.Errorf("change %v → %v: OutageStart = %v, want %v", ch.From, ch.To, ch.OutageStart, start)
		}
	}
	want := "open half_open open half_open open half_open open half_open closed"
	if got := strings.Join(seq, " "); got != want {
		t.Errorf("changes = %s, want %s", got, want)
	}
	// A new outage starts from the first cool-down again.
	call(b, breaker.Failure)
	if wait, _ := b.Ready(); wait != time.Second {
		t.Errorf("cool-down of the next outage = %v, want 1s", wait)
	}
}

func TestStalePermitsAreNotCounted(t *testing.T) {
	b, c, _ := newBreaker(t, breaker.Settings{ConsecutiveFailures: 2, CoolDown: time.Second})
	// Two calls in flight when two others fail: their late answers belong
	// to the closed circuit and say nothing of the open one.
	late1, _, _ := b.Allow()
	late2, _, _ := b.Allow()
	call(b, breaker.Failure)
	call(b, breaker.Failure)
	late1.Done(breaker.Success)
	if got := b.State(); got != breaker.Open {
		t.Fatalf("a late success closed the circuit: state = %v, want open", got)
	}
	c.Add(time.Second)
	probe, _, ok := b.Allow()
	if !ok {
		t.Fatal("probe refused after the cool-down")
	}
	late2.Done(breaker.Failure)
	if got := b.State(); got != breaker.HalfOpen {
		t.Fatalf("a late failure reopened the circuit: state = %v, want half-open", got)
	}
	probe.Done(breaker.Success)
	if got := b.State(); got != breaker.Closed {
		t.Errorf("state after a good probe = %v, want closed", got)
	}
	var zero breaker.Permit
	zero.Done(breaker.Failure) // harmless
}

func TestIgnoredResultsCountForNothing(t *testing.T) {
	b, _, _ := newBreaker(t, breaker.Settings{ConsecutiveFailures: 2})
	for range 50 {
		call(b, breaker.Ignored)
	}
	call(b, breaker.Failure)
	call(b, breaker.Ignored)
	if got := b.State(); got != breaker.Closed {
		t.Fatalf("state = %v, want closed", got)
	}
	call(b, breaker.Failure)
	if got := b.State(); got != breaker.Open {
		t.Errorf("state = %v, want open: ignored calls do not break a run of failures", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	b := breaker.New(breaker.Settings{ConsecutiveFailures: 5, CoolDown: time.Millisecond})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				r := breaker.Success
				if (i+g)%3 != 0 {
					r = breaker.Failure
				}
				if p, _, ok := b.Allow(); ok {
					p.Done(r)
				}
				b.Ready()
				b.State()
			}
		}()
	}
	wg.Wait()
}
