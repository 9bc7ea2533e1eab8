package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/publish"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/systemtest"
)

// replayRetry is a retry budget a gateway outage outlasts at once.
var replayRetry = handlers.Retry{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, MaxElapsed: 2 * time.Second, MaxAttempts: 3}

// startSystem runs a whole system: in-process NATS, a redis-server, the
// sandbox gateway over HTTP and a worker with a small retry budget.
func startSystem(t *testing.T) *systemtest.System {
	t.Helper()
	o := systemtest.DefaultOptions()
	o.Retry = replayRetry
	return systemtest.Start(t, o)
}

// runPublisher runs the program against s's NATS server.
func runPublisher(ctx context.Context, t *testing.T, s *systemtest.System, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if k == "NATS_URL" {
			return s.NATS.URL
		}
		return ""
	}
	err = run(ctx, append([]string{"publisher"}, args...), getenv, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

func streamMsgs(t *testing.T, s *systemtest.System, name string) uint64 {
	t.Helper()
	st, err := s.JS.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func captureCmd(id, key, merchant, auth string) systemtest.Cmd {
	c := systemtest.Cmd{"command_id": id, "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1000, "currency": "JPY"}
	if key != "" {
		c["idempotency_key"] = key
	}
	return c
}

// TestReplayAfterOutage: with the gateway down longer than the retry budget
// the worker dead-letters each command with every Payworker-* header; once
// the gateway is back, `publisher replay --wait` gets each one captured
// exactly once and empties the DLQ.
func TestReplayAfterOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs a whole system")
	}
	s := startSystem(t)
	ctx := testContext(t)
	start := time.Now()
	s.Sandbox.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 503})
	cmds := []struct {
		cmd systemtest.Cmd
		key string // the key the worker uses
	}{
		{captureCmd("c-1", "order-1", "M1", s.Sandbox.Authorise("M1", 1000, "JPY")), "order-1"},
		{captureCmd("c-2", "", "M1", s.Sandbox.Authorise("M1", 1000, "JPY")), "c-2"}, // no key: command_id is the key
	}
	for _, c := range cmds {
		s.Publish(t, "capture", c.cmd) // stream sequences 1 and 2
	}
	dlqStream, err := s.JS.Stream(ctx, s.Streams.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	dlqSeq := map[string]uint64{}
	for i, c := range cmds {
		ev := s.WaitKind(t, "M1", c.key, events.DeadLettered)
		d := ev.Event.Data
		dlqSeq[c.key] = d.DLQSequence
		if d.DLQSubject != "payments.dlq.capture" || d.DLQSequence == 0 {
			t.Fatalf("dead_lettered event of %s names %s#%d, want payments.dlq.capture#<seq>", c.key, d.DLQSubject, d.DLQSequence)
		}
		m, err := dlqStream.GetMsg(ctx, d.DLQSequence)
		if err != nil {
			t.Fatalf("DLQ entry %d: %v", d.DLQSequence, err)
		}
		if want, _ := json.Marshal(c.cmd); !bytes.Equal(m.Data, want) {
			t.Errorf("DLQ body of %s = %s, want the command as published: %s", c.key, m.Data, want)
		}
		isTime := func(v string) error {
			at, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return err
			}
			if at.Before(start.Add(-time.Second)) || at.After(time.Now()) {
				return fmt.Errorf("%s is not during the test", at)
			}
			return nil
		}
		equals := func(want string) func(string) error {
			return func(v string) error {
				if v != want {
					return fmt.Errorf("want %q", want)
				}
				return nil
			}
		}
		contains := func(want string) func(string) error {
			return func(v string) error {
				if !strings.Contains(v, want) {
					return fmt.Errorf("want it to contain %q", want)
				}
				return nil
			}
		}
		headers := []struct {
			name  string
			check func(string) error
		}{
			{handlers.HeaderReason, equals("retries_exhausted")},
			{handlers.HeaderError, contains("retry budget")},
			{handlers.HeaderAttempts, equals(strconv.Itoa(replayRetry.MaxAttempts))},
			{handlers.HeaderLastAnswer, contains("HTTP 503")},
			{handlers.HeaderUncertain, equals("false")},
			{handlers.HeaderOrigSubject, equals("payments.cmd.capture")},
			{handlers.HeaderOrigStream, equals("PAYMENT_COMMANDS")},
			{handlers.HeaderOrigSequence, equals(strconv.Itoa(i + 1))},
			{handlers.HeaderFirstAttempt, isTime},
			{handlers.HeaderLastAttempt, isTime},
			{handlers.HeaderDeadLetteredAt, isTime},
		}
		for _, h := range headers {
			v := m.Header.Get(h.name)
			if v == "" {
				t.Errorf("DLQ entry of %s: header %s missing", c.key, h.name)
				continue
			}
			if err := h.check(v); err != nil {
				t.Errorf("DLQ entry of %s: header %s = %q: %v", c.key, h.name, v, err)
			}
		}
		first, _ := time.Parse(time.RFC3339Nano, m.Header.Get(handlers.HeaderFirstAttempt))
		last, _ := time.Parse(time.RFC3339Nano, m.Header.Get(handlers.HeaderLastAttempt))
		at, _ := time.Parse(time.RFC3339Nano, m.Header.Get(handlers.HeaderDeadLetteredAt))
		if first.After(last) || last.After(at) {
			t.Errorf("DLQ entry of %s: first attempt %s, last attempt %s, dead-lettered %s: want them in order", c.key, first, last, at)
		}
	}
	s.Settle(t)

	s.Sandbox.SetFaults(sandbox.Faults{})
	stdout, stderr, err := runPublisher(ctx, t, s, "replay", "--wait=30s")
	if err != nil {
		t.Fatalf("replay --wait = %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	for _, want := range []string{"replay-PAYMENT_DLQ-", "succeeded", "replayed             2", "succeeded            2", "errors               0"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("replay printed no %q:\n%s", want, stdout)
		}
	}
	if n := streamMsgs(t, s, s.Streams.DLQ); n != 0 {
		t.Errorf("DLQ entries after the replay = %d, want 0", n)
	}
	s.Settle(t)
	for _, c := range cmds {
		s.WaitKind(t, "M1", c.key, events.CaptureSucceeded)
		got := s.EventsFor("M1", c.key)
		if n := systemtest.Count(got, events.CaptureSucceeded); n != 1 {
			t.Errorf("%s: capture.succeeded events = %d, want 1 (%s)", c.key, n, systemtest.Kinds(got))
		}
		for _, r := range got {
			want := publish.ReplayCommandID("PAYMENT_DLQ", dlqSeq[c.key])
			if r.Event.Type == events.CaptureSucceeded.Type() && r.Event.Data.CommandID != want {
				t.Errorf("%s: succeeded by command %s, want the replay %s", c.key, r.Event.Data.CommandID, want)
			}
		}
		if n := len(s.Sandbox.Applied(c.cmd["transaction_id"].(string))); n != 1 {
			t.Errorf("%s: effective captures = %d, want 1", c.key, n)
		}
	}
	if n := len(s.Sandbox.Ledger()); n != len(cmds) {
		t.Errorf("ledger = %d operations, want %d", n, len(cmds))
	}
}

// planKeys reads the keys of a --dry-run table.
func planKeys(out string) []string {
	var keys []string
	lines := strings.Split(out, "\n")
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) == 0 {
			break
		}
		keys = append(keys, f[4])
	}
	slices.Sort(keys)
	return keys
}

// TestReplayDryRunAndFilters: --dry-run lists what the filters select and
// changes nothing; rejected messages are skipped unless --include-invalid.
// Then a real replay takes the dead letters and leaves the rejected message,
// which, replayed on request, is rejected again.
func TestReplayDryRunAndFilters(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs a whole system")
	}
	s := startSystem(t)
	ctx := testContext(t)

	// retries_exhausted: a capture of M1 and a void of M2.
	s.Sandbox.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 503})
	s.Publish(t, "capture", captureCmd("c-a", "a-cap", "M1", s.Sandbox.Authorise("M1", 1000, "JPY")))
	s.Publish(t, "void", systemtest.Cmd{"command_id": "c-b", "type": "void", "idempotency_key": "b-void",
		"merchant_id": "M2", "transaction_id": s.Sandbox.Authorise("M2", 1000, "JPY")})
	s.WaitKind(t, "M1", "a-cap", events.DeadLettered)
	s.WaitKind(t, "M2", "b-void", events.DeadLettered)
	time.Sleep(20 * time.Millisecond)
	mid := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(20 * time.Millisecond)
	// outcome_unknown: a capture of M2 answered 502, its status unknown.
	s.Sandbox.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 502, FaultStatus: true})
	s.Publish(t, "capture", captureCmd("c-c", "c-cap", "M2", s.Sandbox.Authorise("M2", 1000, "JPY")))
	s.WaitKind(t, "M2", "c-cap", events.DeadLettered)
	// rejected: no transaction_id.
	s.Publish(t, "capture", systemtest.Cmd{"command_id": "bad-1", "type": "capture", "merchant_id": "M1", "amount": 5, "currency": "JPY"})
	s.WaitKind(t, "M1", "bad-1", events.Rejected)
	s.Settle(t)
	dlqBefore, cmdsBefore := streamMsgs(t, s, s.Streams.DLQ), streamMsgs(t, s, s.Streams.Commands)
	if dlqBefore != 4 {
		t.Fatalf("DLQ entries = %d, want 4", dlqBefore)
	}

	tests := []struct {
		args []string
		want []string // keys listed, sorted
	}{
		{nil, []string{"a-cap", "b-void", "c-cap"}},
		{[]string{"--type", "capture"}, []string{"a-cap", "c-cap"}},
		{[]string{"--type", "void"}, []string{"b-void"}},
		{[]string{"--merchant", "M2"}, []string{"b-void", "c-cap"}},
		{[]string{"--reason", "outcome_unknown"}, []string{"c-cap"}},
		{[]string{"--reason", "retries_exhausted", "--merchant", "M1"}, []string{"a-cap"}},
		{[]string{"--since", mid}, []string{"c-cap"}},
		{[]string{"--until", mid}, []string{"a-cap", "b-void"}},
		{[]string{"--since", "1h"}, []string{"a-cap", "b-void", "c-cap"}},
		{[]string{"--until", "1h"}, nil},
		{[]string{"--limit", "1", "--reason", "outcome_unknown"}, []string{"c-cap"}},
		{[]string{"--include-invalid"}, []string{"a-cap", "b-void", "bad-1", "c-cap"}},
		{[]string{"--type", "invalid", "--include-invalid"}, []string{"bad-1"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"replay", "--dry-run"}, tt.args...)
			stdout, stderr, err := runPublisher(ctx, t, s, args...)
			if err != nil {
				t.Fatalf("%q = %v\n%s%s", args, err, stdout, stderr)
			}
			if !strings.HasPrefix(stdout, "DLQ SEQ") {
				t.Fatalf("%q printed no table:\n%s", args, stdout)
			}
			if got := planKeys(stdout); !slices.Equal(got, tt.want) {
				t.Errorf("%q lists %q, want %q\n%s", args, got, tt.want, stdout)
			}
			if want := fmt.Sprintf("dry run: %d entr", len(tt.want)); !strings.Contains(stdout, want) {
				t.Errorf("%q printed no %q:\n%s", args, want, stdout)
			}
		})
	}
	stdout, _, _ := runPublisher(ctx, t, s, "replay", "--dry-run")
	if !strings.Contains(stdout, "skipped 1 rejected message") || !strings.Contains(stdout, "--include-invalid") {
		t.Errorf("replay --dry-run does not say it skipped the rejected message:\n%s", stdout)
	}
	if got, got2 := streamMsgs(t, s, s.Streams.DLQ), streamMsgs(t, s, s.Streams.Commands); got != dlqBefore || got2 != cmdsBefore {
		t.Errorf("after --dry-run: DLQ %d, commands %d; want %d and %d (unchanged)", got, got2, dlqBefore, cmdsBefore)
	}

	// A real replay takes the three dead letters and skips the rejected message.
	s.Sandbox.SetFaults(sandbox.Faults{})
	stdout, stderr, err := runPublisher(ctx, t, s, "replay", "--wait=30s")
	if err != nil {
		t.Fatalf("replay --wait = %v\n%s%s", err, stdout, stderr)
	}
	for _, want := range []string{"succeeded            3", "skipped              1"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("replay printed no %q:\n%s", want, stdout)
		}
	}
	if n := streamMsgs(t, s, s.Streams.DLQ); n != 1 {
		t.Errorf("DLQ entries after the replay = %d, want 1 (the rejected message)", n)
	}
	// Replayed on request, the rejected message is rejected again: exit 1.
	stdout, _, err = runPublisher(ctx, t, s, "replay", "--include-invalid", "--wait=30s")
	if err == nil || exitCode(err) != exitFailed || !strings.Contains(stdout, "rejected again") {
		t.Errorf("replay --include-invalid = %v (exit %d), want exit %d and the entry rejected again:\n%s", err, exitCode(err), exitFailed, stdout)
	}
}

func TestReplayUsage(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"replay", "--type", "refund"}, "--type"},
		{[]string{"replay", "--type", "invalid"}, "--include-invalid"},
		{[]string{"replay", "--since", "yesterday"}, "RFC 3339"},
		{[]string{"replay", "--until", "-1h"}, "positive"},
		{[]string{"replay", "--since", "1h", "--until", "2h"}, "before --since"},
		{[]string{"replay", "--limit", "-1"}, "--limit"},
		{[]string{"replay", "--dry-run", "--wait"}, "exclude"},
		{[]string{"replay", "--wait=soon"}, "duration"},
	}
	for _, tt := range tests {
		_, _, err := h.run(ctx, tt.args...)
		if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v (exit %d), want a usage error mentioning %q", tt.args, err, exitCode(err), tt.want)
		}
	}
	stdout, _, err := h.run(ctx, "replay", "--help")
	if err != nil {
		t.Fatalf("replay --help = %v", err)
	}
	for _, want := range []string{"Example:", "publisher replay --dry-run", "--include-invalid", "--wait[=duration]", "--nats-url", "same idempotency key"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("replay --help does not contain %q:\n%s", want, stdout)
		}
	}
	// An empty DLQ: nothing to do, exit 0.
	stdout, _, err = h.run(ctx, "replay")
	if err != nil || !strings.Contains(stdout, "replayed  0") {
		t.Errorf("replay of an empty DLQ = %v, want nil and 0 replayed:\n%s", err, stdout)
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"", time.Time{}, false},
		{"2h", now.Add(-2 * time.Hour), false},
		{"90s", now.Add(-90 * time.Second), false},
		{"2025-05-31T08:30:00Z", time.Date(2025, 5, 31, 8, 30, 0, 0, time.UTC), false},
		{"2025-05-31T10:30:00.5+02:00", time.Date(2025, 5, 31, 8, 30, 0, 5e8, time.UTC), false},
		{"0s", time.Time{}, true},
		{"-1h", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseWhen(tt.in, now)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
