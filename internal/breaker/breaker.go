// Package breaker is the circuit breaker of one payment gateway, in one
// worker process. It counts the calls that got no answer from the gateway
// (transport errors, timeouts, 5xx: Failure) against those that did (any
// other answer, a decline or a 4xx included: Success); when calls fail for
// every command it opens, and while open it lets no call through. After a
// cool-down it is half-open: a few probe calls go; the first that is
// answered closes it, a failed one opens it again with twice the cool-down,
// up to a bound.
//
// It is a small state machine rather than sony/gobreaker or failsafe-go
// because the handler needs two things neither gives as used here: a
// cool-down that grows each time a probe fails (gobreaker's Timeout is fixed)
// and how long until the next probe (what a paused command waits in
// JetStream); see docs/design.md.
package breaker

import (
	"fmt"
	"sync"
	"time"
)

// State is the state of a circuit. Its value is what the
// payworker_gateway_circuit_state metric shows.
type State int

// Circuit states.
const (
	// Closed: calls go through and are counted.
	Closed State = iota
	// HalfOpen: the cool-down is over; up to Settings.Probes calls at once
	// may go to find out whether the gateway is back.
	HalfOpen
	// Open: no call goes until the cool-down ends.
	Open
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half_open"
	case Open:
		return "open"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Result is what one call said of the gateway's health.
type Result int

// Results of a call.
const (
	// Success: the gateway answered, whatever the answer (a capture, a
	// decline, a 4xx, a 429, a status).
	Success Result = iota + 1
	// Failure: no answer: a transport error, a timeout, a 5xx.
	Failure
	// Ignored: nothing is learnt: the call was not made, or our own side
	// cut it short (shutdown, a lost lease).
	Ignored
)

// Settings shape a Breaker; zero fields get the defaults in brackets.
type Settings struct {
	// ConsecutiveFailures opens the circuit after that many failed calls in
	// a row [10].
	ConsecutiveFailures int
	// FailureRatio opens it when at least that share of the calls in the
	// last Window failed, once there were MinCalls of them [0.8, 20, 10s].
	FailureRatio float64
	MinCalls     int
	Window       time.Duration
	// CoolDown is how long the circuit stays open the first time [5s]; each
	// failed probe doubles it, up to MaxCoolDown [60s].
	CoolDown    time.Duration
	MaxCoolDown time.Duration
	// Probes is how many calls may be in flight at once while half-open [1].
	Probes int
	// Now is the clock [time.Now].
	Now func() time.Time
	// OnChange, when set, is told of every change of state, in order, with
	// the breaker's lock held: it must not call the Breaker.
	OnChange func(Change)
}

// Change is one change of a circuit's state.
type Change struct {
	From, To State
	At       time.Time
	// OutageStart is when the circuit opened from Closed: the start of the
	// outage this change belongs to (for a change to Closed, the outage
	// that ends).
	OutageStart time.Time
	// CoolDown is how long the circuit stays open (To == Open only).
	CoolDown time.Duration
	// Calls and Failures are the calls counted in the window when the
	// circuit opened from Closed, and ConsecutiveFailures the run that
	// ended in it.
	Calls, Failures, ConsecutiveFailures int
}

// buckets is the number of buckets of the failure-ratio window.
const buckets = 10

type bucket struct {
	epoch           int64 // which Window/buckets slice of time it counts
	calls, failures int
}

// Breaker is one gateway's circuit. It is safe for concurrent use.
type Breaker struct {
	s Settings

	mu          sync.Mutex
	state       State
	gen         uint64 // bumped on every change: older permits say nothing of now
	consecutive int
	window      [buckets]bucket
	until       time.Time // end of the cool-down (Open)
	coolDown    time.Duration
	outageStart time.Time
	probes      int // probes in flight (HalfOpen)
}

// New returns a closed Breaker.
func New(s Settings) *Breaker {
	if s.ConsecutiveFailures <= 0 {
		s.ConsecutiveFailures = 10
	}
	if s.FailureRatio <= 0 {
		s.FailureRatio = 0.8
	}
	if s.MinCalls <= 0 {
		s.MinCalls = 20
	}
	if s.Window <= 0 {
		s.Window = 10 * time.Second
	}
	if s.CoolDown <= 0 {
		s.CoolDown = 5 * time.Second
	}
	if s.MaxCoolDown < s.CoolDown {
		s.MaxCoolDown = max(60*time.Second, s.CoolDown)
	}
	if s.Probes <= 0 {
		s.Probes = 1
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	return &Breaker{s: s, coolDown: s.CoolDown}
}

// Permit is the right to make one call, from Allow. Its Done must be called
// once with what the call said; the zero Permit's Done does nothing.
type Permit struct {
	b     *Breaker
	gen   uint64
	probe bool
}

// Ready reports whether a call may be made now, without taking a permit (a
// call that will wait first, in a rate limiter, asks Allow afterwards).
// When not, wait is how long until it is worth asking again: the rest of
// the cool-down, or, while the probes are out, a short while.
func (b *Breaker) Ready() (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.s.Now()
	b.advance(now)
	switch b.state {
	case Open:
		return b.until.Sub(now), false
	case HalfOpen:
		if b.probes >= b.s.Probes {
			return b.probeWait(), false
		}
	}
	return 0, true
}

// Allow takes a permit for one call. When refused, wait is as for Ready.
func (b *Breaker) Allow() (p Permit, wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.s.Now()
	b.advance(now)
	switch b.state {
	case Open:
		return Permit{}, b.until.Sub(now), false
	case HalfOpen:
		if b.probes >= b.s.Probes {
			return Permit{}, b.probeWait(), false
		}
		b.probes++
		return Permit{b: b, gen: b.gen, probe: true}, 0, true
	}
	return Permit{b: b, gen: b.gen}, 0, true
}

// Done records what the call made under p said. A result of a permit taken
// before the last change of state is not counted: the circuit opened (or
// closed) since, on other evidence.
func (p Permit) Done(r Result) {
	b := p.b
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.gen != b.gen {
		return
	}
	now := b.s.Now()
	if p.probe {
		b.probes--
	}
	switch r {
	case Success:
		b.consecutive = 0
		b.count(now, false)
		if b.state == HalfOpen {
			b.set(Closed, now, Change{OutageStart: b.outageStart})
		}
	case Failure:
		b.consecutive++
		calls, failures := b.count(now, true)
		switch b.state {
		case Closed:
			if b.consecutive >= b.s.ConsecutiveFailures ||
				calls >= b.s.MinCalls && float64(failures) >= b.s.FailureRatio*float64(calls) {
				b.outageStart = now
				b.coolDown = b.s.CoolDown
				b.set(Open, now, Change{Calls: calls, Failures: failures, ConsecutiveFailures: b.consecutive})
			}
		case HalfOpen:
			b.coolDown = min(2*b.coolDown, b.s.MaxCoolDown)
			b.set(Open, now, Change{})
		}
	}
}

// State returns the circuit's state now.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advance(b.s.Now())
	return b.state
}

// OutageStart is when the circuit last opened from Closed: the start of the
// outage in progress. It is zero while the circuit is closed.
func (b *Breaker) OutageStart() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.outageStart
}

// advance turns an open circuit whose cool-down is over half-open.
func (b *Breaker) advance(now time.Time) {
	if b.state == Open && !now.Before(b.until) {
		b.set(HalfOpen, now, Change{})
	}
}

// probeWait is how long a call refused while the probes are out waits: the
// probe's answer is expected within about a call's time.
func (b *Breaker) probeWait() time.Duration {
	return min(b.s.CoolDown, time.Second)
}

// set changes the state and tells OnChange.
func (b *Breaker) set(to State, now time.Time, c Change) {
	c.From, c.To, c.At = b.state, to, now
	if c.OutageStart.IsZero() {
		c.OutageStart = b.outageStart
	}
	b.state = to
	b.gen++
	b.probes = 0
	switch to {
	case Open:
		b.until = now.Add(b.coolDown)
		c.CoolDown = b.coolDown
	case Closed:
		b.consecutive = 0
		b.window = [buckets]bucket{}
		b.coolDown = b.s.CoolDown
		b.outageStart = time.Time{}
	}
	if b.s.OnChange != nil {
		b.s.OnChange(c)
	}
}

// count adds a call to the window and returns the window's totals.
func (b *Breaker) count(now time.Time, failed bool) (calls, failures int) {
	width := int64(b.s.Window / buckets)
	if width <= 0 {
		width = 1
	}
	epoch := now.UnixNano() / width
	bk := &b.window[epoch%buckets]
	if bk.epoch != epoch {
		*bk = bucket{epoch: epoch}
	}
	bk.calls++
	if failed {
		bk.failures++
	}
	for _, w := range b.window {
		if w.epoch > epoch-buckets {
			calls += w.calls
			failures += w.failures
		}
	}
	return calls, failures
}
