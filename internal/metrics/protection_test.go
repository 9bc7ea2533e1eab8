package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestProtection(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := NewProtection(reg, "paymentoptions", "sibs")
	p.CircuitState("paymentoptions", 2)
	p.RateLimited("sibs", 1500*time.Millisecond)
	p.RateLimited("sibs", 500*time.Millisecond)

	want := `
# HELP payworker_gateway_circuit_state State of this worker's circuit breaker for the gateway: 0 closed, 1 half-open, 2 open.
# TYPE payworker_gateway_circuit_state gauge
payworker_gateway_circuit_state{gateway="paymentoptions"} 2
payworker_gateway_circuit_state{gateway="sibs"} 0
# HELP payworker_gateway_rate_limited_seconds_total Time calls to the gateway waited for their turn in its rate limit, summed over calls.
# TYPE payworker_gateway_rate_limited_seconds_total counter
payworker_gateway_rate_limited_seconds_total{gateway="paymentoptions"} 0
payworker_gateway_rate_limited_seconds_total{gateway="sibs"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"payworker_gateway_circuit_state", "payworker_gateway_rate_limited_seconds_total"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("lint %s: %s", pr.Metric, pr.Text)
	}
}
