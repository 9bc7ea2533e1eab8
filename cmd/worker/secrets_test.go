package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/testenv"
)

// startNATSWithUser runs an in-process NATS server with JetStream that
// admits user with password only.
func startNATSWithUser(t testing.TB, user, password string) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), ServerName: "secrets",
		NoLog: true, NoSigs: true, Users: []*server.User{{Username: user, Password: password}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.ClientURL()
}

// rawMessages returns every message of a stream, as stored: subject,
// headers and body.
func rawMessages(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("%s message %d: %v", stream, seq, err)
		}
		out = append(out, m)
	}
	return out
}

// fullPAN matches a run of 13 to 19 digits, a card number's length.
var fullPAN = regexp.MustCompile(`[0-9]{13,19}`)

// TestSecretsStaySecret runs the worker with every secret set, the
// PaymentOptions keys, the SIBS client secret and the access tokens it is
// issued (or a static SIBS token), the Redis password and the NATS
// password, through captures, voids, refusals, duplicates, retries,
// reconciliations after lost answers, a refused stale SIBS token and dead
// letters, at LOG_LEVEL=debug. No secret may appear in what the worker
// writes (stdout, stderr, /metrics), in any event or in any dead letter
// (bodies and headers), and no card number may appear whole: the gateway
// answers carry the card's full number and only its first six and last
// four digits may be kept.
func TestSecretsStaySecret(t *testing.T) {
	if testing.Short() {
		t.Skip("a full run with faults (-short)")
	}
	for _, tc := range []struct {
		name  string
		oauth bool
	}{{"SIBS OAuth client secret", true}, {"SIBS static token", false}} {
		t.Run(tc.name, func(t *testing.T) { secretsRun(t, tc.oauth) })
	}
}

func secretsRun(t *testing.T, oauth bool) {
	const card = "5200000000001005" // the sandbox's card, in every PaymentOptions answer
	secrets := map[string]string{
		"PAYMENTOPTIONS_API_KEY":   "po-key-SECRET-a1b2c3",
		"PAYMENTOPTIONS_X_API_KEY": "po-xkey-SECRET-d4e5f6",
		"REDIS_PASSWORD":           "redis-pw-SECRET-0718",
		"NATS_PASSWORD":            "nats-pw-SECRET-9c2e",
		"stale SIBS token":         "sibs-stale-SECRET-41aa",
	}
	sibsToken := "sibs-static-SECRET-77f0"
	if oauth {
		secrets["SIBS_CLIENT_SECRET"] = "sibs-client-secret-SECRET-5d6e"
		sibsToken = "sibs-issued-SECRET-3b9d"
		secrets["issued SIBS token"] = sibsToken
	} else {
		secrets["SIBS_TOKEN"] = sibsToken
	}
	natsURL := startNATSWithUser(t, "payworker", secrets["NATS_PASSWORD"])
	ca := testenv.NewCA(t, "secrets-ca")
	r := testenv.StartRedisTLS(t, testenv.RedisTLSOptions{CA: ca, ClientCerts: true, User: "payworker", Password: secrets["REDIS_PASSWORD"]})
	sb := sandbox.New(sandbox.Options{APIKey: secrets["PAYMENTOPTIONS_API_KEY"], XAPIKey: secrets["PAYMENTOPTIONS_X_API_KEY"],
		SIBSToken: sibsToken, SIBSClientID: "sibs-client", Seed: 7})
	// The first token issued is stale: SIBS refuses it with 401, and the
	// adapter fetches another.
	g := startTLSGateway(t, ca, sb, "sibs-client", secrets["SIBS_CLIENT_SECRET"], func(n int64) string {
		if n == 1 {
			return secrets["stale SIBS token"]
		}
		return sibsToken
	})

	dir := t.TempDir()
	file := func(name string) string { return writeFile(t, dir, name, secrets[name]+"\n") }
	e := env{
		"NATS_URL":                      natsURL,
		"NATS_USER":                     "payworker",
		"NATS_PASSWORD_FILE":            file("NATS_PASSWORD"),
		"REDIS_URL":                     r.URL,
		"REDIS_TLS_CA":                  ca.CertFile,
		"REDIS_TLS_CERT":                r.ClientCert.CertFile,
		"REDIS_TLS_KEY":                 r.ClientCert.KeyFile,
		"REDIS_USERNAME":                "payworker",
		"REDIS_PASSWORD_FILE":           file("REDIS_PASSWORD"),
		"PAYMENTOPTIONS_BASE_URL":       g.URL + "/api/v1",
		"PAYMENTOPTIONS_API_KEY":        secrets["PAYMENTOPTIONS_API_KEY"],
		"PAYMENTOPTIONS_X_API_KEY_FILE": file("PAYMENTOPTIONS_X_API_KEY"),
		"PAYMENTOPTIONS_TLS_CA":         ca.CertFile,
		"SIBS_BASE_URL":                 g.URL,
		"SIBS_CLIENT_ID":                "sibs-client",
		"SIBS_TERMINAL_ID":              "24",
		"SIBS_TLS_CA":                   ca.CertFile,
		"GATEWAY_ROUTES":                "MSIBS=sibs",
		"RETRY_MAX_ATTEMPTS":            "4",
		"RETRY_MAX_ELAPSED":             "4s",
		"RETRY_INITIAL_INTERVAL":        "20ms",
		"RETRY_MAX_INTERVAL":            "100ms",
		"PAYMENTOPTIONS_SETTLE_DELAY":   "0",
		"SIBS_SETTLE_DELAY":             "0",
		"GATEWAY_OUTAGE_WAIT":           "0",
		"GATEWAY_TIMEOUT":               "2s",
		"HTTP_ADDR":                     freeAddr(t),
		"LOG_FORMAT":                    "json",
		"LOG_LEVEL":                     "debug",
		"WORKER_ID":                     "secrets",
	}
	if oauth {
		e["SIBS_TOKEN_URL"] = g.URL + "/oauth/token"
		e["SIBS_CLIENT_SECRET_FILE"] = file("SIBS_CLIENT_SECRET")
	} else {
		e["SIBS_TOKEN"] = sibsToken
	}
	stdout := &testenv.LogBuffer{}
	w := startRunTo(t, e, stdout)
	w.waitReady(t)

	nc, err := nats.Connect(natsURL, nats.UserInfo("payworker", secrets["NATS_PASSWORD"]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	sent := map[string]map[string]any{}
	send := func(typ, merchant, auth string, amount int64) {
		key := fmt.Sprintf("%s-%s-%d", merchant, typ, len(keys))
		keys = append(keys, key)
		cmd := map[string]any{"command_id": key, "type": typ, "merchant_id": merchant, "transaction_id": auth, "idempotency_key": key}
		if typ == "capture" {
			cmd["amount"], cmd["currency"] = amount, "EUR"
		}
		sent[key] = cmd
		publishCommand(t, js, typ, cmd)
	}

	// Phase 1: both gateways faulty; every command ends one way or another.
	sb.SetFaults(sandbox.Faults{ErrorRate: 0.25, UnclearRate: 0.2, RateLimitRate: 0.1, ApplyThenDropRate: 0.15, Latency: 20 * time.Millisecond})
	for _, m := range []string{"MPO", "MSIBS"} {
		for range 6 {
			send("capture", m, sb.Authorise(m, 1500, "EUR"), 1500)
		}
		send("capture", m, sb.Authorise(m, 100, "EUR"), 900) // more than authorised: refused
		send("void", m, sb.Authorise(m, 800, "EUR"), 0)
	}
	waitAllEnded(t, js, keys, 90*time.Second)

	// The same command again, by another command id, for each gateway:
	// answered as a duplicate from the Redis record.
	done := byKey(readEvents(t, js))
	for _, m := range []string{"MPO-", "MSIBS-"} {
		for _, k := range keys {
			if strings.HasPrefix(k, m) && len(done[k]) > 0 && strings.HasSuffix(done[k][0], ".succeeded") {
				again := maps.Clone(sent[k])
				again["command_id"] = k + "-again"
				publishCommand(t, js, fmt.Sprint(again["type"]), again)
				poll(t, 30*time.Second, "the duplicate of "+k, func() (bool, string) {
					got := byKey(readEvents(t, js))[k]
					return slices.Contains(got, events.Duplicate.Type()), fmt.Sprint(got)
				})
				break
			}
		}
	}

	// Phase 2: SIBS unavailable, so its commands are dead-lettered.
	sb.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: http.StatusServiceUnavailable, Gateway: sandbox.GatewaySIBS})
	before := len(keys)
	for range 2 {
		send("capture", "MSIBS", sb.Authorise("MSIBS", 500, "EUR"), 500)
	}
	waitAllEnded(t, js, keys[before:], 60*time.Second)
	sb.SetFaults(sandbox.Faults{})

	_, metrics := get("http://" + e["HTTP_ADDR"] + "/metrics")
	if _, err := w.stop(); err != nil {
		t.Errorf("run after SIGTERM = %v", err)
	}

	outputs := map[string]string{"stdout": stdout.String(), "stderr": w.stderr.String(), "/metrics": metrics}
	for _, stream := range []string{"PAYMENT_EVENTS", "PAYMENT_DLQ"} {
		for _, m := range rawMessages(t, js, stream) {
			outputs[fmt.Sprintf("%s %d body", stream, m.Sequence)] = string(m.Data)
			outputs[fmt.Sprintf("%s %d headers", stream, m.Sequence)] = fmt.Sprint(m.Header)
		}
	}
	// The run went through what it should have: debug records, refusals,
	// successes, a duplicate, dead letters, a refused token; else the scan
	// proves little.
	types := map[string]int{}
	for _, ev := range readEvents(t, js) {
		types[ev.Event.Type[strings.LastIndexByte(ev.Event.Type, '.')+1:]]++
	}
	for _, want := range []string{"succeeded", "failed", "duplicate", "dead_lettered"} {
		if types[want] == 0 {
			t.Errorf("no %s event among %v: the run did not cover it", want, types)
		}
	}
	if !strings.Contains(w.stderr.String(), `"level":"DEBUG"`) {
		t.Logf("no debug record in the log this time (the worker logs little at debug: busy keys, circuit probes)")
	}
	if n := len(rawMessages(t, js, "PAYMENT_DLQ")); n < 2 {
		t.Errorf("%d dead letters, want at least the 2 of SIBS down", n)
	}
	if oauth && g.tokens.Load() < 2 {
		t.Errorf("%d SIBS tokens issued, want the stale one and its replacement", g.tokens.Load())
	}
	for name, out := range outputs {
		for what, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Errorf("%s shows %s (%q)", name, what, secret)
			}
		}
		if strings.Contains(out, card) {
			t.Errorf("%s shows the card number %s whole", name, card)
		}
		if pan := fullPAN.FindString(out); pan != "" && strings.HasPrefix(pan, card[:6]) {
			t.Errorf("%s shows a card number %s", name, pan)
		}
	}
	if !strings.Contains(strings.Join(values(outputs), "\n"), card[:6]+"******"+card[12:]) {
		t.Errorf("no masked card number %s******%s anywhere: the answers' card data was not carried, so the scan proves little", card[:6], card[12:])
	}
}

func values(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// waitAllEnded waits until every key has a terminal event: succeeded,
// failed or dead-lettered.
func waitAllEnded(t testing.TB, js jetstream.JetStream, keys []string, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, "a terminal event for every command", func() (bool, string) {
		got := byKey(readEvents(t, js))
		var open []string
		for _, k := range keys {
			ended := false
			for _, typ := range got[k] {
				ended = ended || strings.HasSuffix(typ, ".succeeded") || strings.HasSuffix(typ, ".failed") || strings.HasSuffix(typ, "dead_lettered")
			}
			if !ended {
				open = append(open, k)
			}
		}
		return len(open) == 0, fmt.Sprintf("open: %v; events: %v", open, got)
	})
}

// startRunTo is startRun with the worker's stdout kept in stdout.
func startRunTo(t testing.TB, e env, stdout *testenv.LogBuffer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, cancel: cancel, done: make(chan error, 1), stderr: &testenv.LogBuffer{}, env: e}
	go func() { r.done <- run(ctx, []string{"worker"}, e.get, stdout, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(time.Minute):
			t.Errorf("worker still running a minute after SIGTERM")
		}
		if t.Failed() {
			t.Logf("worker log:\n%s", r.stderr.String())
		}
	})
	return r
}
