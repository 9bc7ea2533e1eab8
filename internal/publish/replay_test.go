package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/systemtest"
)

// outageRetry is a budget a gateway outage outlasts in well under a second.
var outageRetry = handlers.Retry{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, MaxElapsed: 2 * time.Second, MaxAttempts: 3}

// startReplaySystem runs a whole system (NATS, Redis, sandbox, one worker)
// with the retry budget r, and a Client on it.
func startReplaySystem(t *testing.T, r handlers.Retry) (*systemtest.System, *Client) {
	t.Helper()
	o := systemtest.DefaultOptions()
	o.Retry = r
	s := systemtest.Start(t, o)
	return s, NewClient(s.JS, s.Streams)
}

func replayContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// capture is a capture command of amount JPY on auth.
func capture(id, key, merchant, auth string, amount int64) systemtest.Cmd {
	c := systemtest.Cmd{"command_id": id, "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": amount, "currency": "JPY"}
	if key != "" {
		c["idempotency_key"] = key
	}
	return c
}

// deadLetterCaptures publishes n captures (keys prefix-0…) while the gateway
// answers 503 to every call, and waits until each is dead-lettered. It
// returns the authorisations, by key.
func deadLetterCaptures(t *testing.T, s *systemtest.System, merchant, prefix string, n int) map[string]string {
	t.Helper()
	s.Sandbox.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 503})
	auths := map[string]string{}
	for i := range n {
		key := fmt.Sprintf("%s-%d", prefix, i)
		auths[key] = s.Sandbox.Authorise(merchant, 1000, "JPY")
		s.Publish(t, "capture", capture("cmd-"+key, key, merchant, auths[key], 1000))
	}
	for key := range auths {
		s.WaitKind(t, merchant, key, events.DeadLettered)
	}
	s.Settle(t)
	return auths
}

// dlq lists the entries in the DLQ.
func dlq(t *testing.T, c *Client) []DeadLetter {
	t.Helper()
	var out []DeadLetter
	if err := c.DeadLetters(context.Background(), DLQFilter{}, func(d DeadLetter) error {
		out = append(out, d)
		return nil
	}); err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	return out
}

// checkExactlyOnce checks that each key ended with exactly one terminal
// event, a capture.succeeded, and its authorisation with exactly one
// effective capture.
func checkExactlyOnce(t *testing.T, s *systemtest.System, merchant string, auths map[string]string) {
	t.Helper()
	for key, auth := range auths {
		got := s.WaitEvents(t, merchant, key, "a terminal event", func(rs []systemtest.Received) bool {
			return systemtest.Count(rs, events.CaptureSucceeded)+systemtest.Count(rs, events.CaptureFailed) > 0
		})
		if n := systemtest.Count(got, events.CaptureSucceeded); n != 1 {
			t.Errorf("key %s: capture.succeeded events = %d, want 1 (events: %s)", key, n, systemtest.Kinds(got))
		}
		if n := systemtest.Count(got, events.CaptureFailed); n != 0 {
			t.Errorf("key %s: capture.failed events = %d, want 0", key, n)
		}
		if n := len(s.Sandbox.Applied(auth)); n != 1 {
			t.Errorf("key %s: effective captures = %d, want 1", key, n)
		}
	}
}

func statuses(rs []ReplayResult) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "[seq %d %s %s %v] ", r.Entry.Seq, r.Status, r.Detail, r.Err)
	}
	return b.String()
}

// TestReplayOutcomeUnknown: a capture whose gateway call kept getting
// unknown answers, and whose status could not be learnt, is dead-lettered as
// outcome_unknown; replayed once the gateway is back, it reconciles through
// the status call first. If the earlier attempt had applied the capture, the
// replay succeeds without a second capture call; if not, it sends one.
func TestReplayOutcomeUnknown(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for a retry budget")
	}
	// Initial ≥ 150ms after jitter: time to switch faults between the capture
	// and the first status call.
	retry := handlers.Retry{Initial: 300 * time.Millisecond, Max: 300 * time.Millisecond, MaxElapsed: 1500 * time.Millisecond, MaxAttempts: 6}
	statusDown := sandbox.Faults{FaultStatus: true, ErrorRate: 1, ErrorStatus: 502}
	tests := []struct {
		name         string
		first        sandbox.Faults // faults of the first capture call
		wantCaptures int            // capture calls the replay makes
	}{
		{"applied, then the connection dropped", sandbox.Faults{ApplyThenDropRate: 1}, 0},
		{"502, not applied", statusDown, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := startReplaySystem(t, retry)
			ctx := replayContext(t)
			auth := s.Sandbox.Authorise("M1", 1000, "JPY")
			s.Sandbox.SetFaults(tt.first)
			s.Publish(t, "capture", capture("c-1", "order-1", "M1", auth, 1000))
			if tt.first != statusDown {
				// The capture is applied (and its connection dropped): from
				// now on the status call fails too.
				deadline := time.Now().Add(10 * time.Second)
				for len(s.Sandbox.Applied(auth)) == 0 {
					if time.Now().After(deadline) {
						t.Fatal("the capture was never applied")
					}
					time.Sleep(time.Millisecond)
				}
				s.Sandbox.SetFaults(statusDown)
			}
			s.WaitKind(t, "M1", "order-1", events.DeadLettered)
			s.Settle(t)
			entries := dlq(t, c)
			if len(entries) != 1 {
				t.Fatalf("DLQ entries = %d, want 1", len(entries))
			}
			if got, want := entries[0].Reason, "outcome_unknown"; got != want {
				t.Errorf("Payworker-Reason = %q, want %q", got, want)
			}
			if !entries[0].Uncertain {
				t.Errorf("Payworker-Outcome-Uncertain = false, want true")
			}

			s.Sandbox.SetFaults(sandbox.Faults{})
			captures, statusCalls := s.Sandbox.Calls(sandbox.EndpointCapture), s.Sandbox.Calls(sandbox.EndpointStatus)
			results, sum, err := c.Replay(ctx, ReplayOptions{Wait: 30 * time.Second})
			if err != nil {
				t.Fatalf("Replay: %v", err)
			}
			if len(results) != 1 || results[0].Status != ReplaySucceeded {
				t.Fatalf("Replay results = %s, want one succeeded", statuses(results))
			}
			if !sum.OK() || sum.Succeeded != 1 {
				t.Errorf("Replay summary = %+v, want 1 succeeded", sum)
			}
			if got := s.Sandbox.Calls(sandbox.EndpointCapture) - captures; got != tt.wantCaptures {
				t.Errorf("capture calls made by the replay = %d, want %d", got, tt.wantCaptures)
			}
			if s.Sandbox.Calls(sandbox.EndpointStatus) == statusCalls {
				t.Errorf("the replay made no status call, want one before any capture")
			}
			if got, want := results[0].Outcome.Event.Data.Reconciled, tt.wantCaptures == 0; got != want {
				t.Errorf("succeeded event reconciled = %v, want %v", got, want)
			}
			checkExactlyOnce(t, s, "M1", map[string]string{"order-1": auth})
			if n := len(dlq(t, c)); n != 0 {
				t.Errorf("DLQ entries after the replay = %d, want 0", n)
			}
		})
	}
}

// TestReplayIdempotent: replaying twice replays nothing the second time; a
// replay that published an entry but stopped before deleting it is, run
// again, dropped as a duplicate and reported already done; a replay of a key
// that succeeded meanwhile is answered already done. No second capture in
// any case.
func TestReplayIdempotent(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs whole systems")
	}
	errCrash := errors.New("simulated crash between publish and delete")
	tests := []struct {
		name string
		// before runs after the outage, with the gateway back; it may
		// replay (or not) before the replay under test.
		before  func(t *testing.T, s *systemtest.System, c *Client, auth string)
		want    ReplayStatus
		wantDup bool
	}{
		{
			name:   "plain replay",
			before: func(*testing.T, *systemtest.System, *Client, string) {},
			want:   ReplaySucceeded,
		},
		{
			name: "crash between publish and delete",
			before: func(t *testing.T, s *systemtest.System, c *Client, auth string) {
				_, _, err := c.Replay(replayContext(t), ReplayOptions{afterPublish: func(DeadLetter) error { return errCrash }})
				if !errors.Is(err, errCrash) {
					t.Fatalf("Replay with a crash = %v, want %v", err, errCrash)
				}
				if n := len(dlq(t, c)); n != 1 {
					t.Fatalf("DLQ entries after the crash = %d, want 1 (not deleted)", n)
				}
				s.WaitKind(t, "M1", "order-0", events.CaptureSucceeded)
			},
			want:    ReplayAlreadyDone,
			wantDup: true,
		},
		{
			name: "the key succeeded meanwhile",
			before: func(t *testing.T, s *systemtest.System, c *Client, auth string) {
				s.Publish(t, "capture", capture("c-again", "order-0", "M1", auth, 1000))
				s.WaitKind(t, "M1", "order-0", events.CaptureSucceeded)
			},
			want: ReplayAlreadyDone,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := startReplaySystem(t, outageRetry)
			ctx := replayContext(t)
			auths := deadLetterCaptures(t, s, "M1", "order", 1)
			auth := auths["order-0"]
			s.Sandbox.SetFaults(sandbox.Faults{})

			tt.before(t, s, c, auth)
			captures := s.Sandbox.Calls(sandbox.EndpointCapture)
			results, sum, err := c.Replay(ctx, ReplayOptions{Wait: 30 * time.Second})
			if err != nil {
				t.Fatalf("Replay: %v", err)
			}
			if len(results) != 1 {
				t.Fatalf("Replay results = %s, want 1", statuses(results))
			}
			r := results[0]
			if r.Status != tt.want || r.Republished != tt.wantDup {
				t.Errorf("Replay = %s (republished %v), want %s (republished %v)", r.Status, r.Republished, tt.want, tt.wantDup)
			}
			if !sum.OK() {
				t.Errorf("Replay summary = %+v, want OK", sum)
			}
			if tt.want == ReplayAlreadyDone {
				if got := s.Sandbox.Calls(sandbox.EndpointCapture) - captures; got != 0 {
					t.Errorf("capture calls made by the replay = %d, want 0", got)
				}
			}
			checkExactlyOnce(t, s, "M1", map[string]string{"order-0": auth})

			// A second replay finds nothing left.
			results, sum, err = c.Replay(ctx, ReplayOptions{Wait: 5 * time.Second})
			if err != nil || len(results) != 0 || sum != (ReplaySummary{}) {
				t.Errorf("second Replay = %s, %+v, %v; want nothing replayed", statuses(results), sum, err)
			}
			s.Settle(t)
			checkExactlyOnce(t, s, "M1", map[string]string{"order-0": auth})
		})
	}
}

// TestReplayInterrupted: a replay stopped halfway (between a publication and
// its delete, or by its context) and run again completes the rest: nothing
// is lost (every key ends with one terminal event) and nothing is done twice
// (one effective capture per key).
func TestReplayInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs whole systems")
	}
	const n, k = 5, 3 // entries; the replay stops after publishing the k-th
	errKilled := errors.New("killed")
	tests := []struct {
		name string
		stop func(cancel context.CancelFunc) error
		want error
	}{
		{"killed between publish and delete", func(context.CancelFunc) error { return errKilled }, errKilled},
		{"context cancelled after the publication", func(cancel context.CancelFunc) error { cancel(); return nil }, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := startReplaySystem(t, outageRetry)
			auths := deadLetterCaptures(t, s, "M1", "order", n)
			s.Sandbox.SetFaults(sandbox.Faults{})

			ctx, cancel := context.WithCancel(replayContext(t))
			published := 0
			results, _, err := c.Replay(ctx, ReplayOptions{afterPublish: func(DeadLetter) error {
				published++
				if published == k {
					return tt.stop(cancel)
				}
				return nil
			}})
			cancel()
			if !errors.Is(err, tt.want) {
				t.Fatalf("interrupted Replay = %v, want %v", err, tt.want)
			}
			replayed := 0
			for _, r := range results {
				if r.Status == ReplayPublished {
					replayed++
				}
			}
			if replayed != k-1 {
				t.Errorf("entries replayed and deleted before the stop = %d, want %d (%s)", replayed, k-1, statuses(results))
			}
			if got := len(dlq(t, c)); got != n-k+1 {
				t.Errorf("DLQ entries after the stop = %d, want %d", got, n-k+1)
			}

			results, sum, err := c.Replay(replayContext(t), ReplayOptions{Wait: 30 * time.Second})
			if err != nil {
				t.Fatalf("second Replay: %v", err)
			}
			if len(results) != n-k+1 || !results[0].Republished || results[0].Status != ReplayAlreadyDone {
				t.Errorf("second Replay = %s, want the interrupted entry already done, then %d succeeded", statuses(results), n-k)
			}
			if !sum.OK() || sum.Replayed != n-k+1 || sum.Succeeded != n-k || sum.AlreadyDone != 1 || sum.Republished != 1 {
				t.Errorf("second Replay summary = %+v, want %d replayed (1 already published and done), %d succeeded", sum, n-k+1, n-k)
			}
			if got := len(dlq(t, c)); got != 0 {
				t.Errorf("DLQ entries after the second replay = %d, want 0", got)
			}
			s.Settle(t)
			checkExactlyOnce(t, s, "M1", auths)
			if got := len(s.Sandbox.Ledger()); got != n {
				t.Errorf("effective captures in the ledger = %d, want %d", got, n)
			}
		})
	}
}

// TestReplayRedeliveredAfterRecord: a worker that recorded a replayed
// command's outcome and died before publishing its event leaves the message
// to be redelivered; the redelivery publishes the recorded terminal event.
// (The handler used to compare with the key's first command_id, which a
// replay does not have, and announced a duplicate of an event that was
// never published.)
func TestReplayRedeliveredAfterRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for a redelivery")
	}
	o := systemtest.DefaultOptions()
	o.Retry = outageRetry
	o.AckWait = time.Second
	var died atomic.Bool
	o.Hook = func(point, key string) bool {
		return point == systemtest.PointRecorded && key == "order-0" && died.CompareAndSwap(false, true)
	}
	s := systemtest.Start(t, o)
	c := NewClient(s.JS, s.Streams)
	auths := deadLetterCaptures(t, s, "M1", "order", 1)
	s.Sandbox.SetFaults(sandbox.Faults{})

	results, _, err := c.Replay(replayContext(t), ReplayOptions{Wait: 30 * time.Second})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if len(results) != 1 || results[0].Status != ReplaySucceeded {
		t.Errorf("Replay = %s, want succeeded", statuses(results))
	}
	if !died.Load() {
		t.Fatal("the worker never died after recording the outcome")
	}
	s.Settle(t)
	got := s.EventsFor("M1", "order-0")
	if n := systemtest.Count(got, events.Duplicate); n != 0 {
		t.Errorf("duplicate events = %d, want 0 (events: %s)", n, systemtest.Kinds(got))
	}
	checkExactlyOnce(t, s, "M1", auths)
}

// TestReplayUncertainWithoutRecord: an outcome_unknown entry replayed after
// its idempotency record is gone (expired: the DLQ keeps entries longer than
// the keys) still reconciles first, because the replayed command carries
// Payworker-Outcome-Uncertain: the capture the earlier attempt applied is
// found, not refused as "already captured" and reported failed.
func TestReplayUncertainWithoutRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs a whole system")
	}
	s, c := startReplaySystem(t, outageRetry)
	ctx := replayContext(t)
	auth := s.Sandbox.Authorise("M1", 1000, "JPY")
	// The earlier attempt, whose answer was lost: applied at the gateway.
	if res := s.Gateway.Execute(ctx, gateway.Request{Operation: gateway.Capture, MerchantID: "M1", TransactionID: auth,
		Amount: 1000, Currency: "JPY", Reference: "order-1"}); res.Outcome != gateway.Succeeded {
		t.Fatalf("capture at the gateway = %+v, want succeeded", res)
	}
	// Its DLQ entry, as the worker wrote it; no record of the key is left.
	body, _ := json.Marshal(capture("c-1", "order-1", "M1", auth, 1000))
	m := &nats.Msg{Subject: s.Streams.DLQSubject("capture"), Data: body, Header: nats.Header{}}
	m.Header.Set(handlers.HeaderReason, "outcome_unknown")
	m.Header.Set(handlers.HeaderUncertain, "true")
	m.Header.Set(handlers.HeaderOrigSubject, s.Streams.CommandSubject("capture"))
	if _, err := s.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	captures := s.Sandbox.Calls(sandbox.EndpointCapture)
	results, _, err := c.Replay(ctx, ReplayOptions{Wait: 30 * time.Second})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if len(results) != 1 || results[0].Status != ReplaySucceeded {
		t.Fatalf("Replay = %s, want succeeded", statuses(results))
	}
	if got := s.Sandbox.Calls(sandbox.EndpointCapture) - captures; got != 0 {
		t.Errorf("capture calls made by the replay = %d, want 0", got)
	}
	checkExactlyOnce(t, s, "M1", map[string]string{"order-1": auth})
}

// TestDeadLetterHeaders pins the header names read here to the ones the
// worker writes.
func TestDeadLetterHeaders(t *testing.T) {
	tests := []struct{ got, want string }{
		{hdrReason, handlers.HeaderReason},
		{hdrError, handlers.HeaderError},
		{hdrAttempts, handlers.HeaderAttempts},
		{hdrLastAnswer, handlers.HeaderLastAnswer},
		{hdrUncertain, handlers.HeaderUncertain},
		{hdrOrigSubject, handlers.HeaderOrigSubject},
		{hdrOrigStream, handlers.HeaderOrigStream},
		{hdrOrigSequence, handlers.HeaderOrigSequence},
		{hdrFirstAttempt, handlers.HeaderFirstAttempt},
		{hdrLastAttempt, handlers.HeaderLastAttempt},
		{hdrDeadLetteredAt, handlers.HeaderDeadLetteredAt},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("header = %q, want %q (as internal/handlers writes it)", tt.got, tt.want)
		}
	}
}

func TestReplayCommandID(t *testing.T) {
	long := strings.Repeat("S", 60)
	tests := []struct {
		stream string
		seq    uint64
		want   string
	}{
		{"PAYMENT_DLQ", 7, "replay-PAYMENT_DLQ-7"},
		{"PAYMENT_DLQ", 18446744073709551615, "replay-PAYMENT_DLQ-18446744073709551615"},
	}
	for _, tt := range tests {
		if got := ReplayCommandID(tt.stream, tt.seq); got != tt.want {
			t.Errorf("ReplayCommandID(%q, %d) = %q, want %q", tt.stream, tt.seq, got, tt.want)
		}
	}
	a, b := ReplayCommandID(long, 1), ReplayCommandID(long+"x", 1)
	if len(a) > 64 || a == b || a != ReplayCommandID(long, 1) {
		t.Errorf("ReplayCommandID of long names = %q, %q: want ≤ 64 characters, distinct, deterministic", a, b)
	}
}

// TestReplayMessage checks the command a DLQ entry is replayed as.
func TestReplayMessage(t *testing.T) {
	c := &Client{streams: streams.Default()}
	valid := `{"command_id":"c-1","type":"capture","idempotency_key":"order-1","merchant_id":"M1","transaction_id":"T1","amount":1000,"currency":"JPY","metadata":{"order":"1"}}`
	noKey := `{"command_id":"c-2","type":"void","merchant_id":"M1","transaction_id":"T1"}`
	tests := []struct {
		name        string
		entry       DeadLetter
		wantSubject string
		wantBody    map[string]any // fields checked in the body; nil: body unchanged
		wantMatch   Match
		wantErr     error
		wantHeader  map[string]string
	}{
		{
			name:        "same key, new command id, other fields kept",
			entry:       entry(t, 5, "payments.dlq.capture", valid, true),
			wantSubject: "payments.cmd.capture",
			wantBody: map[string]any{"command_id": "replay-PAYMENT_DLQ-5", "idempotency_key": "order-1", "amount": 1000.0,
				"metadata": map[string]any{"order": "1"}},
			wantMatch:  Match{MerchantID: "M1", IdempotencyKey: "order-1", CommandID: "replay-PAYMENT_DLQ-5"},
			wantHeader: map[string]string{"Nats-Msg-Id": "replay-PAYMENT_DLQ-5", HeaderReplayOf: "PAYMENT_DLQ:5", hdrUncertain: "true"},
		},
		{
			name:        "no key: the original command id becomes it",
			entry:       entry(t, 6, "payments.dlq.void", noKey, false),
			wantSubject: "payments.cmd.void",
			wantBody:    map[string]any{"command_id": "replay-PAYMENT_DLQ-6", "idempotency_key": "c-2"},
			wantMatch:   Match{MerchantID: "M1", IdempotencyKey: "c-2", CommandID: "replay-PAYMENT_DLQ-6"},
			wantHeader:  map[string]string{"Nats-Msg-Id": "replay-PAYMENT_DLQ-6", hdrUncertain: ""},
		},
		{
			name:        "invalid, not JSON: sent as it is to the original subject",
			entry:       entry(t, 8, "payments.dlq.invalid", `{not json`, false),
			wantSubject: "payments.cmd.capture",
			wantMatch:   Match{MerchantID: "", IdempotencyKey: "", CommandID: "replay-PAYMENT_DLQ-8"},
		},
		{
			name: "invalid, no command type anywhere",
			entry: func() DeadLetter {
				d := entry(t, 9, "payments.dlq.invalid", `{}`, false)
				d.OriginalSubject = "payments.cmd.refund"
				return d
			}(),
			wantErr: ErrNotReplayable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, m, err := c.replayMessage(tt.entry)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("replayMessage() error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if msg.Subject != tt.wantSubject {
				t.Errorf("subject = %q, want %q", msg.Subject, tt.wantSubject)
			}
			if m != tt.wantMatch {
				t.Errorf("match = %+v, want %+v", m, tt.wantMatch)
			}
			for k, want := range tt.wantHeader {
				if got := msg.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if tt.wantBody == nil {
				if string(msg.Data) != string(tt.entry.Body) {
					t.Errorf("body = %s, want it unchanged: %s", msg.Data, tt.entry.Body)
				}
				return
			}
			var body map[string]any
			if err := json.Unmarshal(msg.Data, &body); err != nil {
				t.Fatalf("body %s: %v", msg.Data, err)
			}
			for k, want := range tt.wantBody {
				if got := fmt.Sprint(body[k]); got != fmt.Sprint(want) {
					t.Errorf("body %s = %v, want %v", k, got, want)
				}
			}
		})
	}
}

// entry builds a DLQ entry as DeadLetters reads it.
func entry(t *testing.T, seq uint64, subject, body string, uncertain bool) DeadLetter {
	t.Helper()
	h := nats.Header{}
	h.Set(hdrOrigSubject, "payments.cmd.capture")
	if uncertain {
		h.Set(hdrUncertain, "true")
	}
	return deadLetterOf("PAYMENT_DLQ", &jetstream.RawStreamMsg{Subject: subject, Sequence: seq, Header: h, Data: []byte(body), Time: time.Now()})
}

func TestReplayStatusOf(t *testing.T) {
	const id = "replay-PAYMENT_DLQ-1"
	outcome := func(k events.Kind, commandID string) Outcome {
		return Outcome{Kind: k, Event: events.New(k, "e-1", "test", time.Now(), events.Data{CommandID: commandID})}
	}
	tests := []struct {
		name        string
		o           Outcome
		republished bool
		want        ReplayStatus
	}{
		{"succeeded", outcome(events.CaptureSucceeded, id), false, ReplaySucceeded},
		{"failed", outcome(events.VoidFailed, id), false, ReplayFailed},
		{"duplicate", outcome(events.Duplicate, id), false, ReplayAlreadyDone},
		{"dead-lettered", outcome(events.DeadLettered, id), false, ReplayDeadLettered},
		{"rejected", outcome(events.Rejected, id), false, ReplayRejected},
		{"succeeded for an earlier replay", outcome(events.CaptureSucceeded, id), true, ReplayAlreadyDone},
		{"failed for an earlier replay", outcome(events.CaptureFailed, id), true, ReplayFailed},
		{"terminal of another command", outcome(events.CaptureSucceeded, "c-9"), false, ReplayAlreadyDone},
	}
	for _, tt := range tests {
		if got, _ := replayStatusOf(tt.o, id, tt.republished); got != tt.want {
			t.Errorf("%s: replayStatusOf(%s, republished %v) = %q, want %q", tt.name, tt.o.Kind, tt.republished, got, tt.want)
		}
	}
}
