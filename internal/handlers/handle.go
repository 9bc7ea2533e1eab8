package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/tracing"
)

// errLeaseLost is the cancellation cause of a command's work when its lease
// renewal is refused: another worker has taken the key over.
var errLeaseLost = errors.New("idempotency lease lost to another holder")

// storeRetryDelay is how long a message waits before redelivery when the
// idempotency store cannot be reached (fail closed, SPEC §4.7).
const storeRetryDelay = 2 * time.Second

// delivery is one command message as the handler works on it: the message
// and its metadata, the decoded command, the gateway it goes to, and, once
// claimed, the fencing token of the claim.
type delivery struct {
	msg    jetstream.Msg
	meta   *jetstream.MsgMetadata
	cmd    *command.Command
	gwName string
	gw     Gateway
	token  int64
	// log carries the command's attributes.
	log   *slog.Logger
	start time.Time
}

// Handle processes one command message and settles it. The message is
//   - acked only after its outcome is recorded in the store and its result
//     event is stored by JetStream, or after it is stored in the DLQ;
//   - terminated when it is invalid or conflicts with its key, after its DLQ
//     copy and its rejected event are stored;
//   - NakWithDelay'd when its key or transaction is busy, or the store cannot
//     be reached (no gateway call is made then), or its gateway's circuit is
//     open (its key released, see protect.go);
//   - Nak'd for immediate redelivery elsewhere when ctx ends before it is done.
func (h *Handler) Handle(ctx context.Context, msg jetstream.Msg) {
	start := h.cfg.Now()
	// The command's trace context (a new trace without one) goes with ctx
	// to every event and dead letter published for it.
	ctx, span := tracing.Consume(ctx, h.cfg.Tracer, msg.Headers(), "process "+msg.Subject(),
		attribute.String("messaging.destination.name", msg.Subject()))
	defer span.End()
	meta, err := msg.Metadata()
	if err != nil {
		h.log.Error("message without JetStream metadata", slog.String("subject", msg.Subject()), slog.Any("error", err))
		_ = msg.Term()
		return
	}
	typ := commandType(msg.Subject())
	cmd, err := command.Decode(typ, msg.Data())
	if err != nil {
		h.reject(ctx, msg, meta, typ, nil, rejectionOf(err), start)
		return
	}
	gwName := h.route(cmd)
	gw, ok := h.cfg.Gateways[gwName]
	if !ok {
		h.reject(ctx, msg, meta, typ, cmd, rejection{
			Code:    "gateway_not_configured",
			Field:   "gateway",
			Message: fmt.Sprintf("gateway: %q is not configured on this worker (configured: %s)", gwName, h.gatewayNames()),
		}, start)
		return
	}
	log := h.log.With(append([]any{
		slog.String("command_id", cmd.CommandID), slog.String("type", string(cmd.Type)),
		slog.String("idempotency_key", cmd.Key()), slog.String("merchant_id", cmd.MerchantID),
		slog.String("transaction_id", cmd.TransactionID), slog.String("gateway", gwName)},
		tracing.LogArgs(ctx)...)...)
	d := &delivery{msg: msg, meta: meta, cmd: cmd, gwName: gwName, gw: gw, log: log, start: start}

	cctx, claimSpan := h.cfg.Tracer.Start(ctx, "idempotency claim")
	claim, err := h.cfg.Store.Claim(cctx, idempotency.ClaimRequest{
		Scope:       cmd.MerchantID,
		Key:         cmd.Key(),
		Fingerprint: cmd.Fingerprint(gwName),
		CommandID:   cmd.CommandID,
		Holder:      h.cfg.Holder,
		Lease:       h.cfg.Lease,
		TxnLock:     cmd.TransactionID,
	})
	if err != nil {
		claimSpan.SetStatus(codes.Error, err.Error())
	}
	claimSpan.End()
	if err != nil {
		h.obs.Claim("error")
		log.Warn("idempotency store unreachable: command waits, no gateway call", slog.Any("error", err))
		h.settle(log, "nak_with_delay", msg.NakWithDelay(jitter(storeRetryDelay)))
		h.obs.CommandDone(string(cmd.Type), "requeued", h.cfg.Now().Sub(start))
		return
	}
	h.obs.Claim(claim.Status.String())

	switch claim.Status {
	case idempotency.Conflict:
		h.reject(ctx, msg, meta, typ, cmd, rejection{
			Code:  "idempotency_key_conflict",
			Field: "idempotency_key",
			Message: fmt.Sprintf("idempotency_key: %q was first used by command %s with other parameters (type, gateway, transaction, amount or currency); a key names one operation",
				clip(cmd.Key()), claim.Record.CommandID),
		}, start)
	case idempotency.Completed:
		h.completed(ctx, d, claim.Record)
	case idempotency.Busy:
		d := min(max(claim.RetryAfter, 100*time.Millisecond), h.cfg.Lease)
		log.Debug("key or transaction busy: redelivery later", slog.Duration("delay", d))
		h.settle(log, "nak_with_delay", msg.NakWithDelay(jitter(d)))
		h.obs.CommandDone(string(cmd.Type), "requeued", h.cfg.Now().Sub(start))
	case idempotency.Acquired, idempotency.Resumed:
		// Uncertain: an earlier holder may have reached the gateway (a
		// takeover, a release after an unknown answer), or the store may
		// have lost this key's record (a Redis restart or failover): either
		// way the status call speaks first.
		uncertain := claim.Record.Uncertain
		// A replayed dead letter whose outcome was unknown reconciles first
		// even when its record has expired or was lost since (the DLQ keeps
		// entries longer than IDEMPOTENCY_TTL): the header is only ever a
		// reason to ask the status call, never to skip it.
		if msg.Headers().Get(HeaderUncertain) == "true" {
			uncertain = true
		}
		// A redelivered message that finds no record may have outlived it:
		// a Redis failover or restart can lose the last writes (REFERENCE.md),
		// and an earlier delivery may have claimed the key and reached the
		// gateway before. It asks the status call first, never resends blind.
		if claim.Status == idempotency.Acquired && meta.NumDelivered > 1 {
			uncertain = true
		}
		d.token = claim.Record.Token
		h.run(ctx, d, uncertain, claim.Settle)
	default:
		log.Error("unexpected claim status", slog.String("status", claim.Status.String()))
		h.settle(log, "nak_with_delay", msg.NakWithDelay(jitter(storeRetryDelay)))
	}
}

// run executes a claimed command under a renewed lease and settles it.
func (h *Handler) run(ctx context.Context, d *delivery, uncertain, settle bool) {
	work, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	guard := &leaseGuard{cancel: cancel}
	stopRenew := h.keepAlive(work, guard, d)
	ex := h.execute(work, d.gwName, guardedGateway{Gateway: d.gw, guard: guard}, d.cmd.Request(), uncertain, settle)
	stopRenew()

	// From here on, finishing must not be cut short by the work context: an
	// outcome that reached the gateway is recorded and announced. fin bounds
	// the whole of it (a lease); each request in it (recording the outcome,
	// each publish) has its own short timeout and is retried, so a request
	// lost with a server that died (a JetStream leader change) costs about
	// the election, not the lease.
	fin, cancelFin := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.Lease)
	defer cancelFin()

	switch ex.verdict {
	case verdictSucceeded, verdictFailed:
		h.finish(ctx, fin, d, ex)
	case verdictDeadLetter:
		h.deadLetter(ctx, fin, d, ex)
	case verdictPaused:
		h.pause(fin, d, ex)
	case verdictAborted:
		lost := errors.Is(context.Cause(work), errLeaseLost)
		if !lost {
			if err := h.cfg.Store.Release(fin, d.cmd.MerchantID, d.cmd.Key(), d.cmd.TransactionID, d.token, ex.uncertain); err != nil {
				d.log.Warn("release after abort", slog.Any("error", err))
			}
		}
		d.log.Info("command handed back", slog.Bool("lease_lost", lost), slog.Bool("uncertain", ex.uncertain), slog.Int("attempts", ex.attempts))
		if lost {
			h.settle(d.log, "nak_with_delay", d.msg.NakWithDelay(jitter(h.cfg.Lease)))
		} else {
			h.settle(d.log, "nak", d.msg.Nak())
		}
		h.obs.CommandDone(string(d.cmd.Type), "requeued", h.cfg.Now().Sub(d.start))
	}
}

// keepAlive renews the lease and extends the message's ack deadline until the
// returned stop is called. It has the guard stop the work (errLeaseLost)
// when a renewal is refused by the fencing token, and also when renewals
// have failed (the store cannot be reached) for so long that the lease may
// end before the next one: a holder that cannot prove its lease makes no
// further gateway call (SPEC §4.7), since once the lease ends another worker
// may take the key over, or find it lost and claim it afresh.
func (h *Handler) keepAlive(ctx context.Context, guard *leaseGuard, d *delivery) (stop func()) {
	// This ticker is where ACK_WAIT is made to fit the retry budget: from
	// the claim until the attempts end, InProgress resets the ack timer every
	// third of min(lease, ack wait), gateway calls and backoff sleeps
	// included, so JetStream redelivers nothing still being worked on
	// however long the budget (worker.ConsumerConfig relies on it).
	every := min(h.cfg.Lease, h.cfg.AckWait) / 3
	// Most commands end long before the first period: nothing runs for them
	// but one timer. A renewal runs on the timer's goroutine and arms the
	// next; stop waits for one that is running.
	var (
		mu      sync.Mutex
		stopped bool
		running sync.WaitGroup
		t       *time.Timer
	)
	// renewed is when the lease last started, as far as this worker knows:
	// the claim (a moment ago), then each renewal's sending.
	renewed := h.cfg.Now()
	// renew makes one renewal and reports whether to go on.
	renew := func() bool {
		if ctx.Err() != nil {
			return false
		}
		_ = d.msg.InProgress()
		sent := h.cfg.Now()
		// A renewal that does not answer within a period has failed: the
		// lease must be provable in time, not eventually.
		rctx, cancel := context.WithTimeout(ctx, every)
		err := h.cfg.Store.Renew(rctx, d.cmd.MerchantID, d.cmd.Key(), d.cmd.TransactionID, d.token, h.cfg.Lease)
		cancel()
		switch {
		case err == nil:
			renewed = sent
		case errors.Is(err, idempotency.ErrFenced):
			d.log.Warn("lease lost: another worker took the key over; abandoning")
			guard.lose()
			return false
		case ctx.Err() != nil:
			return false
		case !renewed.Add(h.cfg.Lease).After(h.cfg.Now().Add(every + every/2)):
			d.log.Warn("lease renewals failing and the lease about to end: abandoning, no further gateway call",
				slog.Duration("since_renewed", h.cfg.Now().Sub(renewed)), slog.Any("error", err))
			guard.lose()
			return false
		default:
			d.log.Warn("lease renewal failed; retrying", slog.Any("error", err))
		}
		return true
	}
	mu.Lock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		running.Add(1)
		mu.Unlock()
		defer running.Done()
		if renew() {
			mu.Lock()
			if !stopped {
				t.Reset(every)
			}
			mu.Unlock()
		}
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
		running.Wait()
	}
}

// leaseGuard stops a command's work (cancels it with errLeaseLost) once its
// lease is lost or can no longer be proven, but never in the middle of a
// gateway call: a request already sent cannot be taken back, and cutting it
// short would only make its outcome unknown. The cancellation then waits for
// the call to return, and no call starts after it.
type leaseGuard struct {
	cancel context.CancelCauseFunc

	mu    sync.Mutex
	calls int
	lost  bool
}

// lose stops the work now, or when the gateway call in flight returns.
func (g *leaseGuard) lose() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lost = true
	if g.calls == 0 {
		g.cancel(errLeaseLost)
	}
}

// enter reports whether a gateway call may start, and counts it if so.
func (g *leaseGuard) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lost {
		return false
	}
	g.calls++
	return true
}

// leave ends a call that enter let start.
func (g *leaseGuard) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls--
	if g.calls == 0 && g.lost {
		g.cancel(errLeaseLost)
	}
}

// guardedGateway makes a gateway call only while the lease guard allows it.
type guardedGateway struct {
	Gateway
	guard *leaseGuard
}

// Execute makes the attempt unless the lease is lost: then nothing is sent
// (Retryable) and the work is already cancelled.
func (g guardedGateway) Execute(ctx context.Context, req gateway.Request) gateway.Result {
	if !g.guard.enter() {
		return gateway.Result{Outcome: gateway.Retryable, Err: errLeaseLost}
	}
	defer g.guard.leave()
	return g.Gateway.Execute(ctx, req)
}

// Status asks unless the lease is lost.
func (g guardedGateway) Status(ctx context.Context, req gateway.Request) (gateway.Status, error) {
	if !g.guard.enter() {
		return gateway.Status{}, errLeaseLost
	}
	defer g.guard.leave()
	return g.Gateway.Status(ctx, req)
}

// finish records a terminal outcome, publishes its event and acks.
func (h *Handler) finish(ctx, fin context.Context, d *delivery, ex execution) {
	succeeded := ex.verdict == verdictSucceeded
	kind := events.TerminalKind(string(d.cmd.Type), succeeded)
	ev := events.New(kind, events.TerminalID(d.cmd.MerchantID, d.cmd.Key()), h.cfg.Source, h.cfg.Now(), h.eventData(d.cmd, d.gwName, ex))
	ev.TraceParent, ev.TraceState = tracing.Attributes(ctx)
	body, err := ev.Marshal()
	if err != nil {
		d.log.Error("encode event", slog.Any("error", err))
		h.settle(d.log, "nak", d.msg.Nak())
		return
	}
	out := idempotency.Outcome{Succeeded: succeeded, EventID: ev.ID, Subject: h.cfg.Streams.EventSubject(string(kind)), Event: body}
	if err := h.complete(fin, d, out); err != nil {
		// Fenced or given up: the key's new holder reconciles through the
		// status call and announces the outcome; this delivery comes back to
		// find it completed.
		d.log.Warn("outcome not recorded", slog.Any("error", err))
		h.settle(d.log, "nak_with_delay", d.msg.NakWithDelay(jitter(h.cfg.Lease)))
		h.obs.CommandDone(string(d.cmd.Type), "requeued", h.cfg.Now().Sub(d.start))
		return
	}
	if err := h.publish(fin, out.Subject, body, out.EventID, nil); err != nil {
		d.log.Warn("event not stored; redelivery will publish it", slog.Any("error", err))
		h.settle(d.log, "nak", d.msg.Nak())
		return
	}
	h.obs.EventPublished(string(kind))
	h.settle(d.log, "ack", d.msg.Ack())
	outcome := "failed"
	if succeeded {
		outcome = "succeeded"
	}
	h.obs.CommandDone(string(d.cmd.Type), outcome, h.cfg.Now().Sub(d.start))
	attrs := []any{slog.String("outcome", outcome), slog.Int("attempts", ex.attempts),
		slog.String("gateway_code", ex.result.Code), slog.Bool("reconciled", ex.reconciled),
		slog.Duration("duration", h.cfg.Now().Sub(d.start)), slog.String("event_id", ev.ID)}
	if !succeeded {
		attrs = append(attrs, slog.String("error_code", ex.reason), slog.String("gateway_message", ex.result.Message))
	}
	d.log.Info("command done", attrs...)
}

// storeAttemptTimeout bounds one attempt to record an outcome: an attempt
// lost with a server that died is made again, not waited on until the
// finishing deadline. Repeating a Complete that was applied is harmless (the
// Store contract).
const storeAttemptTimeout = 5 * time.Second

// complete stores the outcome, each attempt within storeAttemptTimeout,
// retrying while the store is unreachable. It gives up on ErrFenced and when
// ctx ends.
func (h *Handler) complete(ctx context.Context, d *delivery, out idempotency.Outcome) error {
	delay := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, storeAttemptTimeout)
		err := h.cfg.Store.Complete(actx, d.cmd.MerchantID, d.cmd.Key(), d.cmd.TransactionID, d.token, out)
		cancel()
		if err == nil || errors.Is(err, idempotency.ErrFenced) {
			return err
		}
		d.log.Warn("recording the outcome failed; retrying", slog.Any("error", err))
		if err := h.cfg.Sleep(ctx, jitter(delay)); err != nil {
			return fmt.Errorf("record outcome: %w", err)
		}
		delay = min(delay*2, time.Second)
	}
}

// completed settles a message whose key already has its outcome: the command
// that reached it, delivered again, republishes the stored event (JetStream
// drops it as a duplicate if the first publication arrived); any other
// command gets a duplicate event naming the original. "Delivered again" is
// told by the command id, not by the delivery count: a server restart can
// lose the plain ack and the consumer's count with it, and hand the same
// message back as a first delivery.
func (h *Handler) completed(ctx context.Context, d *delivery, rec idempotency.Record) {
	if rec.Outcome == nil {
		d.log.Error("completed record without outcome")
		h.settle(d.log, "nak_with_delay", d.msg.NakWithDelay(jitter(storeRetryDelay)))
		return
	}
	// Publishing is retried for at most the ack wait: after it JetStream
	// delivers the message again anyway, and this slot is better given back
	// than spent on a stream that keeps refusing.
	pctx, cancel := context.WithTimeout(ctx, h.cfg.AckWait)
	defer cancel()
	if completedBy(rec) == d.cmd.CommandID {
		if err := h.publish(pctx, rec.Outcome.Subject, rec.Outcome.Event, rec.Outcome.EventID, nil); err != nil {
			d.log.Warn("republishing the terminal event failed", slog.Any("error", err))
			h.settle(d.log, "nak", d.msg.Nak())
			return
		}
		h.settle(d.log, "ack", d.msg.Ack())
		h.obs.CommandDone(string(d.cmd.Type), "redelivered", h.cfg.Now().Sub(d.start))
		d.log.Info("redelivered command already done; terminal event ensured", slog.String("event_id", rec.Outcome.EventID))
		return
	}
	data := h.commandData(d.cmd, d.gwName)
	data.OriginalEventID = rec.Outcome.EventID
	data.OriginalCommandID = rec.CommandID
	id := events.MessageID(events.Duplicate, d.cmd.MerchantID, d.cmd.Key(), seqID(d.meta))
	ev := events.New(events.Duplicate, id, h.cfg.Source, h.cfg.Now(), data)
	ev.TraceParent, ev.TraceState = tracing.Attributes(ctx)
	body, err := ev.Marshal()
	if err == nil {
		err = h.publish(pctx, h.cfg.Streams.EventSubject(string(events.Duplicate)), body, id, nil)
	}
	if err != nil {
		d.log.Warn("duplicate event not stored", slog.Any("error", err))
		h.settle(d.log, "nak", d.msg.Nak())
		return
	}
	h.obs.EventPublished(string(events.Duplicate))
	h.settle(d.log, "ack", d.msg.Ack())
	h.obs.CommandDone(string(d.cmd.Type), "duplicate", h.cfg.Now().Sub(d.start))
	d.log.Info("duplicate of a completed key: no gateway call", slog.String("original_event_id", rec.Outcome.EventID),
		slog.String("original_command_id", rec.CommandID))
}

// completedBy names the command whose outcome rec holds: the command_id of
// the stored terminal event. It is not always rec.CommandID, the key's first
// claimant: a replay of a dead letter (a new command_id, the same key)
// resumes the released key and records the outcome under its own id.
func completedBy(rec idempotency.Record) string {
	var ev struct {
		Data struct {
			CommandID string `json:"command_id"`
		} `json:"data"`
	}
	if rec.Outcome != nil && json.Unmarshal(rec.Outcome.Event, &ev) == nil && ev.Data.CommandID != "" {
		return ev.Data.CommandID
	}
	return rec.CommandID
}

func (h *Handler) settle(log *slog.Logger, what string, err error) {
	if err != nil {
		log.Warn("settling the message failed; JetStream will redeliver it", slog.String("action", what), slog.Any("error", err))
	}
}

// route picks the gateway: the command's own, the merchant's route, the default.
func (h *Handler) route(cmd *command.Command) string {
	if cmd.Gateway != "" {
		return cmd.Gateway
	}
	if gw, ok := h.cfg.Routes[cmd.MerchantID]; ok {
		return gw
	}
	return h.cfg.DefaultGateway
}

func (h *Handler) gatewayNames() string {
	names := make([]string, 0, len(h.cfg.Gateways))
	for n := range h.cfg.Gateways {
		names = append(names, n)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// commandType is the last token of the subject: payments.cmd.capture → capture.
func commandType(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		return subject[i+1:]
	}
	return subject
}

// seqID names one message of the commands stream, for deterministic event ids.
func seqID(meta *jetstream.MsgMetadata) string {
	return fmt.Sprintf("%s:%d", meta.Stream, meta.Sequence.Stream)
}

// jitter spreads d by ±20% so redeliveries of many messages do not align.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	f := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * f)
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
