package systemtest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/streams"
)

// Crash points, named after the rows of the crash table in docs/design.md.
// Crashes reaches each from outside the handler, around the store, the
// gateways and the publisher a worker's handler is given.
const (
	// PointDecoded: after decoding, before the claim (the store's Claim is
	// called).
	PointDecoded = "after_decode"
	// PointClaimed: after the claim (acquired or resumed), before any gateway
	// call.
	PointClaimed = "after_claim"
	// PointRetryWait: after an attempt whose answer is retried (retryable or
	// unknown), before the backoff sleep.
	PointRetryWait = "retry_wait"
	// PointGatewayDone: after the gateway answered an attempt for good
	// (succeeded or declined: it may have applied the operation), before the
	// outcome is recorded.
	PointGatewayDone = "after_gateway"
	// PointRecorded: after recording the outcome, before publishing.
	PointRecorded = "after_record"
	// PointPublished: after a terminal event is stored, before the ack.
	PointPublished = "after_publish"
	// PointDeadLettered: after a dead letter's DLQ copy is stored, before the
	// ack.
	PointDeadLettered = "after_dlq"
)

// errKilled is what a call that "died" returns once the worker stops.
var errKilled = errors.New("systemtest: the worker was killed at a crash point")

// Crashes puts the crash points around one worker's store, gateways and
// publisher. At each point it asks its hook with the command's idempotency
// key. When the hook returns true the worker "dies" there: the call that
// reached the point never returns while the worker runs, and the
// delivery's lease renewals stall with it, so the handler makes no further
// write, ack, nak or release and the key's lease runs out, as after
// kill -9. A hook may also block, to pause the worker at that point: the
// delivery's renewals wait with it (a stalled process renews nothing).
//
// Renewals are told apart by the token the key was claimed with: a later
// holder of the key (another worker, or this one on a redelivery) claims it
// with a new token and is not held back.
type Crashes struct {
	hook    func(point, key string) bool
	streams streams.Config

	mu     sync.Mutex
	tokens map[string]int64        // the token of each key's last claim
	frozen map[int64]chan struct{} // tokens whose writes wait, until closed
	killed chan struct{}           // closed when the worker stops
	once   sync.Once
}

// NewCrashes returns Crashes that ask hook at each point; sc names the
// subjects of terminal events and dead letters.
func NewCrashes(hook func(point, key string) bool, sc streams.Config) *Crashes {
	return &Crashes{hook: hook, streams: sc, tokens: map[string]int64{}, frozen: map[int64]chan struct{}{}, killed: make(chan struct{})}
}

// Release ends the calls that died: they return an error, as the worker
// stops. Run it before stopping the worker.
func (c *Crashes) Release() { c.once.Do(func() { close(c.killed) }) }

// at asks the hook at point for key. While it runs, the writes of the key's
// current token wait. It reports whether the worker died there, after
// blocking until Release.
func (c *Crashes) at(point, key string, freeze bool) error {
	var thaw func()
	if freeze {
		c.mu.Lock()
		tok, ok := c.tokens[key]
		if ok {
			ch := make(chan struct{})
			c.frozen[tok] = ch
			thaw = func() {
				c.mu.Lock()
				delete(c.frozen, tok)
				c.mu.Unlock()
				close(ch)
			}
		}
		c.mu.Unlock()
	}
	if !c.hook(point, key) {
		if thaw != nil {
			thaw()
		}
		return nil
	}
	// Not ctx: a dead worker does not give up a call at its deadline and
	// carry on.
	<-c.killed
	return errKilled
}

// wait holds a write of token while it is frozen, whatever its context
// says: a stalled process neither writes nor gives up, so its renewal ticker
// sends nothing more either.
func (c *Crashes) wait(token int64) error {
	c.mu.Lock()
	ch := c.frozen[token]
	c.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-c.killed:
		return errKilled
	}
}

// Wrap puts the crash points around the store, gateways and publisher of
// hc.
func (c *Crashes) Wrap(hc *handlers.Config) {
	hc.Store = c.Store(hc.Store)
	gws := make(map[string]handlers.Gateway, len(hc.Gateways))
	for name, g := range hc.Gateways {
		gws[name] = c.Gateway(g)
	}
	hc.Gateways = gws
	hc.JetStream = c.Publisher(hc.JetStream)
}

// Store wraps s with PointDecoded, PointClaimed and PointRecorded.
func (c *Crashes) Store(s handlers.Store) handlers.Store { return crashStore{s, c} }

// Gateway wraps g with PointRetryWait and PointGatewayDone.
func (c *Crashes) Gateway(g handlers.Gateway) handlers.Gateway { return crashGateway{g, c} }

// Publisher wraps p with PointPublished and PointDeadLettered.
func (c *Crashes) Publisher(p handlers.Publisher) handlers.Publisher { return crashPublisher{p, c} }

type crashStore struct {
	handlers.Store
	c *Crashes
}

func (s crashStore) Claim(ctx context.Context, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	if err := s.c.at(PointDecoded, req.Key, false); err != nil {
		return idempotency.Claim{}, err
	}
	claim, err := s.Store.Claim(ctx, req)
	if err != nil || (claim.Status != idempotency.Acquired && claim.Status != idempotency.Resumed) {
		return claim, err
	}
	s.c.mu.Lock()
	s.c.tokens[req.Key] = claim.Record.Token
	s.c.mu.Unlock()
	if err := s.c.at(PointClaimed, req.Key, true); err != nil {
		return idempotency.Claim{}, err
	}
	return claim, nil
}

func (s crashStore) Renew(ctx context.Context, scope, key, txn string, token int64, lease time.Duration) error {
	if err := s.c.wait(token); err != nil {
		return err
	}
	return s.Store.Renew(ctx, scope, key, txn, token, lease)
}

func (s crashStore) Complete(ctx context.Context, scope, key, txn string, token int64, out idempotency.Outcome) error {
	if err := s.c.wait(token); err != nil {
		return err
	}
	if err := s.Store.Complete(ctx, scope, key, txn, token, out); err != nil {
		return err
	}
	return s.c.at(PointRecorded, key, true)
}

func (s crashStore) Release(ctx context.Context, scope, key, txn string, token int64, uncertain bool) error {
	if err := s.c.wait(token); err != nil {
		return err
	}
	return s.Store.Release(ctx, scope, key, txn, token, uncertain)
}

type crashGateway struct {
	handlers.Gateway
	c *Crashes
}

func (g crashGateway) Execute(ctx context.Context, req gateway.Request) gateway.Result {
	res := g.Gateway.Execute(ctx, req)
	point := PointGatewayDone
	if res.Outcome == gateway.Retryable || res.Outcome == gateway.Unknown {
		point = PointRetryWait
	}
	if err := g.c.at(point, req.Reference, true); err != nil {
		return gateway.Result{Outcome: gateway.Unknown, Err: err}
	}
	return res
}

type crashPublisher struct {
	handlers.Publisher
	c *Crashes
}

func (p crashPublisher) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := p.Publisher.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return ack, err
	}
	var point, key string
	switch sc := p.c.streams; {
	case strings.HasPrefix(msg.Subject, sc.EventSubject("")):
		var ev events.Event
		if k, ok := events.KindOfType("payments." + strings.TrimPrefix(msg.Subject, sc.EventSubject(""))); !ok || !k.Terminal() ||
			json.Unmarshal(msg.Data, &ev) != nil {
			return ack, nil
		}
		point, key = PointPublished, ev.Data.IdempotencyKey
	case strings.HasPrefix(msg.Subject, sc.DLQSubject("")) && msg.Subject != sc.DLQSubject("invalid"):
		var cmd struct {
			Key string `json:"idempotency_key"`
		}
		if json.Unmarshal(msg.Data, &cmd) != nil {
			return ack, nil
		}
		point, key = PointDeadLettered, cmd.Key
	default:
		return ack, nil
	}
	if err := p.c.at(point, key, true); err != nil {
		return nil, err
	}
	return ack, nil
}
