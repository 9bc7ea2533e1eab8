// Package metrics holds the worker's Prometheus collectors and small methods
// that record each measurement. Label values are drawn from short fixed sets
// (command type, outcome, gateway, operation, status): never an id, a key or
// a merchant, so the series count stays bounded.
package metrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Command outcomes, the outcome label of payworker_commands_total.
const (
	OutcomeSucceeded    = "succeeded"
	OutcomeFailed       = "failed"
	OutcomeRejected     = "rejected"
	OutcomeDuplicate    = "duplicate"
	OutcomeDeadLettered = "dead_lettered"
	OutcomeConflict     = "conflict"
	OutcomeRequeued     = "requeued"
)

// Idempotency claim results, the result label of
// payworker_idempotency_claims_total.
const (
	ClaimAcquired  = "acquired"
	ClaimResumed   = "resumed"
	ClaimCompleted = "completed"
	ClaimConflict  = "conflict"
	ClaimBusy      = "busy"
	ClaimError     = "error"
)

// typeUnknown is the type label of a message whose type is neither capture
// nor void.
const typeUnknown = "unknown"

var (
	commandTypes = []string{"capture", "void"}
	outcomes     = []string{OutcomeSucceeded, OutcomeFailed, OutcomeRejected, OutcomeDuplicate,
		OutcomeDeadLettered, OutcomeConflict, OutcomeRequeued}
	claimResults = []string{ClaimAcquired, ClaimResumed, ClaimCompleted, ClaimConflict, ClaimBusy, ClaimError}
	// deadLetterReasons are the reason label values of
	// payworker_dead_letters_total; any other reason is recorded as "other".
	deadLetterReasons = []string{"outcome_unknown", "gateway_unavailable", "retries_exhausted", "other"}
)

// Metrics records the worker's measurements. Its methods are safe for
// concurrent use. It satisfies handlers.Observer.
type Metrics struct {
	commands        *prometheus.CounterVec
	commandDuration *prometheus.HistogramVec
	inFlight        prometheus.Gauge
	gatewayDuration *prometheus.HistogramVec
	gatewayRetries  *prometheus.CounterVec
	claims          *prometheus.CounterVec
	reconciliations *prometheus.CounterVec
	events          *prometheus.CounterVec
	deadLetters     *prometheus.CounterVec
	ready           prometheus.Gauge
	storeUp         prometheus.Gauge
	pending         prometheus.Gauge
	ackPending      prometheus.Gauge
	storeDuration   *prometheus.HistogramVec
}

// New creates the worker's collectors and registers them on reg, with the Go
// runtime and process collectors (unless reg already has those). It panics if
// the worker's own collectors are already registered on reg: call it once per
// registry.
func New(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "payworker_commands_total",
			Help: "Commands handled, by command type and outcome.",
		}, []string{"type", "outcome"}),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "payworker_command_duration_seconds",
			Help:    "Time from receiving a command to acknowledging (or requeueing) it, retries included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"type"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "payworker_commands_in_flight",
			Help: "Commands being handled by this process now.",
		}),
		gatewayDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "payworker_gateway_request_duration_seconds",
			Help:    "Duration of one gateway HTTP request, by gateway, operation (capture, void, status) and HTTP status code or \"error\".",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30},
		}, []string{"gateway", "operation", "status"}),
		gatewayRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "payworker_gateway_retries_total",
			Help: "Gateway calls retried, by gateway, operation and reason.",
		}, []string{"gateway", "operation", "reason"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "payworker_idempotency_claims_total",
			Help: "Idempotency key claims, by result (acquired, resumed, completed, conflict, busy, error).",
		}, []string{"result"}),
		reconciliations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "payworker_reconciliations_total",
			Help: "Status checks after an unknown gateway outcome, by gateway and result.",
		}, []string{"gateway", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "payworker_events_published_total",
			Help: "Result events stored by JetStream, by kind.",
		}, []string{"kind"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "payworker_dead_letters_total",
			Help: "Commands dead-lettered, by command type and reason (outcome_unknown: the gateway may have applied it).",
		}, []string{"type", "reason"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "payworker_ready",
			Help: "1 when the last readiness check (what /readyz answers) passed, 0 when it failed.",
		}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "payworker_idempotency_store_up",
			Help: "1 when the last ping of the idempotency store (Redis or the key-value bucket) answered, 0 when it failed.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "payworker_consumer_pending",
			Help: "Commands in the stream not yet delivered to any worker of the shared consumer (its num_pending), at the last poll.",
		}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "payworker_consumer_ack_pending",
			Help: "Commands delivered by the shared consumer and not yet acknowledged (its num_ack_pending), at the last poll.",
		}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "payworker_idempotency_store_duration_seconds",
			Help:    "Duration of one idempotency store call, by operation (claim, renew, complete, release) and result (ok, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"operation", "result"}),
	}
	reg.MustRegister(m.commands, m.commandDuration, m.inFlight, m.gatewayDuration,
		m.gatewayRetries, m.claims, m.reconciliations, m.events, m.deadLetters, m.ready, m.storeUp,
		m.pending, m.ackPending, m.storeDuration)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				panic(err)
			}
		}
	}
	// Start the known series at zero so that rate() sees the first event.
	for _, typ := range commandTypes {
		m.commandDuration.WithLabelValues(typ)
		for _, o := range outcomes {
			m.commands.WithLabelValues(typ, o)
		}
	}
	for _, r := range claimResults {
		m.claims.WithLabelValues(r)
	}
	for _, op := range []string{"claim", "complete"} {
		m.storeDuration.WithLabelValues(op, "ok")
	}
	for _, typ := range commandTypes {
		for _, r := range deadLetterReasons {
			m.deadLetters.WithLabelValues(typ, r)
		}
	}
	return m
}

// CommandDone records one command's outcome and the time from receiving it
// to acknowledging it. typ is the command type, possibly read from an
// untrusted subject or body: any value but "capture" and "void" is recorded
// as "unknown". outcome is one of the Outcome constants.
func (m *Metrics) CommandDone(typ, outcome string, d time.Duration) {
	typ = commandType(typ)
	m.commands.WithLabelValues(typ, outcome).Inc()
	m.commandDuration.WithLabelValues(typ).Observe(d.Seconds())
}

// commandType is the type label of a command type: typ itself for "capture"
// and "void", "unknown" for anything else, so a hostile message can add no
// series.
func commandType(typ string) string {
	switch typ {
	case "capture", "void":
		return typ
	}
	return typeUnknown
}

// InFlight adds delta (+1 when a command is taken, -1 when it is done) to the
// in-flight gauge. Its method value fits worker.Config.InFlight.
func (m *Metrics) InFlight(delta int) { m.inFlight.Add(float64(delta)) }

// GatewayRequest records one gateway HTTP request. operation is "capture",
// "void" or "status"; status is the HTTP status code as text ("200") or
// "error" when no response came.
func (m *Metrics) GatewayRequest(gateway, operation, status string, d time.Duration) {
	m.gatewayDuration.WithLabelValues(gateway, operation, status).Observe(d.Seconds())
}

// Retry records a gateway call about to be retried and why (a short fixed
// word such as "timeout", "rate_limited" or "unknown_outcome").
func (m *Metrics) Retry(gateway, operation, reason string) {
	m.gatewayRetries.WithLabelValues(gateway, operation, reason).Inc()
}

// Claim records an idempotency claim's result, one of the Claim constants.
func (m *Metrics) Claim(result string) { m.claims.WithLabelValues(result).Inc() }

// Reconciled records the result of a status check made after an unknown
// gateway outcome ("applied", "not_applied", "unknown", ...).
func (m *Metrics) Reconciled(gateway, result string) {
	m.reconciliations.WithLabelValues(gateway, result).Inc()
}

// EventPublished records a result event stored by JetStream.
func (m *Metrics) EventPublished(kind string) { m.events.WithLabelValues(kind).Inc() }

// DeadLettered records a command dead-lettered and why: "outcome_unknown"
// (an attempt may have reached the gateway), "gateway_unavailable" or
// "retries_exhausted"; any other reason is recorded as "other".
func (m *Metrics) DeadLettered(typ, reason string) {
	switch reason {
	case "outcome_unknown", "gateway_unavailable", "retries_exhausted":
	default:
		reason = "other"
	}
	m.deadLetters.WithLabelValues(commandType(typ), reason).Inc()
}

// StoreCall records one idempotency store call and its duration.
func (m *Metrics) StoreCall(operation string, d time.Duration, failed bool) {
	result := "ok"
	if failed {
		result = "error"
	}
	m.storeDuration.WithLabelValues(operation, result).Observe(d.Seconds())
}

// SetReady records the verdict of a readiness check.
func (m *Metrics) SetReady(ok bool) { m.ready.Set(boolValue(ok)) }

// SetStoreUp records whether the idempotency store answered a ping.
func (m *Metrics) SetStoreUp(ok bool) { m.storeUp.Set(boolValue(ok)) }

// ConsumerLag records the shared consumer's pending (not yet delivered) and
// ack-pending (delivered, not yet acknowledged) message counts.
func (m *Metrics) ConsumerLag(pending, ackPending uint64) {
	m.pending.Set(float64(pending))
	m.ackPending.Set(float64(ackPending))
}

func boolValue(ok bool) float64 {
	if ok {
		return 1
	}
	return 0
}
