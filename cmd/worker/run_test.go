package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/schemas"
)

// running is one run() of the worker in a goroutine, as main starts it.
type running struct {
	t      testing.TB
	cancel context.CancelFunc
	done   chan error
	stderr *testenv.LogBuffer
	env    env
}

// startRun calls run with e as its environment, as main does with
// os.Getenv; the worker gets SIGTERM (its ctx is cancelled) at the latest
// when the test ends. Its log is printed if the test fails.
func startRun(t testing.TB, e env) *running {
	t.Helper()
	return startRunTo(t, e, &testenv.LogBuffer{})
}

// stop sends SIGTERM and returns how long run took to return, and its error.
func (r *running) stop() (time.Duration, error) {
	r.t.Helper()
	start := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return time.Since(start), err
	case <-time.After(time.Minute):
		r.t.Fatalf("run did not return within a minute of SIGTERM")
		return 0, nil
	}
}

// exited reports run's error if it has returned.
func (r *running) exited() (error, bool) {
	select {
	case err := <-r.done:
		r.done <- err
		return err, true
	default:
		return nil, false
	}
}

// waitReady polls /readyz until it answers 200; it fails the test if run
// returns first.
func (r *running) waitReady(t testing.TB) {
	t.Helper()
	base := "http://" + r.env["HTTP_ADDR"]
	poll(t, 30*time.Second, "/readyz 200", func() (bool, string) {
		if err, ok := r.exited(); ok {
			t.Fatalf("run returned %v before it was ready", err)
		}
		code, body := get(base + "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// poll calls cond until it holds; after timeout it fails the test with what
// cond last said.
func poll(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get answers an HTTP GET's status and body; 0 and the error when it fails.
func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
}

// authoriseOverHTTP creates an authorisation on a sandbox through its payment
// endpoint, as a shop would, and returns its transaction id.
func authoriseOverHTTP(t testing.TB, sandboxAddr, merchant string, amount int64, currency string) string {
	t.Helper()
	body := fmt.Sprintf(`{"amount":"%d","currency":%q,"merchant_id":%q,"merchant_txn_ref":"order-1",
		"card":{"number":"5200000000001005","name":"John Doe","expiry_month":"12","expiry_year":"30","cvc":"123"}}`,
		amount, currency, merchant)
	req, err := http.NewRequest(http.MethodPost, "http://"+sandboxAddr+"/api/v1/server-to-server-interface/payment", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic sandbox")
	req.Header.Set("x-api-key", "sandbox")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("payment: %v", err)
	}
	defer resp.Body.Close()
	var ans struct {
		Success            bool `json:"success"`
		TransactionDetails struct {
			ID string `json:"id"`
		} `json:"transaction_details"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &ans); err != nil || resp.StatusCode != http.StatusCreated || !ans.Success || ans.TransactionDetails.ID == "" {
		t.Fatalf("payment = %d %s, want 201 with a transaction id", resp.StatusCode, raw)
	}
	return ans.TransactionDetails.ID
}

// connect opens a NATS client for the test, closed when it ends.
func connect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publishCommand publishes a command with its command_id as Nats-Msg-Id.
func publishCommand(t testing.TB, js jetstream.JetStream, typ string, cmd map[string]any) {
	t.Helper()
	body, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "payments.cmd." + typ, Data: body}, jetstream.WithMsgID(fmt.Sprint(cmd["command_id"]))); err != nil {
		t.Fatalf("publish %s: %v", cmd["command_id"], err)
	}
}

// storedEvent is one message of PAYMENT_EVENTS.
type storedEvent struct {
	Subject string
	MsgID   string
	Event   events.Event
}

// readEvents reads every message of PAYMENT_EVENTS, checking each against
// its JSON Schema.
func readEvents(t testing.TB, js jetstream.JetStream) []storedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "PAYMENT_EVENTS")
	if err != nil {
		t.Fatalf("events stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("events stream info: %v", err)
	}
	var out []storedEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		if err := schemas.ValidateEventJSON(m.Data); err != nil {
			t.Errorf("event %d on %s does not validate: %v\n%s", seq, m.Subject, err, m.Data)
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		out = append(out, storedEvent{Subject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader), Event: ev})
	}
	return out
}

// byKey groups events by idempotency key, keeping their types in order.
func byKey(evs []storedEvent) map[string][]string {
	out := map[string][]string{}
	for _, e := range evs {
		out[e.Event.Data.IdempotencyKey] = append(out[e.Event.Data.IdempotencyKey], e.Event.Type)
	}
	return out
}

// metricValue finds the sample of name whose labels include every one of
// labels in a Prometheus text exposition; ok is false when there is none.
func metricValue(exposition, name string, labels ...string) (string, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line[:end], l)
		}
		if all {
			return strings.TrimSpace(line[end+1:]), true
		}
	}
	return "", false
}

// TestRunZeroConfig runs the whole system from run() with nothing but free
// ports and a data directory: embedded NATS with JetStream, the JetStream KV
// idempotency store and the in-process sandbox gateway, driven from outside
// over HTTP and NATS as the shop and the order service would.
func TestRunZeroConfig(t *testing.T) {
	e := env{
		"EMBEDDED_NATS_ADDR": freeAddr(t),
		"SANDBOX_ADDR":       freeAddr(t),
		"HTTP_ADDR":          freeAddr(t),
		"DATA_DIR":           t.TempDir(),
		"LOG_FORMAT":         "json",
		"WORKER_ID":          "zero",
	}
	w := startRun(t, e)
	w.waitReady(t)

	log := w.stderr.String()
	for _, want := range []string{"no NATS_URL: running an embedded NATS server", "no REDIS_URL: idempotency keys in a JetStream key-value bucket",
		"no PAYMENTOPTIONS_BASE_URL: running the sandbox gateway in-process"} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not say %q:\n%s", want, log)
		}
	}

	const merchant = "M0001"
	auth := authoriseOverHTTP(t, e["SANDBOX_ADDR"], merchant, 1000, "JPY")
	js := connect(t, "nats://"+e["EMBEDDED_NATS_ADDR"])
	publishCommand(t, js, "capture", map[string]any{"command_id": "zero-1", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1000, "currency": "JPY"})

	var got []storedEvent
	poll(t, 30*time.Second, "capture.succeeded", func() (bool, string) {
		got = readEvents(t, js)
		return len(got) > 0, fmt.Sprint(byKey(got))
	})
	if len(got) != 1 {
		t.Fatalf("events = %v, want one", byKey(got))
	}
	ev := got[0]
	if ev.Subject != "payments.evt.capture.succeeded" || ev.Event.Type != events.CaptureSucceeded.Type() {
		t.Errorf("event on %s of type %s, want payments.evt.capture.succeeded", ev.Subject, ev.Event.Type)
	}
	if want := events.TerminalID(merchant, "zero-1"); ev.Event.ID != want || ev.MsgID != want {
		t.Errorf("event id %q, Nats-Msg-Id %q, want both %q", ev.Event.ID, ev.MsgID, want)
	}
	if d := ev.Event.Data; d.CommandID != "zero-1" || d.TransactionID != auth || d.GatewayCode != "INFO0001" || d.Amount == nil || *d.Amount != 1000 {
		t.Errorf("event data = %+v, want command zero-1 on %s, INFO0001, amount 1000", d, auth)
	}

	base := "http://" + e["HTTP_ADDR"]
	if code, body := get(base + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q, want 200", code, body)
	}
	if code, body := get(base + "/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz = %d %q, want 200 \"ready\"", code, body)
	}
	poll(t, 10*time.Second, `payworker_commands_total{outcome="succeeded",type="capture"} 1`, func() (bool, string) {
		_, body := get(base + "/metrics")
		v, ok := metricValue(body, "payworker_commands_total", `outcome="succeeded"`, `type="capture"`)
		return ok && v == "1", v
	})

	took, err := w.stop()
	if err != nil {
		t.Errorf("run after SIGTERM = %v, want nil (exit 0)", err)
	}
	if took > 10*time.Second {
		t.Errorf("run took %s to return after SIGTERM with nothing in flight", took)
	}
}

// TestRunRedisExternalNATSAndGateway runs the production shape: NATS_URL,
// REDIS_URL and a gateway URL with its keys; readiness follows Redis.
func TestRunRedisExternalNATSAndGateway(t *testing.T) {
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	sb := sandbox.New(sandbox.Options{APIKey: "po-key", XAPIKey: "po-x-key", Seed: 1})
	base, stopSandbox, err := sb.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stopSandbox(context.Background()) })
	e := env{
		"NATS_URL":                 n.URL,
		"REDIS_URL":                r.URL,
		"PAYMENTOPTIONS_BASE_URL":  base,
		"PAYMENTOPTIONS_API_KEY":   "po-key",
		"PAYMENTOPTIONS_X_API_KEY": "po-x-key",
		"HTTP_ADDR":                freeAddr(t),
		"LOG_FORMAT":               "json",
		"WORKER_ID":                "prod",
	}
	w := startRun(t, e)
	w.waitReady(t)
	if log := w.stderr.String(); !strings.Contains(log, "idempotency keys in Redis") || strings.Contains(log, "embedded NATS") {
		t.Errorf("log does not say it uses Redis and the external NATS:\n%s", log)
	}

	merchant := "M" + strconv.Itoa(testenv.FreePort(t)) // unique on a shared REDIS_URL
	captured := sb.Authorise(merchant, 2500, "EUR")
	voided := sb.Authorise(merchant, 900, "EUR")
	js := connect(t, n.URL)
	publishCommand(t, js, "capture", map[string]any{"command_id": merchant + "-c", "type": "capture", "merchant_id": merchant,
		"transaction_id": captured, "amount": 2500, "currency": "EUR"})
	publishCommand(t, js, "void", map[string]any{"command_id": merchant + "-v", "type": "void", "merchant_id": merchant,
		"transaction_id": voided})

	want := map[string][]string{
		merchant + "-c": {events.CaptureSucceeded.Type()},
		merchant + "-v": {events.VoidSucceeded.Type()},
	}
	poll(t, 30*time.Second, "both terminal events", func() (bool, string) {
		got := byKey(readEvents(t, js))
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprint(got)
	})
	for _, tc := range []struct {
		auth string
		op   string
	}{{captured, "capture"}, {voided, "void"}} {
		if ops := sb.Applied(tc.auth); len(ops) != 1 || string(ops[0].Operation) != tc.op {
			t.Errorf("ledger of %s = %+v, want one %s", tc.auth, ops, tc.op)
		}
	}

	// Readiness follows the idempotency store: no Redis, not ready.
	if r.Own {
		readyz := "http://" + e["HTTP_ADDR"] + "/readyz"
		r.Stop()
		poll(t, 15*time.Second, "/readyz 503 naming the idempotency store", func() (bool, string) {
			code, body := get(readyz)
			return code == http.StatusServiceUnavailable && strings.Contains(body, "idempotency store"), fmt.Sprintf("%d %s", code, body)
		})
		r.Start()
		poll(t, 15*time.Second, "/readyz 200 after Redis is back", func() (bool, string) {
			code, body := get(readyz)
			return code == http.StatusOK && strings.TrimSpace(body) == "ready", fmt.Sprintf("%d %s", code, body)
		})
	}

	if _, err := w.stop(); err != nil {
		t.Errorf("run after SIGTERM = %v, want nil", err)
	}
}

func TestRunBadConfigIsUsageError(t *testing.T) {
	for _, tc := range []struct {
		name, value string
	}{
		{"WORKER_CONCURRENCY", "abc"},
		{"WORKER_CONCURRENCY", "0"},
		{"SHUTDOWN_TIMEOUT", "soon"},
		{"RETRY_MAX_ATTEMPTS", "-1"},
		{"REDIS_URL", "redis//x"},
		{"REDIS_MODE", "sentinel"}, // without REDIS_URL
		{"REDIS_MODE", "replicated"},
		{"REDIS_URL", "redis://s1:26379?master_name=mymaster"}, // without REDIS_MODE=sentinel
		{"PAYMENTOPTIONS_BASE_URL", "http://gateway.example.com/api/v1"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			e := env{tc.name: tc.value, "HTTP_ADDR": "off", "DATA_DIR": t.TempDir(), "EMBEDDED_NATS_ADDR": freeAddr(t), "SANDBOX_ADDR": freeAddr(t)}
			done := make(chan error, 1)
			go func() { done <- run(context.Background(), []string{"worker"}, e.get, io.Discard, io.Discard) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("run with %s=%s did not return at once", tc.name, tc.value)
			}
			var ec exitCoder
			if !errors.As(err, &ec) || ec.ExitCode() != 2 {
				t.Fatalf("run = %v, want a usage error with exit status 2", err)
			}
			if _, ok := err.(usageError); !ok {
				t.Errorf("run = %T, want usageError", err)
			}
			if !strings.Contains(err.Error(), tc.name) {
				t.Errorf("run = %q, want it to name %s", err, tc.name)
			}
		})
	}
}

func TestRunEmbeddedNATSPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := env{"EMBEDDED_NATS_ADDR": l.Addr().String(), "HTTP_ADDR": "off", "DATA_DIR": t.TempDir(), "SANDBOX_ADDR": freeAddr(t)}
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), []string{"worker"}, e.get, io.Discard, io.Discard) }()
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return with its NATS port taken")
	}
	if err == nil {
		t.Fatal("run = nil, want an error")
	}
	for _, want := range []string{"EMBEDDED_NATS_ADDR", "NATS_URL", l.Addr().String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("run = %q, want it to name %s", err, want)
		}
	}
}
