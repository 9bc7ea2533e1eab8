package publish

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/tracing"
)

// line builds "word word key=value …" lines; empty values are left out and
// values with spaces or quotes are quoted.
type line struct{ b strings.Builder }

func (l *line) word(s string) {
	if l.b.Len() > 0 {
		l.b.WriteByte(' ')
	}
	l.b.WriteString(s)
}

func (l *line) kv(k, v string) {
	if v == "" {
		return
	}
	if strings.ContainsAny(v, " \t\r\n\"=") {
		v = strconv.Quote(v)
	}
	l.word(k + "=" + v)
}

func (l *line) amount(d events.Data) {
	if d.Amount != nil {
		l.kv("amount", strconv.FormatInt(*d.Amount, 10))
	}
	l.kv("currency", d.Currency)
}

func (l *line) error(e *events.Error) {
	if e == nil {
		return
	}
	msg := e.Code
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	l.kv("error", msg)
}

func (l *line) dlq(d events.Data) {
	if d.DLQSubject != "" {
		l.kv("dlq", d.DLQSubject+"#"+strconv.FormatUint(d.DLQSequence, 10))
	}
}

// EventLine is the one-line human form of an event, as `publisher events`
// prints it:
//
//	2025-01-02T15:04:05Z capture.succeeded merchant=M1 transaction=T1 key=K1 amount=1000 currency=JPY gateway_code=INFO0001 event_id=…
func EventLine(e events.Event) string {
	var l line
	l.word(e.Time.UTC().Format(time.RFC3339))
	if k, ok := events.KindOfType(e.Type); ok {
		l.word(string(k))
	} else {
		l.word(e.Type)
	}
	d := e.Data
	l.kv("merchant", d.MerchantID)
	l.kv("transaction", d.TransactionID)
	l.kv("key", d.IdempotencyKey)
	l.amount(d)
	l.kv("gateway_code", d.GatewayCode)
	l.error(d.Error)
	l.kv("original_event_id", d.OriginalEventID)
	l.dlq(d)
	l.kv("trace_id", tracing.TraceID(e.TraceParent))
	l.kv("event_id", e.ID)
	return l.b.String()
}

// CommandType returns the command type an outcome answers: the event's
// command_type, or the operation of a terminal kind, or "command".
func (o Outcome) CommandType() string {
	if t := o.Event.Data.CommandType; t != "" {
		return t
	}
	if o.Kind.Terminal() {
		op, _, _ := strings.Cut(string(o.Kind), ".")
		return op
	}
	return "command"
}

// Line is the one-line human form of the outcome, as `publisher capture
// --wait` prints it:
//
//	capture succeeded merchant=M1 transaction=T1 amount=1000 currency=JPY gateway_code=INFO0001 event_id=…
//	capture succeeded (duplicate) merchant=… event_id=<original> duplicate_event_id=<this one>
//	capture rejected merchant=… error="amount: schema_violation: …" event_id=…
func (o Outcome) Line() string {
	var l line
	l.word(o.CommandType())
	e := o.Event
	if final, ok := o.Final(); ok {
		_, result, _ := strings.Cut(strings.TrimPrefix(final.Type, "payments."), ".")
		l.word(result)
		if o.Kind == events.Duplicate {
			l.word("(duplicate)")
		}
		e = final
	} else {
		_, result, _ := strings.Cut(string(o.Kind), ".")
		l.word(result)
	}
	d := e.Data
	l.kv("merchant", d.MerchantID)
	l.kv("transaction", d.TransactionID)
	l.amount(d)
	l.kv("gateway_code", d.GatewayCode)
	l.error(d.Error)
	if o.Kind == events.Duplicate && o.Original == nil {
		l.kv("original_event_id", d.OriginalEventID)
	}
	l.dlq(d)
	l.kv("event_id", e.ID)
	if o.Kind == events.Duplicate && o.Original != nil {
		l.kv("duplicate_event_id", o.Event.ID)
	}
	return l.b.String()
}

// OutcomeOf returns a public client's result as an Outcome: the deciding
// event, and for a duplicate the original outcome when the client found it.
func OutcomeOf(r client.Result) (Outcome, error) {
	ev, err := EventOf(client.EventOf(r))
	if err != nil {
		return Outcome{}, err
	}
	k, ok := events.KindOfType(ev.Type)
	if !ok {
		return Outcome{}, fmt.Errorf("event %s: unknown type %q", ev.ID, ev.Type)
	}
	o := Outcome{Kind: k, Event: ev}
	if d, ok := r.(*client.Duplicate); ok && d.Original != nil {
		orig, err := EventOf(client.EventOf(d.Original))
		if err != nil {
			return Outcome{}, err
		}
		o.Original = &orig
	}
	return o, nil
}
