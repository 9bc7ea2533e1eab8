package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/schemas"
)

// harness is a real in-process NATS server and the environment run sees.
type harness struct {
	t    *testing.T
	nats *testenv.NATS
	js   jetstream.JetStream
	env  map[string]string
}

// newHarness starts NATS, with the streams provisioned when provision is set.
func newHarness(t *testing.T, provision bool) *harness {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	if provision {
		if err := streams.Provision(context.Background(), js, streams.Default()); err != nil {
			t.Fatalf("provision: %v", err)
		}
	}
	return &harness{t: t, nats: n, js: js, env: map[string]string{"NATS_URL": n.URL}}
}

func (h *harness) getenv(k string) string { return h.env[k] }

// run runs the program with args (without the program name).
func (h *harness) run(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	h.t.Helper()
	var out, errOut bytes.Buffer
	err = run(ctx, append([]string{"publisher"}, args...), h.getenv, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// verdict is what the test worker answers to a command: success with a
// gateway code, or failure with one.
type verdict struct {
	ok   bool
	code string
}

// respond starts a test double of the worker — for these CLI tests only: it
// reads every command published from now on and answers it with a
// schema-valid result event, as SPEC §3 describes: the terminal event of the
// key (id events.TerminalID) the first time, a command.duplicate event naming
// it for a later command with the same key. decide picks the outcome.
func (h *harness) respond(decide func(*command.Command) verdict) {
	t := h.t
	t.Helper()
	cfg := streams.Default()
	ctx := context.Background()
	cons, err := h.js.OrderedConsumer(ctx, cfg.Commands, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{cfg.CommandWildcard()},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		t.Fatalf("responder: %v", err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatalf("responder: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		done := map[string]events.Event{} // merchant\x00key → terminal event
		for {
			msg, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					t.Errorf("responder: %v", err)
				}
				return
			}
			typ := strings.TrimPrefix(msg.Subject(), cfg.Prefix+".cmd.")
			c, err := command.Decode(typ, msg.Data())
			if err != nil {
				t.Errorf("responder: published command does not decode: %v", err)
				continue
			}
			data := events.Data{
				CommandID: c.CommandID, IdempotencyKey: c.Key(), MerchantID: c.MerchantID,
				TransactionID: c.TransactionID, CommandType: string(c.Type), Gateway: "paymentoptions",
				Amount: c.Amount, Currency: c.Currency, Metadata: c.Metadata,
			}
			var kind events.Kind
			var ev events.Event
			if orig, seen := done[c.MerchantID+"\x00"+c.Key()]; seen {
				kind = events.Duplicate
				data.OriginalEventID = orig.ID
				data.OriginalCommandID = orig.Data.CommandID
				ev = events.New(kind, events.MessageID(kind, c.MerchantID, c.Key(), c.CommandID), "test-worker", time.Now(), data)
			} else {
				v := decide(c)
				kind = events.TerminalKind(string(c.Type), v.ok)
				data.Attempts = 1
				data.GatewayCode = v.code
				if !v.ok {
					data.Error = &events.Error{Code: "gateway_declined", Message: "declined by the gateway"}
				}
				ev = events.New(kind, events.TerminalID(c.MerchantID, c.Key()), "test-worker", time.Now(), data)
				done[c.MerchantID+"\x00"+c.Key()] = ev
			}
			body, err := ev.Marshal()
			if err != nil {
				t.Errorf("responder: %v", err)
				continue
			}
			if err := schemas.ValidateEventJSON(body); err != nil {
				t.Errorf("responder: event %s is not schema-valid: %v", kind, err)
			}
			out := &nats.Msg{Subject: cfg.EventSubject(string(kind)), Data: body, Header: nats.Header{}}
			out.Header.Set(jetstream.MsgIDHeader, ev.ID)
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = h.js.PublishMsg(pctx, out)
			cancel()
			if err != nil {
				t.Errorf("responder: publish event: %v", err)
			}
		}
	}()
	t.Cleanup(func() {
		it.Stop()
		wg.Wait()
	})
}
