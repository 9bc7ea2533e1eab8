package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/systemtest"
)

const merchant = "M0001"

func TestCaptureAndVoidEndToEnd(t *testing.T) {
	for _, store := range []struct {
		name string
		kv   bool
	}{{"redis", false}, {"jetstream-kv", true}} {
		t.Run(store.name, func(t *testing.T) {
			o := systemtest.DefaultOptions()
			o.KV = store.kv
			s := systemtest.Start(t, o)

			full := s.Sandbox.Authorise(merchant, 1000, "JPY")
			partial := s.Sandbox.Authorise(merchant, 1000, "JPY")
			voided := s.Sandbox.Authorise(merchant, 700, "JPY")
			s.Publish(t, "capture", systemtest.Cmd{"command_id": "c-full", "type": "capture", "merchant_id": merchant,
				"transaction_id": full, "amount": 1000, "currency": "JPY", "metadata": map[string]string{"order": "A-1"}})
			s.Publish(t, "capture", systemtest.Cmd{"command_id": "c-part", "type": "capture", "merchant_id": merchant,
				"transaction_id": partial, "amount": 400, "currency": "JPY"})
			s.Publish(t, "void", systemtest.Cmd{"command_id": "v-1", "type": "void", "merchant_id": merchant, "transaction_id": voided})

			got := s.WaitKind(t, merchant, "c-full", events.CaptureSucceeded)
			if got.Subject != "payments.evt.capture.succeeded" {
				t.Errorf("subject = %q, want payments.evt.capture.succeeded", got.Subject)
			}
			if want := events.TerminalID(merchant, "c-full"); got.Event.ID != want || got.MsgID != want {
				t.Errorf("event id = %q, Nats-Msg-Id = %q, want both %q", got.Event.ID, got.MsgID, want)
			}
			d := got.Event.Data
			if d.GatewayCode != "INFO0001" || d.Amount == nil || *d.Amount != 1000 || d.Attempts != 1 || d.Metadata["order"] != "A-1" {
				t.Errorf("data = %+v, want INFO0001, amount 1000, 1 attempt, metadata echoed", d)
			}
			if d.MaskedCardNumber == "" || strings.Count(d.MaskedCardNumber, "*") < 6 {
				t.Errorf("masked card number = %q, want first 6 / last 4 only", d.MaskedCardNumber)
			}
			if strings.Contains(string(got.Raw), "5200000000001005") {
				t.Errorf("event carries the full card number: %s", got.Raw)
			}
			if got.Event.Subject != full {
				t.Errorf("CloudEvents subject = %q, want the transaction id %q", got.Event.Subject, full)
			}

			p := s.WaitKind(t, merchant, "c-part", events.CaptureSucceeded)
			if *p.Event.Data.Amount != 400 {
				t.Errorf("partial capture amount = %d, want 400", *p.Event.Data.Amount)
			}
			v := s.WaitKind(t, merchant, "v-1", events.VoidSucceeded)
			if v.Event.Data.GatewayCode != "INFO0003" {
				t.Errorf("void gateway code = %q, want INFO0003", v.Event.Data.GatewayCode)
			}
			s.Settle(t)

			for _, tc := range []struct {
				auth   string
				op     string
				amount int64
			}{{full, "capture", 1000}, {partial, "capture", 400}, {voided, "void", 0}} {
				ops := s.Sandbox.Applied(tc.auth)
				if len(ops) != 1 || string(ops[0].Operation) != tc.op || (tc.amount != 0 && ops[0].Amount != tc.amount) {
					t.Errorf("ledger of %s = %+v, want one %s of %d", tc.auth, ops, tc.op, tc.amount)
				}
			}
		})
	}
}

func TestCaptureRefusedByGateway(t *testing.T) {
	s := systemtest.Start(t, systemtest.DefaultOptions())
	auth := s.Sandbox.Authorise(merchant, 500, "JPY")
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "unknown-txn", "type": "capture", "merchant_id": merchant,
		"transaction_id": "00000000-0000-0000-0000-000000000000", "amount": 100, "currency": "JPY"})
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "too-much", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 501, "currency": "JPY"})

	unknown := s.WaitKind(t, merchant, "unknown-txn", events.CaptureFailed)
	if e := unknown.Event.Data.Error; e == nil || e.Code != "gateway_declined" || e.Retryable || unknown.Event.Data.GatewayCode == "" {
		t.Errorf("unknown transaction: data = %+v, want gateway_declined with the gateway's code", unknown.Event.Data)
	}
	over := s.WaitKind(t, merchant, "too-much", events.CaptureFailed)
	if over.Event.Data.GatewayResponseCode != "836" {
		t.Errorf("over-amount capture: response code = %q, want 836", over.Event.Data.GatewayResponseCode)
	}
	s.Settle(t)
	if ops := s.Sandbox.Applied(auth); len(ops) != 0 {
		t.Errorf("ledger = %+v, want nothing applied", ops)
	}
}

func TestSameKeyTwiceCallsGatewayOnce(t *testing.T) {
	s := systemtest.Start(t, systemtest.DefaultOptions())
	auth := s.Sandbox.Authorise(merchant, 1000, "EUR")
	for _, id := range []string{"first", "second"} {
		s.Publish(t, "capture", systemtest.Cmd{"command_id": id, "type": "capture", "idempotency_key": "order-42",
			"merchant_id": merchant, "transaction_id": auth, "amount": 1000, "currency": "EUR"})
	}
	s.WaitEvents(t, merchant, "order-42", "terminal + duplicate", func(rs []systemtest.Received) bool {
		return systemtest.Count(rs, events.CaptureSucceeded) == 1 && systemtest.Count(rs, events.Duplicate) == 1
	})
	s.Settle(t)
	time.Sleep(100 * time.Millisecond)
	got := s.EventsFor(merchant, "order-42")
	if n := systemtest.Count(got, events.CaptureSucceeded); n != 1 {
		t.Errorf("terminal events = %d, want 1 (%s)", n, systemtest.Kinds(got))
	}
	if n := systemtest.Count(got, events.Duplicate); n != 1 {
		t.Errorf("duplicate events = %d, want 1 (%s)", n, systemtest.Kinds(got))
	}
	var term, dup systemtest.Received
	for _, r := range got {
		switch r.Event.Type {
		case events.CaptureSucceeded.Type():
			term = r
		case events.Duplicate.Type():
			dup = r
		}
	}
	if dup.Event.Data.OriginalEventID != term.Event.ID {
		t.Errorf("duplicate names %q, want the terminal event %q", dup.Event.Data.OriginalEventID, term.Event.ID)
	}
	if n := s.Sandbox.Calls("capture"); n != 1 {
		t.Errorf("gateway capture calls = %d, want 1", n)
	}
}

// TestSameKeyOtherParametersIsRejected: a key names one operation. The same
// key again with any parameter of the fingerprint changed (type, gateway,
// transaction, amount, currency) is rejected as idempotency_key_conflict,
// and the gateway is not called for it.
func TestSameKeyOtherParametersIsRejected(t *testing.T) {
	o := systemtest.DefaultOptions()
	o.Workers = 0
	s := systemtest.Start(t, o)
	var calls callLog
	startRecordedWorker(t, s, o, &calls)
	for _, tc := range []struct {
		name   string
		change func(c systemtest.Cmd, other string)
	}{
		{"type", func(c systemtest.Cmd, _ string) { c["type"] = "void"; delete(c, "amount"); delete(c, "currency") }},
		{"gateway", func(c systemtest.Cmd, _ string) { c["gateway"] = "sibs" }},
		{"transaction", func(c systemtest.Cmd, other string) { c["transaction_id"] = other }},
		{"amount", func(c systemtest.Cmd, _ string) { c["amount"] = 999 }},
		{"currency", func(c systemtest.Cmd, _ string) { c["currency"] = "PLN" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "k-" + tc.name
			auth := s.Sandbox.Authorise(merchant, 1000, "EUR")
			other := s.Sandbox.Authorise(merchant, 1000, "EUR")
			first := systemtest.Cmd{"command_id": key + "-a", "type": "capture", "idempotency_key": key,
				"merchant_id": merchant, "transaction_id": auth, "amount": 1000, "currency": "EUR"}
			s.Publish(t, "capture", first)
			s.WaitKind(t, merchant, key, events.CaptureSucceeded)
			s.Settle(t)
			before := len(calls.of(key))

			second := systemtest.Cmd{}
			for k, v := range first {
				second[k] = v
			}
			second["command_id"] = key + "-b"
			tc.change(second, other)
			s.Publish(t, second["type"].(string), second)
			rej := s.WaitKind(t, merchant, key, events.Rejected)
			if e := rej.Event.Data.Error; e == nil || e.Code != "idempotency_key_conflict" || e.Field != "idempotency_key" {
				t.Errorf("rejection = %+v, want idempotency_key_conflict on idempotency_key", rej.Event.Data.Error)
			}
			s.Settle(t)
			if got := calls.of(key); len(got) != before {
				t.Errorf("gateway calls for the key: %v, then %v after the conflicting command; want none more", got[:before], got[before:])
			}
			for _, a := range []string{auth, other} {
				if ops := s.Sandbox.Applied(a); a == other && len(ops) != 0 || a == auth && len(ops) != 1 {
					t.Errorf("ledger of %s: %s", a, ledgerOf(s.Sandbox, a))
				}
			}
		})
	}
}

func TestInvalidCommandIsRejectedAndKept(t *testing.T) {
	s := systemtest.Start(t, systemtest.DefaultOptions())
	bad := []struct {
		name, subject, body, field, code string
	}{
		{"long merchant", "payments.cmd.capture", `{"command_id":"bad-1","type":"capture","merchant_id":"MERCHANT-123","transaction_id":"t","amount":1,"currency":"EUR"}`, "merchant_id", "schema_violation"},
		{"not json", "payments.cmd.capture", `{"command_id":`, "", "invalid_json"},
		{"type mismatch", "payments.cmd.void", `{"command_id":"bad-3","type":"capture","merchant_id":"M1","transaction_id":"t","amount":1,"currency":"EUR"}`, "type", "subject_mismatch"},
		{"unknown field", "payments.cmd.void", `{"command_id":"bad-4","type":"void","merchant_id":"M1","transaction_id":"t","colour":"red"}`, "colour", "schema_violation"},
		{"oversize", "payments.cmd.capture", `{"command_id":"bad-5","notes":"` + strings.Repeat("x", 70<<10) + `"}`, "", "oversize"},
	}
	for _, b := range bad {
		s.PublishRaw(t, b.subject, []byte(b.body), "")
	}
	// The worker keeps going: a valid command after the garbage succeeds.
	auth := s.Sandbox.Authorise(merchant, 10, "EUR")
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "good", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 10, "currency": "EUR"})
	s.WaitKind(t, merchant, "good", events.CaptureSucceeded)
	s.Settle(t)

	var rejected []systemtest.Received
	for _, r := range s.Events() {
		if r.Event.Type == events.Rejected.Type() {
			rejected = append(rejected, r)
		}
	}
	if len(rejected) != len(bad) {
		t.Fatalf("rejected events = %d, want %d", len(rejected), len(bad))
	}
	dlq, err := s.JS.Stream(context.Background(), s.Streams.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	// Events arrive in processing order, not publication order: pair each
	// with its DLQ entry, which holds the raw bytes.
	byBody := map[string]systemtest.Received{}
	for _, r := range rejected {
		m, err := dlq.GetMsg(context.Background(), r.Event.Data.DLQSequence)
		if err != nil {
			t.Fatalf("DLQ message %d: %v", r.Event.Data.DLQSequence, err)
		}
		if got, want := m.Header.Get(handlers.HeaderReason), r.Event.Data.Error.Code; got != want {
			t.Errorf("DLQ reason = %q, want the event's code %q", got, want)
		}
		byBody[string(m.Data)] = r
	}
	for _, b := range bad {
		r, ok := byBody[b.body]
		if !ok {
			t.Errorf("%s: raw bytes not in the DLQ", b.name)
			continue
		}
		e := r.Event.Data.Error
		if e == nil || e.Code != b.code || e.Field != b.field || e.Message == "" {
			t.Errorf("%s: error = %+v, want code %s naming field %q", b.name, e, b.code, b.field)
			continue
		}
		if b.field != "" && !strings.HasPrefix(e.Message, b.field+":") {
			t.Errorf("%s: message %q does not start with the field", b.name, e.Message)
		}
	}
	if n := s.Sandbox.Calls("capture") + s.Sandbox.Calls("void"); n != 1 {
		t.Errorf("gateway calls = %d, want 1 (the valid command only)", n)
	}
}

func TestApplyThenDropIsReconciledNotResent(t *testing.T) {
	s := systemtest.Start(t, systemtest.DefaultOptions())
	auth := s.Sandbox.Authorise(merchant, 1000, "JPY")
	s.Sandbox.SetFaults(sandbox.Faults{ApplyThenDropRate: 1})
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "drop", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1000, "currency": "JPY"})
	got := s.WaitKind(t, merchant, "drop", events.CaptureSucceeded)
	if !got.Event.Data.Reconciled {
		t.Errorf("event not marked reconciled: %+v", got.Event.Data)
	}
	s.Settle(t)
	if ops := s.Sandbox.Applied(auth); len(ops) != 1 {
		t.Errorf("ledger = %+v, want exactly one capture", ops)
	}
	if n := s.Sandbox.Calls("capture"); n != 1 {
		t.Errorf("capture calls = %d, want 1: an unknown outcome is never resent blind", n)
	}
}

func TestGatewayDownDeadLetters(t *testing.T) {
	o := systemtest.DefaultOptions()
	o.Retry.MaxAttempts = 3
	s := systemtest.Start(t, o)
	auth := s.Sandbox.Authorise(merchant, 1000, "JPY")
	s.Sandbox.SetFaults(sandbox.Faults{RateLimitRate: 1, RetryAfter: 10 * time.Millisecond})
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "dl", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1000, "currency": "JPY"})
	got := s.WaitKind(t, merchant, "dl", events.DeadLettered)
	if e := got.Event.Data.Error; e == nil || e.Code != "retries_exhausted" {
		t.Errorf("dead letter error = %+v, want retries_exhausted", got.Event.Data.Error)
	}
	s.Settle(t)
	dlq, _ := s.JS.Stream(context.Background(), s.Streams.DLQ)
	m, err := dlq.GetMsg(context.Background(), got.Event.Data.DLQSequence)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "payments.dlq.capture" || m.Header.Get(handlers.HeaderAttempts) != "3" || m.Header.Get(handlers.HeaderOrigSequence) == "" {
		t.Errorf("DLQ entry %s headers %v, want payments.dlq.capture with 3 attempts and origin", m.Subject, m.Header)
	}
	if n := systemtest.Count(s.EventsFor(merchant, "dl"), events.CaptureSucceeded) + systemtest.Count(s.EventsFor(merchant, "dl"), events.CaptureFailed); n != 0 {
		t.Errorf("terminal events = %d, want none for a dead-lettered command", n)
	}
	if ops := s.Sandbox.Applied(auth); len(ops) != 0 {
		t.Errorf("ledger = %+v, want nothing applied", ops)
	}
}

var _ = jetstream.MsgIDHeader

func TestGatewayNotConfiguredIsRejected(t *testing.T) {
	s := systemtest.Start(t, systemtest.DefaultOptions()) // PaymentOptions only
	auth := s.Sandbox.Authorise(merchant, 1000, "EUR")
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "to-sibs", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1000, "currency": "EUR", "gateway": "sibs"})
	rej := s.WaitKind(t, merchant, "to-sibs", events.Rejected)
	if e := rej.Event.Data.Error; e == nil || e.Code != "gateway_not_configured" || e.Field != "gateway" || !strings.HasPrefix(e.Message, "gateway:") {
		t.Errorf("rejection = %+v, want gateway_not_configured naming the gateway field", rej.Event.Data.Error)
	}
	s.Settle(t)
	if n := s.Sandbox.Calls("capture") + s.Sandbox.Calls("status"); n != 0 {
		t.Errorf("gateway calls = %d, want none", n)
	}
}

// TestUnclearCaptureOfAVoidedAuthorisationFails: an attempt whose outcome is
// unknown is reconciled through the status call; when that shows the
// authorisation voided, the capture cannot have happened and cannot happen:
// a final failure, without a second capture call.
func TestUnclearCaptureOfAVoidedAuthorisationFails(t *testing.T) {
	s := systemtest.Start(t, systemtest.DefaultOptions())
	auth := s.Sandbox.Authorise(merchant, 1000, "EUR")
	if res := s.Gateway.Void(context.Background(), gateway.Request{Operation: gateway.Void, MerchantID: merchant, TransactionID: auth}); res.Outcome != gateway.Succeeded {
		t.Fatalf("void before the test = %v (%v), want succeeded", res.Outcome, res.Err)
	}
	s.Sandbox.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 502}) // capture and void only; status answers
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "late", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1000, "currency": "EUR"})
	got := s.WaitKind(t, merchant, "late", events.CaptureFailed)
	if e := got.Event.Data.Error; e == nil || e.Code != "authorisation_state" || !got.Event.Data.Reconciled {
		t.Errorf("failure = %+v (reconciled %v), want authorisation_state from the status call", e, got.Event.Data.Reconciled)
	}
	s.Settle(t)
	if n := s.Sandbox.Calls("capture"); n != 1 {
		t.Errorf("capture calls = %d, want 1", n)
	}
}
