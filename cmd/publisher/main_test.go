package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
)

func TestUsageErrors(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	base := []string{"capture", "--merchant", "M1", "--transaction", "T1", "--amount", "1000", "--currency", "JPY"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{"no command", nil, []string{"no command"}},
		{"unknown command", []string{"refund"}, []string{`unknown command "refund"`}},
		{"unknown flag", []string{"capture", "--merchnt", "M1"}, []string{"merchnt"}},
		{"missing merchant", []string{"capture", "--transaction", "T1", "--amount", "1", "--currency", "JPY"}, []string{"merchant_id", "--merchant"}},
		{"missing transaction", []string{"void", "--merchant", "M1"}, []string{"transaction_id", "--transaction"}},
		{"capture without amount", []string{"capture", "--merchant", "M1", "--transaction", "T1"}, []string{"amount", "--amount"}},
		{"decimal amount", with("--amount", "10.50"), []string{"-amount", "minor units"}},
		{"zero amount", with("--amount", "0"), []string{"amount", "at least 1"}},
		{"amount without currency", []string{"void", "--merchant", "M1", "--transaction", "T1", "--amount", "5"}, []string{"currency", "--currency"}},
		{"bad currency", with("--currency", "yen"), []string{"currency", "ISO 4217"}},
		{"long merchant", with("--merchant", "MERCHANT-0001"), []string{"merchant_id", "at most 10"}},
		{"bad gateway", with("--gateway", "stripe"), []string{"gateway", "--gateway"}},
		{"long notes", with("--notes", strings.Repeat("n", 129)), []string{"notes", "at most 128"}},
		{"bad metadata", with("--metadata", "novalue"), []string{"metadata", "key=value"}},
		{"bad wait", with("--wait=soon"), []string{"wait", "duration"}},
		{"wait with a space", with("--wait", "45s"), []string{`unexpected argument "45s"`, "--flag=value"}},
		{"events all and since", []string{"events", "--all", "--since", "1h"}, []string{"--all and --since"}},
		{"events bad format", []string{"events", "--format", "yaml"}, []string{"text or json"}},
		{"events bad type", []string{"events", "--type", "capture..x"}, []string{"--type"}},
		{"tls cert without key", []string{"provision", "--tls-cert", "c.pem"}, []string{"--tls-key"}},
		{"demo bad sandbox url", []string{"demo", "--sandbox-url", "127.0.0.1:8099"}, []string{"--sandbox-url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := h.run(ctx, tt.args...)
			if err == nil {
				t.Fatalf("run(%q) = nil, want a usage error", tt.args)
			}
			if got := exitCode(err); got != exitUsage {
				t.Errorf("run(%q) exit code = %d (%v), want %d", tt.args, got, err, exitUsage)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run(%q) = %q, want it to mention %q", tt.args, err, w)
				}
			}
		})
	}
	// Nothing was published.
	s, err := h.js.Stream(ctx, streams.Default().Commands)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("commands stored after usage errors = %d, want 0", n)
	}
}

func TestHelp(t *testing.T) {
	h := newHarness(t, false)
	ctx := testContext(t)
	stdout, _, err := h.run(ctx, "--help")
	if err != nil {
		t.Fatalf("run(--help) = %v, want nil", err)
	}
	subcommands := []string{"provision", "capture", "void", "batch", "replay", "events", "demo"}
	for _, c := range subcommands {
		if !strings.Contains(stdout, "  "+c+" ") {
			t.Errorf("top-level help does not list %s:\n%s", c, stdout)
		}
	}
	for _, c := range subcommands {
		stdout, _, err := h.run(ctx, c, "--help")
		if err != nil {
			t.Errorf("run(%s --help) = %v, want nil", c, err)
		}
		for _, want := range []string{"Example:", "publisher " + c, "--nats-url", "--stream-prefix"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s --help does not contain %q:\n%s", c, want, stdout)
			}
		}
	}
}

func TestCapturePublishes(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	stdout, _, err := h.run(ctx, "capture", "--merchant", "M1", "--transaction", "T1", "--amount", "1000",
		"--currency", "JPY", "--idempotency-key", "order-1", "--command-id", "cmd-1", "--notes", "first",
		"--gateway", "paymentoptions", "--metadata", "order=1", "--metadata", "shop=tokyo")
	if err != nil {
		t.Fatalf("capture = %v", err)
	}
	if want := "published capture command_id=cmd-1 idempotency_key=order-1 stream_seq=1\n"; stdout != want {
		t.Errorf("capture printed %q, want %q", stdout, want)
	}
	s, err := h.js.Stream(ctx, streams.Default().Commands)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Subject, "payments.cmd.capture"; got != want {
		t.Errorf("subject = %q, want %q", got, want)
	}
	if got, want := msg.Header.Get("Nats-Msg-Id"), "cmd-1"; got != want {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
	}
	c, err := command.Decode("capture", msg.Data)
	if err != nil {
		t.Fatalf("stored command is invalid: %v", err)
	}
	if c.MerchantID != "M1" || c.TransactionID != "T1" || c.AmountValue() != 1000 || c.Currency != "JPY" ||
		c.Key() != "order-1" || c.Notes != "first" || c.Gateway != "paymentoptions" ||
		c.Metadata["order"] != "1" || c.Metadata["shop"] != "tokyo" {
		t.Errorf("stored command = %+v, want the flags' values", c)
	}

	// A void with a generated command id; the key defaults to it.
	stdout, _, err = h.run(ctx, "void", "--merchant", "M1", "--transaction", "T2")
	if err != nil {
		t.Fatalf("void = %v", err)
	}
	fields := strings.Fields(stdout)
	if len(fields) != 5 || fields[0] != "published" || fields[1] != "void" {
		t.Fatalf("void printed %q", stdout)
	}
	id := strings.TrimPrefix(fields[2], "command_id=")
	if len(id) != 36 || fields[3] != "idempotency_key="+id || fields[4] != "stream_seq=2" {
		t.Errorf("void printed %q, want a UUID command id that is also the key, sequence 2", stdout)
	}
}

func TestCaptureWait(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	h.respond(func(c *command.Command) verdict {
		if strings.HasPrefix(c.TransactionID, "bad") {
			return verdict{ok: false, code: "ERR0404"}
		}
		return verdict{ok: true, code: "INFO0001"}
	})
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantLine string
	}{
		{"capture succeeded", []string{"capture", "--transaction", "T1", "--amount", "1000", "--currency", "JPY", "--idempotency-key", "k1", "--wait"},
			0, "capture succeeded merchant=M1 transaction=T1 amount=1000 currency=JPY gateway_code=INFO0001 event_id=" + events.TerminalID("M1", "k1")},
		{"capture failed", []string{"capture", "--transaction", "bad-1", "--amount", "500", "--currency", "JPY", "--idempotency-key", "k2", "--wait=10s"},
			1, `capture failed merchant=M1 transaction=bad-1 amount=500 currency=JPY gateway_code=ERR0404 error="gateway_declined: declined by the gateway"`},
		{"void succeeded", []string{"void", "--transaction", "T3", "--idempotency-key", "k3", "--wait"},
			0, "void succeeded merchant=M1 transaction=T3 gateway_code=INFO0001"},
		{"same key again: duplicate of a success", []string{"capture", "--transaction", "T1", "--amount", "1000", "--currency", "JPY", "--idempotency-key", "k1", "--wait"},
			0, "capture succeeded (duplicate) merchant=M1 transaction=T1 amount=1000 currency=JPY gateway_code=INFO0001 event_id=" + events.TerminalID("M1", "k1")},
		{"same key again: duplicate of a failure", []string{"capture", "--transaction", "bad-1", "--amount", "500", "--currency", "JPY", "--idempotency-key", "k2", "--wait"},
			1, "capture failed (duplicate) merchant=M1"},
		{"same command id again: found in the stream", []string{"capture", "--transaction", "T5", "--amount", "1", "--currency", "JPY", "--command-id", "c5", "--wait"},
			0, "capture succeeded merchant=M1 transaction=T5"},
		{"same command id again: dropped by the stream, outcome looked up", []string{"capture", "--transaction", "T5", "--amount", "1", "--currency", "JPY", "--command-id", "c5", "--wait=5s"},
			0, "capture succeeded merchant=M1 transaction=T5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := h.run(ctx, append(tt.args, "--merchant", "M1")...)
			if got := exitStatus(err); got != tt.wantCode {
				t.Errorf("exit status = %d (%v), want %d", got, err, tt.wantCode)
			}
			lines := strings.Split(strings.TrimSpace(stdout), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "published ") {
				t.Fatalf("printed %q, want the published line and the outcome line", stdout)
			}
			if !strings.HasPrefix(lines[1], tt.wantLine) {
				t.Errorf("outcome line = %q, want prefix %q", lines[1], tt.wantLine)
			}
		})
	}
}

func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	return exitCode(err)
}

func TestCaptureWaitTimeout(t *testing.T) {
	h := newHarness(t, true) // no worker answers
	ctx := testContext(t)
	start := time.Now()
	stdout, _, err := h.run(ctx, "capture", "--merchant", "M1", "--transaction", "T1", "--amount", "1",
		"--currency", "JPY", "--idempotency-key", "k1", "--wait=300ms")
	if got := exitStatus(err); got != exitFailed {
		t.Fatalf("exit status = %d (%v), want %d", got, err, exitFailed)
	}
	for _, want := range []string{"no outcome", "idempotency_key=k1", "300ms", "go run ./cmd/worker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if !strings.HasPrefix(stdout, "published capture") {
		t.Errorf("printed %q, want the published line", stdout)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("--wait=300ms took %s", d)
	}
}

func TestNotProvisioned(t *testing.T) {
	h := newHarness(t, false)
	ctx := testContext(t)
	for _, args := range [][]string{
		{"capture", "--merchant", "M1", "--transaction", "T1", "--amount", "1", "--currency", "JPY"},
		{"events", "--count", "1"},
		{"demo"},
	} {
		_, _, err := h.run(ctx, args...)
		if !errors.Is(err, streams.ErrNotProvisioned) || exitStatus(err) != exitFailed {
			t.Errorf("run(%q) = %v (exit %d), want ErrNotProvisioned, exit 1", args, err, exitStatus(err))
		}
		if err != nil && !strings.Contains(err.Error(), "streams not provisioned: start the worker first or run `publisher provision`") {
			t.Errorf("run(%q) = %q, want the clear message", args, err)
		}
	}

	stdout, _, err := h.run(ctx, "provision")
	if err != nil {
		t.Fatalf("provision = %v", err)
	}
	if !strings.Contains(stdout, "PAYMENT_COMMANDS") {
		t.Errorf("provision printed %q", stdout)
	}
	if _, _, err := h.run(ctx, "provision"); err != nil {
		t.Errorf("second provision = %v, want nil", err)
	}
	if _, _, err := h.run(ctx, "capture", "--merchant", "M1", "--transaction", "T1", "--amount", "1", "--currency", "JPY"); err != nil {
		t.Errorf("capture after provision = %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	getenv := func(k string) string {
		if k == "NATS_URL" {
			return url
		}
		return ""
	}
	var out, errOut strings.Builder
	err = run(testContext(t), []string{"publisher", "events"}, getenv, strings.NewReader(""), &out, &errOut)
	if exitStatus(err) != exitFailed {
		t.Fatalf("run = %v, want exit 1", err)
	}
	for _, want := range []string{url, "go run ./cmd/worker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestEvents(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	cfg := streams.Default()
	store := func(kind events.Kind, merchant, txn, key string) {
		amount := int64(100)
		ev := events.New(kind, events.TerminalID(merchant, key), "test", time.Now(), events.Data{
			CommandID: "c-" + key, IdempotencyKey: key, MerchantID: merchant, TransactionID: txn,
			CommandType: strings.Split(string(kind), ".")[0], Gateway: "paymentoptions", Amount: &amount, Currency: "JPY",
			Attempts: 1, GatewayCode: "INFO0001",
		})
		body, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: cfg.EventSubject(string(kind)), Data: body, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := h.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	store(events.CaptureSucceeded, "M1", "T1", "k1")
	store(events.CaptureFailed, "M1", "T2", "k2")
	store(events.VoidSucceeded, "M2", "T3", "k3")
	store(events.CaptureSucceeded, "M2", "T4", "k4")
	store(events.VoidFailed, "M1", "T5", "k5")

	tests := []struct {
		name string
		args []string
		want []string // idempotency keys
	}{
		{"all", []string{"--all", "--count", "5"}, []string{"k1", "k2", "k3", "k4", "k5"}},
		{"merchant", []string{"--all", "--merchant", "M1", "--count", "3"}, []string{"k1", "k2", "k5"}},
		{"type", []string{"--all", "--type", "capture.succeeded", "--count", "2"}, []string{"k1", "k4"}},
		{"wildcard type and merchant", []string{"--all", "--type", "*.failed", "--merchant", "M1", "--count", "2"}, []string{"k2", "k5"}},
		{"transaction", []string{"--since", "1h", "--transaction", "T3", "--count", "1"}, []string{"k3"}},
		{"key", []string{"--all", "--key", "k4", "--count", "1"}, []string{"k4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := h.run(ctx, append([]string{"events", "--json"}, tt.args...)...)
			if err != nil {
				t.Fatalf("events %q = %v", tt.args, err)
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
				var e events.Event
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("line %q is not an event: %v", line, err)
				}
				got = append(got, e.Data.IdempotencyKey)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("events %q keys = %v, want %v", tt.args, got, tt.want)
			}
		})
	}

	t.Run("text", func(t *testing.T) {
		stdout, _, err := h.run(ctx, "events", "--all", "--format=text", "--key", "k2", "--count", "1")
		if err != nil {
			t.Fatal(err)
		}
		want := "capture.failed merchant=M1 transaction=T2 key=k2 amount=100 currency=JPY gateway_code=INFO0001 event_id=" + events.TerminalID("M1", "k2") + "\n"
		if _, rest, _ := strings.Cut(stdout, " "); rest != want {
			t.Errorf("text line = %q, want <time> %q", stdout, want)
		}
	})

	t.Run("stops on cancel with exit 0", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(300*time.Millisecond, cancel)
		stdout, _, err := h.run(cctx, "events", "--json")
		if err != nil {
			t.Errorf("events cancelled = %v, want nil", err)
		}
		if stdout != "" {
			t.Errorf("events from now printed %q, want nothing", stdout)
		}
	})
}
