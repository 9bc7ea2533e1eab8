package handlers

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/tracing"
)

type verdict int

const (
	verdictSucceeded verdict = iota + 1
	verdictFailed
	verdictDeadLetter
	verdictAborted
	// verdictPaused: the gateway's circuit is open and the outage is young:
	// the command waits it out in JetStream (see protect.go).
	verdictPaused
)

// execution is what the attempts of one command came to.
type execution struct {
	verdict verdict
	// result is the last gateway answer (or the status that settled it).
	result     gateway.Result
	attempts   int
	reconciled bool
	// uncertain: an attempt may have reached the gateway and its effect is
	// not known; whoever handles the key next must reconcile first.
	uncertain bool
	// reason is the error code of a failure or dead letter; detail explains it.
	reason string
	detail string
	first  time.Time
	last   time.Time
	// paced is the time spent waiting for turns in the gateway's rate
	// limit: not counted in the budget.
	paced time.Duration
	// refused: the last call asked for was refused by the open circuit.
	refused bool
	// pause is how long a paused command waits in JetStream.
	pause time.Duration
}

// finding is what a status answer says of an operation we may have made.
type finding int

const (
	findingUnknown finding = iota
	// findingApplied: the operation took effect: that is the success.
	findingApplied
	// findingNotApplied: the authorisation is still open: safe to send.
	findingNotApplied
	// findingImpossible: the operation did not take effect and cannot now.
	findingImpossible
)

// reconcile reads a status answer for the operation req.
//
// When the gateway lists the operations on the authorisation by merchant
// reference (st.Ours is not OursUnlisted: SIBS), our operation is the one
// the adapter found with our reference (req.Reference, the idempotency key,
// sent as the merchant's transaction id) and req's type. The amounts of
// other operations never count as ours, so that several partial captures of
// one authorisation are told apart:
//
//	| our operation at the gateway             | finding     | why                                   |
//	|------------------------------------------|-------------|---------------------------------------|
//	| applied, same amount (or a full void)    | applied     | that is the success                   |
//	| applied, another amount                  | unknown     | contradicts the key: never resend     |
//	| still being processed                    | unknown     | ask again later                       |
//	| absent; enough of the authorisation open | not applied | safe to send                          |
//	| absent; not enough open                  | impossible  | another operation took the remainder  |
//
// "Open" is the authorised amount less what is captured and voided; a full
// void (amount 0) needs anything open. Without a listing (PaymentOptions,
// where an authorisation is captured at most once) a capture counts as
// applied only when the captured amount is the amount we asked for.
func reconcile(req gateway.Request, st gateway.Status) (finding, string) {
	switch st.State {
	case gateway.StateNotFound:
		return findingImpossible, "the gateway does not know the transaction"
	case gateway.StateUnknown:
		return findingUnknown, ""
	}
	switch st.Ours {
	case gateway.OursApplied:
		if req.Amount != 0 && st.OursAmount != req.Amount {
			return findingUnknown, fmt.Sprintf("the gateway applied a %s with our reference for %d, not %d", req.Operation, st.OursAmount, req.Amount)
		}
		return findingApplied, ""
	case gateway.OursPending:
		return findingUnknown, "the gateway is still processing an operation with our reference"
	case gateway.OursAbsent:
		open := st.AuthorisedAmount - st.CapturedAmount - st.VoidedAmount
		if open > 0 && open >= req.Amount {
			return findingNotApplied, ""
		}
		return findingImpossible, fmt.Sprintf("the authorisation has %d left open (authorised %d, captured %d, voided %d); the %s needs %d",
			max(open, 0), st.AuthorisedAmount, st.CapturedAmount, st.VoidedAmount, req.Operation, max(req.Amount, 1))
	}
	if st.State == gateway.StateAuthorised {
		return findingNotApplied, ""
	}
	switch req.Operation {
	case gateway.Capture:
		switch st.State {
		case gateway.StateCaptured:
			if st.CapturedAmount == req.Amount {
				return findingApplied, ""
			}
			return findingImpossible, fmt.Sprintf("the authorisation is already captured for %d, not %d", st.CapturedAmount, req.Amount)
		case gateway.StateVoided:
			return findingImpossible, "the authorisation is voided"
		}
	case gateway.Void:
		switch st.State {
		case gateway.StateVoided:
			return findingApplied, ""
		case gateway.StateCaptured:
			return findingImpossible, "the authorisation is already captured"
		}
	}
	return findingUnknown, ""
}

// execute makes the gateway attempts of one command. It never resends an
// operation whose earlier attempt may have taken effect: it first asks the
// status endpoint (SPEC §5). uncertain says a previous holder of the key may
// have reached the gateway.
//
// A status answer is asked no sooner than the gateway's settle delay after
// the last attempt whose outcome was unknown (or, when settle is set, after
// the claim: a previous holder may still have a call in flight), so that a
// gateway still processing the first request is not read as "not applied".
// A decline that follows an uncertain attempt is confirmed by status before
// it is final: the gateway may be refusing our second try because the first
// one took effect. Until a status answer settles it, the decline is not
// believed; if none does within the budget, the command is dead-lettered as
// outcome_unknown, never marked failed.
//
// Every call, status calls included, is first admitted by the gateway's
// circuit breaker and rate limit (protect.go).
func (h *Handler) execute(ctx context.Context, gwName string, gw Gateway, req gateway.Request, uncertain, settle bool) execution {
	ex := execution{uncertain: uncertain, first: h.cfg.Now()}
	b := h.backOff()
	g := h.guard(gwName)
	everUncertain := uncertain
	// unclearAt is when the last call that may still be settling at the
	// gateway ended; zero when none.
	var unclearAt time.Time
	if settle {
		unclearAt = h.cfg.Now()
	}
	// declined is a decline awaiting confirmation by status.
	var declined *gateway.Result
	for {
		if ctx.Err() != nil {
			ex.verdict = verdictAborted
			return ex
		}
		if ex.uncertain {
			if ex.attempts >= h.cfg.Retry.MaxAttempts {
				return h.giveUp(ex)
			}
			if d := h.cfg.Settle[gwName] - h.cfg.Now().Sub(unclearAt); !unclearAt.IsZero() && d > 0 {
				if err := h.cfg.Sleep(ctx, d); err != nil {
					ex.verdict = verdictAborted
					return ex
				}
			}
			permit, ok := h.admit(ctx, g, b, &ex, gwName, req)
			if !ok {
				if ex.verdict != 0 {
					return ex
				}
				continue
			}
			st, err := h.status(ctx, gwName, gw, req, &ex)
			permit.Done(statusHealth(ctx, err))
			if err != nil {
				h.obs.Reconciled(gwName, "unknown")
				if !h.wait(ctx, b, &ex, 0, gwName, req, "status_unknown") {
					return ex
				}
				continue
			}
			f, detail := reconcile(req, st)
			switch f {
			case findingApplied:
				h.obs.Reconciled(gwName, "applied")
				ex.result = st.Result
				ex.result.Outcome = gateway.Succeeded
				if ex.result.Amount == 0 {
					ex.result.Amount = req.Amount
				}
				ex.reconciled, ex.uncertain, ex.verdict = true, false, verdictSucceeded
				return ex
			case findingNotApplied, findingImpossible:
				if f == findingNotApplied {
					h.obs.Reconciled(gwName, "not_applied")
				} else {
					h.obs.Reconciled(gwName, "impossible")
				}
				ex.uncertain = false
				if declined != nil {
					// Our operation did not take effect: the decline was
					// the gateway's real answer.
					ex.result = *declined
					ex.reconciled, ex.verdict, ex.reason, ex.detail = true, verdictFailed, "gateway_declined", declined.Message
					return ex
				}
				if f == findingImpossible {
					ex.result = st.Result
					ex.reconciled, ex.verdict = true, verdictFailed
					ex.reason, ex.detail = "authorisation_state", detail
					return ex
				}
			default:
				h.obs.Reconciled(gwName, "unknown")
				if !h.wait(ctx, b, &ex, 0, gwName, req, "status_unclear") {
					return ex
				}
				continue
			}
		}
		if ex.attempts >= h.cfg.Retry.MaxAttempts {
			return h.giveUp(ex)
		}
		permit, ok := h.admit(ctx, g, b, &ex, gwName, req)
		if !ok {
			if ex.verdict != 0 {
				return ex
			}
			continue
		}
		res := h.attempt(ctx, gwName, gw, req, &ex)
		permit.Done(attemptHealth(ctx, res))
		ex.result = res
		switch res.Outcome {
		case gateway.Succeeded:
			ex.verdict = verdictSucceeded
			return ex
		case gateway.Declined:
			if everUncertain {
				// A status answer tells a real refusal from the echo of
				// our own earlier attempt; until one does, the outcome
				// is unknown.
				d := res
				declined = &d
				ex.uncertain = true
				continue
			}
			ex.verdict, ex.reason = verdictFailed, "gateway_declined"
			ex.detail = res.Message
			return ex
		case gateway.Unknown:
			ex.uncertain, everUncertain = true, true
			unclearAt = h.cfg.Now()
			if !h.wait(ctx, b, &ex, 0, gwName, req, "unknown_outcome") {
				return ex
			}
		default: // Retryable
			floor := res.RetryAfter
			if res.HTTPStatus == http.StatusTooManyRequests && g.pacer != nil {
				// The pacer holds every worker's calls to the gateway back
				// for the Retry-After, and this command's next attempt
				// waits its turn there, outside its budget.
				g.pacer.Slow(ctx, res.RetryAfter)
				floor = 0
			}
			if !h.wait(ctx, b, &ex, floor, gwName, req, retryReason(res)) {
				return ex
			}
		}
	}
}

// attempt makes one gateway call and measures it.
func (h *Handler) attempt(ctx context.Context, gwName string, gw Gateway, req gateway.Request, ex *execution) gateway.Result {
	ex.attempts++
	t := h.cfg.Now()
	ex.last = t
	res := gw.Execute(tracing.GatewayCall(ctx, gwName, string(req.Operation)), req)
	h.obs.GatewayRequest(gwName, string(req.Operation), statusLabel(res.HTTPStatus), h.cfg.Now().Sub(t))
	return res
}

// status makes one status call and measures it.
func (h *Handler) status(ctx context.Context, gwName string, gw Gateway, req gateway.Request, ex *execution) (gateway.Status, error) {
	ex.attempts++
	t := h.cfg.Now()
	ex.last = t
	st, err := gw.Status(tracing.GatewayCall(ctx, gwName, "status"), req)
	label := "error"
	if err == nil {
		label = "ok"
	}
	h.obs.GatewayRequest(gwName, "status", label, h.cfg.Now().Sub(t))
	return st, err
}

// wait sleeps before the next attempt: the backoff's next interval, at least
// floor (a Retry-After), at most what is left of the budget; a floor beyond
// the budget ends the attempts at once, and so does a next interval that
// would end past it. It returns false, with the verdict set, when the budget
// is spent or ctx ends. The budget's clock leaves out the time spent waiting
// for turns in the rate limit.
func (h *Handler) wait(ctx context.Context, b backoff.BackOff, ex *execution, floor time.Duration, gwName string, req gateway.Request, reason string) bool {
	next := b.NextBackOff()
	spent := h.cfg.Now().Sub(ex.first) - ex.paced
	left := h.cfg.Retry.MaxElapsed - spent
	if next == backoff.Stop || spent+next > h.cfg.Retry.MaxElapsed || left <= 0 || ex.attempts >= h.cfg.Retry.MaxAttempts {
		*ex = h.giveUp(*ex)
		return false
	}
	if floor > left {
		// The gateway asked us to wait past the budget: calling earlier would
		// ignore it, waiting longer would break the budget. Give up now.
		*ex = h.giveUp(*ex)
		return false
	}
	d := min(max(next, floor), left)
	h.obs.Retry(gwName, string(req.Operation), reason)
	if err := h.cfg.Sleep(ctx, d); err != nil {
		ex.verdict = verdictAborted
		return false
	}
	return true
}

// giveUp ends the attempts at the end of the budget: a dead letter, marked
// outcome_unknown when the last word on the operation is uncertain, and
// gateway_unavailable when the open circuit refused the last call.
func (h *Handler) giveUp(ex execution) execution {
	ex.verdict = verdictDeadLetter
	switch {
	case ex.uncertain:
		ex.reason = "outcome_unknown"
		ex.detail = "the gateway's answer was unknown and its status could not be confirmed within the retry budget"
	case ex.refused:
		ex.reason = "gateway_unavailable"
		ex.detail = "the gateway's circuit stayed open (its calls failing for every command) past the outage wait and the retry budget"
	default:
		ex.reason = "retries_exhausted"
		ex.detail = "the gateway did not accept the operation within the retry budget"
	}
	if ex.result.Err != nil {
		ex.detail += ": " + ex.result.Err.Error()
	} else if ex.result.HTTPStatus != 0 {
		ex.detail += fmt.Sprintf(": last answer HTTP %d %s %s", ex.result.HTTPStatus, ex.result.Code, ex.result.Message)
	}
	return ex
}

// backOff is exponential with ±50% jitter. The retry budget bounds it in
// wait, whose clock leaves out the turns waited in the rate limit.
func (h *Handler) backOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(h.cfg.Retry.Initial),
		backoff.WithMaxInterval(h.cfg.Retry.Max),
		backoff.WithMaxElapsedTime(0),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMultiplier(2),
		backoff.WithClockProvider(clockFunc(h.cfg.Now)),
	)
	return b
}

type clockFunc func() time.Time

func (c clockFunc) Now() time.Time { return c() }

func retryReason(res gateway.Result) string {
	if res.HTTPStatus == 0 {
		return "connection"
	}
	return "http_" + strconv.Itoa(res.HTTPStatus)
}

func statusLabel(code int) string {
	if code == 0 {
		return "error"
	}
	return strconv.Itoa(code)
}
