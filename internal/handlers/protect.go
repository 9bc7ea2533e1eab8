package handlers

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/payworker/payworker/internal/breaker"
	"github.com/payworker/payworker/internal/gateway"
)

// Gateway protection (SPEC §8): before every call to a gateway, its status
// calls included, the handler asks the gateway's circuit breaker and waits
// its turn in the gateway's rate limit.
//
//	| the circuit is…                          | the command…                                              |
//	|------------------------------------------|-----------------------------------------------------------|
//	| closed, or half-open with a probe free   | waits its turn in the pacer (not counted in its budget), calls |
//	| open (or the probes are out), and the    | is handed back: key released (uncertain kept), message    |
//	| outage is younger than OutageWait        | NakWithDelay'd for about the rest of the cool-down; its   |
//	|                                          | next run starts a new budget                              |
//	| open, the outage older than OutageWait   | waits within its own budget (the cool-down as a floor);   |
//	| (or OutageWait is 0)                     | at its end, dead-lettered as gateway_unavailable (or      |
//	|                                          | outcome_unknown when uncertain)                           |
//
// A 429 slows every worker's calls to that gateway through the pacer, and
// the command that met it waits its next turn there rather than in its
// budget.

// Limiter paces the calls to one gateway for the whole fleet
// (ratelimit.Redis, ratelimit.Local).
type Limiter interface {
	// Wait blocks until this call's turn, or until ctx ends (its error).
	Wait(ctx context.Context) error
	// Slow holds back every worker's calls to the gateway for d: the
	// gateway answered 429 with Retry-After d (0 when it gave none).
	Slow(ctx context.Context, d time.Duration)
}

// minPause is the least a command handed back for an open circuit waits in
// JetStream.
const minPause = 250 * time.Millisecond

// guard is what stands between a command and its gateway; either part may
// be nil.
type guard struct {
	circuit *breaker.Breaker
	pacer   Limiter
}

func (h *Handler) guard(gwName string) guard {
	return guard{circuit: h.cfg.Breakers[gwName], pacer: h.cfg.Limiters[gwName]}
}

// admit asks whether one call to the gateway may be made now and, if so,
// waits its turn in the pacer; the time waited there is not counted in the
// budget. It returns the circuit's permit, to be told what the call said,
// and true. Otherwise the call is not made: with ex.verdict set the command
// ends here (handed back, out of budget, aborted); without, the caller
// starts its loop again.
func (h *Handler) admit(ctx context.Context, g guard, b backoff.BackOff, ex *execution, gwName string, req gateway.Request) (breaker.Permit, bool) {
	if g.circuit != nil {
		if wait, ok := g.circuit.Ready(); !ok {
			h.refused(ctx, g, b, ex, wait, gwName, req)
			return breaker.Permit{}, false
		}
	}
	if g.pacer != nil {
		t := h.cfg.Now()
		err := g.pacer.Wait(ctx)
		ex.paced += h.cfg.Now().Sub(t)
		if err != nil {
			ex.verdict = verdictAborted
			return breaker.Permit{}, false
		}
	}
	if g.circuit == nil {
		ex.refused = false
		return breaker.Permit{}, true
	}
	p, wait, ok := g.circuit.Allow()
	if !ok {
		// It opened, or its probes went out, while this call waited its turn.
		h.refused(ctx, g, b, ex, wait, gwName, req)
		return p, false
	}
	ex.refused = false
	return p, true
}

// refused decides what becomes of a command whose call the open circuit
// refused; wait is how long until the circuit may let a call through.
func (h *Handler) refused(ctx context.Context, g guard, b backoff.BackOff, ex *execution, wait time.Duration, gwName string, req gateway.Request) {
	ex.refused = true
	if h.cfg.OutageWait > 0 {
		since := time.Duration(0)
		if start := g.circuit.OutageStart(); !start.IsZero() {
			since = h.cfg.Now().Sub(start)
		}
		if since < h.cfg.OutageWait {
			ex.verdict, ex.pause = verdictPaused, wait
			return
		}
	}
	// No pause (any more): the normal budget applies, and the next call
	// can come no sooner than the circuit lets one through.
	h.wait(ctx, b, ex, max(wait, minPause), gwName, req, "circuit_open")
}

// attemptHealth is what an attempt's result says of the gateway: any answer
// is a Success (a decline, a 4xx, a 429, an unclear code: the gateway is
// there), no answer or a 5xx a Failure. A call our side cut short, or never
// made, says nothing.
func attemptHealth(ctx context.Context, res gateway.Result) breaker.Result {
	switch {
	case ctx.Err() != nil, errors.Is(res.Err, errLeaseLost):
		return breaker.Ignored
	case res.HTTPStatus >= 500:
		return breaker.Failure
	case res.HTTPStatus != 0:
		return breaker.Success
	case res.Outcome == gateway.Retryable, res.Outcome == gateway.Unknown:
		return breaker.Failure // no answer: refused, reset, timed out
	}
	return breaker.Ignored // refused before any request (e.g. an unknown currency)
}

// statusHealth is what a status call says of the gateway. The status of an
// authorisation we hold is always answered by a working gateway (404 is an
// answer, not an error), so any error is a Failure unless our side cut the
// call short.
func statusHealth(ctx context.Context, err error) breaker.Result {
	switch {
	case err == nil:
		return breaker.Success
	case ctx.Err() != nil, errors.Is(err, errLeaseLost):
		return breaker.Ignored
	}
	return breaker.Failure
}

// pause hands back a command that met an open circuit while the outage is
// younger than OutageWait: its key is released, keeping uncertain (an
// attempt whose outcome is unknown is reconciled through the status call
// before anything else when it comes back), and the message is redelivered
// after about the rest of the cool-down. The budget it had is not spent:
// its next run starts a new one.
func (h *Handler) pause(fin context.Context, d *delivery, ex execution) {
	if err := h.cfg.Store.Release(fin, d.cmd.MerchantID, d.cmd.Key(), d.cmd.TransactionID, d.token, ex.uncertain); err != nil {
		d.log.Warn("release for the outage pause (the lease will expire instead)", slog.Any("error", err))
	}
	delay := jitter(max(ex.pause, minPause))
	d.log.Debug("gateway circuit open: the command waits in JetStream", slog.Duration("delay", delay),
		slog.Bool("uncertain", ex.uncertain), slog.Int("attempts", ex.attempts))
	h.settle(d.log, "nak_with_delay", d.msg.NakWithDelay(delay))
	h.obs.CommandDone(string(d.cmd.Type), "requeued", h.cfg.Now().Sub(d.start))
}
