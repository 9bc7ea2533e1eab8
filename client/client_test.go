package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/schemas"
)

// These tests write the worker's events themselves (schema-valid, as
// SPEC §3.3 says), to control what is stored when; the examples and
// TestAwaitManyConcurrent run the real worker.

type env struct {
	t  *testing.T
	js jetstream.JetStream
	c  *client.Client
}

func newEnv(t *testing.T, opts ...client.Option) *env {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	if err := streams.Provision(context.Background(), js, streams.Default()); err != nil {
		t.Fatal(err)
	}
	c := client.New(js, opts...)
	t.Cleanup(func() { c.Close() })
	return &env{t: t, js: js, c: c}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func amount(n int64) *int64 { return &n }

// store publishes e as the worker does: on its kind's subject, with its id
// as Nats-Msg-Id.
func (e *env) store(ev events.Event) {
	e.t.Helper()
	body, err := ev.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := schemas.ValidateEventJSON(body); err != nil {
		e.t.Fatalf("test event %s is not schema-valid: %v", ev.Type, err)
	}
	k, _ := events.KindOfType(ev.Type)
	msg := &nats.Msg{Subject: streams.Default().EventSubject(string(k)), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		e.t.Fatalf("store event: %v", err)
	}
}

func data(merchant, key, cmd string) events.Data {
	return events.Data{CommandID: cmd, IdempotencyKey: key, MerchantID: merchant, TransactionID: "T-" + key,
		CommandType: "capture", Gateway: "paymentoptions", Amount: amount(1000), Currency: "JPY"}
}

func terminal(kind events.Kind, merchant, key, cmd string) events.Event {
	d := data(merchant, key, cmd)
	d.CommandType, _, _ = strings.Cut(string(kind), ".")
	d.Attempts = 1
	d.GatewayCode = "INFO0001"
	if !strings.HasSuffix(string(kind), "succeeded") {
		d.GatewayCode, d.GatewayMessage = "ERR0412", "already captured"
		d.Error = &events.Error{Code: "gateway_declined", Message: "already captured"}
	}
	return events.New(kind, events.TerminalID(merchant, key), "test", time.Now(), d)
}

func answer(kind events.Kind, merchant, key, cmd string, edit func(*events.Data)) events.Event {
	d := data(merchant, key, cmd)
	edit(&d)
	return events.New(kind, events.MessageID(kind, merchant, key, cmd), "test", time.Now(), d)
}

func rejected(merchant, key, cmd, code, field string) events.Event {
	return answer(events.Rejected, merchant, key, cmd, func(d *events.Data) {
		d.Error = &events.Error{Code: code, Message: field + ": bad", Field: field}
		d.DLQSubject, d.DLQSequence = "payments.dlq.invalid", 1
	})
}

func deadLettered(merchant, key, cmd string) events.Event {
	return answer(events.DeadLettered, merchant, key, cmd, func(d *events.Data) {
		d.Attempts = 10
		d.Error = &events.Error{Code: "retries_exhausted", Message: "gateway down", Retryable: true}
		d.DLQSubject, d.DLQSequence = "payments.dlq.capture", 7
	})
}

func duplicate(merchant, key, cmd string) events.Event {
	return answer(events.Duplicate, merchant, key, cmd, func(d *events.Data) {
		d.OriginalEventID = events.TerminalID(merchant, key)
		d.OriginalCommandID = "first"
	})
}

// after runs f in a moment, while a wait is running.
func after(d time.Duration, f func()) {
	go func() {
		time.Sleep(d)
		f()
	}()
}

func TestAwait(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	// Stored before the client exists.
	e.store(terminal(events.CaptureSucceeded, "M1", "done", "c1"))
	e.store(terminal(events.CaptureFailed, "M1", "declined", "c2"))
	e.store(deadLettered("M1", "dead", "c3"))
	e.store(deadLettered("M1", "replayed", "c4"))
	e.store(terminal(events.CaptureSucceeded, "M1", "replayed", "replay-c4"))
	e.store(rejected("M1", "invalid", "c5", "schema_violation", "amount"))
	e.store(terminal(events.CaptureSucceeded, "M1", "conflicted", "c6"))
	e.store(rejected("M1", "conflicted", "c7", "idempotency_key_conflict", "amount"))
	e.store(terminal(events.CaptureSucceeded, "M2", "done", "c8")) // another merchant

	tests := []struct {
		key   string
		want  string // %T of the result
		ok    bool
		check func(client.Result) error
	}{
		{"done", "*client.Succeeded", true, func(r client.Result) error {
			if s := r.(*client.Succeeded); s.GatewayCode != "INFO0001" || s.Data.MerchantID != "M1" || s.ID != events.TerminalID("M1", "done") {
				return fmt.Errorf("succeeded %+v, want INFO0001 of M1's key", s)
			}
			return nil
		}},
		{"declined", "*client.Declined", false, func(r client.Result) error {
			if d := r.(*client.Declined); d.GatewayCode != "ERR0412" || d.GatewayMessage != "already captured" || d.Code != "gateway_declined" {
				return fmt.Errorf("declined %+v", d)
			}
			return nil
		}},
		{"dead", "*client.DeadLettered", false, func(r client.Result) error {
			if d := r.(*client.DeadLettered); d.Reason != "retries_exhausted" || d.DLQSubject != "payments.dlq.capture" || d.DLQSequence != 7 {
				return fmt.Errorf("dead-lettered %+v", d)
			}
			return nil
		}},
		{"replayed", "*client.Succeeded", true, nil},
		{"invalid", "*client.Rejected", false, func(r client.Result) error {
			if x := r.(*client.Rejected); x.Field != "amount" || x.Code != "schema_violation" {
				return fmt.Errorf("rejected %+v", x)
			}
			return nil
		}},
		{"conflicted", "*client.Succeeded", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			r, err := e.c.Await(ctx, "M1", tt.key)
			if err != nil {
				t.Fatalf("Await = %v", err)
			}
			if got := fmt.Sprintf("%T", r); got != tt.want || r.OK() != tt.ok {
				t.Fatalf("Await = %s (ok %v) %v, want %s (ok %v)", got, r.OK(), r, tt.want, tt.ok)
			}
			if tt.check != nil {
				if err := tt.check(r); err != nil {
					t.Error(err)
				}
			}
		})
	}

	t.Run("a conflict does not end the wait", func(t *testing.T) {
		after(100*time.Millisecond, func() {
			e.store(rejected("M1", "later", "c9", "idempotency_key_conflict", "amount"))
			time.Sleep(100 * time.Millisecond)
			e.store(terminal(events.CaptureSucceeded, "M1", "later", "c10"))
		})
		r, err := e.c.Await(ctx, "M1", "later")
		if err != nil {
			t.Fatalf("Await = %v", err)
		}
		if _, ok := r.(*client.Succeeded); !ok {
			t.Errorf("Await = %v, want the terminal event after the conflict", r)
		}
	})

	t.Run("read lately", func(t *testing.T) {
		e.store(terminal(events.VoidSucceeded, "M1", "recent", "c11"))
		// The follower runs; the event is read before the wait.
		time.Sleep(100 * time.Millisecond)
		r, err := e.c.Await(ctx, "M1", "recent")
		if err != nil || client.EventOf(r).Kind() != client.KindVoidSucceeded {
			t.Errorf("Await = %v, %v; want void.succeeded", r, err)
		}
	})

	t.Run("context ends", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := e.c.Await(short, "M1", "never")
		if !errors.Is(err, client.ErrNoOutcome) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Await = %v, want ErrNoOutcome and DeadlineExceeded", err)
		}
	})
}

func TestAwaitCommand(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	capture := client.Capture{CommandID: "cmd-1", IdempotencyKey: "order-1", MerchantID: "M1", TransactionID: "T1", Amount: 1000, Currency: "JPY"}

	t.Run("answered while waiting", func(t *testing.T) {
		ack, err := e.c.Publish(ctx, capture)
		if err != nil {
			t.Fatal(err)
		}
		after(100*time.Millisecond, func() { e.store(terminal(events.CaptureSucceeded, "M1", "order-1", "cmd-1")) })
		r, err := e.c.AwaitCommand(ctx, ack)
		if err != nil || !r.OK() {
			t.Fatalf("AwaitCommand = %v, %v; want success", r, err)
		}
	})

	t.Run("published again: dropped by the stream, answer stored before", func(t *testing.T) {
		other := newClient(t, e.js)
		ack, err := other.Publish(ctx, capture)
		if err != nil || !ack.Duplicate {
			t.Fatalf("Publish = %+v, %v; want a duplicate", ack, err)
		}
		r, err := other.AwaitCommand(ctx, ack)
		if err != nil || !r.OK() || client.EventOf(r).Data.CommandID != "cmd-1" {
			t.Fatalf("AwaitCommand = %v, %v; want the stored success", r, err)
		}
	})

	t.Run("same key, new command: a duplicate of the success", func(t *testing.T) {
		again := capture
		again.CommandID = ""
		ack, err := e.c.Publish(ctx, again)
		if err != nil {
			t.Fatal(err)
		}
		// Another command's answer for the key is not this one's.
		e.store(rejected("M1", "order-1", "someone-else", "idempotency_key_conflict", "amount"))
		after(50*time.Millisecond, func() { e.store(duplicate("M1", "order-1", ack.CommandID)) })
		r, err := e.c.AwaitCommand(ctx, ack)
		if err != nil {
			t.Fatal(err)
		}
		d, ok := r.(*client.Duplicate)
		if !ok || !r.OK() || d.OriginalEventID != events.TerminalID("M1", "order-1") {
			t.Fatalf("AwaitCommand = %v, want a duplicate of the success", r)
		}
		if s, ok := d.Original.(*client.Succeeded); !ok || s.ID != d.OriginalEventID {
			t.Errorf("Original = %v, want the success %s", d.Original, d.OriginalEventID)
		}
	})

	// The worker records a key's outcome, then publishes its event: a
	// command with the same key handled in between is answered first.
	t.Run("a duplicate stored before its original", func(t *testing.T) {
		again := client.Capture{IdempotencyKey: "order-5", MerchantID: "M1", TransactionID: "T5", Amount: 1000, Currency: "JPY"}
		ack, err := e.c.Publish(ctx, again)
		if err != nil {
			t.Fatal(err)
		}
		e.store(duplicate("M1", "order-5", ack.CommandID))
		stored := make(chan struct{})
		defer func() { <-stored }() // a failing wait does not leave the store to a finished test
		after(500*time.Millisecond, func() {
			defer close(stored)
			e.store(terminal(events.CaptureSucceeded, "M1", "order-5", "first"))
		})
		r, err := e.c.AwaitCommand(ctx, ack)
		if err != nil {
			t.Fatal(err)
		}
		d, ok := r.(*client.Duplicate)
		if !ok {
			t.Fatalf("AwaitCommand = %v, want a duplicate", r)
		}
		if s, ok := d.Original.(*client.Succeeded); !ok || s.ID != d.OriginalEventID || s.Data.CommandID != "first" || !d.OK() {
			t.Errorf("Original = %v (OK %v), want the success stored after the duplicate", d.Original, d.OK())
		}
	})

	t.Run("a duplicate whose original is never stored", func(t *testing.T) {
		defer client.SetOriginalGrace(300 * time.Millisecond)()
		again := client.Capture{IdempotencyKey: "order-6", MerchantID: "M1", TransactionID: "T6", Amount: 1000, Currency: "JPY"}
		ack, err := e.c.Publish(ctx, again)
		if err != nil {
			t.Fatal(err)
		}
		e.store(duplicate("M1", "order-6", ack.CommandID))
		start := time.Now()
		r, err := e.c.AwaitCommand(ctx, ack)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := r.(*client.Duplicate); !ok || d.Original != nil || d.OK() {
			t.Errorf("AwaitCommand = %v, want a duplicate without its original", r)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("AwaitCommand took %v, want about the grace (300ms)", took)
		}
	})

	t.Run("a fresh client, a command answered before it started", func(t *testing.T) {
		ack, err := e.c.Publish(ctx, client.Void{CommandID: "cmd-2", MerchantID: "M1", TransactionID: "T2"})
		if err != nil {
			t.Fatal(err)
		}
		e.store(rejected("M1", "cmd-2", "cmd-2", "gateway_not_configured", "gateway"))
		fresh := newClient(t, e.js)
		r, err := fresh.AwaitCommand(ctx, ack)
		if x, ok := r.(*client.Rejected); err != nil || !ok || x.Field != "gateway" {
			t.Fatalf("AwaitCommand = %v, %v; want the rejection", r, err)
		}
	})

	t.Run("closed", func(t *testing.T) {
		c := newClient(t, e.js)
		ack, err := c.Publish(ctx, client.Void{CommandID: "cmd-3", MerchantID: "M1", TransactionID: "T3"})
		if err != nil {
			t.Fatal(err)
		}
		after(100*time.Millisecond, func() { c.Close() })
		if _, err := c.AwaitCommand(ctx, ack); !errors.Is(err, client.ErrClosed) {
			t.Errorf("AwaitCommand on a closed client = %v, want ErrClosed", err)
		}
		if _, err := c.Await(ctx, "M1", "x"); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Await after Close = %v, want ErrClosed", err)
		}
	})
}

func newClient(t *testing.T, js jetstream.JetStream, opts ...client.Option) *client.Client {
	c := client.New(js, opts...)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPublish(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ack, err := e.c.Publish(client.ContextWithTraceparent(ctx, tp, "vendor=x"), client.Capture{
		IdempotencyKey: "order-7/ship-1", MerchantID: "M1", TransactionID: "T1", Amount: 1000, Currency: "JPY",
		Metadata: map[string]string{"order": "7"},
	})
	if err != nil {
		t.Fatalf("Publish = %v", err)
	}
	if len(ack.CommandID) != 36 || ack.IdempotencyKey != "order-7/ship-1" || ack.Sequence != 1 || ack.Duplicate || ack.Stream != "PAYMENT_COMMANDS" {
		t.Errorf("ack = %+v, want a generated UUID, the key, sequence 1 of PAYMENT_COMMANDS", ack)
	}
	s, err := e.js.Stream(ctx, "PAYMENT_COMMANDS")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]string{
		"Nats-Msg-Id": ack.CommandID, "Nats-Expected-Stream": "PAYMENT_COMMANDS", "traceparent": tp, "tracestate": "vendor=x",
	} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	c, err := command.Decode("capture", m.Data)
	if err != nil || m.Subject != "payments.cmd.capture" || c.CommandID != ack.CommandID || c.Metadata["order"] != "7" {
		t.Errorf("stored %s %s: %+v, %v; want the capture", m.Subject, m.Data, c, err)
	}

	t.Run("trace context from an option, malformed ones dropped", func(t *testing.T) {
		for _, tt := range []struct {
			name, option, inCtx, want string
		}{
			{"option", tp, "", tp},
			{"option wins", tp, "00-11111111111111111111111111111111-2222222222222222-00", tp},
			{"malformed", "not-a-traceparent", "", ""},
			{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", ""},
			{"none", "", "", ""},
		} {
			c := newClient(t, e.js, client.WithTraceContext(func(context.Context) (string, string) { return tt.option, "" }))
			ctx := ctx
			if tt.inCtx != "" {
				ctx = client.ContextWithTraceparent(ctx, tt.inCtx, "")
			}
			ack, err := c.Publish(ctx, client.Void{MerchantID: "M1", TransactionID: "T9"})
			if err != nil {
				t.Fatal(err)
			}
			m, err := s.GetMsg(ctx, ack.Sequence)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get("traceparent"); got != tt.want {
				t.Errorf("%s: traceparent = %q, want %q", tt.name, got, tt.want)
			}
		}
	})

	t.Run("invalid: not published", func(t *testing.T) {
		_, err := e.c.Publish(ctx, client.Capture{CommandID: "bad", MerchantID: "MERCHANT-0001", TransactionID: "T1", Currency: "JPY"})
		var pe *client.PublishError
		var ve *client.ValidationError
		if !errors.As(err, &pe) || !errors.As(err, &ve) || !errors.Is(err, client.ErrInvalidCommand) ||
			!errors.Is(err, client.ErrNotStored) || errors.Is(err, client.ErrMaybeStored) || pe.CommandID != "bad" {
			t.Fatalf("Publish = %v, want a *PublishError with a *ValidationError, not stored", err)
		}
		want := "merchant_id: must be at most 10 characters, got 13; amount: is required for capture"
		if ve.Error() != want || ve.Field() != "merchant_id" {
			t.Errorf("validation error = %q (field %q), want %q", ve, ve.Field(), want)
		}
	})
}

func TestPublishNotProvisioned(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	c := newClient(t, js)
	ctx := testContext(t)
	_, err := c.Publish(ctx, client.Void{CommandID: "v1", MerchantID: "M1", TransactionID: "T1"})
	var pe *client.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, client.ErrNotProvisioned) || !errors.Is(err, client.ErrNotStored) || pe.CommandID != "v1" {
		t.Errorf("Publish without streams = %v, want ErrNotProvisioned, not stored", err)
	}
	if _, err := c.Await(ctx, "M1", "k"); !errors.Is(err, client.ErrNotProvisioned) {
		t.Errorf("Await without streams = %v, want ErrNotProvisioned", err)
	}
	for _, err := range c.Events(ctx, client.Filter{}) {
		if !errors.Is(err, client.ErrNotProvisioned) {
			t.Errorf("Events without streams = %v, want ErrNotProvisioned", err)
		}
	}
}

func TestEvents(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	e.store(terminal(events.CaptureSucceeded, "M1", "k0", "c0"))
	e.store(terminal(events.CaptureFailed, "M1", "k1", "c1"))
	e.store(terminal(events.VoidSucceeded, "M2", "k2", "c2"))
	e.store(deadLettered("M1", "k3", "c3"))
	tests := []struct {
		f    client.Filter
		want string
	}{
		{client.Filter{All: true}, "k0 k1 k2 k3"},
		{client.Filter{All: true, MerchantID: "M1"}, "k0 k1 k3"},
		{client.Filter{All: true, Type: "*.failed"}, "k1"},
		{client.Filter{All: true, Type: "capture"}, "k0 k1"},
		{client.Filter{All: true, Type: "payments.command.dead_lettered"}, "k3"},
		{client.Filter{Since: time.Now().Add(-time.Hour), IdempotencyKey: "k2"}, "k2"},
	}
	for _, tt := range tests {
		var got []string
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		for ev, err := range e.c.Events(short, tt.f) {
			if err != nil {
				t.Fatalf("Events(%+v): %v", tt.f, err)
			}
			if ev.Sequence == 0 || len(ev.JSON()) == 0 {
				t.Errorf("event without its sequence or JSON: %+v", ev)
			}
			got = append(got, ev.Data.IdempotencyKey)
		}
		cancel()
		if strings.Join(got, " ") != tt.want {
			t.Errorf("Events(%+v) = %v, want %s", tt.f, got, tt.want)
		}
	}
	for _, err := range e.c.Events(ctx, client.Filter{Type: "capture..x"}) {
		if !errors.Is(err, client.ErrBadFilter) {
			t.Errorf("Events with a bad type = %v, want ErrBadFilter", err)
		}
	}
}
