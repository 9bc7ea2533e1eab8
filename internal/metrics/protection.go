package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Protection records what the gateways' circuit breakers and rate limits do
// (SPEC §8). Its methods are safe for concurrent use.
type Protection struct {
	circuitState *prometheus.GaugeVec
	rateLimited  *prometheus.CounterVec
}

// NewProtection creates the gateway protection collectors and registers
// them on reg, with a series at zero for each of gateways (a closed circuit,
// no wait). It panics if they are already registered on reg.
func NewProtection(reg *prometheus.Registry, gateways ...string) *Protection {
	p := &Protection{
		circuitState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "payworker_gateway_circuit_state",
			Help: "State of this worker's circuit breaker for the gateway: 0 closed, 1 half-open, 2 open.",
		}, []string{"gateway"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "payworker_gateway_rate_limited_seconds_total",
			Help: "Time calls to the gateway waited for their turn in its rate limit, summed over calls.",
		}, []string{"gateway"}),
	}
	reg.MustRegister(p.circuitState, p.rateLimited)
	for _, g := range gateways {
		p.circuitState.WithLabelValues(g)
		p.rateLimited.WithLabelValues(g)
	}
	return p
}

// CircuitState records the state of the gateway's circuit: 0 closed, 1
// half-open, 2 open (breaker.State's values).
func (p *Protection) CircuitState(gateway string, state int) {
	p.circuitState.WithLabelValues(gateway).Set(float64(state))
}

// RateLimited adds one call's wait for its turn in the gateway's rate limit.
func (p *Protection) RateLimited(gateway string, d time.Duration) {
	p.rateLimited.WithLabelValues(gateway).Add(d.Seconds())
}
