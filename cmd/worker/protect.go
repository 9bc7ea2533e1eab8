package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/payworker/payworker/internal/breaker"
	"github.com/payworker/payworker/internal/fleet"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/metrics"
	"github.com/payworker/payworker/internal/ratelimit"
)

// protection builds the gateway protection of SPEC §8 for the configured
// gateways: a circuit breaker each (per worker process), and, for a gateway
// with a rate limit, its pacer: one GCRA schedule in Redis for the whole
// fleet with the Redis store, else this worker's share of the limit, the
// live workers counted by heartbeats in a JetStream key-value bucket
// (a.fleet, run by serve).
func (a *app) protection(ctx context.Context, gateways map[string]handlers.Gateway) (map[string]*breaker.Breaker, map[string]handlers.Limiter, error) {
	names := make([]string, 0, len(gateways))
	for name := range gateways {
		names = append(names, name)
	}
	pm := metrics.NewProtection(a.reg, names...)
	breakers := make(map[string]*breaker.Breaker, len(names))
	for _, name := range names {
		breakers[name] = breaker.New(breaker.Settings{
			ConsecutiveFailures: a.cfg.BreakerFailures,
			CoolDown:            a.cfg.BreakerCoolDown,
			MaxCoolDown:         a.cfg.BreakerMaxCoolDown,
			OnChange:            a.circuitChanged(name, pm),
		})
	}

	limits := map[string]int{}
	for _, name := range names {
		if n := a.rateLimit(name); n > 0 {
			limits[name] = n
		}
	}
	limiters := make(map[string]handlers.Limiter, len(limits))
	if len(limits) == 0 {
		return breakers, limiters, nil
	}
	if a.rdb != nil {
		for name, n := range limits {
			limiters[name] = ratelimit.NewRedis(a.rdb, ratelimit.RedisOptions{
				Key: "payworker:ratelimit:" + name, Rate: n,
				OnWait: func(d time.Duration) { pm.RateLimited(name, d) },
			})
			a.log.Info("gateway rate limit shared in Redis by the fleet", slog.String("gateway", name), slog.Int("per_second", n))
		}
		return breakers, limiters, nil
	}
	pacers := map[string]*ratelimit.Local{}
	for name, n := range limits {
		p := ratelimit.NewLocal(ratelimit.LocalOptions{Rate: n,
			OnWait: func(d time.Duration) { pm.RateLimited(name, d) },
			Broadcast: func(ctx context.Context, until time.Time) {
				if err := a.fleet.Slow(ctx, name, until); err != nil {
					a.log.Warn("telling the fleet to slow down failed", slog.String("gateway", name), slog.Any("error", err))
				}
			}})
		pacers[name], limiters[name] = p, p
	}
	f, err := fleet.Join(ctx, a.js, fleet.Options{
		Replicas: a.cfg.Streams.Replicas, WorkerID: a.cfg.WorkerID,
		Logger: a.log.With(slog.String("component", "fleet")),
		OnWorkers: func(n int) {
			for name, p := range pacers {
				p.SetWorkers(n)
				a.log.Info("gateway rate limit shared by the live workers", slog.String("gateway", name),
					slog.Int("per_second", limits[name]), slog.Int("workers", n), slog.Float64("this_worker_per_second", ratelimit.Share(limits[name], n)))
			}
		},
		OnSlow: func(gw string, until time.Time) {
			if p := pacers[gw]; p != nil {
				p.SlowUntil(until)
			}
		},
	})
	if err != nil {
		return nil, nil, placementError(a.cfg.Streams.Replicas, fmt.Errorf("gateway rate limit: %w", err))
	}
	a.fleet = f
	return breakers, limiters, nil
}

// rateLimit is the configured limit of the gateway name, 0 for none.
func (a *app) rateLimit(name string) int {
	switch name {
	case GatewayPaymentOptions:
		return a.cfg.PaymentOptionsRateLimit
	case GatewaySIBS:
		return a.cfg.SIBSRateLimit
	}
	return 0
}

// circuitChanged logs and measures the changes of a gateway's circuit: one
// WARN when it opens on an outage and one INFO when it closes, the probes
// between them at DEBUG, not a line per command.
func (a *app) circuitChanged(gateway string, pm *metrics.Protection) func(breaker.Change) {
	log := a.log.With(slog.String("gateway", gateway))
	return func(c breaker.Change) {
		pm.CircuitState(gateway, int(c.To))
		switch {
		case c.From == breaker.Closed && c.To == breaker.Open:
			log.Warn("gateway circuit open: its calls are failing for every command; no new call to it, its commands wait in JetStream",
				slog.Int("consecutive_failures", c.ConsecutiveFailures), slog.Int("failures", c.Failures), slog.Int("calls", c.Calls),
				slog.Duration("probe_in", c.CoolDown), slog.Duration("outage_wait", a.cfg.GatewayOutageWait))
		case c.To == breaker.Closed:
			log.Info("gateway circuit closed: the gateway answers again; its commands resume",
				slog.Duration("outage", c.At.Sub(c.OutageStart).Round(time.Millisecond)))
		case c.To == breaker.Open:
			log.Debug("gateway probe failed: circuit open again", slog.Duration("probe_in", c.CoolDown),
				slog.Duration("outage", c.At.Sub(c.OutageStart).Round(time.Millisecond)))
		default:
			log.Debug("gateway circuit half-open: probing")
		}
	}
}

// runFleet keeps this worker's fleet membership until ctx ends. A fleet that
// cannot watch leaves the pacers at the last count of workers: the worker
// goes on.
func (a *app) runFleet(ctx context.Context) error {
	if err := a.fleet.Run(ctx); err != nil {
		a.log.Warn("fleet membership stopped: the gateway rate limit stays shared by the last count of workers", slog.Any("error", err))
	}
	return nil
}
