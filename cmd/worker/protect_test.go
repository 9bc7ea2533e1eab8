package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/payworker/payworker/internal/breaker"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
)

func TestParseConfigGatewayProtection(t *testing.T) {
	c, err := parse(nil, env{})
	if err != nil {
		t.Fatal(err)
	}
	if c.GatewayOutageWait != 30*time.Minute || c.PaymentOptionsRateLimit != 0 || c.SIBSRateLimit != 0 {
		t.Errorf("defaults: GATEWAY_OUTAGE_WAIT %v, PAYMENTOPTIONS_RATE_LIMIT %d, SIBS_RATE_LIMIT %d; want 30m, 0, 0",
			c.GatewayOutageWait, c.PaymentOptionsRateLimit, c.SIBSRateLimit)
	}
	c, err = parse(nil, env{"GATEWAY_OUTAGE_WAIT": "0", "PAYMENTOPTIONS_RATE_LIMIT": "250", "SIBS_RATE_LIMIT": "40"})
	if err != nil {
		t.Fatal(err)
	}
	if c.GatewayOutageWait != 0 || c.PaymentOptionsRateLimit != 250 || c.SIBSRateLimit != 40 {
		t.Errorf("parsed %v, %d, %d; want 0, 250, 40", c.GatewayOutageWait, c.PaymentOptionsRateLimit, c.SIBSRateLimit)
	}
	for _, tc := range []struct {
		env  env
		want string
	}{
		{env{"GATEWAY_OUTAGE_WAIT": "-1m"}, "GATEWAY_OUTAGE_WAIT: must be ≥ 0, got -1m"},
		{env{"GATEWAY_OUTAGE_WAIT": "soon"}, `GATEWAY_OUTAGE_WAIT: "soon" is not a duration such as 0, 500ms, 2s or 1m`},
		{env{"PAYMENTOPTIONS_RATE_LIMIT": "-5"}, "PAYMENTOPTIONS_RATE_LIMIT: must be between 0 and 1000000, got -5"},
		{env{"SIBS_RATE_LIMIT": "fast"}, `SIBS_RATE_LIMIT: "fast" is not a whole number`},
	} {
		if _, err := parse(nil, tc.env); err == nil || err.Error() != tc.want {
			t.Errorf("parseConfig(%v) = %v, want %q", tc.env, err, tc.want)
		}
	}
}

// TestRunGatewayOutage runs the worker from run() (zero configuration, a
// rate limit shared through the fleet bucket) through a gateway outage
// longer than its retry budget: the circuit opens (one WARN, the metric at
// 2), /readyz stays ready, no command is dead-lettered; when the gateway is
// back the circuit closes (one INFO) and every command succeeds.
func TestRunGatewayOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits out a circuit's first cool-down (5s)")
	}
	e := env{
		"EMBEDDED_NATS_ADDR":          freeAddr(t),
		"SANDBOX_ADDR":                freeAddr(t),
		"HTTP_ADDR":                   freeAddr(t),
		"DATA_DIR":                    t.TempDir(),
		"LOG_FORMAT":                  "json",
		"WORKER_ID":                   "outage",
		"RETRY_MAX_ELAPSED":           "2s",
		"RETRY_MAX_ATTEMPTS":          "3",
		"RETRY_INITIAL_INTERVAL":      "50ms",
		"RETRY_MAX_INTERVAL":          "200ms",
		"PAYMENTOPTIONS_SETTLE_DELAY": "0",
		"GATEWAY_TIMEOUT":             "2s",
		"PAYMENTOPTIONS_RATE_LIMIT":   "200",
	}
	w := startRun(t, e)
	w.waitReady(t)
	base := "http://" + e["HTTP_ADDR"]
	poll(t, 5*time.Second, "a log line on how the rate limit is shared", func() (bool, string) {
		return strings.Contains(w.stderr.String(), `"msg":"gateway rate limit shared by the live workers"`), ""
	})

	const merchant = "M0001"
	auths := make([]string, 30)
	for i := range auths {
		auths[i] = authoriseOverHTTP(t, e["SANDBOX_ADDR"], merchant, 1000, "JPY")
	}
	setFaults(t, e["SANDBOX_ADDR"], `{"down":true,"fault_status":true}`)
	js := connect(t, "nats://"+e["EMBEDDED_NATS_ADDR"])
	for i, auth := range auths {
		publishCommand(t, js, "capture", map[string]any{"command_id": fmt.Sprintf("out-%d", i), "type": "capture",
			"merchant_id": merchant, "transaction_id": auth, "amount": 1000, "currency": "JPY"})
	}
	poll(t, 20*time.Second, "payworker_gateway_circuit_state 2", func() (bool, string) {
		_, body := get(base + "/metrics")
		v, _ := metricValue(body, "payworker_gateway_circuit_state", `gateway="paymentoptions"`)
		return v == "2", v
	})
	opened := time.Now()
	if code, body := get(base + "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz during the outage = %d %q, want 200: the worker is healthy, the gateway is not", code, body)
	}
	time.Sleep(3 * time.Second) // past the retry budget
	if n := countKind(readEvents(t, js), events.DeadLettered); n != 0 {
		t.Fatalf("%d dead letters during the outage, want none", n)
	}
	if code, _ := get(base + "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz during the outage = %d, want 200", code)
	}
	if time.Since(opened) > 4500*time.Millisecond {
		t.Logf("slow machine: the first probe may fail and the circuit wait 10s more")
	}
	setFaults(t, e["SANDBOX_ADDR"], `{}`)
	poll(t, 40*time.Second, "30 captures succeeded", func() (bool, string) {
		n := countKind(readEvents(t, js), events.CaptureSucceeded)
		return n == len(auths), fmt.Sprint(n)
	})
	if n := countKind(readEvents(t, js), events.DeadLettered); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	_, body := get(base + "/metrics")
	if v, _ := metricValue(body, "payworker_gateway_circuit_state", `gateway="paymentoptions"`); v != "0" {
		t.Errorf("circuit state after the outage = %q, want 0", v)
	}
	if _, ok := metricValue(body, "payworker_gateway_rate_limited_seconds_total", `gateway="paymentoptions"`); !ok {
		t.Errorf("no payworker_gateway_rate_limited_seconds_total for paymentoptions")
	}
	log := w.stderr.String()
	if n := strings.Count(log, "gateway circuit open:"); n != 1 {
		t.Errorf("%d WARN lines for the circuit opening, want 1", n)
	}
	if n := strings.Count(log, "gateway circuit closed:"); n != 1 {
		t.Errorf("%d INFO lines for the circuit closing, want 1", n)
	}
}

func setFaults(t *testing.T, sandboxAddr, faults string) {
	t.Helper()
	resp, err := http.Post("http://"+sandboxAddr+"/_sandbox/faults", "application/json", strings.NewReader(faults))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /_sandbox/faults %s = %d", faults, resp.StatusCode)
	}
}

func countKind(evs []storedEvent, kind events.Kind) int {
	n := 0
	for _, e := range evs {
		if e.Event.Type == kind.Type() {
			n++
		}
	}
	return n
}

// TestBreakerSettings: GATEWAY_BREAKER_* reach each gateway's circuit: it
// opens after GATEWAY_BREAKER_FAILURES failures in a row, not one before,
// and stays open GATEWAY_BREAKER_COOLDOWN.
func TestBreakerSettings(t *testing.T) {
	c, err := parse(nil, env{})
	if err != nil {
		t.Fatal(err)
	}
	if c.BreakerFailures != 10 || c.BreakerCoolDown != 5*time.Second || c.BreakerMaxCoolDown != time.Minute {
		t.Errorf("defaults %d, %v, %v; want 10, 5s, 1m", c.BreakerFailures, c.BreakerCoolDown, c.BreakerMaxCoolDown)
	}
	if _, err := parse(nil, env{"GATEWAY_BREAKER_COOLDOWN": "2m"}); err == nil ||
		err.Error() != "GATEWAY_BREAKER_MAX_COOLDOWN: 60s is shorter than GATEWAY_BREAKER_COOLDOWN 2m0s; the cool-down only grows" {
		t.Errorf("a cool-down above its maximum: %v, want an error naming GATEWAY_BREAKER_MAX_COOLDOWN", err)
	}
	if _, err := parse(nil, env{"GATEWAY_BREAKER_FAILURES": "0"}); err == nil || !strings.HasPrefix(err.Error(), "GATEWAY_BREAKER_FAILURES: ") {
		t.Errorf("GATEWAY_BREAKER_FAILURES=0: %v, want an error naming it", err)
	}

	c, err = parse(nil, env{"GATEWAY_BREAKER_FAILURES": "3", "GATEWAY_BREAKER_COOLDOWN": "40s", "GATEWAY_BREAKER_MAX_COOLDOWN": "5m"})
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: c, log: slog.New(slog.DiscardHandler), reg: prometheus.NewRegistry()}
	breakers, _, err := a.protection(t.Context(), map[string]handlers.Gateway{"paymentoptions": nil})
	if err != nil {
		t.Fatal(err)
	}
	b := breakers["paymentoptions"]
	for i := range 3 {
		if b.State() != breaker.Closed {
			t.Fatalf("circuit %v after %d failures, want closed until 3", b.State(), i)
		}
		p, _, ok := b.Allow()
		if !ok {
			t.Fatalf("call %d refused by a closed circuit", i+1)
		}
		p.Done(breaker.Failure)
	}
	_, wait, ok := b.Allow()
	if b.State() != breaker.Open || ok || wait < 30*time.Second || wait > 40*time.Second {
		t.Errorf("after 3 failures: state %v, a call allowed %v, wait %v; want open for 40s", b.State(), ok, wait)
	}
}
