package systemtest

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/breaker"
	"github.com/payworker/payworker/internal/fleet"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/ratelimit"
	"github.com/payworker/payworker/internal/sibs"
)

// Guard is the gateway protection of the workers a System starts, as
// cmd/worker wires it: a circuit breaker per gateway and per worker, and a
// fleet-wide rate limit per gateway (in Redis with the Redis store, shared
// out by fleet heartbeats with the KV store).
type Guard struct {
	// Breaker shapes each gateway's circuit breaker.
	Breaker breaker.Settings
	// OutageWait is GATEWAY_OUTAGE_WAIT.
	OutageWait time.Duration
	// RateLimit is each gateway's limit in requests per second for all
	// the workers; 0 is none.
	RateLimit int
	// SIBS adds the SIBS gateway, on the same sandbox, beside
	// PaymentOptions; Routes routes merchants to a gateway.
	SIBS   bool
	Routes map[string]string
	// OnChange, when set, is told of each circuit change with the worker
	// and the gateway.
	OnChange func(worker, gateway string, c breaker.Change)
	// Fleets, with the KV store and a RateLimit, receives each worker's
	// fleet membership (to wait until the workers see each other).
	Fleets *[]*fleet.Fleet
}

// guard puts g's protection into the handler configuration of worker id.
func (s *System) guard(t testing.TB, id string, g *Guard, hc *handlers.Config) {
	t.Helper()
	if g.SIBS {
		base, err := url.Parse(s.Sandbox.SIBSBaseURL())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := sibs.New(sibs.Config{BaseURL: base, ClientID: "c", TerminalID: "1", Token: "t", Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		hc.Gateways["sibs"] = sc
	}
	hc.Routes = g.Routes
	hc.OutageWait = g.OutageWait
	hc.Breakers = map[string]*breaker.Breaker{}
	for name := range hc.Gateways {
		st := g.Breaker
		if g.OnChange != nil {
			st.OnChange = func(c breaker.Change) { g.OnChange(id, name, c) }
		}
		hc.Breakers[name] = breaker.New(st)
	}
	if g.RateLimit <= 0 {
		return
	}
	hc.Limiters = map[string]handlers.Limiter{}
	if s.Redis != nil {
		rdb := s.Redis.Client(t)
		for name := range hc.Gateways {
			hc.Limiters[name] = ratelimit.NewRedis(rdb, ratelimit.RedisOptions{Key: s.Redis.Prefix + "ratelimit:" + name, Rate: g.RateLimit})
		}
		return
	}
	pacers := map[string]*ratelimit.Local{}
	var f *fleet.Fleet
	for name := range hc.Gateways {
		p := ratelimit.NewLocal(ratelimit.LocalOptions{Rate: g.RateLimit,
			Broadcast: func(ctx context.Context, until time.Time) { _ = f.Slow(ctx, name, until) }})
		pacers[name] = p
		hc.Limiters[name] = p
	}
	f, err := fleet.Join(context.Background(), s.JS, fleet.Options{WorkerID: id,
		OnWorkers: func(n int) {
			for _, p := range pacers {
				p.SetWorkers(n)
			}
		},
		OnSlow: func(gw string, until time.Time) {
			if p := pacers[gw]; p != nil {
				p.SlowUntil(until)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if g.Fleets != nil {
		*g.Fleets = append(*g.Fleets, f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := f.Run(ctx); err != nil {
			t.Errorf("fleet of %s: %v", id, err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}
