package main

import (
	"strings"
	"testing"
)

// TestParseConfigGatewayAllowHTTP: http:// to a host that is not loopback
// is refused as before unless GATEWAY_ALLOW_HTTP=true, which admits it for
// every gateway URL and nothing else; PlainHTTPGateways lists what it let
// through.
func TestParseConfigGatewayAllowHTTP(t *testing.T) {
	sibsOAuth := func(e env) env {
		return with(e, "SIBS_BASE_URL", "http://sandbox:8099", "SIBS_CLIENT_ID", "client-1", "SIBS_TERMINAL_ID", "1",
			"SIBS_TOKEN_URL", "http://auth.demo/token", "SIBS_CLIENT_SECRET", "cs")
	}
	poHTTP := with(poEnv(), "PAYMENTOPTIONS_BASE_URL", "http://sandbox:8099/api/v1")
	errs := []struct {
		name string
		env  env
		want string
	}{
		{"unset", poHTTP, `PAYMENTOPTIONS_BASE_URL: http:// is allowed for loopback hosts only, got host "sandbox"`},
		{"false", with(poHTTP, "GATEWAY_ALLOW_HTTP", "false"), `PAYMENTOPTIONS_BASE_URL: http:// is allowed for loopback hosts only, got host "sandbox"`},
		{"sibs unset", sibsOAuth(env{}), "SIBS_BASE_URL: http:// is allowed for loopback hosts only, got host \"sandbox\"\n" +
			`SIBS_TOKEN_URL: http:// is allowed for loopback hosts only, got host "auth.demo"`},
		{"not a bool", with(poEnv(), "GATEWAY_ALLOW_HTTP", "yes"), `GATEWAY_ALLOW_HTTP: "yes" is not one of true, false`},
		{"still a scheme rule", with(poEnv(), "GATEWAY_ALLOW_HTTP", "true", "PAYMENTOPTIONS_BASE_URL", "ftp://sandbox"),
			`PAYMENTOPTIONS_BASE_URL: scheme "ftp" is not one of https, http`},
		{"still needs keys", env{"GATEWAY_ALLOW_HTTP": "true", "PAYMENTOPTIONS_BASE_URL": "http://sandbox:8099/api/v1", "PAYMENTOPTIONS_X_API_KEY": "x"},
			"PAYMENTOPTIONS_API_KEY: required when PAYMENTOPTIONS_BASE_URL is set (or set PAYMENTOPTIONS_API_KEY_FILE)"},
	}
	for _, tc := range errs {
		if _, err := parse(nil, tc.env); err == nil || err.Error() != tc.want {
			t.Errorf("%s: parseConfig(%v) = %v, want %q", tc.name, tc.env, err, tc.want)
		}
	}

	for _, tc := range []struct {
		name string
		env  env
		want []string // gateway var url
	}{
		{"default", env{}, nil},
		{"https", with(poEnv(), "GATEWAY_ALLOW_HTTP", "true"), nil},
		{"loopback http", with(poEnv(), "GATEWAY_ALLOW_HTTP", "true", "PAYMENTOPTIONS_BASE_URL", "http://127.0.0.1:8099/api/v1"), nil},
		{"paymentoptions", with(poHTTP, "GATEWAY_ALLOW_HTTP", "true"),
			[]string{"paymentoptions PAYMENTOPTIONS_BASE_URL http://sandbox:8099/api/v1"}},
		{"all three", sibsOAuth(with(poHTTP, "GATEWAY_ALLOW_HTTP", "TRUE")), []string{
			"paymentoptions PAYMENTOPTIONS_BASE_URL http://sandbox:8099/api/v1",
			"sibs SIBS_BASE_URL http://sandbox:8099",
			"sibs SIBS_TOKEN_URL http://auth.demo/token",
		}},
	} {
		c, err := parse(nil, tc.env)
		if err != nil {
			t.Errorf("%s: parseConfig(%v) = %v, want nil", tc.name, tc.env, err)
			continue
		}
		var got []string
		for _, g := range c.PlainHTTPGateways() {
			got = append(got, g.Gateway+" "+g.Var+" "+g.URL.String())
		}
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s: PlainHTTPGateways() = %q, want %q", tc.name, got, tc.want)
		}
		if wantAllow := tc.env["GATEWAY_ALLOW_HTTP"] != ""; c.GatewayAllowHTTP != wantAllow {
			t.Errorf("%s: GatewayAllowHTTP = %v, want %v", tc.name, c.GatewayAllowHTTP, wantAllow)
		}
	}
}

// TestRunGatewayAllowHTTPWarns starts the worker with http:// gateway URLs
// whose hosts are not loopback and GATEWAY_ALLOW_HTTP=true: the adapters
// take them (the worker gets ready; no command is sent, so nothing leaves
// the machine) and the log has one WARN per URL naming the gateway, the
// variable and the URL. Without the setting the same environment is a
// usage error that names the variable.
func TestRunGatewayAllowHTTPWarns(t *testing.T) {
	e := env{
		"EMBEDDED_NATS_ADDR":       freeAddr(t),
		"HTTP_ADDR":                freeAddr(t),
		"DATA_DIR":                 t.TempDir(),
		"LOG_FORMAT":               "json",
		"WORKER_ID":                "allowhttp",
		"PAYMENTOPTIONS_BASE_URL":  "http://sandbox.invalid:8099/api/v1",
		"PAYMENTOPTIONS_API_KEY":   "demo-key",
		"PAYMENTOPTIONS_X_API_KEY": "demo-xkey",
		"SIBS_BASE_URL":            "http://sandbox.invalid:8099",
		"SIBS_CLIENT_ID":           "client-1",
		"SIBS_TERMINAL_ID":         "1",
		"SIBS_TOKEN_URL":           "http://auth.invalid/token",
		"SIBS_CLIENT_SECRET":       "demo-secret",
	}

	var stderr strings.Builder
	err := run(t.Context(), []string{"worker"}, e.get, &strings.Builder{}, &stderr)
	if ec, ok := err.(exitCoder); !ok || ec.ExitCode() != 2 || !strings.Contains(err.Error(),
		`PAYMENTOPTIONS_BASE_URL: http:// is allowed for loopback hosts only, got host "sandbox.invalid"`) {
		t.Fatalf("run without GATEWAY_ALLOW_HTTP = %v, want a usage error (exit 2) naming PAYMENTOPTIONS_BASE_URL", err)
	}

	e["GATEWAY_ALLOW_HTTP"] = "true"
	w := startRun(t, e)
	w.waitReady(t)
	if _, err := w.stop(); err != nil {
		t.Errorf("run after SIGTERM = %v, want nil", err)
	}
	want := map[string]string{
		"PAYMENTOPTIONS_BASE_URL": "paymentoptions http://sandbox.invalid:8099/api/v1",
		"SIBS_BASE_URL":           "sibs http://sandbox.invalid:8099",
		"SIBS_TOKEN_URL":          "sibs http://auth.invalid/token",
	}
	got := map[string]string{}
	for _, l := range jsonLines(w.stderr.String()) {
		msg, _ := l["msg"].(string)
		if l["level"] != "WARN" || !strings.HasPrefix(msg, "GATEWAY_ALLOW_HTTP:") {
			continue
		}
		v, _ := l["variable"].(string)
		if _, dup := got[v]; dup {
			t.Errorf("two warnings for %s", v)
		}
		got[v] = l["gateway"].(string) + " " + l["url"].(string)
	}
	for v, w := range want {
		if got[v] != w {
			t.Errorf("WARN for %s: gateway and url %q, want %q", v, got[v], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("GATEWAY_ALLOW_HTTP warnings for %v, want one for each of %v", got, want)
	}
}
