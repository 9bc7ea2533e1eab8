package worker_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/internal/testenv"
)

// The tests of this file make a JetStream publication really fail: the
// server refuses to store it because its stream is full (refuseWrites), and
// check that the command is then never acked, and what becomes of it when
// the stream accepts again.

// refuseWrites makes stream refuse every new message until the returned
// restore is called (at the latest when the test ends): it sets the stream's
// MaxBytes below what it holds, with DiscardNew, so the server answers each
// publication "maximum bytes exceeded", as a full stream does. Stored
// messages stay, and a publication whose Nats-Msg-Id is inside the
// duplicate window is still acknowledged as a duplicate.
func refuseWrites(t testing.TB, js jetstream.JetStream, stream, probeSubject string) (restore func()) {
	t.Helper()
	ctx := context.Background()
	str, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	orig := info.Config
	full := orig
	full.MaxBytes = 1
	full.Discard = jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatalf("make stream %s refuse writes: %v", stream, err)
	}
	// The fault is real: the server refuses a publication.
	if _, err := js.Publish(ctx, probeSubject, []byte("probe")); err == nil {
		t.Fatalf("stream %s stored a message while full", stream)
	} else {
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("publish to full stream %s = %v, want the server's refusal", stream, err)
		}
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			if _, err := js.UpdateStream(context.Background(), orig); err != nil {
				t.Errorf("restore stream %s: %v", stream, err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

// tracer is a systemtest crash hook that never stops the worker: it counts the
// points each command reaches (PointDecoded once per delivery) and reads the
// key's record as each delivery after the first starts, before its claim.
type tracer struct {
	mu     sync.Mutex
	store  idempotency.Store
	visits map[string]int
	// atRedelivery is the key's record as each redelivery found it.
	atRedelivery []idempotency.Record
}

func (tr *tracer) hook(point, key string) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.visits == nil {
		tr.visits = map[string]int{}
	}
	tr.visits[point]++
	if point == systemtest.PointDecoded && tr.visits[point] > 1 && tr.store != nil {
		rec, err := tr.store.Get(context.Background(), merchant, key)
		if err != nil {
			rec = idempotency.Record{State: idempotency.State("unreadable: " + err.Error())}
		}
		tr.atRedelivery = append(tr.atRedelivery, rec)
	}
	return false
}

func (tr *tracer) setStore(s idempotency.Store) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.store = s
}

func (tr *tracer) count(point string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.visits[point]
}

func (tr *tracer) redeliveries() []idempotency.Record {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]idempotency.Record(nil), tr.atRedelivery...)
}

// publishFailOptions are failureOptions with a tracer and an ack wait
// longer than the lease: the handler's publish retries last a lease, so
// the only redelivery while a stream refuses is the one the handler asks for.
func publishFailOptions(kv bool, tr *tracer) systemtest.Options {
	o := failureOptions(kv)
	o.AckWait = 5 * shortLease
	o.Hook = tr.hook
	return o
}

// lastCommandSeq is the stream sequence of the last command published.
func lastCommandSeq(t testing.TB, s *systemtest.System) uint64 {
	t.Helper()
	str, err := s.JS.Stream(context.Background(), s.Streams.Commands)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// ackFloor is the stream sequence up to which the consumer has acked
// every command.
func ackFloor(t testing.TB, s *systemtest.System) uint64 {
	t.Helper()
	c, err := s.JS.Consumer(context.Background(), s.Streams.Commands, s.Streams.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.AckFloor.Stream
}

// waitUnacked waits until cond holds, failing the test at once if the
// command at seq is acked meanwhile, and after d.
func waitUnacked(t testing.TB, s *systemtest.System, seq uint64, d time.Duration, what, why string, cond func() bool) {
	t.Helper()
	waitUntil(t, d, what, func() bool {
		wantNotAcked(t, s, seq, why)
		return cond()
	})
}

// wantNotAcked fails the test if the consumer has acked the command at seq.
// The ack floor only moves forward, so a command found unacked now was never
// acked before.
func wantNotAcked(t testing.TB, s *systemtest.System, seq uint64, why string) {
	t.Helper()
	if f := ackFloor(t, s); f >= seq {
		t.Fatalf("command at stream seq %d acked (ack floor %d) %s", seq, f, why)
	}
}

// wantAcked fails the test unless the consumer has acked the command at seq.
func wantAcked(t testing.TB, s *systemtest.System, seq uint64) {
	t.Helper()
	if f := ackFloor(t, s); f < seq {
		t.Errorf("ack floor %d, want the command at stream seq %d acked", f, seq)
	}
}

// getRecord reads the key's record.
func getRecord(t testing.TB, s *systemtest.System, key string) idempotency.Record {
	t.Helper()
	rec, err := s.Store.Get(context.Background(), merchant, key)
	if err != nil {
		t.Fatalf("Get(%s) = %v", key, err)
	}
	return rec
}

// TestPublishFailResultEvent: the outcome is recorded but PAYMENT_EVENTS
// refuses the terminal event. The command is not acked; its redelivery finds
// the key completed and republishes the recorded event once the stream
// accepts again: one capture at the gateway, one terminal event, nothing
// left on the consumer.
func TestPublishFailResultEvent(t *testing.T) {
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			tr := &tracer{}
			o := publishFailOptions(st.kv, tr)
			logs := &testenv.LogBuffer{}
			o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			s := systemtest.Start(t, o)
			tr.setStore(s.Store)
			restore := refuseWrites(t, s.JS, s.Streams.Events, s.Streams.EventSubject("probe"))

			auth := s.Sandbox.Authorise(merchant, 1000, "JPY")
			const key = "event-refused"
			s.Publish(t, "capture", captureCmd("evref-1", key, auth, 1000))
			seq := lastCommandSeq(t, s)

			calls := func() int { return s.Sandbox.Calls(sandbox.EndpointCapture) + s.Sandbox.Calls(sandbox.EndpointStatus) }
			waitUntil(t, 20*time.Second, "the outcome to be recorded", func() bool {
				rec, err := s.Store.Get(context.Background(), merchant, key)
				return err == nil && rec.State == idempotency.StateCompleted
			})
			atRecord := calls()
			// The first delivery gives up publishing after a lease and hands
			// the message back; the redelivery finds the key completed.
			const why = "while PAYMENT_EVENTS refused its terminal event"
			waitUnacked(t, s, seq, 20*time.Second, "a redelivery", why, func() bool { return tr.count(systemtest.PointDecoded) >= 2 })
			time.Sleep(o.Lease) // the redelivery, too, keeps failing to publish
			wantNotAcked(t, s, seq, why)
			// It retries for at most the ack wait, then hands the message
			// back instead of holding its slot until the worker stops.
			waitUnacked(t, s, seq, 3*o.AckWait, "the redelivery to give up republishing after the ack wait", why, func() bool {
				return strings.Contains(logs.String(), "republishing the terminal event failed")
			})
			if evs := eventsOf(readEvents(t, s), merchant, key); len(evs) != 0 {
				t.Fatalf("events of the key while the stream refuses = %v, want none", typesOf(evs))
			}
			if n := s.Sandbox.Calls(sandbox.EndpointCapture); n != 1 {
				t.Errorf("capture calls while the stream refuses = %d, want 1", n)
			}
			for i, rec := range tr.redeliveries() {
				if rec.State != idempotency.StateCompleted {
					t.Errorf("redelivery %d found the record %s, want completed", i+2, rec.State)
				}
			}

			restore()
			got := s.WaitKind(t, merchant, key, events.CaptureSucceeded)
			settleWithin(t, s, 20*time.Second)
			wantAcked(t, s, seq)

			evs := eventsOf(readEvents(t, s), merchant, key)
			if term := terminals(evs); len(term) != 1 || len(evs) != 1 {
				t.Fatalf("events of the key in PAYMENT_EVENTS = %v, want exactly one capture.succeeded", typesOf(evs))
			}
			rec := getRecord(t, s, key)
			if rec.State != idempotency.StateCompleted || rec.Outcome == nil || !rec.Outcome.Succeeded {
				t.Fatalf("record = %+v, want completed with a success", rec)
			}
			if string(evs[0].Raw) != string(rec.Outcome.Event) || evs[0].MsgID != rec.Outcome.EventID || got.Event.ID != rec.Outcome.EventID {
				t.Errorf("stored event %s (Nats-Msg-Id %s) is not the recorded outcome %s:\n%s\nwant\n%s",
					evs[0].Event.ID, evs[0].MsgID, rec.Outcome.EventID, evs[0].Raw, rec.Outcome.Event)
			}
			wantOneOp(t, s, auth, "capture", 1000)
			if n := s.Sandbox.Calls(sandbox.EndpointCapture); n != 1 {
				t.Errorf("capture calls = %d, want 1", n)
			}
			if n := calls(); n != atRecord {
				t.Errorf("gateway calls after the outcome was recorded = %d, want 0: the redelivery found the key completed", n-atRecord)
			}
			// The first delivery recorded the outcome and never got its event
			// stored: the event in the stream is the redelivery's.
			if r := tr.count(systemtest.PointRecorded); r != 1 {
				t.Errorf("outcomes recorded %d, want 1", r)
			}
			if l := logs.String(); !strings.Contains(l, `"msg":"event not stored; redelivery will publish it"`) ||
				!strings.Contains(l, `"msg":"redelivered command already done; terminal event ensured"`) {
				t.Errorf("the log does not show the first delivery failing to publish and a redelivery publishing the recorded event:\n%s", l)
			}
		})
	}
}

// TestPublishFailDLQCopy: the retry budget of a command is spent (the
// gateway answers 503) while PAYMENT_DLQ refuses writes. The command is
// never acked without its DLQ copy: its key is released (the redelivery
// finds the record released) and the message handed back. Once the DLQ
// accepts, the command is dead-lettered once, with its dead_lettered event.
func TestPublishFailDLQCopy(t *testing.T) {
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			tr := &tracer{}
			o := publishFailOptions(st.kv, tr)
			o.Retry.MaxAttempts = 2
			s := systemtest.Start(t, o)
			tr.setStore(s.Store)
			s.Sandbox.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 503})
			restore := refuseWrites(t, s.JS, s.Streams.DLQ, s.Streams.DLQSubject("probe"))

			auth := s.Sandbox.Authorise(merchant, 1000, "JPY")
			const key = "dlq-refused"
			s.Publish(t, "capture", captureCmd("dlqref-1", key, auth, 1000))
			seq := lastCommandSeq(t, s)

			waitUnacked(t, s, seq, 30*time.Second, "a redelivery", "without a DLQ copy", func() bool { return tr.count(systemtest.PointDecoded) >= 2 })
			if n := len(readStream(t, s.JS, s.Streams.DLQ)); n != 0 {
				t.Fatalf("DLQ entries while the DLQ refuses = %d, want 0", n)
			}
			if n := tr.count(systemtest.PointDeadLettered); n != 0 {
				t.Fatalf("DLQ copies acknowledged while the DLQ refuses = %d, want 0", n)
			}
			if evs := eventsOf(readEvents(t, s), merchant, key); len(evs) != 0 {
				t.Fatalf("events of the key while the DLQ refuses = %v, want none", typesOf(evs))
			}
			if rec := tr.redeliveries()[0]; rec.State != idempotency.StateReleased || rec.Uncertain {
				t.Fatalf("the redelivery found the record %s (uncertain %t), want released, not uncertain", rec.State, rec.Uncertain)
			}

			restore()
			got := s.WaitKind(t, merchant, key, events.DeadLettered)
			settleWithin(t, s, 30*time.Second)
			wantAcked(t, s, seq)

			dlq := readStream(t, s.JS, s.Streams.DLQ)
			if len(dlq) != 1 {
				t.Fatalf("DLQ entries = %d, want 1", len(dlq))
			}
			wantDeadLetter(t, s, key, dlq[0], got, "retries_exhausted", false)
			if n := tr.count(systemtest.PointDecoded); n < 2 {
				t.Errorf("deliveries = %d, want at least 2", n)
			}
			if ops := s.Sandbox.Applied(auth); len(ops) != 0 {
				t.Errorf("ledger = %+v, want nothing applied", ops)
			}
		})
	}
}

// TestPublishFailDeadLetteredEvent: the DLQ copy is stored but PAYMENT_EVENTS
// refuses the dead_lettered event. The command is not acked: the key is
// released, keeping its uncertain flag, and the message handed back. Its
// runs while the stream refuses dead-letter it again with the same DLQ
// message id, so the DLQ keeps one copy; once the stream accepts, the
// dead_lettered event is stored, once, naming that copy.
func TestPublishFailDeadLetteredEvent(t *testing.T) {
	for _, st := range stores {
		for _, tc := range []struct {
			name      string
			faults    sandbox.Faults
			reason    string
			uncertain bool
		}{
			// Every capture is refused: certainly not applied.
			{"503 not applied", sandbox.Faults{ErrorRate: 1, ErrorStatus: 503}, "retries_exhausted", false},
			// Every capture may have been applied and the status call
			// cannot tell: every run ends outcome_unknown.
			{"502 may have been applied", sandbox.Faults{ErrorRate: 1, ErrorStatus: 502, FaultStatus: true}, "outcome_unknown", true},
		} {
			t.Run(st.name+"/"+tc.name, func(t *testing.T) {
				tr := &tracer{}
				o := publishFailOptions(st.kv, tr)
				o.Retry.MaxAttempts = 3
				s := systemtest.Start(t, o)
				tr.setStore(s.Store)
				s.Sandbox.SetFaults(tc.faults)
				restore := refuseWrites(t, s.JS, s.Streams.Events, s.Streams.EventSubject("probe"))

				auth := s.Sandbox.Authorise(merchant, 1000, "JPY")
				const key = "dead-lettered-refused"
				s.Publish(t, "capture", captureCmd("dlevref-1", key, auth, 1000))
				seq := lastCommandSeq(t, s)

				// Two runs reach the DLQ: the first, and the redelivery's.
				waitUnacked(t, s, seq, 30*time.Second, "a second dead-lettering", "while PAYMENT_EVENTS refused its dead_lettered event",
					func() bool { return tr.count(systemtest.PointDeadLettered) >= 2 })
				if n := len(readStream(t, s.JS, s.Streams.DLQ)); n != 1 {
					t.Errorf("DLQ entries after two runs = %d, want 1: the second copy has the first's message id", n)
				}
				if evs := eventsOf(readEvents(t, s), merchant, key); len(evs) != 0 {
					t.Fatalf("events of the key while the stream refuses = %v, want none", typesOf(evs))
				}
				if rec := tr.redeliveries()[0]; rec.State != idempotency.StateReleased || rec.Uncertain != tc.uncertain {
					t.Fatalf("the redelivery found the record %s (uncertain %t), want released, uncertain %t", rec.State, rec.Uncertain, tc.uncertain)
				}

				restore()
				got := s.WaitKind(t, merchant, key, events.DeadLettered)
				settleWithin(t, s, 30*time.Second)
				wantAcked(t, s, seq)

				dlq := readStream(t, s.JS, s.Streams.DLQ)
				if len(dlq) != 1 {
					t.Fatalf("DLQ entries = %d, want 1", len(dlq))
				}
				wantDeadLetter(t, s, key, dlq[0], got, tc.reason, tc.uncertain)
				if ops := s.Sandbox.Applied(auth); len(ops) != 0 {
					t.Errorf("ledger = %+v, want nothing applied", ops)
				}
			})
		}
	}
}

// wantDeadLetter checks the end state of a dead-lettered key: one DLQ copy
// (entry) of the command, one dead_lettered event (got) naming it, no
// terminal event, and the key released with its uncertain flag.
func wantDeadLetter(t *testing.T, s *systemtest.System, key string, entry jetstream.Msg, got systemtest.Received,
	reason string, uncertain bool) {
	t.Helper()
	meta, err := entry.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	hdr := entry.Headers()
	if hdr.Get(handlers.HeaderReason) != reason || hdr.Get(handlers.HeaderUncertain) != strconv.FormatBool(uncertain) {
		t.Errorf("DLQ copy headers %v, want reason %s, uncertain %t", hdr, reason, uncertain)
	}
	if d := got.Event.Data; d.DLQSequence != meta.Sequence.Stream || d.DLQSubject != entry.Subject() || d.Error == nil || d.Error.Code != reason {
		t.Errorf("dead_lettered event data %+v, want DLQ seq %d on %s, error %s", d, meta.Sequence.Stream, entry.Subject(), reason)
	}
	evs := eventsOf(readEvents(t, s), merchant, key)
	if n := countType(evs, events.DeadLettered); n != 1 || len(evs) != 1 {
		t.Errorf("events of the key in PAYMENT_EVENTS = %v, want exactly one dead_lettered", typesOf(evs))
	}
	rec := getRecord(t, s, key)
	if rec.State != idempotency.StateReleased || rec.Uncertain != uncertain {
		t.Errorf("record %s (uncertain %t), want released, uncertain %t", rec.State, rec.Uncertain, uncertain)
	}
}

// TestPublishFailRejection: a message that fails validation while
// PAYMENT_DLQ refuses writes is never terminated without its DLQ copy: the
// handler retries the copy for at most the ack wait, hands the message back,
// and once the DLQ accepts it is kept there with its rejected event.
func TestPublishFailRejection(t *testing.T) {
	tr := &tracer{}
	o := publishFailOptions(true, tr)
	logs := &testenv.LogBuffer{}
	o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	s := systemtest.Start(t, o)
	restore := refuseWrites(t, s.JS, s.Streams.DLQ, s.Streams.DLQSubject("probe"))

	s.PublishRaw(t, s.Streams.CommandSubject("capture"), []byte(`{"command_id":"bad-1","type":"capture"`), "bad-1")
	seq := lastCommandSeq(t, s)
	const why = "while PAYMENT_DLQ refused its copy"
	waitUnacked(t, s, seq, 3*o.AckWait, "the rejection to give up storing its DLQ copy after the ack wait", why, func() bool {
		return strings.Contains(logs.String(), `"msg":"rejected message not stored in the DLQ; left for redelivery"`)
	})
	if n := len(readStream(t, s.JS, s.Streams.DLQ)); n != 0 {
		t.Fatalf("DLQ entries while it refuses = %d", n)
	}

	restore()
	waitUntil(t, 30*time.Second, "the rejected event", func() bool {
		for _, ev := range readEvents(t, s) {
			if ev.Event.Type == events.Rejected.Type() {
				return true
			}
		}
		return false
	})
	settleWithin(t, s, 30*time.Second)
	if n := len(readStream(t, s.JS, s.Streams.DLQ)); n != 1 {
		t.Errorf("DLQ entries = %d, want the rejected message once", n)
	}
}
