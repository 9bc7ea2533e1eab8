package worker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/breaker"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/fleet"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/systemtest"
)

// captureMany authorises and publishes n captures of 1000 for merchant on
// gateway ("" for the default), keys prefix-0…, and returns the keys with
// their authorisations.
func captureMany(t *testing.T, s *systemtest.System, merchant, gateway, prefix string, n int) map[string]string {
	t.Helper()
	keys := make(map[string]string, n)
	for i := range n {
		key := fmt.Sprintf("%s-%d", prefix, i)
		auth := s.Sandbox.Authorise(merchant, 1000, "EUR")
		c := systemtest.Cmd{"command_id": key, "type": "capture", "merchant_id": merchant,
			"transaction_id": auth, "amount": 1000, "currency": "EUR"}
		if gateway != "" {
			c["gateway"] = gateway
		}
		s.Publish(t, "capture", c)
		keys[key] = auth
	}
	return keys
}

// waitSucceeded waits until every key of merchant has its capture.succeeded
// event, failing at the deadline; it returns when the last one came.
func waitSucceeded(t *testing.T, s *systemtest.System, merchant string, keys map[string]string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		done := 0
		for key := range keys {
			if systemtest.Count(s.EventsFor(merchant, key), events.CaptureSucceeded) > 0 {
				done++
			}
		}
		if done == len(keys) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d captures of %s succeeded after %v; dead letters so far: %d", done, len(keys), merchant, within, deadLetters(s))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deadLetters(s *systemtest.System) int {
	return systemtest.Count(s.Events(), events.DeadLettered)
}

// checkExactlyOnce checks that each key has exactly one terminal event, a
// success, and each authorisation exactly one capture at the gateway.
func checkExactlyOnce(t *testing.T, s *systemtest.System, merchant string, keys map[string]string) {
	t.Helper()
	for key, auth := range keys {
		evs := s.EventsFor(merchant, key)
		if systemtest.Count(evs, events.CaptureSucceeded) != 1 || systemtest.Count(evs, events.CaptureFailed) != 0 ||
			systemtest.Count(evs, events.DeadLettered) != 0 {
			t.Errorf("%s: events %s, want exactly one capture.succeeded", key, systemtest.Kinds(evs))
		}
		if ops := s.Sandbox.Applied(auth); len(ops) != 1 {
			t.Errorf("%s: %d captures at the gateway, want 1", key, len(ops))
		}
	}
}

// circuits records the circuit changes of the workers.
type circuits struct {
	mu      sync.Mutex
	changes []string // "worker gateway from→to"
}

func (c *circuits) record(worker, gateway string, ch breaker.Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes = append(c.changes, fmt.Sprintf("%s %s %s→%s", worker, gateway, ch.From, ch.To))
}

func (c *circuits) count(gateway string, to breaker.State) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.changes {
		var w, g, tr string
		fmt.Sscan(s, &w, &g, &tr)
		if g == gateway && len(tr) > 0 && tr[len(tr)-len(to.String()):] == to.String() {
			n++
		}
	}
	return n
}

// TestGatewayOutageWaitsInsteadOfDeadLettering: the outage, scaled
// down (a retry budget of 3s, an outage of 12s): 50 captures succeed, the
// gateway goes down (every call, status included, gets no answer), 200 more
// captures come; no dead letters however long past the budget the outage
// lasts, the gateway receives a bounded number of requests meanwhile
// (the calls in flight when it went down, then one probe per cool-down),
// and once it is back all 250 succeed exactly once, soon.
func TestGatewayOutageWaitsInsteadOfDeadLettering(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: a 12s outage")
	}
	o := systemtest.DefaultOptions()
	o.Retry = handlers.Retry{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, MaxElapsed: 3 * time.Second, MaxAttempts: 5}
	var cs circuits
	o.Guard = &systemtest.Guard{
		Breaker:    breaker.Settings{CoolDown: 500 * time.Millisecond, MaxCoolDown: 4 * time.Second},
		OutageWait: 30 * time.Minute,
		OnChange:   cs.record,
	}
	s := systemtest.Start(t, o)
	const m = "OUT1"
	before := captureMany(t, s, m, "", "before", 50)
	waitSucceeded(t, s, m, before, 20*time.Second)

	s.Sandbox.SetFaults(sandbox.Faults{Down: true, FaultStatus: true})
	down := time.Now()
	callsAtDown := s.Sandbox.Traffic(sandbox.GatewayPaymentOptions).Calls
	during := captureMany(t, s, m, "", "during", 200)
	time.Sleep(time.Until(down.Add(12 * time.Second)))
	duringCalls := s.Sandbox.Traffic(sandbox.GatewayPaymentOptions).Calls - callsAtDown
	if n := deadLetters(s); n != 0 {
		t.Fatalf("%d dead letters during a 12s outage with a 3s retry budget, want none", n)
	}
	// Without the circuit: up to 5 attempts × 200 commands. With it: the
	// calls in flight when it went down (16), then a probe per cool-down
	// (0.5, 1, 2, 4, 4 s).
	if duringCalls > 40 {
		t.Errorf("the gateway received %d requests during the outage, want ≤ 40 (in-flight calls and probes)", duringCalls)
	}
	if got := cs.count("paymentoptions", breaker.Open); got < 2 {
		t.Errorf("circuit opened %d times (the outage and failed probes), want ≥ 2", got)
	}

	s.Sandbox.SetFaults(sandbox.Faults{})
	up := time.Now()
	last := waitSucceeded(t, s, m, during, 30*time.Second)
	if d := last.Sub(up); d > 15*time.Second {
		t.Errorf("all commands done %v after the gateway came back, want within 15s (cool-down ≤ 4s)", d)
	}
	s.Settle(t)
	checkExactlyOnce(t, s, m, before)
	checkExactlyOnce(t, s, m, during)
	if n := deadLetters(s); n != 0 {
		t.Errorf("dead letters = %d, want none", n)
	}
	if got := cs.count("paymentoptions", breaker.Closed); got != 1 {
		t.Errorf("circuit closed %d times, want once, after the outage", got)
	}
	t.Logf("requests during the outage: %d; done %v after recovery", duringCalls, last.Sub(up))
}

// TestOutageOfOneGatewayLeavesTheOtherFlowing: PaymentOptions is down, SIBS
// is up: SIBS commands complete during the outage; PaymentOptions ones wait
// and complete after it.
func TestOutageOfOneGatewayLeavesTheOtherFlowing(t *testing.T) {
	o := systemtest.DefaultOptions()
	o.Retry = handlers.Retry{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, MaxElapsed: 2 * time.Second, MaxAttempts: 5}
	var cs circuits
	o.Guard = &systemtest.Guard{
		Breaker:    breaker.Settings{CoolDown: 500 * time.Millisecond, MaxCoolDown: time.Second},
		OutageWait: 30 * time.Minute,
		SIBS:       true,
		OnChange:   cs.record,
	}
	s := systemtest.Start(t, o)
	s.Sandbox.SetFaults(sandbox.Faults{Down: true, FaultStatus: true, Gateway: sandbox.GatewayPaymentOptions})
	po := captureMany(t, s, "PO1", "", "po", 40)
	sibsKeys := captureMany(t, s, "SIBS1", "sibs", "sibs", 40)
	waitSucceeded(t, s, "SIBS1", sibsKeys, 20*time.Second)
	if got := cs.count("paymentoptions", breaker.Open); got == 0 {
		t.Errorf("the PaymentOptions circuit never opened")
	}
	if got := cs.count("sibs", breaker.Open); got != 0 {
		t.Errorf("the SIBS circuit opened %d times, want never", got)
	}
	for key := range po {
		if n := len(s.EventsFor("PO1", key)); n != 0 {
			t.Fatalf("PaymentOptions command %s has events during the outage: %s", key, systemtest.Kinds(s.EventsFor("PO1", key)))
		}
	}
	s.Sandbox.SetFaults(sandbox.Faults{})
	waitSucceeded(t, s, "PO1", po, 20*time.Second)
	s.Settle(t)
	checkExactlyOnce(t, s, "PO1", po)
	checkExactlyOnce(t, s, "SIBS1", sibsKeys)
}

// TestRateLimitSharedByTheFleet: the gateway answers 429 beyond N requests
// in any sliding second; 3 workers with the limit set to N capture every
// command exactly once, with 429s ≤ 2 % of the requests, the busiest
// second ≤ 1.1 N, and the run ≤ 1.35 × commands/N seconds (the allowance is
// used). With Redis one GCRA schedule in Redis; with the KV store each
// worker takes its share, the number of workers learnt from the fleet's
// heartbeats. (The 1,500 commands scaled to 600 at 100/s.)
func TestRateLimitSharedByTheFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 6s of paced captures per store")
	}
	const (
		limit    = 100
		commands = 600
	)
	for _, store := range []struct {
		name string
		kv   bool
	}{{"redis", false}, {"jetstream-kv", true}} {
		t.Run(store.name, func(t *testing.T) {
			o := systemtest.DefaultOptions()
			o.KV = store.kv
			o.Workers = 3
			o.Retry = handlers.Retry{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, MaxElapsed: 5 * time.Second, MaxAttempts: 10}
			var fleets []*fleet.Fleet
			o.Guard = &systemtest.Guard{RateLimit: limit, OutageWait: 30 * time.Minute, Fleets: &fleets}
			s := systemtest.Start(t, o)
			if store.kv {
				deadline := time.Now().Add(5 * time.Second)
				for _, f := range fleets {
					for f.Workers() != 3 {
						if time.Now().After(deadline) {
							t.Fatalf("a worker counts %d workers, want 3", f.Workers())
						}
						time.Sleep(10 * time.Millisecond)
					}
				}
			}
			s.Sandbox.SetFaults(sandbox.Faults{RateLimit: limit})
			start := time.Now()
			keys := captureMany(t, s, "RATE1", "", "rate", commands)
			last := waitSucceeded(t, s, "RATE1", keys, 30*time.Second)
			took := last.Sub(start)
			s.Settle(t)
			checkExactlyOnce(t, s, "RATE1", keys)
			tr := s.Sandbox.Traffic(sandbox.GatewayPaymentOptions)
			if float64(tr.RateLimited) > 0.02*float64(tr.Calls) {
				t.Errorf("%d of %d requests were answered 429, want ≤ 2 %%", tr.RateLimited, tr.Calls)
			}
			if float64(tr.Peak) > 1.1*limit {
				t.Errorf("the busiest second held %d requests, want ≤ %d", tr.Peak, limit*11/10)
			}
			if max := time.Duration(1.35 * commands / limit * float64(time.Second)); took > max {
				t.Errorf("%d captures at %d/s took %v, want ≤ %v", commands, limit, took, max)
			}
			t.Logf("%d captures in %v (ideal %v); %d requests, %d answered 429, busiest second %d",
				commands, took.Round(time.Millisecond), time.Duration(commands)*time.Second/limit, tr.Calls, tr.RateLimited, tr.Peak)
		})
	}
}
