package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/natsconn"
	"github.com/payworker/payworker/internal/natsconn/natsconntest"
	"github.com/payworker/payworker/internal/testenv"
)

// roleConn connects to srv as role with deploy/nats's credentials, using
// the reply prefix that role's permissions allow (the worker's and the
// operator's own, the order service's the default _INBOX).
func roleConn(t testing.TB, srv *natsconntest.Server, role string, s natsconn.Settings) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	s.URL = srv.URL
	switch role {
	case "payworker":
		s.InboxPrefix = "_INBOX_payworker"
	case "operator":
		s.InboxPrefix = "_INBOX_operator"
	}
	s.User, s.Password = role, srv.Password(role)
	// The refusals the tests provoke are checked in the server's log; the
	// client's default handler would only print them.
	nc, err := natsconn.Connect(s, nats.MaxReconnects(-1), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// securedEnv is the worker's environment against srv as the payworker user.
func securedEnv(t testing.TB, srv *natsconntest.Server) env {
	return env{
		"NATS_URL":           srv.URL,
		"NATS_USER":          "payworker",
		"NATS_PASSWORD_FILE": srv.PasswordFile(t, "payworker"),
		"SANDBOX_ADDR":       freeAddr(t),
		"HTTP_ADDR":          freeAddr(t),
		"DATA_DIR":           t.TempDir(),
		"LOG_FORMAT":         "json",
		"LOG_LEVEL":          "debug",
		"WORKER_ID":          "secured",
		// A fleet-wide rate limit without Redis: the worker joins the
		// payworker_fleet bucket and watches it.
		"PAYMENTOPTIONS_RATE_LIMIT": "1000",
	}
}

// capture has the order service capture a new sandbox authorisation through
// the client package and wait for its outcome.
func captureAsOrderService(t testing.TB, c *client.Client, sandboxAddr, id string) client.Result {
	t.Helper()
	auth := authoriseOverHTTP(t, sandboxAddr, "M0001", 1000, "JPY")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Do(ctx, client.Capture{CommandID: id, MerchantID: "M0001", TransactionID: auth, Amount: 1000, Currency: "JPY"})
	if err != nil {
		t.Fatalf("order service capture %s: %v", id, err)
	}
	return res
}

// noViolations fails the test if the server refused anything so far: every
// subject the programs use must be in deploy/nats/roles.conf.
func noViolations(t testing.TB, srv *natsconntest.Server) {
	t.Helper()
	for _, v := range srv.Violations() {
		t.Errorf("nats-server refused a subject a program uses: %s", v)
	}
}

// refused runs act, which must fail, and checks that the server logged a
// violation of user's permissions on subject for it.
func refused(t *testing.T, srv *natsconntest.Server, user, subject string, act func(ctx context.Context) error) {
	t.Helper()
	// A refused request gets no answer: it fails when ctx ends. What
	// proves the refusal is the server's log.
	ctx, cancel := context.WithTimeout(context.Background(), 750*time.Millisecond)
	defer cancel()
	if err := act(ctx); err == nil {
		t.Errorf("%s on %s succeeded, want it refused", user, subject)
		return
	}
	want := fmt.Sprintf("user:%s\" - %s Violation - Subject %q", user, kindOf(subject), subject)
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, v := range srv.Violations() {
			if strings.Contains(v, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("%s on %s failed, but the server logged no violation %s; violations: %q", user, subject, want, srv.Violations())
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// subscriptions are the subjects refused calls subscribe to.
var subscriptions = map[string]bool{}

// kindOf is the violation the server logs for subject: Subscription for
// those that subscribe tries, Publish for the rest.
func kindOf(subject string) string {
	if subscriptions[subject] {
		return "Subscription"
	}
	return "Publish"
}

// request sends a JetStream API request and returns an error for no answer or
// an API error.
func request(nc *nats.Conn, subject string, body string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		m, err := nc.RequestWithContext(ctx, subject, []byte(body))
		if err != nil {
			return err
		}
		if strings.Contains(string(m.Data), `"error"`) {
			return errors.New(string(m.Data))
		}
		return nil
	}
}

// subscribe subscribes and waits for the server's answer: a refused
// subscription fails.
func subscribe(nc *nats.Conn, subject string) func(ctx context.Context) error {
	subscriptions[subject] = true
	return func(ctx context.Context) error {
		sub, err := nc.SubscribeSync(subject)
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		if err := nc.FlushWithContext(ctx); err != nil {
			return err
		}
		for ctx.Err() == nil {
			if _, err := sub.NextMsg(50 * time.Millisecond); errors.Is(err, nats.ErrPermissionViolation) {
				return err
			}
		}
		return fmt.Errorf("no message on %s: %w", subject, ctx.Err())
	}
}

// TestNATSPermissions runs the worker from run() as the payworker user of
// deploy/nats/permissions.conf, and the order service (the client package)
// as orderservice: a capture gets its succeeded event and an invalid command
// its rejection and dead letter, with no subject refused to either. Then
// each act the roles must not do is tried and refused by the server.
func TestNATSPermissions(t *testing.T) {
	srv := natsconntest.Start(t, natsconntest.Options{})
	e := securedEnv(t, srv)
	w := startRun(t, e)
	w.waitReady(t)

	onc, ojs := roleConn(t, srv, "orderservice", natsconn.Settings{})
	shop := client.New(ojs)
	t.Cleanup(func() { shop.Close() })
	auth := authoriseOverHTTP(t, e["SANDBOX_ADDR"], "M0001", 1000, "JPY")
	cmd := client.Capture{CommandID: "sec-1", MerchantID: "M0001", TransactionID: auth, Amount: 1000, Currency: "JPY"}
	for i := range 2 {
		// The second time the publication is a duplicate, and the client
		// reads the commands stream's duplicate window to look for the
		// outcome.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := shop.Do(ctx, cmd)
		cancel()
		if err != nil {
			t.Fatalf("order service capture (publication %d): %v", i+1, err)
		}
		if ev := client.EventOf(res); !res.OK() || ev.Type != "payments.capture.succeeded" {
			t.Errorf("capture (publication %d) = %s, event type %s, want payments.capture.succeeded", i+1, res, ev.Type)
		}
	}
	// A message the worker rejects: its copy goes to the DLQ.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ojs.Publish(ctx, "payments.cmd.capture", []byte(`{"not":"a command"}`)); err != nil {
		t.Fatalf("publish an invalid command: %v", err)
	}
	_, wjs := roleConn(t, srv, "operator", natsconn.Settings{})
	poll(t, 30*time.Second, "the invalid command in PAYMENT_DLQ", func() (bool, string) {
		s, err := wjs.Stream(ctx, "PAYMENT_DLQ")
		if err != nil {
			return false, err.Error()
		}
		return s.CachedInfo().State.Msgs == 1, fmt.Sprint(s.CachedInfo().State.Msgs)
	})
	// Let the worker's probes (consumer info, lag, fleet) run once more.
	time.Sleep(probeInterval + time.Second)
	noViolations(t, srv)
	if t.Failed() {
		return
	}

	// What the order service must not do.
	refused(t, srv, "orderservice", "payments.evt.capture.succeeded", func(ctx context.Context) error {
		_, err := ojs.Publish(ctx, "payments.evt.capture.succeeded", []byte(`{}`))
		return err
	})
	refused(t, srv, "orderservice", "payments.dlq.capture", func(ctx context.Context) error {
		_, err := ojs.Publish(ctx, "payments.dlq.capture", []byte(`{}`))
		return err
	})
	refused(t, srv, "orderservice", "$JS.API.STREAM.INFO.PAYMENT_DLQ", func(ctx context.Context) error {
		_, err := ojs.Stream(ctx, "PAYMENT_DLQ")
		return err
	})
	refused(t, srv, "orderservice", "$JS.API.STREAM.MSG.GET.PAYMENT_DLQ", request(onc, "$JS.API.STREAM.MSG.GET.PAYMENT_DLQ", `{"seq":1}`))
	refused(t, srv, "orderservice", "$JS.API.DIRECT.GET.PAYMENT_DLQ", request(onc, "$JS.API.DIRECT.GET.PAYMENT_DLQ", `{"seq":1}`))
	refused(t, srv, "orderservice", "$JS.API.CONSUMER.CREATE.PAYMENT_DLQ.peek", request(onc, "$JS.API.CONSUMER.CREATE.PAYMENT_DLQ.peek",
		`{"stream_name":"PAYMENT_DLQ","config":{"name":"peek","ack_policy":"none"}}`))
	refused(t, srv, "orderservice", "payments.dlq.>", subscribe(onc, "payments.dlq.>"))
	refused(t, srv, "orderservice", "_INBOX_operator.>", subscribe(onc, "_INBOX_operator.>"))
	refused(t, srv, "orderservice", "_INBOX_payworker.>", subscribe(onc, "_INBOX_payworker.>"))
	refused(t, srv, "orderservice", "$JS.API.STREAM.PURGE.PAYMENT_COMMANDS", request(onc, "$JS.API.STREAM.PURGE.PAYMENT_COMMANDS", ""))
	refused(t, srv, "orderservice", "$JS.API.STREAM.PURGE.PAYMENT_EVENTS", request(onc, "$JS.API.STREAM.PURGE.PAYMENT_EVENTS", ""))
	refused(t, srv, "orderservice", "$JS.API.STREAM.DELETE.PAYMENT_EVENTS", func(ctx context.Context) error {
		return ojs.DeleteStream(ctx, "PAYMENT_EVENTS")
	})
	refused(t, srv, "orderservice", "$JS.API.CONSUMER.DELETE.PAYMENT_COMMANDS.payworker", func(ctx context.Context) error {
		return ojs.DeleteConsumer(ctx, "PAYMENT_COMMANDS", "payworker")
	})
	refused(t, srv, "orderservice", "$KV.payworker_idempotency.M0001.k", func(ctx context.Context) error {
		_, err := ojs.Publish(ctx, "$KV.payworker_idempotency.M0001.k", []byte(`{}`))
		return err
	})
	refused(t, srv, "orderservice", "$JS.API.CONSUMER.MSG.NEXT.PAYMENT_COMMANDS.payworker",
		request(onc, "$JS.API.CONSUMER.MSG.NEXT.PAYMENT_COMMANDS.payworker", `{"batch":1,"expires":500000000}`))

	// What the worker's user must not do.
	pnc, pjs := roleConn(t, srv, "payworker", natsconn.Settings{})
	for _, stream := range []string{"PAYMENT_COMMANDS", "PAYMENT_EVENTS", "PAYMENT_DLQ", "KV_payworker_idempotency"} {
		refused(t, srv, "payworker", "$JS.API.STREAM.DELETE."+stream, func(ctx context.Context) error {
			return pjs.DeleteStream(ctx, stream)
		})
		refused(t, srv, "payworker", "$JS.API.STREAM.PURGE."+stream, request(pnc, "$JS.API.STREAM.PURGE."+stream, ""))
	}
	refused(t, srv, "payworker", "payments.cmd.capture", func(ctx context.Context) error {
		_, err := pjs.Publish(ctx, "payments.cmd.capture", []byte(`{}`))
		return err
	})
	refused(t, srv, "payworker", "_INBOX.>", subscribe(pnc, "_INBOX.>"))

	// Nothing was lost: the streams are there with what they held.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for stream, want := range map[string]uint64{"PAYMENT_COMMANDS": 2, "PAYMENT_EVENTS": 2, "PAYMENT_DLQ": 1} {
		s, err := wjs.Stream(ctx, stream)
		if err != nil {
			t.Errorf("stream %s after the refused acts: %v", stream, err)
			continue
		}
		if got := s.CachedInfo().State.Msgs; got != want {
			t.Errorf("stream %s holds %d messages, want %d", stream, got, want)
		}
	}
}

// TestNATSNKeys runs the worker and the order service with NKEY seeds
// (permissions-nkey.conf, NATS_NKEY_SEED_FILE) instead of passwords.
func TestNATSNKeys(t *testing.T) {
	srv := natsconntest.Start(t, natsconntest.Options{NKeys: true})
	e := securedEnv(t, srv)
	delete(e, "NATS_USER")
	delete(e, "NATS_PASSWORD_FILE")
	e["NATS_NKEY_SEED_FILE"] = srv.SeedFile(t, "payworker")
	w := startRun(t, e)
	w.waitReady(t)

	nc, err := natsconn.Connect(natsconn.Settings{URL: srv.URL, NKeySeedFile: srv.SeedFile(t, "orderservice")})
	if err != nil {
		t.Fatalf("order service with its seed: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	shop := client.New(js)
	t.Cleanup(func() { shop.Close() })
	if res := captureAsOrderService(t, shop, e["SANDBOX_ADDR"], "nkey-1"); !res.OK() {
		t.Errorf("capture = %s, want succeeded", res)
	}
	noViolations(t, srv)

	// A seed the server does not know stops a worker at start, naming
	// NATS_NKEY_SEED_FILE and not the seed.
	unknown := natsconntest.NewSeedFile(t)
	e2 := securedEnv(t, srv)
	delete(e2, "NATS_USER")
	delete(e2, "NATS_PASSWORD_FILE")
	e2["NATS_NKEY_SEED_FILE"] = unknown
	if _, err := runUntilReady(t, e2); err == nil || !strings.Contains(err.Error(), "NATS_NKEY_SEED_FILE: the server refused the NKEY of the seed in "+unknown) ||
		strings.Contains(err.Error(), seedOf(t, unknown)) {
		t.Errorf("run with an unknown seed = %v, want an error naming NATS_NKEY_SEED_FILE without the seed", err)
	}

	if log := w.stderr.String(); strings.Contains(log, srv.Password("payworker")) || strings.Contains(log, "SU") && strings.Contains(log, seedOf(t, e["NATS_NKEY_SEED_FILE"])) {
		t.Errorf("the worker logged its seed:\n%s", log)
	}
}

func seedOf(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestNATSLoginRefused: a wrong password stops the worker at start with an
// error that names NATS_USER and never shows the password.
func TestNATSLoginRefused(t *testing.T) {
	srv := natsconntest.Start(t, natsconntest.Options{})
	e := securedEnv(t, srv)
	wrong := filepath.Join(t.TempDir(), "wrong")
	const bad = "pwNotTheRightOne42"
	if err := os.WriteFile(wrong, []byte(bad+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e["NATS_PASSWORD_FILE"] = wrong
	w := startRun(t, e)
	var err error
	poll(t, 30*time.Second, "run to return", func() (bool, string) {
		var done bool
		err, done = w.exited()
		return done, ""
	})
	if err == nil || !strings.Contains(err.Error(), "NATS_USER") || !strings.Contains(err.Error(), `user "payworker"`) ||
		!errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("run = %v, want an authorization violation naming NATS_USER and user \"payworker\"", err)
	}
	if out := fmt.Sprint(err) + w.stderr.String(); strings.Contains(out, bad) {
		t.Errorf("the password appears in the error or the log:\n%s", out)
	}
}

// runUntilReady starts the worker with e and waits
// until run returns or it is ready; it returns run's error (nil when ready).
func runUntilReady(t *testing.T, e env) (*running, error) {
	t.Helper()
	w := startRun(t, e)
	base := "http://" + e["HTTP_ADDR"]
	var err error
	poll(t, 30*time.Second, "ready or exited", func() (bool, string) {
		var done bool
		if err, done = w.exited(); done {
			return true, ""
		}
		code, body := get(base + "/readyz")
		return code == 200, body
	})
	return w, err
}

// TestNATSTLS runs the worker against a nats-server that requires TLS and
// verifies client certificates (verify: true), with a CA and certificates
// made in the test, as the payworker user: a capture gets its succeeded
// event. A CA that did not sign the server's certificate, or no client
// certificate, stops the worker at start with an error that names the
// variable to fix.
func TestNATSTLS(t *testing.T) {
	ca := natsconntest.NewCA(t, "payworker test CA")
	srv := natsconntest.Start(t, natsconntest.Options{TLS: &natsconntest.ServerTLS{CA: ca, Cert: ca.Server(t, "nats"), Verify: true}})
	if !strings.HasPrefix(srv.URL, "tls://") {
		t.Fatalf("server URL %s, want tls://", srv.URL)
	}
	worker, shop := ca.Client(t, "payworker"), ca.Client(t, "orderservice")

	t.Run("trusted", func(t *testing.T) {
		e := securedEnv(t, srv)
		e["NATS_TLS_CA"], e["NATS_TLS_CERT"], e["NATS_TLS_KEY"] = ca.File, worker.Cert, worker.Key
		if _, err := runUntilReady(t, e); err != nil {
			t.Fatalf("run over TLS = %v", err)
		}
		_, js := roleConn(t, srv, "orderservice", natsconn.Settings{TLSCA: ca.File, TLSCert: shop.Cert, TLSKey: shop.Key})
		c := client.New(js)
		t.Cleanup(func() { c.Close() })
		if res := captureAsOrderService(t, c, e["SANDBOX_ADDR"], "tls-1"); !res.OK() {
			t.Errorf("capture over TLS = %s, want succeeded", res)
		}
		noViolations(t, srv)
	})

	other := natsconntest.NewCA(t, "another CA")
	for _, tc := range []struct {
		name string
		set  env
		// want are the parts of run's error.
		want []string
	}{
		{"wrong CA", env{"NATS_TLS_CA": other.File, "NATS_TLS_CERT": worker.Cert, "NATS_TLS_KEY": worker.Key},
			[]string{"NATS_TLS_CA: the server's certificate is not signed by a CA in " + other.File, "certificate signed by unknown authority"}},
		{"system roots", env{},
			[]string{"NATS_TLS_CA: the server's certificate is not signed by a CA this system trusts; set NATS_TLS_CA"}},
		{"no client certificate", env{"NATS_TLS_CA": ca.File},
			[]string{"NATS_TLS_CERT: the server wants a client certificate; set NATS_TLS_CERT and NATS_TLS_KEY"}},
		{"client certificate of another CA", env{"NATS_TLS_CA": ca.File, "NATS_TLS_CERT": other.Client(t, "x").Cert, "NATS_TLS_KEY": other.Client(t, "y").Key},
			[]string{"NATS_TLS_CERT: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := securedEnv(t, srv)
			for k, v := range tc.set {
				e[k] = v
			}
			_, err := runUntilReady(t, e)
			if err == nil {
				t.Fatalf("run = nil, want a TLS error")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("run = %v\nwant it to say %q", err, want)
				}
			}
			if strings.Contains(err.Error(), srv.Password("payworker")) {
				t.Errorf("run's error shows the password: %v", err)
			}
		})
	}
}

// TestNATSConfigErrors: NATS settings that cannot work stop the worker at
// once, each naming its variable.
func TestNATSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notPEM, notSeed, pw := file("ca.txt", "not a certificate"), file("seed.txt", "UABC not a seed"), file("pw", "secret\n")
	missing := filepath.Join(dir, "missing.pem")
	url := "nats://127.0.0.1:4222"
	for _, tc := range []struct {
		name string
		e    env
		want string
	}{
		{"certificate without key", env{"NATS_URL": url, "NATS_TLS_CERT": notPEM}, "NATS_TLS_KEY: required with NATS_TLS_CERT"},
		{"key without certificate", env{"NATS_URL": url, "NATS_TLS_KEY": notPEM}, "NATS_TLS_CERT: required with NATS_TLS_KEY"},
		{"CA unreadable", env{"NATS_URL": url, "NATS_TLS_CA": missing}, "NATS_TLS_CA: open " + missing},
		{"CA not PEM", env{"NATS_URL": url, "NATS_TLS_CA": notPEM}, "NATS_TLS_CA: file " + notPEM + " holds no PEM certificate"},
		{"key pair not PEM", env{"NATS_URL": url, "NATS_TLS_CERT": notPEM, "NATS_TLS_KEY": notPEM}, "NATS_TLS_CERT: " + notPEM + " with NATS_TLS_KEY"},
		{"seed unreadable", env{"NATS_URL": url, "NATS_NKEY_SEED_FILE": missing}, "NATS_NKEY_SEED_FILE: open " + missing},
		{"no seed", env{"NATS_URL": url, "NATS_NKEY_SEED_FILE": notSeed}, "NATS_NKEY_SEED_FILE: file " + notSeed + " holds no NKEY user seed"},
		{"password file unreadable", env{"NATS_URL": url, "NATS_USER": "payworker", "NATS_PASSWORD_FILE": missing}, "NATS_PASSWORD_FILE: open " + missing},
		{"user without password", env{"NATS_URL": url, "NATS_USER": "payworker"}, "NATS_PASSWORD_FILE: required with NATS_USER=payworker"},
		{"password without user", env{"NATS_URL": url, "NATS_PASSWORD_FILE": pw}, "NATS_USER: required with a password"},
		{"two logins", env{"NATS_URL": url, "NATS_USER": "payworker", "NATS_PASSWORD_FILE": pw, "NATS_CREDS": pw}, "NATS_CREDS: set only one of NATS_CREDS, NATS_USER"},
		{"inbox prefix", env{"NATS_URL": url, "NATS_INBOX_PREFIX": "_INBOX.>"}, `NATS_INBOX_PREFIX: "_INBOX.>" is not a subject prefix`},
		{"TLS with the embedded server", env{"NATS_TLS_CA": notPEM}, "NATS_TLS_CA: set, but NATS_URL is not"},
		{"user with the embedded server", env{"NATS_USER": "payworker", "NATS_PASSWORD_FILE": pw}, "NATS_USER: set, but NATS_URL is not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(nil, tc.e.get, os.ReadFile)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseConfig = %v\nwant it to say %q", err, tc.want)
			}
			var ve *VarError
			if !errors.As(err, &ve) {
				t.Errorf("parseConfig = %T, want a *VarError", err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("parseConfig's error shows the password: %v", err)
			}
		})
	}
}

// TestNATSPasswordRotated: the password of the payworker user changes on
// the server (its variable, then a configuration reload). The server
// disconnects the worker, refuses its old password on reconnect, and the
// worker logs why, naming NATS_USER and never the password, and exits; run
// again with the new password file, it works.
func TestNATSPasswordRotated(t *testing.T) {
	srv := natsconntest.Start(t, natsconntest.Options{})
	e := securedEnv(t, srv)
	old := srv.Password("payworker")
	w := startRun(t, e)
	w.waitReady(t)

	const rotated = "pwRotated0123456789"
	t.Setenv("PAYWORKER_NATS_PASSWORD", rotated)
	if err := srv.Server.Reload(); err != nil {
		t.Fatalf("reload nats-server: %v", err)
	}
	var err error
	poll(t, 30*time.Second, "the worker to exit", func() (bool, string) {
		var done bool
		err, done = w.exited()
		return done, ""
	})
	if err == nil {
		t.Errorf("run = nil after its password was refused, want an error (exit status 1)")
	}
	log := w.stderr.String()
	if want := `"msg":"NATS refused the worker: the server refused user \"payworker\" with the password given (NATS_PASSWORD_FILE)"`; !strings.Contains(log, want) ||
		!strings.Contains(log, `"variable":"NATS_USER"`) {
		t.Errorf("the worker's log does not say %s with variable NATS_USER:\n%s", want, log)
	}
	if strings.Contains(log, old) || strings.Contains(log, rotated) {
		t.Errorf("the worker logged a password:\n%s", log)
	}

	pw := filepath.Join(t.TempDir(), "rotated")
	if err := os.WriteFile(pw, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e2 := securedEnv(t, srv)
	e2["NATS_PASSWORD_FILE"] = pw
	startRun(t, e2).waitReady(t)
}

// TestNATSPermissionsWithRedis: with REDIS_URL the worker keeps its keys in
// Redis and registers merchants in the payworker_scopes bucket; a capture
// under the payworker user's permissions is refused nothing, and the worker
// logs how it connected.
func TestNATSPermissionsWithRedis(t *testing.T) {
	srv := natsconntest.Start(t, natsconntest.Options{})
	e := securedEnv(t, srv)
	e["REDIS_URL"] = testenv.StartRedis(t).URL
	w := startRun(t, e)
	w.waitReady(t)
	_, js := roleConn(t, srv, "orderservice", natsconn.Settings{})
	c := client.New(js)
	t.Cleanup(func() { c.Close() })
	if res := captureAsOrderService(t, c, e["SANDBOX_ADDR"], "redis-1"); !res.OK() {
		t.Errorf("capture = %s, want succeeded", res)
	}
	time.Sleep(probeInterval + time.Second)
	noViolations(t, srv)
	if want := `"msg":"NATS connected","worker_id":"secured","url":"` + srv.URL + `","login":"user payworker","tls":false,"inbox_prefix":"_INBOX_payworker"`; !strings.Contains(w.stderr.String(), want) {
		t.Errorf("the worker's log lacks %s:\n%s", want, w.stderr.String())
	}
}

// TestTLSEverywhere runs the worker with TLS on both of its connections, each
// with a client certificate and a user of least privilege: NATS as the
// payworker user of deploy/nats (verify: true), Redis as an ACL user on a
// TLS-only redis-server. The order service's capture succeeds, and nothing
// is refused.
func TestTLSEverywhere(t *testing.T) {
	natsCA := natsconntest.NewCA(t, "nats CA")
	srv := natsconntest.Start(t, natsconntest.Options{TLS: &natsconntest.ServerTLS{CA: natsCA, Cert: natsCA.Server(t, "nats"), Verify: true}})
	redisCA := testenv.NewCA(t, "redis CA")
	const redisPassword = "redisPw0123456789"
	r := testenv.StartRedisTLS(t, testenv.RedisTLSOptions{CA: redisCA, ClientCerts: true, User: "payworker", Password: redisPassword})
	redisPW := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(redisPW, []byte(redisPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wc := natsCA.Client(t, "payworker")
	e := securedEnv(t, srv)
	for k, v := range map[string]string{
		"NATS_TLS_CA": natsCA.File, "NATS_TLS_CERT": wc.Cert, "NATS_TLS_KEY": wc.Key,
		"REDIS_URL": r.URL, "REDIS_TLS_CA": redisCA.CertFile, "REDIS_TLS_CERT": r.ClientCert.CertFile, "REDIS_TLS_KEY": r.ClientCert.KeyFile,
		"REDIS_USERNAME": "payworker", "REDIS_PASSWORD_FILE": redisPW,
	} {
		e[k] = v
	}
	w, err := runUntilReady(t, e)
	if err != nil {
		t.Fatalf("run with TLS to NATS and Redis = %v", err)
	}
	sc := natsCA.Client(t, "orderservice")
	_, js := roleConn(t, srv, "orderservice", natsconn.Settings{TLSCA: natsCA.File, TLSCert: sc.Cert, TLSKey: sc.Key})
	c := client.New(js)
	t.Cleanup(func() { c.Close() })
	if res := captureAsOrderService(t, c, e["SANDBOX_ADDR"], "tls-everywhere-1"); !res.OK() {
		t.Errorf("capture = %s, want succeeded", res)
	}
	noViolations(t, srv)
	log := w.stderr.String()
	if !strings.Contains(log, `"login":"user payworker","tls":true`) || !strings.Contains(log, "idempotency keys in Redis") {
		t.Errorf("the worker's log does not say NATS over TLS as payworker and keys in Redis:\n%s", log)
	}
	if strings.Contains(log, redisPassword) || strings.Contains(log, srv.Password("payworker")) {
		t.Errorf("the worker logged a password:\n%s", log)
	}
}
