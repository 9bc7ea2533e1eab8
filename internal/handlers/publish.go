package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/tracing"
)

// Dead-letter headers: why a message is in PAYMENT_DLQ and where it came from.
const (
	HeaderReason         = "Payworker-Reason"
	HeaderError          = "Payworker-Error"
	HeaderField          = "Payworker-Field"
	HeaderAttempts       = "Payworker-Attempts"
	HeaderLastAnswer     = "Payworker-Last-Gateway-Answer"
	HeaderUncertain      = "Payworker-Outcome-Uncertain"
	HeaderOrigSubject    = "Payworker-Original-Subject"
	HeaderOrigStream     = "Payworker-Original-Stream"
	HeaderOrigSequence   = "Payworker-Original-Sequence"
	HeaderFirstAttempt   = "Payworker-First-Attempt"
	HeaderLastAttempt    = "Payworker-Last-Attempt"
	HeaderDeadLetteredAt = "Payworker-Dead-Lettered-At"
)

// rejection is why a message is refused before any gateway call.
type rejection struct {
	Code    string
	Field   string
	Message string
}

func rejectionOf(err error) rejection {
	var inv *command.InvalidError
	if errors.As(err, &inv) {
		return rejection{Code: inv.Code(), Field: inv.Field(), Message: inv.Error()}
	}
	return rejection{Code: "invalid_command", Message: err.Error()}
}

// reject copies the raw message to <prefix>.dlq.invalid, publishes a rejected
// event naming the field and the rule, then terminates the message so it is
// never redelivered. If either publication fails the message is left for
// redelivery instead: nothing is dropped unrecorded.
func (h *Handler) reject(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, typ string,
	cmd *command.Command, why rejection, start time.Time) {
	log := h.log.With(slog.String("subject", msg.Subject()), slog.Uint64("stream_seq", meta.Sequence.Stream),
		slog.String("error_code", why.Code), slog.String("field", why.Field)).With(tracing.LogArgs(ctx)...)

	hdr := nats.Header{}
	hdr.Set(HeaderReason, why.Code)
	hdr.Set(HeaderError, why.Message)
	if why.Field != "" {
		hdr.Set(HeaderField, why.Field)
	}
	h.originHeaders(hdr, msg, meta)
	// Both publications are retried for at most the ack wait, as in
	// completed.
	pctx, cancel := context.WithTimeout(ctx, h.cfg.AckWait)
	defer cancel()
	dlqSubject := h.cfg.Streams.DLQSubject("invalid")
	ack, err := h.publishAck(pctx, dlqSubject, msg.Data(), "dlq:"+seqID(meta), hdr)
	if err != nil {
		log.Warn("rejected message not stored in the DLQ; left for redelivery", slog.Any("error", err))
		h.settle(log, "nak", msg.Nak())
		return
	}

	var data events.Data
	if cmd != nil {
		data = h.commandData(cmd, h.route(cmd))
	} else {
		data = bestEffortData(msg.Data(), typ)
	}
	data.Error = &events.Error{Code: why.Code, Message: why.Message, Field: why.Field, Retryable: false}
	data.DLQSubject, data.DLQSequence = dlqSubject, ack.Sequence
	id := events.MessageID(events.Rejected, data.MerchantID, data.IdempotencyKey, seqID(meta))
	ev := events.New(events.Rejected, id, h.cfg.Source, h.cfg.Now(), data)
	ev.TraceParent, ev.TraceState = tracing.Attributes(ctx)
	body, err := ev.Marshal()
	if err == nil {
		err = h.publish(pctx, h.cfg.Streams.EventSubject(string(events.Rejected)), body, id, nil)
	}
	if err != nil {
		log.Warn("rejected event not stored; left for redelivery", slog.Any("error", err))
		h.settle(log, "nak", msg.Nak())
		return
	}
	h.obs.EventPublished(string(events.Rejected))
	h.settle(log, "term", msg.Term())
	outcome := "rejected"
	if why.Code == "idempotency_key_conflict" {
		outcome = "conflict"
	}
	h.obs.CommandDone(typ, outcome, h.cfg.Now().Sub(start))
	log.Info("command rejected", slog.String("error", why.Message), slog.String("event_id", id))
}

// deadLetterRetryDelay is how long a command waits before redelivery when
// its dead letter could not be stored whole: the stream that refused it
// (full, unavailable) is not expected back at once, and the redelivery runs
// the gateway attempts again.
const deadLetterRetryDelay = 2 * time.Second

// deadLetter stores the command in <prefix>.dlq.<type> with the reason, then
// publishes the dead_lettered event, releases the key (keeping the record so a
// replay reconciles first when the outcome is uncertain) and acks.
//
// The message is acked only once both the DLQ copy and the dead_lettered
// event are stored. If JetStream refuses either, the key is released all the
// same (keeping the uncertain flag) and the message is NakWithDelay'd: its
// redelivery claims the key anew and runs the command again.
//
// The DLQ copy's Nats-Msg-Id names the command message and how its run
// ended (dlqMsgID), not the claim: a run of the same message that ends the
// same way inside DUPLICATE_WINDOW (a publish retry, the redelivery after a
// refused dead_lettered event or after a crash before the ack) is the same
// dead letter, so JetStream drops its copy and acks it with the first
// copy's sequence, and the dead_lettered event, whose id derives from it, is
// stored once. The stored copy keeps the first run's attempt headers. A run
// that ends otherwise (outcome_unknown rather than retries_exhausted) is
// another dead letter and gets a copy of its own, so the DLQ never hides
// that an attempt may have reached the gateway.
func (h *Handler) deadLetter(ctx, fin context.Context, d *delivery, ex execution) {
	hdr := nats.Header{}
	hdr.Set(HeaderReason, ex.reason)
	hdr.Set(HeaderError, ex.detail)
	hdr.Set(HeaderAttempts, strconv.Itoa(ex.attempts))
	hdr.Set(HeaderUncertain, strconv.FormatBool(ex.uncertain))
	if ex.result.HTTPStatus != 0 || ex.result.Code != "" {
		hdr.Set(HeaderLastAnswer, fmt.Sprintf("HTTP %d %s %s", ex.result.HTTPStatus, ex.result.Code, ex.result.Message))
	} else if ex.result.Err != nil {
		hdr.Set(HeaderLastAnswer, ex.result.Err.Error())
	}
	hdr.Set(HeaderFirstAttempt, ex.first.UTC().Format(time.RFC3339Nano))
	hdr.Set(HeaderLastAttempt, ex.last.UTC().Format(time.RFC3339Nano))
	hdr.Set(HeaderDeadLetteredAt, h.cfg.Now().UTC().Format(time.RFC3339Nano))
	h.originHeaders(hdr, d.msg, d.meta)
	dlqSubject := h.cfg.Streams.DLQSubject(string(d.cmd.Type))
	msgID := dlqMsgID(d.meta, ex)
	ack, err := h.publishAck(fin, dlqSubject, d.msg.Data(), msgID, hdr)
	if err != nil {
		d.log.Warn("dead letter not stored; key released, redelivery later", slog.Any("error", err))
		h.handBackDeadLetter(fin, d, ex.uncertain)
		return
	}
	data := h.eventData(d.cmd, d.gwName, ex)
	data.DLQSubject, data.DLQSequence = dlqSubject, ack.Sequence
	id := events.MessageID(events.DeadLettered, d.cmd.MerchantID, d.cmd.Key(), msgID)
	ev := events.New(events.DeadLettered, id, h.cfg.Source, h.cfg.Now(), data)
	ev.TraceParent, ev.TraceState = tracing.Attributes(ctx)
	body, err := ev.Marshal()
	if err == nil {
		err = h.publish(fin, h.cfg.Streams.EventSubject(string(events.DeadLettered)), body, id, nil)
	}
	if err != nil {
		d.log.Warn("dead_lettered event not stored; key released, redelivery later", slog.Any("error", err),
			slog.String("dlq_subject", dlqSubject), slog.Uint64("dlq_seq", ack.Sequence))
		h.handBackDeadLetter(fin, d, ex.uncertain)
		return
	}
	h.obs.EventPublished(string(events.DeadLettered))
	h.releaseDeadLetter(fin, d, ex.uncertain)
	h.settle(d.log, "ack", d.msg.Ack())
	h.obs.CommandDone(string(d.cmd.Type), "dead_lettered", h.cfg.Now().Sub(d.start))
	h.obs.DeadLettered(string(d.cmd.Type), ex.reason)
	d.log.Warn("command dead-lettered", slog.String("reason", ex.reason), slog.String("detail", ex.detail),
		slog.Int("attempts", ex.attempts), slog.String("dlq_subject", dlqSubject), slog.Uint64("dlq_seq", ack.Sequence))
}

// dlqMsgID is the Nats-Msg-Id of a command's DLQ copy: the command message
// and how its run ended (see deadLetter), e.g.
// dlq:PAYMENT_COMMANDS:42:outcome_unknown:uncertain.
func dlqMsgID(meta *jetstream.MsgMetadata, ex execution) string {
	id := "dlq:" + seqID(meta) + ":" + ex.reason
	if ex.uncertain {
		id += ":uncertain"
	}
	return id
}

// handBackDeadLetter gives back a command whose dead letter is not stored
// whole: it releases the key, keeping uncertain so that the next run
// reconciles first, then NakWithDelays the message, so its redelivery finds
// the key released.
func (h *Handler) handBackDeadLetter(fin context.Context, d *delivery, uncertain bool) {
	h.releaseDeadLetter(fin, d, uncertain)
	h.settle(d.log, "nak_with_delay", d.msg.NakWithDelay(jitter(deadLetterRetryDelay)))
	h.obs.CommandDone(string(d.cmd.Type), "requeued", h.cfg.Now().Sub(d.start))
}

// releaseDeadLetter gives the key back after a dead letter, stored or not.
// A refused publication retries until fin ends, so the release has a
// context of its own, bounded by the lease it gives back; if it fails, the
// lease expires instead and the next holder takes the key over as uncertain.
func (h *Handler) releaseDeadLetter(fin context.Context, d *delivery, uncertain bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(fin), h.cfg.Lease)
	defer cancel()
	if err := h.cfg.Store.Release(ctx, d.cmd.MerchantID, d.cmd.Key(), d.cmd.TransactionID, d.token, uncertain); err != nil {
		d.log.Warn("release after dead letter (the lease will expire instead)", slog.Any("error", err))
	}
}

func (h *Handler) originHeaders(hdr nats.Header, msg jetstream.Msg, meta *jetstream.MsgMetadata) {
	hdr.Set(HeaderOrigSubject, msg.Subject())
	hdr.Set(HeaderOrigStream, meta.Stream)
	hdr.Set(HeaderOrigSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
}

// publishAttemptTimeout bounds one publish attempt. JetStream acknowledges a
// publish in milliseconds; an attempt that meets no answer was lost with a
// server that died, or met a stream without a leader (an election), and is
// made again rather than waited on.
const publishAttemptTimeout = 2 * time.Second

// publish stores a message in JetStream under msgID, retrying until it is
// acknowledged or ctx ends: each attempt within publishAttemptTimeout, the
// next after a backoff of up to a second, every one with the same
// Nats-Msg-Id, so the stream stores it once however many attempts reach it.
// A duplicate ack (same msgID within the window) counts as stored.
func (h *Handler) publish(ctx context.Context, subject string, data []byte, msgID string, hdr nats.Header) error {
	_, err := h.publishAck(ctx, subject, data, msgID, hdr)
	return err
}

func (h *Handler) publishAck(ctx context.Context, subject string, data []byte, msgID string, hdr nats.Header) (*jetstream.PubAck, error) {
	delay := 50 * time.Millisecond
	for {
		m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		for k, v := range hdr {
			m.Header[k] = v
		}
		tracing.Inject(ctx, m.Header)
		sctx, span := h.cfg.Tracer.Start(ctx, "send "+subject, trace.WithSpanKind(trace.SpanKindProducer))
		if span.IsRecording() { // nothing is built for a command that is not traced
			span.SetAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", subject),
				attribute.String("messaging.message.id", msgID))
		}
		pctx, cancel := context.WithTimeout(sctx, publishAttemptTimeout)
		ack, err := h.cfg.JetStream.PublishMsg(pctx, m, jetstream.WithMsgID(msgID))
		cancel()
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("publish %s: %w", subject, err)
		}
		h.log.Warn("publish failed; retrying", slog.String("subject", subject), slog.Any("error", err))
		if err := h.cfg.Sleep(ctx, jitter(delay)); err != nil {
			return nil, fmt.Errorf("publish %s: %w", subject, err)
		}
		delay = min(delay*2, time.Second)
	}
}

// commandData is the event data every event about a valid command carries.
func (h *Handler) commandData(cmd *command.Command, gwName string) events.Data {
	return events.Data{
		CommandID:      cmd.CommandID,
		IdempotencyKey: cmd.Key(),
		MerchantID:     cmd.MerchantID,
		TransactionID:  cmd.TransactionID,
		CommandType:    string(cmd.Type),
		Gateway:        gwName,
		Amount:         cmd.Amount,
		Currency:       cmd.Currency,
		Metadata:       cmd.Metadata,
	}
}

// eventData adds what the gateway said to commandData.
func (h *Handler) eventData(cmd *command.Command, gwName string, ex execution) events.Data {
	d := h.commandData(cmd, gwName)
	r := ex.result
	d.Attempts = ex.attempts
	d.Reconciled = ex.reconciled
	d.GatewayCode = r.Code
	d.GatewayMessage = r.Message
	d.GatewayResponseCode = r.ResponseCode
	d.GatewayTransactionID = r.TransactionID
	d.GatewayRef = r.Ref
	d.AuthCode = r.AuthCode
	d.Scheme = r.Scheme
	d.MaskedCardNumber = r.MaskedPAN
	if d.Currency == "" {
		d.Currency = r.Currency
	}
	if d.Amount == nil && r.Amount != 0 {
		a := r.Amount
		d.Amount = &a
	}
	switch ex.verdict {
	case verdictFailed:
		msg := ex.detail
		if msg == "" {
			msg = r.Message
		}
		if msg == "" {
			msg = "the gateway refused the operation"
		}
		d.Error = &events.Error{Code: ex.reason, Message: msg, Retryable: false}
	case verdictDeadLetter:
		d.Error = &events.Error{Code: ex.reason, Message: ex.detail, Retryable: true}
	}
	return d
}

// bestEffortData reads what it can from an invalid message for its rejected
// event: only string fields of a JSON object, clipped to their schema sizes.
func bestEffortData(raw []byte, typ string) events.Data {
	var m map[string]any
	if len(raw) > command.MaxSize || json.Unmarshal(raw, &m) != nil {
		return events.Data{CommandType: knownType(typ)}
	}
	str := func(k string, max int) string {
		s, _ := m[k].(string)
		if len(s) > max {
			return ""
		}
		return s
	}
	d := events.Data{
		CommandID:      str("command_id", 64),
		IdempotencyKey: str("idempotency_key", 255),
		MerchantID:     str("merchant_id", 10),
		TransactionID:  str("transaction_id", 36),
		CommandType:    knownType(typ),
	}
	if d.IdempotencyKey == "" {
		d.IdempotencyKey = d.CommandID
	}
	return d
}

func knownType(typ string) string {
	switch command.Type(typ) {
	case command.Capture, command.Void:
		return typ
	}
	return ""
}
