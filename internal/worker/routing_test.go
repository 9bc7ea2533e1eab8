package worker_test

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/sibs"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/internal/worker"
)

const (
	poMerchant   = "PO01"
	sibsMerchant = "SIBS01"
)

// startRoutedWorker runs one worker over s with both gateways on s's
// sandbox, PaymentOptions by default and the routes given, and stops it at
// the end of the test.
func startRoutedWorker(t *testing.T, s *systemtest.System, o systemtest.Options, routes map[string]string) {
	t.Helper()
	base, err := url.Parse(s.Sandbox.SIBSBaseURL())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sibs.New(sibs.Config{BaseURL: base, ClientID: "c", TerminalID: "1", Token: "t", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h := handlers.New(handlers.Config{
		JetStream:      s.JS,
		Streams:        s.Streams,
		Store:          s.Store,
		Gateways:       map[string]handlers.Gateway{"paymentoptions": s.Gateway, "sibs": sc},
		Routes:         routes,
		DefaultGateway: "paymentoptions",
		Retry:          o.Retry,
		Lease:          o.Lease,
		AckWait:        5 * time.Second,
		Holder:         "routed",
		Source:         "urn:payworker:test:routed",
	})
	w := worker.New(worker.Config{JetStream: s.JS, Streams: s.Streams, Handler: h, Concurrency: o.Concurrency,
		AckWait: 5 * time.Second, ShutdownTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	})
}

// ledgerOf lists the applied operations on auth as "op:amount:reference".
func ledgerOf(sb *sandbox.Sandbox, auth string) string {
	var out []string
	for _, op := range sb.Applied(auth) {
		out = append(out, fmt.Sprintf("%s:%d:%s", op.Operation, op.Amount, op.Reference))
	}
	return strings.Join(out, " ")
}

// TestRoutingBetweenGateways: one batch for a SIBS merchant (by
// GATEWAY_ROUTES), a PaymentOptions merchant (by default) and a command that
// names its gateway; each reaches its gateway exactly once, every command
// sent twice under its key.
func TestRoutingBetweenGateways(t *testing.T) {
	o := systemtest.DefaultOptions()
	o.Workers = 0
	s := systemtest.Start(t, o)
	startRoutedWorker(t, s, o, map[string]string{sibsMerchant: "sibs"})
	sb := s.Sandbox

	poFull := sb.Authorise(poMerchant, 1000, "JPY")
	poVoid := sb.Authorise(poMerchant, 700, "JPY")
	named := sb.Authorise(poMerchant, 900, "JPY") // captured through SIBS: the command names it
	sibsSplit := sb.Authorise(sibsMerchant, 10_000, "EUR")
	sibsVoid := sb.Authorise(sibsMerchant, 5_000, "PLN")

	type command struct {
		typ, key, merchant, auth string
		amount                   int64
		currency, gateway        string
		wantGateway              string
		wantAmount               int64
	}
	cmds := []command{
		{"capture", "po-cap", poMerchant, poFull, 1000, "JPY", "", "paymentoptions", 1000},
		{"void", "po-void", poMerchant, poVoid, 0, "", "", "paymentoptions", 0},
		{"capture", "named-cap", poMerchant, named, 900, "JPY", "sibs", "sibs", 900},
		{"capture", "sibs-cap-1", sibsMerchant, sibsSplit, 1999, "EUR", "", "sibs", 1999},
		{"void", "sibs-void-part", sibsMerchant, sibsVoid, 1250, "PLN", "", "sibs", 1250},
	}
	publish := func(c command, suffix string) {
		m := systemtest.Cmd{"command_id": c.key + suffix, "idempotency_key": c.key, "type": c.typ,
			"merchant_id": c.merchant, "transaction_id": c.auth}
		if c.amount != 0 {
			m["amount"], m["currency"] = c.amount, c.currency
		}
		if c.gateway != "" {
			m["gateway"] = c.gateway
		}
		s.Publish(t, c.typ, m)
	}
	for _, c := range cmds {
		publish(c, "")
	}
	kindOf := func(c command) events.Kind {
		if c.typ == "void" {
			return events.VoidSucceeded
		}
		return events.CaptureSucceeded
	}
	for _, c := range cmds {
		s.WaitKind(t, c.merchant, c.key, kindOf(c))
	}
	s.Settle(t) // every key completed, so the repeats below are duplicates, not busy
	for _, c := range cmds {
		publish(c, "-again") // same key, another message
	}
	for _, c := range cmds {
		kind := kindOf(c)
		got := s.WaitEvents(t, c.merchant, c.key, "terminal and duplicate", func(rs []systemtest.Received) bool {
			return systemtest.Count(rs, kind) == 1 && systemtest.Count(rs, events.Duplicate) == 1
		})
		for _, r := range got {
			if r.Event.Data.Gateway != c.wantGateway {
				t.Errorf("%s: event %s names gateway %q, want %q", c.key, r.Event.Type, r.Event.Data.Gateway, c.wantGateway)
			}
			if r.Event.Type == kind.Type() && c.wantGateway == "sibs" && r.Event.Data.GatewayCode != "000" {
				t.Errorf("%s: gateway_code = %q, want SIBS's 000", c.key, r.Event.Data.GatewayCode)
			}
		}
	}

	// The second SIBS capture takes the rest of the authorisation; the full
	// void (no amount) cancels what is left of the PLN one.
	more := []command{
		{"capture", "sibs-cap-2", sibsMerchant, sibsSplit, 8000, "EUR", "", "sibs", 8000},
		{"void", "sibs-void-rest", sibsMerchant, sibsVoid, 0, "", "", "sibs", 3750},
	}
	for _, c := range more {
		publish(c, "")
		r := s.WaitKind(t, c.merchant, c.key, kindOf(c))
		if d := r.Event.Data; d.Gateway != "sibs" || d.Amount == nil || *d.Amount != c.wantAmount {
			t.Errorf("%s: event gateway %q amount %v, want sibs %d", c.key, d.Gateway, d.Amount, c.wantAmount)
		}
	}
	s.Settle(t)

	// Each gateway saw its own: SIBS operations carry the key as their
	// reference, PaymentOptions ones none; nothing applied twice.
	tests := []struct {
		auth string
		want string
	}{
		{poFull, "capture:1000:"},
		{poVoid, "void:700:"},
		{named, "capture:900:named-cap"},
		{sibsSplit, "capture:1999:sibs-cap-1 capture:8000:sibs-cap-2"},
		{sibsVoid, "void:1250:sibs-void-part void:3750:sibs-void-rest"},
	}
	for _, tt := range tests {
		if got := ledgerOf(sb, tt.auth); got != tt.want {
			t.Errorf("ledger of %s = %q, want %q", tt.auth, got, tt.want)
		}
	}
	if a, _ := sb.Authorisation(sibsSplit); a.State != sandbox.StatePartiallyCaptured || a.CapturedAmount != 10_000-1 {
		t.Errorf("split authorisation = %s captured %d, want partially captured 9999 (1 left open)", a.State, a.CapturedAmount)
	}
	if got := sb.Calls(sandbox.EndpointCapture) + sb.Calls(sandbox.EndpointVoid); got != 2 {
		t.Errorf("PaymentOptions calls = %d, want 2", got)
	}
	if got := sb.Calls(sandbox.EndpointSIBSCapture) + sb.Calls(sandbox.EndpointSIBSCancellation); got != 5 {
		t.Errorf("SIBS operation calls = %d, want 5", got)
	}
}

// TestSIBSPendingReconciled: every SIBS attempt answers "000" + Pending (and
// applies on a coin toss), so each outcome is learnt from the status call.
// Two partial captures of one authorisation are told apart by their
// references: the second is not mistaken for the first, and neither is
// applied twice.
func TestSIBSPendingReconciled(t *testing.T) {
	o := systemtest.DefaultOptions()
	o.Workers = 0
	o.Retry.MaxAttempts = 40
	o.Retry.MaxElapsed = 20 * time.Second
	s := systemtest.Start(t, o)
	startRoutedWorker(t, s, o, map[string]string{sibsMerchant: "sibs"})
	sb := s.Sandbox
	sb.SetFaults(sandbox.Faults{UnclearRate: 1})

	auth := sb.Authorise(sibsMerchant, 1000, "EUR")
	caps := []struct {
		key    string
		amount int64
	}{{"pend-1", 300}, {"pend-2", 300}, {"pend-3", 400}}
	for _, c := range caps {
		s.Publish(t, "capture", systemtest.Cmd{"command_id": c.key, "type": "capture", "merchant_id": sibsMerchant,
			"transaction_id": auth, "amount": c.amount, "currency": "EUR"})
		r := s.WaitKind(t, sibsMerchant, c.key, events.CaptureSucceeded)
		if d := r.Event.Data; !d.Reconciled || d.Gateway != "sibs" || d.Amount == nil || *d.Amount != c.amount {
			t.Errorf("%s: event reconciled %v gateway %q amount %v, want reconciled sibs %d", c.key, d.Reconciled, d.Gateway, d.Amount, c.amount)
		}
	}
	s.Settle(t)
	sb.SetFaults(sandbox.Faults{})

	var got []string
	for _, op := range sb.Applied(auth) {
		got = append(got, fmt.Sprintf("%s:%d", op.Reference, op.Amount))
	}
	sort.Strings(got)
	if want := "pend-1:300 pend-2:300 pend-3:400"; strings.Join(got, " ") != want {
		t.Errorf("ledger = %s, want each capture once: %s", strings.Join(got, " "), want)
	}
	if a, _ := sb.Authorisation(auth); a.State != sandbox.StateCaptured || a.CapturedAmount != 1000 {
		t.Errorf("authorisation = %s captured %d, want captured 1000", a.State, a.CapturedAmount)
	}
}
