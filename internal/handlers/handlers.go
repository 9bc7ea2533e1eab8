// Package handlers decides what becomes of one command message: it decodes and
// validates it, claims its idempotency key, drives the gateway with backoff and
// reconciliation, records the outcome, publishes the result event and only then
// acknowledges the message. Every ack decision lives in this package.
package handlers

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/payworker/payworker/internal/breaker"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/streams"
)

// Gateway is what the handler needs from a gateway adapter.
type Gateway interface {
	// Execute makes one attempt at the operation and classifies its outcome.
	Execute(ctx context.Context, req gateway.Request) gateway.Result
	// Status asks what became of the authorisation; an error means it could not tell.
	Status(ctx context.Context, req gateway.Request) (gateway.Status, error)
}

// Store is what the handler needs from the idempotency store.
type Store interface {
	Claim(ctx context.Context, req idempotency.ClaimRequest) (idempotency.Claim, error)
	Renew(ctx context.Context, scope, key, txn string, token int64, lease time.Duration) error
	Complete(ctx context.Context, scope, key, txn string, token int64, out idempotency.Outcome) error
	Release(ctx context.Context, scope, key, txn string, token int64, uncertain bool) error
}

// Observer receives the handler's measurements (Prometheus in production).
type Observer interface {
	CommandDone(typ, outcome string, d time.Duration)
	GatewayRequest(gateway, operation, status string, d time.Duration)
	Retry(gateway, operation, reason string)
	Claim(result string)
	Reconciled(gateway, result string)
	EventPublished(kind string)
	// DeadLettered is a command dead-lettered, with its reason
	// (outcome_unknown, gateway_unavailable, retries_exhausted).
	DeadLettered(typ, reason string)
	// StoreCall is one call of the idempotency store (claim, renew,
	// complete, release) and how long it took; failed says it returned an
	// error (a fenced write included).
	StoreCall(operation string, d time.Duration, failed bool)
}

// Retry bounds the gateway attempts of one command: exponential backoff with
// jitter from Initial to Max between attempts, at most MaxAttempts gateway calls
// (status calls included) and MaxElapsed in all.
type Retry struct {
	Initial     time.Duration
	Max         time.Duration
	MaxElapsed  time.Duration
	MaxAttempts int
}

// Publisher stores a message in JetStream and returns its acknowledgement:
// all the handler needs of JetStream (events, dead letters).
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Config is everything a Handler is built from.
type Config struct {
	// JetStream stores the result events and the dead letters.
	JetStream Publisher
	Streams   streams.Config
	Store     Store
	// Gateways maps a gateway name ("paymentoptions", "sibs") to its adapter;
	// only configured gateways are present.
	Gateways map[string]Gateway
	// Routes maps a merchant to its gateway when the command names none.
	Routes map[string]string
	// DefaultGateway serves commands that name none and have no route.
	DefaultGateway string
	Retry          Retry
	// Settle maps a gateway to its settle delay: how long after an attempt
	// whose outcome is unknown (or after taking over a key whose holder may
	// still be mid-call) its status is first asked, so that a request the
	// gateway is still processing is not read as "not applied". A gateway
	// missing from the map has none.
	Settle map[string]time.Duration
	// Breakers maps a gateway to its circuit breaker and Limiters to the
	// pacer of its rate limit; a gateway missing from either has none (see
	// protect.go). OutageWait is GATEWAY_OUTAGE_WAIT: for how long after a
	// gateway's circuit opened its commands wait the outage out in
	// JetStream without spending their retry budget; 0 never pauses them.
	Breakers   map[string]*breaker.Breaker
	Limiters   map[string]Limiter
	OutageWait time.Duration
	// Lease is the idempotency lease; it is renewed every Lease/3 while work runs.
	Lease time.Duration
	// AckWait is the consumer's ack wait; InProgress is sent every AckWait/3.
	AckWait time.Duration
	// Holder names this worker in idempotency records.
	Holder string
	// Source is the CloudEvents source of the events it publishes.
	Source   string
	Logger   *slog.Logger
	Observer Observer
	// Tracer makes the spans of each command (CONSUMER for its handling,
	// PRODUCER for each publish, the store claim); nil is OpenTelemetry's
	// no-op tracer, and the command's trace context still goes on every
	// event. The CLIENT span of each gateway HTTP call is the gateway
	// client's transport's (tracing.Transport), child of the CONSUMER span;
	// the handler names the call in its context (tracing.GatewayCall).
	Tracer trace.Tracer
	// Now and Sleep are the clock; tests replace them. Sleep returns ctx.Err()
	// when ctx ends first.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Handler processes command messages. It is safe for concurrent use: the
// worker runs up to WORKER_CONCURRENCY Handle calls at once.
type Handler struct {
	cfg Config
	log *slog.Logger
	obs Observer
}

// New returns a Handler; zero durations and a nil Logger, Observer, Now or
// Sleep get working defaults.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Retry.Initial <= 0 {
		cfg.Retry.Initial = 200 * time.Millisecond
	}
	if cfg.Retry.Max <= 0 {
		cfg.Retry.Max = 10 * time.Second
	}
	if cfg.Retry.MaxElapsed <= 0 {
		cfg.Retry.MaxElapsed = 2 * time.Minute
	}
	if cfg.Retry.MaxAttempts <= 0 {
		cfg.Retry.MaxAttempts = 10
	}
	if cfg.Source == "" {
		cfg.Source = "urn:payworker:worker"
	}
	cfg.Store = timedStore{Store: cfg.Store, obs: cfg.Observer}
	return &Handler{cfg: cfg, log: cfg.Logger, obs: cfg.Observer}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type nopObserver struct{}

func (nopObserver) CommandDone(string, string, time.Duration)            {}
func (nopObserver) GatewayRequest(string, string, string, time.Duration) {}
func (nopObserver) Retry(string, string, string)                         {}
func (nopObserver) Claim(string)                                         {}
func (nopObserver) Reconciled(string, string)                            {}
func (nopObserver) EventPublished(string)                                {}
func (nopObserver) DeadLettered(string, string)                          {}
func (nopObserver) StoreCall(string, time.Duration, bool)                {}

// timedStore reports each call of the store to an Observer.
type timedStore struct {
	Store
	obs Observer
}

func (s timedStore) Claim(ctx context.Context, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	start := time.Now()
	c, err := s.Store.Claim(ctx, req)
	s.obs.StoreCall("claim", time.Since(start), err != nil)
	return c, err
}

func (s timedStore) Renew(ctx context.Context, scope, key, txn string, token int64, lease time.Duration) error {
	start := time.Now()
	err := s.Store.Renew(ctx, scope, key, txn, token, lease)
	s.obs.StoreCall("renew", time.Since(start), err != nil)
	return err
}

func (s timedStore) Complete(ctx context.Context, scope, key, txn string, token int64, out idempotency.Outcome) error {
	start := time.Now()
	err := s.Store.Complete(ctx, scope, key, txn, token, out)
	s.obs.StoreCall("complete", time.Since(start), err != nil)
	return err
}

func (s timedStore) Release(ctx context.Context, scope, key, txn string, token int64, uncertain bool) error {
	start := time.Now()
	err := s.Store.Release(ctx, scope, key, txn, token, uncertain)
	s.obs.StoreCall("release", time.Since(start), err != nil)
	return err
}
