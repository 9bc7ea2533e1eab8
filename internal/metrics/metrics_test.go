package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	// Touch every vector so that each family is gathered.
	m.CommandDone("capture", OutcomeSucceeded, time.Second)
	m.InFlight(1)
	m.GatewayRequest("paymentoptions", "capture", "200", time.Second)
	m.Retry("paymentoptions", "capture", "timeout")
	m.Claim(ClaimAcquired)
	m.Reconciled("sibs", "applied")
	m.EventPublished("capture.succeeded")

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("GatherAndLint error = %v", err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "payworker_") {
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
	}
	for _, want := range []string{
		"payworker_commands_total", "payworker_command_duration_seconds", "payworker_commands_in_flight",
		"payworker_gateway_request_duration_seconds", "payworker_gateway_retries_total",
		"payworker_idempotency_claims_total", "payworker_reconciliations_total",
		"payworker_events_published_total", "payworker_dead_letters_total", "payworker_ready",
		"payworker_idempotency_store_up", "payworker_consumer_pending", "payworker_consumer_ack_pending",
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if !have[want] {
			t.Errorf("Gather() lacks %s", want)
		}
	}
}

func TestValuesMove(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.CommandDone("capture", OutcomeSucceeded, 250*time.Millisecond)
	m.CommandDone("capture", OutcomeSucceeded, 2*time.Second)
	m.CommandDone("void", OutcomeDeadLettered, time.Second)
	m.InFlight(1)
	m.InFlight(1)
	m.InFlight(-1)
	m.GatewayRequest("paymentoptions", "capture", "502", time.Second)
	m.GatewayRequest("paymentoptions", "capture", "error", time.Second)
	m.Retry("paymentoptions", "capture", "rate_limited")
	m.Retry("paymentoptions", "capture", "rate_limited")
	m.Claim(ClaimBusy)
	m.Reconciled("paymentoptions", "not_applied")
	m.EventPublished("capture.succeeded")
	m.EventPublished("capture.succeeded")
	m.EventPublished("command.dead_lettered")

	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"commands capture succeeded", m.commands.WithLabelValues("capture", OutcomeSucceeded), 2},
		{"commands void dead_lettered", m.commands.WithLabelValues("void", OutcomeDeadLettered), 1},
		{"commands capture failed", m.commands.WithLabelValues("capture", OutcomeFailed), 0},
		{"in flight", m.inFlight, 1},
		{"retries", m.gatewayRetries.WithLabelValues("paymentoptions", "capture", "rate_limited"), 2},
		{"claims busy", m.claims.WithLabelValues(ClaimBusy), 1},
		{"claims acquired", m.claims.WithLabelValues(ClaimAcquired), 0},
		{"reconciliations", m.reconciliations.WithLabelValues("paymentoptions", "not_applied"), 1},
		{"events succeeded", m.events.WithLabelValues("capture.succeeded"), 2},
		{"events dead lettered", m.events.WithLabelValues("command.dead_lettered"), 1},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, got, tt.want)
		}
	}

	// Histograms: compare the gathered count and sum.
	const want = `
# HELP payworker_gateway_request_duration_seconds Duration of one gateway HTTP request, by gateway, operation (capture, void, status) and HTTP status code or "error".
# TYPE payworker_gateway_request_duration_seconds histogram
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="0.01"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="0.025"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="0.05"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="0.1"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="0.25"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="0.5"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="1"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="2.5"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="5"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="10"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="15"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="30"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="502",le="+Inf"} 1
payworker_gateway_request_duration_seconds_sum{gateway="paymentoptions",operation="capture",status="502"} 1
payworker_gateway_request_duration_seconds_count{gateway="paymentoptions",operation="capture",status="502"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="0.01"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="0.025"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="0.05"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="0.1"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="0.25"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="0.5"} 0
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="1"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="2.5"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="5"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="10"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="15"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="30"} 1
payworker_gateway_request_duration_seconds_bucket{gateway="paymentoptions",operation="capture",status="error",le="+Inf"} 1
payworker_gateway_request_duration_seconds_sum{gateway="paymentoptions",operation="capture",status="error"} 1
payworker_gateway_request_duration_seconds_count{gateway="paymentoptions",operation="capture",status="error"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "payworker_gateway_request_duration_seconds"); err != nil {
		t.Errorf("GatherAndCompare: %v", err)
	}
	if got, want := testutil.CollectAndCount(m.commandDuration), 2; got != want {
		t.Errorf("command duration series = %d, want %d (capture, void)", got, want)
	}
}

func TestNewSharedRuntimeCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("New on a registry with a Go collector panicked: %v", r)
		}
	}()
	New(reg)
}

func TestCommandTypeLabelIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	for _, typ := range []string{"capture", "void", "x{y}", "refund", "", "invalid", `a"b`, "capture.x", "Capture"} {
		m.CommandDone(typ, OutcomeRejected, time.Millisecond)
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"capture": true, "void": true, "unknown": true}
	seen := map[string]bool{}
	for _, f := range families {
		switch f.GetName() {
		case "payworker_commands_total", "payworker_command_duration_seconds":
		default:
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() != "type" {
					continue
				}
				seen[l.GetValue()] = true
				if !allowed[l.GetValue()] {
					t.Errorf("%s has type label %q, want capture, void or unknown", f.GetName(), l.GetValue())
				}
			}
		}
	}
	for v := range allowed {
		if !seen[v] {
			t.Errorf("no series with type label %q", v)
		}
	}

	tests := []struct {
		typ  string
		want float64
	}{
		{"capture", 1},
		{"void", 1},
		{"unknown", 7},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(m.commands.WithLabelValues(tt.typ, OutcomeRejected)); got != tt.want {
			t.Errorf("commands{type=%q,outcome=rejected} = %v, want %v", tt.typ, got, tt.want)
		}
	}
}

func TestStateGaugesAndDeadLetters(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.DeadLettered("capture", "outcome_unknown")
	m.DeadLettered("capture", "outcome_unknown")
	m.DeadLettered("void", "retries_exhausted")
	m.DeadLettered("refund", "some new reason")
	m.SetReady(true)
	m.SetStoreUp(false)
	m.ConsumerLag(42, 7)

	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"dead letters capture outcome_unknown", m.deadLetters.WithLabelValues("capture", "outcome_unknown"), 2},
		{"dead letters void retries_exhausted", m.deadLetters.WithLabelValues("void", "retries_exhausted"), 1},
		{"dead letters capture gateway_unavailable", m.deadLetters.WithLabelValues("capture", "gateway_unavailable"), 0},
		{"dead letters unknown other", m.deadLetters.WithLabelValues("unknown", "other"), 1},
		{"ready", m.ready, 1},
		{"store up", m.storeUp, 0},
		{"consumer pending", m.pending, 42},
		{"consumer ack pending", m.ackPending, 7},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, got, tt.want)
		}
	}
	m.SetReady(false)
	m.SetStoreUp(true)
	if got := testutil.ToFloat64(m.ready); got != 0 {
		t.Errorf("ready after SetReady(false) = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.storeUp); got != 1 {
		t.Errorf("store up after SetStoreUp(true) = %v, want 1", got)
	}
	// Every type × known reason starts at zero, so increase() sees the first.
	if got, want := testutil.CollectAndCount(m.deadLetters), 2*4+1; got != want {
		t.Errorf("dead letter series = %d, want %d", got, want)
	}
}

func TestStoreCallDurations(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.StoreCall("claim", 2*time.Millisecond, false)
	m.StoreCall("claim", 30*time.Millisecond, false)
	m.StoreCall("complete", time.Second, true)

	want := map[string]struct {
		count uint64
		sum   float64
	}{
		"claim ok":       {2, 0.032},
		"complete error": {1, 1},
		"complete ok":    {0, 0},
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]struct {
		count uint64
		sum   float64
	}{}
	for _, mf := range mfs {
		if mf.GetName() != "payworker_idempotency_store_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			var op, result string
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "operation":
					op = l.GetValue()
				case "result":
					result = l.GetValue()
				}
			}
			h := s.GetHistogram()
			got[op+" "+result] = struct {
				count uint64
				sum   float64
			}{h.GetSampleCount(), h.GetSampleSum()}
		}
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || g.count != w.count || g.sum < w.sum-1e-9 || g.sum > w.sum+1e-9 {
			t.Errorf("store duration %s = %+v (present %v), want %+v", k, g, ok, w)
		}
	}
}
