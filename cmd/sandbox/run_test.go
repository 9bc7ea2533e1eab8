package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/testenv"
)

// env is a fake environment.
type env map[string]string

func (e env) get(name string) string { return e[name] }

func TestRunServesPaymentAndCapture(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdoutR, stdoutW := io.Pipe()
	var stderr testenv.LogBuffer
	e := env{
		"SANDBOX_ADDR":           "127.0.0.1:0",
		"SANDBOX_API_KEY":        "basic-secret",
		"SANDBOX_X_API_KEY":      "x-secret",
		"SANDBOX_SIBS_TOKEN":     "bearer-secret",
		"SANDBOX_SIBS_CLIENT_ID": "client-1",
		"LOG_FORMAT":             "json",
		"LOG_LEVEL":              "debug",
	}
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"sandbox"}, e.get, stdoutW, &stderr)
		stdoutW.Close()
	}()

	out := bufio.NewReader(stdoutR)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the base URL from stdout: %v (stderr %s)", err, stderr.String())
	}
	sibsLine, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the SIBS base URL from stdout: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	sibsBase, ok := strings.CutPrefix(strings.TrimSpace(sibsLine), "SIBS_BASE_URL=")
	if !ok || !strings.HasPrefix(sibsBase, "http://127.0.0.1:") {
		t.Fatalf("second stdout line = %q, want SIBS_BASE_URL=http://127.0.0.1:PORT", sibsLine)
	}
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "PAYMENTOPTIONS_BASE_URL=")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") || !strings.HasSuffix(base, "/api/v1") {
		t.Fatalf("stdout line = %q, want PAYMENTOPTIONS_BASE_URL=http://127.0.0.1:PORT/api/v1", line)
	}

	post := func(op string, body map[string]any) (int, map[string]any) {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/server-to-server-interface/"+op, bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Basic basic-secret")
		req.Header.Set("x-api-key", "x-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", op, err)
		}
		defer resp.Body.Close()
		var ans map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
			t.Fatalf("POST %s: answer is not JSON: %v", op, err)
		}
		return resp.StatusCode, ans
	}
	code, ans := post("payment", map[string]any{
		"amount": "1000", "currency": "JPY", "merchant_id": "M1",
		"card": map[string]string{"number": "5200000000001005", "name": "John Doe", "expiry_month": "12", "expiry_year": "30"},
	})
	if code != 201 || ans["transaction_type"] != "PRE_AUTH" {
		t.Fatalf("payment = %d %v, want 201 PRE_AUTH", code, ans)
	}
	id, _ := ans["transaction_details"].(map[string]any)["id"].(string)
	code, ans = post("capture", map[string]any{"transactionId": id, "amount": 1000, "merchant_id": "M1"})
	gr, _ := ans["gateway_response"].(map[string]any)
	if code != 201 || gr["code"] != "INFO0001" {
		t.Errorf("capture = %d %v, want 201 INFO0001", code, ans)
	}

	// The SIBS endpoints require the configured bearer token and client id.
	for _, tc := range []struct {
		name          string
		token, client string
		want          int
	}{
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", "client-1", http.StatusUnauthorized},
		{"both", "Bearer bearer-secret", "client-1", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, sibsBase+"/api/v1/payments/"+id+"/status", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", tc.token)
		}
		if tc.client != "" {
			req.Header.Set("x-ibm-client-id", tc.client)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("SIBS status (%s): %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("SIBS status (%s) = %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	logs := stderr.String()
	for _, want := range []string{`"msg":"sandbox gateway listening"`, `"endpoint":"capture"`, `"msg":"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	for _, secret := range []string{"basic-secret", "x-secret", "bearer-secret", "5200000000001005"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs show %q:\n%s", secret, logs)
		}
	}
}

func TestRunRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  env
		want string
	}{
		{"latency", nil, env{"SANDBOX_LATENCY": "soon"}, "SANDBOX_LATENCY"},
		{"negative latency", nil, env{"SANDBOX_LATENCY": "-1s"}, "SANDBOX_LATENCY"},
		{"seed", nil, env{"SANDBOX_SEED": "x"}, "SANDBOX_SEED"},
		{"log format", nil, env{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"log level", nil, env{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"address", nil, env{"SANDBOX_ADDR": "127.0.0.1:99999"}, "SANDBOX_ADDR"},
		{"flag overrides env", []string{"-addr", "127.0.0.1:99999"}, env{"SANDBOX_ADDR": "127.0.0.1:0"}, "SANDBOX_ADDR 127.0.0.1:99999"},
		{"unknown flag", []string{"-port", "1"}, env{}, "-port"},
		{"argument", []string{"extra"}, env{}, "extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"sandbox"}, tt.args...), tt.env.get, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%v, %v) error = %v, want one naming %s", tt.args, tt.env, err, tt.want)
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"sandbox", "-h"}, env{}.get, &stdout, &stderr); err != nil {
		t.Errorf("run(-h) = %v, want nil", err)
	}
	if !strings.Contains(stderr.String(), "-addr") {
		t.Errorf("run(-h) printed %q, want the flags", stderr.String())
	}
}
