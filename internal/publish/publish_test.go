package publish

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
	"github.com/payworker/payworker/internal/testenv"
)

// newClient starts NATS with the streams provisioned.
func newClient(t *testing.T) (*Client, jetstream.JetStream) {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	c := NewClient(js, streams.Default())
	if err := c.Provision(context.Background()); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	return c, js
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func amount(n int64) *int64 { return &n }

func validCapture(id string) *command.Command {
	return &command.Command{
		CommandID: id, Type: command.Capture, IdempotencyKey: "key-" + id, MerchantID: "M1",
		TransactionID: "T-" + id, Amount: amount(1000), Currency: "JPY",
	}
}

// storedEvent publishes e on the events stream as the worker would.
func storedEvent(t *testing.T, js jetstream.JetStream, kind events.Kind, e events.Event) {
	t.Helper()
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: streams.Default().EventSubject(string(kind)), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, e.ID)
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatalf("publish event: %v", err)
	}
}

func terminal(kind events.Kind, merchant, key, cmdID string) events.Event {
	op, _, _ := strings.Cut(string(kind), ".")
	return events.New(kind, events.TerminalID(merchant, key), "test", time.Now(), events.Data{
		CommandID: cmdID, IdempotencyKey: key, MerchantID: merchant, TransactionID: "T1",
		CommandType: op, Gateway: "paymentoptions", Amount: amount(1000), Currency: "JPY",
		Attempts: 1, GatewayCode: "INFO0001",
	})
}

func TestPublish(t *testing.T) {
	c, js := newClient(t)
	ctx := testContext(t)
	cmd := validCapture("c1")
	ack, err := c.Publish(ctx, cmd)
	if err != nil {
		t.Fatalf("Publish = %v, want nil", err)
	}
	if ack.Sequence != 1 || ack.Duplicate {
		t.Errorf("Publish ack = %+v, want sequence 1, not duplicate", ack)
	}
	stream, err := js.Stream(ctx, streams.Default().Commands)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := raw.Subject, "payments.cmd.capture"; got != want {
		t.Errorf("subject = %q, want %q", got, want)
	}
	if got, want := raw.Header.Get(jetstream.MsgIDHeader), "c1"; got != want {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
	}
	got, err := command.Decode("capture", raw.Data)
	if err != nil {
		t.Fatalf("stored command does not decode: %v", err)
	}
	if got.Key() != "key-c1" || got.AmountValue() != 1000 {
		t.Errorf("stored command = %+v, want key key-c1 amount 1000", got)
	}

	again, err := c.Publish(ctx, cmd)
	if err != nil {
		t.Fatalf("second Publish = %v", err)
	}
	if !again.Duplicate || again.Sequence != 1 {
		t.Errorf("second Publish ack = %+v, want duplicate of sequence 1", again)
	}
}

func TestPublishInvalid(t *testing.T) {
	c, _ := newClient(t)
	ctx := testContext(t)
	tests := []struct {
		name  string
		edit  func(*command.Command)
		field string
	}{
		{"no merchant", func(c *command.Command) { c.MerchantID = "" }, "merchant_id"},
		{"long merchant", func(c *command.Command) { c.MerchantID = "MERCHANT-0001" }, "merchant_id"},
		{"capture without amount", func(c *command.Command) { c.Amount = nil }, "amount"},
		{"zero amount", func(c *command.Command) { c.Amount = amount(0) }, "amount"},
		{"lower-case currency", func(c *command.Command) { c.Currency = "jpy" }, "currency"},
		{"unknown gateway", func(c *command.Command) { c.Gateway = "stripe" }, "gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := validCapture("bad")
			tt.edit(cmd)
			_, err := c.Publish(ctx, cmd)
			if !errors.Is(err, command.ErrInvalid) {
				t.Fatalf("Publish = %v, want command.ErrInvalid", err)
			}
			var ie *command.InvalidError
			if !errors.As(err, &ie) || ie.Field() != tt.field {
				t.Errorf("Publish error field = %v, want %q", err, tt.field)
			}
		})
	}
	info, err := c.JetStream().Stream(ctx, streams.Default().Commands)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != 0 {
		t.Errorf("commands stored after invalid publishes = %d, want 0", got)
	}
}

func TestPublishNotProvisioned(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	c := NewClient(js, streams.Default())
	ctx := testContext(t)
	if err := c.Check(ctx); !errors.Is(err, streams.ErrNotProvisioned) {
		t.Errorf("Check = %v, want ErrNotProvisioned", err)
	}
	if _, err := c.Publish(ctx, validCapture("c1")); !errors.Is(err, streams.ErrNotProvisioned) {
		t.Errorf("Publish = %v, want ErrNotProvisioned", err)
	}
}

func TestFollow(t *testing.T) {
	c, js := newClient(t)
	ctx := testContext(t)
	for i, ev := range []struct {
		kind     events.Kind
		merchant string
	}{
		{events.CaptureSucceeded, "M1"},
		{events.CaptureFailed, "M1"},
		{events.VoidSucceeded, "M2"},
		{events.VoidFailed, "M1"},
		{events.CaptureSucceeded, "M2"},
	} {
		storedEvent(t, js, ev.kind, terminal(ev.kind, ev.merchant, "k"+strconv.Itoa(i), "c"+strconv.Itoa(i)))
	}

	tests := []struct {
		name string
		opts FollowOptions
		want []string // keys
	}{
		{"all", FollowOptions{All: true, Limit: 5}, []string{"k0", "k1", "k2", "k3", "k4"}},
		{"merchant", FollowOptions{All: true, Limit: 3, Filter: Filter{MerchantID: "M1"}}, []string{"k0", "k1", "k3"}},
		{"kind", FollowOptions{All: true, Limit: 2, Filter: Filter{Type: "capture.succeeded"}}, []string{"k0", "k4"}},
		{"cloudevents type", FollowOptions{All: true, Limit: 1, Filter: Filter{Type: "payments.void.failed"}}, []string{"k3"}},
		{"wildcard", FollowOptions{All: true, Limit: 2, Filter: Filter{Type: "*.failed"}}, []string{"k1", "k3"}},
		{"token", FollowOptions{All: true, Limit: 2, Filter: Filter{Type: "void", MerchantID: "M2"}}, []string{"k2"}},
		{"key", FollowOptions{All: true, Limit: 1, Filter: Filter{IdempotencyKey: "k4"}}, []string{"k4"}},
		{"since", FollowOptions{Since: time.Now().Add(-time.Hour), Limit: 1}, []string{"k0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var got []string
			err := c.Follow(fctx, tt.opts, func(r Received) error {
				if r.Err != nil {
					t.Errorf("Received error %v", r.Err)
				}
				got = append(got, r.Event.Data.IdempotencyKey)
				return nil
			})
			if len(got) == len(tt.want) && len(got) < tt.opts.Limit {
				// Fewer events than the limit: Follow runs until ctx ends.
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Follow = %v, want DeadlineExceeded", err)
				}
			} else if err != nil {
				t.Errorf("Follow = %v, want nil", err)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("Follow keys = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("from now", func(t *testing.T) {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		got := make(chan string, 1)
		errc := make(chan error, 1)
		go func() {
			errc <- c.Follow(fctx, FollowOptions{Limit: 1}, func(r Received) error {
				got <- r.Event.Data.IdempotencyKey
				return nil
			})
		}()
		// Publish until the follower, which starts at "now", sees one.
		for i := 0; ; i++ {
			storedEvent(t, js, events.CaptureSucceeded, terminal(events.CaptureSucceeded, "M9", "new"+strconv.Itoa(i), "n"))
			select {
			case k := <-got:
				if !strings.HasPrefix(k, "new") {
					t.Errorf("Follow from now got key %q, want a new one", k)
				}
				if err := <-errc; err != nil {
					t.Errorf("Follow = %v", err)
				}
				return
			case <-time.After(100 * time.Millisecond):
			case <-fctx.Done():
				t.Fatal("Follow from now saw nothing")
			}
		}
	})
}

func TestFilterSubject(t *testing.T) {
	cfg := streams.Default()
	tests := []struct {
		typ     string
		want    string
		wantErr bool
	}{
		{"", "payments.evt.>", false},
		{"capture.succeeded", "payments.evt.capture.succeeded", false},
		{"payments.command.rejected", "payments.evt.command.rejected", false},
		{"capture", "payments.evt.capture.>", false},
		{"*.failed", "payments.evt.*.failed", false},
		{"capture.>", "payments.evt.capture.>", false},
		{">", "payments.evt.>", false},
		{"capture..failed", "", true},
		{">.failed", "", true},
		{"capture succeeded", "", true},
		{"capture.fail*", "", true},
	}
	for _, tt := range tests {
		got, err := Filter{Type: tt.typ}.Subject(cfg)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Filter{Type: %q}.Subject() = %q, %v; want %q, error %v", tt.typ, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrBadType) {
			t.Errorf("Filter{Type: %q}.Subject() error = %v, want ErrBadType", tt.typ, err)
		}
	}
}

func TestLines(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ok := events.New(events.CaptureSucceeded, "e1", "test", at, events.Data{
		MerchantID: "M1", TransactionID: "T1", IdempotencyKey: "k1", CommandType: "capture",
		Amount: amount(1000), Currency: "JPY", GatewayCode: "INFO0001",
	})
	failed := events.New(events.VoidFailed, "e2", "test", at, events.Data{
		MerchantID: "M1", TransactionID: "T2", IdempotencyKey: "k2", CommandType: "void",
		GatewayCode: "ERR0412", Error: &events.Error{Code: "gateway_declined", Message: "already captured"},
	})
	rejected := events.New(events.Rejected, "e3", "test", at, events.Data{
		MerchantID: "M1", IdempotencyKey: "k3", CommandType: "capture",
		Error: &events.Error{Code: "idempotency_key_conflict", Message: "other parameters", Field: "amount"},
	})
	dead := events.New(events.DeadLettered, "e4", "test", at, events.Data{
		MerchantID: "M1", TransactionID: "T4", IdempotencyKey: "k4", CommandType: "capture",
		Error: &events.Error{Code: "retries_exhausted", Message: "gateway down"}, DLQSubject: "payments.dlq.capture", DLQSequence: 7,
	})
	dup := events.New(events.Duplicate, "e5", "test", at, events.Data{
		MerchantID: "M1", TransactionID: "T1", IdempotencyKey: "k1", CommandType: "capture", OriginalEventID: "e1",
	})
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"event", EventLine(ok), "2026-01-02T03:04:05Z capture.succeeded merchant=M1 transaction=T1 key=k1 amount=1000 currency=JPY gateway_code=INFO0001 event_id=e1"},
		{"event with error", EventLine(failed), `2026-01-02T03:04:05Z void.failed merchant=M1 transaction=T2 key=k2 gateway_code=ERR0412 error="gateway_declined: already captured" event_id=e2`},
		{"succeeded", Outcome{Kind: events.CaptureSucceeded, Event: ok}.Line(), "capture succeeded merchant=M1 transaction=T1 amount=1000 currency=JPY gateway_code=INFO0001 event_id=e1"},
		{"failed", Outcome{Kind: events.VoidFailed, Event: failed}.Line(), `void failed merchant=M1 transaction=T2 gateway_code=ERR0412 error="gateway_declined: already captured" event_id=e2`},
		{"rejected", Outcome{Kind: events.Rejected, Event: rejected}.Line(), `capture rejected merchant=M1 error="amount: idempotency_key_conflict: other parameters" event_id=e3`},
		{"dead-lettered", Outcome{Kind: events.DeadLettered, Event: dead}.Line(), `capture dead_lettered merchant=M1 transaction=T4 error="retries_exhausted: gateway down" dlq=payments.dlq.capture#7 event_id=e4`},
		{"duplicate resolved", Outcome{Kind: events.Duplicate, Event: dup, Original: &ok}.Line(), "capture succeeded (duplicate) merchant=M1 transaction=T1 amount=1000 currency=JPY gateway_code=INFO0001 event_id=e1 duplicate_event_id=e5"},
		{"duplicate unresolved", Outcome{Kind: events.Duplicate, Event: dup}.Line(), "capture duplicate merchant=M1 transaction=T1 original_event_id=e1 event_id=e5"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, tt.got, tt.want)
		}
	}
	for _, tt := range []struct {
		o    Outcome
		want bool
	}{
		{Outcome{Kind: events.Duplicate, Event: dup, Original: &ok}, true},
		{Outcome{Kind: events.Duplicate, Event: dup, Original: &failed}, false},
		{Outcome{Kind: events.Duplicate, Event: dup}, false},
	} {
		if got := tt.o.Succeeded(); got != tt.want {
			t.Errorf("Succeeded() of %s = %v, want %v", tt.o.Line(), got, tt.want)
		}
	}
	var round events.Event
	if b, _ := json.Marshal(ok); json.Unmarshal(b, &round) != nil || EventLine(round) != EventLine(ok) {
		t.Errorf("EventLine changes over a JSON round trip")
	}
}

func TestConnect(t *testing.T) {
	n := testenv.StartNATS(t)
	nc, err := Connect(ConnOptions{URL: n.URL, Name: "test"})
	if err != nil {
		t.Fatalf("Connect(%s) = %v", n.URL, err)
	}
	nc.Close()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "nats://127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	_, err = Connect(ConnOptions{URL: dead, Timeout: time.Second})
	var ce *ConnectError
	if !errors.As(err, &ce) || !ce.Unreachable() || ce.URL != dead {
		t.Errorf("Connect(%s) = %v, want an unreachable *ConnectError naming the URL", dead, err)
	}

	if _, err := Connect(ConnOptions{URL: n.URL, TLSCert: "cert.pem"}); !errors.Is(err, ErrTLSPair) {
		t.Errorf("Connect with a certificate and no key = %v, want ErrTLSPair", err)
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:secret@host:4222", "nats://user:xxxxx@host:4222"},
		{"nats://s3cr3tt0ken@host:4222", "nats://xxxxx@host:4222"},
		{"nats://a:1,nats://u:p@b:2", "nats://a:1,nats://u:xxxxx@b:2"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
