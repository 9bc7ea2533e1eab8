package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/testenv"
)

// tlsGateway is the sandbox gateway served over https with a certificate
// of a test CA, with an OAuth2 token endpoint for SIBS beside it.
type tlsGateway struct {
	sb *sandbox.Sandbox
	// URL is https://127.0.0.1:port: the SIBS base; URL+"/api/v1" is
	// PaymentOptions'; URL+"/oauth/token" the token endpoint.
	URL string
	// tokens counts the access tokens issued.
	tokens atomic.Int64
}

// startTLSGateway serves sb over https, its certificate issued by ca for
// 127.0.0.1. The token endpoint answers a client credentials request from
// clientID with clientSecret with the access token issue(n) for its nth
// token (from 1), and any other with 401.
func startTLSGateway(t testing.TB, ca *testenv.CA, sb *sandbox.Sandbox, clientID, clientSecret string, issue func(n int64) string) *tlsGateway {
	t.Helper()
	g := &tlsGateway{sb: sb}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok {
			_ = r.ParseForm()
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if id != clientID || secret != clientSecret || clientSecret == "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		token := issue(g.tokens.Add(1))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": 3600})
	})
	mux.Handle("/", sb.Handler())
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "gateway", "127.0.0.1").TLS}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes the worker refuses
	srv.StartTLS()
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// TestRunGatewayPrivateCA: a gateway whose certificate comes from a private
// CA is refused without PAYMENTOPTIONS_TLS_CA (or SIBS_TLS_CA): the call
// fails with a certificate error and nothing is applied; with it, the
// capture succeeds, the SIBS token endpoint included.
func TestRunGatewayPrivateCA(t *testing.T) {
	n := testenv.StartNATS(t)
	ca := testenv.NewCA(t, "gateway-ca")
	sb := sandbox.New(sandbox.Options{APIKey: "po-key", XAPIKey: "po-x-key", SIBSToken: "sibs-access", SIBSClientID: "sibs-client", Seed: 1})
	g := startTLSGateway(t, ca, sb, "sibs-client", "sibs-secret", func(int64) string { return "sibs-access" })
	base := env{
		"NATS_URL":                 n.URL,
		"PAYMENTOPTIONS_BASE_URL":  g.URL + "/api/v1",
		"PAYMENTOPTIONS_API_KEY":   "po-key",
		"PAYMENTOPTIONS_X_API_KEY": "po-x-key",
		"SIBS_BASE_URL":            g.URL,
		"SIBS_CLIENT_ID":           "sibs-client",
		"SIBS_TERMINAL_ID":         "24",
		"SIBS_TOKEN_URL":           g.URL + "/oauth/token",
		"SIBS_CLIENT_SECRET":       "sibs-secret",
		"GATEWAY_ROUTES":           "MSIBS=sibs",
		"RETRY_MAX_ATTEMPTS":       "2",
		"RETRY_MAX_ELAPSED":        "2s",
		"RETRY_INITIAL_INTERVAL":   "50ms",
		"RETRY_MAX_INTERVAL":       "100ms",
		"GATEWAY_OUTAGE_WAIT":      "0",
		"LOG_FORMAT":               "json",
		"LOG_LEVEL":                "debug",
	}
	js := connect(t, n.URL)
	capture := func(id, merchant, auth string) {
		publishCommand(t, js, "capture", map[string]any{"command_id": id, "type": "capture", "merchant_id": merchant,
			"transaction_id": auth, "amount": 700, "currency": "EUR", "idempotency_key": id})
	}
	terminal := func(what, key string) string {
		var got []string
		poll(t, 30*time.Second, what, func() (bool, string) {
			got = byKey(readEvents(t, js))[key]
			return len(got) > 0, fmt.Sprint(got)
		})
		return got[0]
	}

	t.Run("without the CA", func(t *testing.T) {
		e := with(base, "HTTP_ADDR", freeAddr(t), "WORKER_ID", "no-ca")
		w := startRun(t, e)
		w.waitReady(t)
		poAuth, sibsAuth := sb.Authorise("MPO", 700, "EUR"), sb.Authorise("MSIBS", 700, "EUR")
		capture("noca-po", "MPO", poAuth)
		capture("noca-sibs", "MSIBS", sibsAuth)
		for _, key := range []string{"noca-po", "noca-sibs"} {
			if got := terminal("the outcome of "+key, key); got == events.CaptureSucceeded.Type() {
				t.Errorf("%s = %s through a gateway whose CA is not trusted", key, got)
			}
		}
		for _, auth := range []string{poAuth, sibsAuth} {
			if ops := sb.Applied(auth); len(ops) != 0 {
				t.Errorf("ledger of %s = %+v, want nothing applied", auth, ops)
			}
		}
		if g.tokens.Load() != 0 {
			t.Errorf("%d SIBS tokens issued over TLS the worker should not trust", g.tokens.Load())
		}
		log := w.stderr.String()
		if !strings.Contains(log, "certificate signed by unknown authority") {
			t.Errorf("log does not name the certificate error:\n%s", log)
		}
		if _, err := w.stop(); err != nil {
			t.Errorf("run after SIGTERM = %v", err)
		}
	})

	t.Run("with the CA", func(t *testing.T) {
		e := with(base, "HTTP_ADDR", freeAddr(t), "WORKER_ID", "ca",
			"PAYMENTOPTIONS_TLS_CA", ca.CertFile, "SIBS_TLS_CA", ca.CertFile)
		w := startRun(t, e)
		w.waitReady(t)
		poAuth, sibsAuth := sb.Authorise("MPO", 700, "EUR"), sb.Authorise("MSIBS", 700, "EUR")
		capture("ca-po", "MPO", poAuth)
		capture("ca-sibs", "MSIBS", sibsAuth)
		for _, key := range []string{"ca-po", "ca-sibs"} {
			if got := terminal("the outcome of "+key, key); got != events.CaptureSucceeded.Type() {
				t.Errorf("%s = %s, want %s", key, got, events.CaptureSucceeded.Type())
			}
		}
		for _, auth := range []string{poAuth, sibsAuth} {
			if ops := sb.Applied(auth); len(ops) != 1 || ops[0].Operation != "capture" {
				t.Errorf("ledger of %s = %+v, want one capture", auth, ops)
			}
		}
		if g.tokens.Load() == 0 {
			t.Errorf("no SIBS token issued: the token endpoint was not called over the private CA")
		}
		if _, err := w.stop(); err != nil {
			t.Errorf("run after SIGTERM = %v", err)
		}
	})
}

// TestGatewayCAConfig: PAYMENTOPTIONS_TLS_CA and SIBS_TLS_CA need their
// gateway on https and a readable PEM file.
func TestGatewayCAConfig(t *testing.T) {
	ca := testenv.NewCA(t, "config-ca")
	garbage := writeFile(t, t.TempDir(), "garbage.pem", "nope")
	for _, tc := range []struct {
		name    string
		e       env
		wantVar string
		want    string
	}{
		{"PaymentOptions CA with the sandbox", env{"PAYMENTOPTIONS_TLS_CA": ca.CertFile}, "PAYMENTOPTIONS_TLS_CA", "PAYMENTOPTIONS_BASE_URL is not"},
		{"PaymentOptions CA with http://", with(poEnv(), "PAYMENTOPTIONS_BASE_URL", "http://127.0.0.1:8099/api/v1", "PAYMENTOPTIONS_TLS_CA", ca.CertFile),
			"PAYMENTOPTIONS_TLS_CA", "http://"},
		{"PaymentOptions CA not PEM", with(poEnv(), "PAYMENTOPTIONS_TLS_CA", garbage), "PAYMENTOPTIONS_TLS_CA", "no PEM certificate"},
		{"SIBS CA without SIBS", env{"SIBS_TLS_CA": ca.CertFile}, "SIBS_TLS_CA", "SIBS_BASE_URL is not"},
		{"SIBS CA missing", with(sibsEnv(), "SIBS_TLS_CA", "/nonexistent/ca.pem"), "SIBS_TLS_CA", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(nil, tc.e.get, os.ReadFile)
			if err == nil || !strings.Contains(err.Error(), tc.wantVar+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseConfig(%v) = %v, want %s: …%s…", tc.e, err, tc.wantVar, tc.want)
			}
		})
	}
	cfg, err := parseConfig(nil, with(with(poEnv(), "PAYMENTOPTIONS_TLS_CA", ca.CertFile, "SIBS_TLS_CA", ca.CertFile), kv(sibsEnv())...).get, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PaymentOptionsRoots == nil || !cfg.PaymentOptionsRoots.Equal(ca.Pool) || cfg.SIBSRoots == nil || !cfg.SIBSRoots.Equal(ca.Pool) {
		t.Errorf("roots not read from the CA files")
	}
}

// kv flattens e for with.
func kv(e env) []string {
	var out []string
	for k, v := range e {
		out = append(out, k, v)
	}
	return out
}
