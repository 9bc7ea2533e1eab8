package paymentoptions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/sandbox"
)

const (
	merchant   = "M000001"
	apiKey     = "sekret-basic-key"
	xAPIKey    = "sekret-x-api-key"
	fullPAN    = "5200000000001005"
	wantMasked = "520000******1005"
	unknownTxn = "00000000-0000-4000-8000-000000000000"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", s, err)
	}
	return u
}

// startSandbox serves a sandbox that requires the test keys, on a loopback
// port, and returns it with a Client configured for it.
func startSandbox(t *testing.T, opts sandbox.Options) (*sandbox.Sandbox, *Client) {
	t.Helper()
	opts.APIKey, opts.XAPIKey = apiKey, xAPIKey
	sb := sandbox.New(opts)
	base, stop, err := sb.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("sandbox Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stop(ctx); err != nil {
			t.Errorf("sandbox stop: %v", err)
		}
	})
	return sb, newClient(t, base, 5*time.Second)
}

func newClient(t *testing.T, base string, timeout time.Duration) *Client {
	t.Helper()
	c, err := New(Config{BaseURL: mustURL(t, base), APIKey: apiKey, XAPIKey: xAPIKey, Timeout: timeout})
	if err != nil {
		t.Fatalf("New(%s): %v", base, err)
	}
	return c
}

func TestNew(t *testing.T) {
	tests := []struct {
		base    string
		keys    bool
		wantErr string
	}{
		{"https://api-dev.paymentoptions.com/api/v1", true, ""},
		{"https://api-dev.paymentoptions.com/api/v1", false, "APIKey and XAPIKey are required"},
		{"http://127.0.0.1:8099/api/v1", false, ""},
		{"http://127.9.8.7:8099/api/v1", true, ""},
		{"http://localhost:8099", true, ""},
		{"http://LOCALHOST:8099", true, ""},
		{"http://[::1]:8099/api/v1", true, ""},
		{"http://api-dev.paymentoptions.com/api/v1", true, "http:// is accepted only for a loopback host"},
		{"http://10.0.0.1/api/v1", true, "http:// is accepted only for a loopback host"},
		{"http://localhost.example.com/api/v1", true, "http:// is accepted only for a loopback host"},
		{"http://[::2]/api/v1", true, "http:// is accepted only for a loopback host"},
		{"ftp://127.0.0.1/api/v1", true, "scheme must be https"},
		{"api-dev.paymentoptions.com/api/v1", true, "scheme must be https"},
		{"https:///api/v1", true, "missing host"},
		{"https://user:pw@api-dev.paymentoptions.com/api/v1", true, "must not carry user info"},
		{"https://api-dev.paymentoptions.com/api/v1?x=1", true, "query or fragment"},
	}
	for _, tt := range tests {
		cfg := Config{BaseURL: mustURL(t, tt.base)}
		if tt.keys {
			cfg.APIKey, cfg.XAPIKey = apiKey, xAPIKey
		}
		_, err := New(cfg)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("New(%s) error = %v, want nil", tt.base, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("New(%s) error = %v, want one containing %q", tt.base, err, tt.wantErr)
		case err != nil && (strings.Contains(err.Error(), apiKey) || strings.Contains(err.Error(), "pw@")):
			t.Errorf("New(%s) error %q shows a secret", tt.base, err)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Errorf("New(no BaseURL) error = nil, want one")
	}
	if _, err := New(Config{BaseURL: mustURL(t, "http://127.0.0.1"), Timeout: -time.Second}); err == nil {
		t.Errorf("New(negative Timeout) error = nil, want one")
	}
}

// TestNewAllowHTTP: AllowHTTP lifts the loopback rule of http base URLs and
// nothing else.
func TestNewAllowHTTP(t *testing.T) {
	tests := []struct {
		base    string
		wantErr string
	}{
		{"http://sandbox:8099/api/v1", ""},
		{"http://10.0.0.1/api/v1", ""},
		{"http://127.0.0.1:8099/api/v1", ""},
		{"https://api-dev.paymentoptions.com/api/v1", ""},
		{"ftp://sandbox/api/v1", "scheme must be https"},
		{"http://user:pw@sandbox:8099/api/v1", "must not carry user info"},
		{"http://sandbox:8099/api/v1?x=1", "query or fragment"},
	}
	for _, tt := range tests {
		_, err := New(Config{BaseURL: mustURL(t, tt.base), AllowHTTP: true, APIKey: apiKey, XAPIKey: xAPIKey})
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("New(%s, AllowHTTP) error = %v, want nil", tt.base, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("New(%s, AllowHTTP) error = %v, want one containing %q", tt.base, err, tt.wantErr)
		}
	}
}

// recorded is one request a test server saw.
type recorded struct {
	method, path, rawPath string
	header                http.Header
	body                  map[string]any
}

// recorder serves answer to every request and records it.
func recorder(t *testing.T, status int, answer string) (*httptest.Server, func() []recorded) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []recorded
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		rec := recorded{method: r.Method, path: r.URL.Path, rawPath: r.URL.EscapedPath(), header: r.Header.Clone()}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &rec.body); err != nil {
				t.Errorf("request body %q is not JSON: %v", raw, err)
			}
		}
		mu.Lock()
		got = append(got, rec)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), got...)
	}
}

func TestRequests(t *testing.T) {
	srv, requests := recorder(t, 201, body(true, 201, "INFO0001", "0"))
	capture := gateway.Request{Operation: gateway.Capture, MerchantID: merchant, TransactionID: "e0b0731e-7170-4b64-8a21-7d835eebd641", Amount: 1000, Currency: "JPY", Notes: "Capturing authorised amount"}
	tests := []struct {
		name     string
		base     string
		call     func(*Client)
		method   string
		path     string
		body     map[string]any
		withBody bool
	}{
		{"capture, documented base", srv.URL + "/api/v1", func(c *Client) { c.Capture(context.Background(), capture) },
			http.MethodPost, "/api/v1/api/v1/server-to-server-interface/capture",
			map[string]any{"transactionId": capture.TransactionID, "amount": 1000.0, "merchant_id": merchant, "notes": "Capturing authorised amount"}, true},
		{"capture, trailing slash", srv.URL + "/api/v1/", func(c *Client) { c.Execute(context.Background(), capture) },
			http.MethodPost, "/api/v1/api/v1/server-to-server-interface/capture",
			map[string]any{"transactionId": capture.TransactionID, "amount": 1000.0, "merchant_id": merchant, "notes": "Capturing authorised amount"}, true},
		{"capture without notes, bare host", srv.URL, func(c *Client) {
			r := capture
			r.Notes = ""
			c.Capture(context.Background(), r)
		}, http.MethodPost, "/api/v1/server-to-server-interface/capture",
			map[string]any{"transactionId": capture.TransactionID, "amount": 1000.0, "merchant_id": merchant}, true},
		{"void with an amount is full", srv.URL + "/api/v1", func(c *Client) {
			r := capture
			r.Operation = gateway.Void
			r.Amount = 300
			c.Execute(context.Background(), r)
		}, http.MethodPost, "/api/v1/api/v1/server-to-server-interface/void",
			map[string]any{"transactionId": capture.TransactionID, "merchant_id": merchant}, true},
		{"status escapes the id", srv.URL + "/api/v1", func(c *Client) {
			_, _ = c.Status(context.Background(), gateway.Request{TransactionID: "a/b c?"})
		}, http.MethodGet, "/api/v1/api/v1/server-to-server-interface/transaction/status/a/b c?", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(requests())
			tt.call(newClient(t, tt.base, time.Second))
			all := requests()
			if len(all) != before+1 {
				t.Fatalf("server saw %d requests, want 1", len(all)-before)
			}
			r := all[before]
			if r.method != tt.method || r.path != tt.path {
				t.Errorf("request = %s %s, want %s %s", r.method, r.path, tt.method, tt.path)
			}
			wantHeaders := map[string]string{
				"Authorization": "Basic " + apiKey,
				"X-Api-Key":     xAPIKey,
				"Accept":        "application/json",
			}
			if tt.withBody {
				wantHeaders["Content-Type"] = "application/json"
			}
			for k, v := range wantHeaders {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if fmt.Sprint(r.body) != fmt.Sprint(tt.body) {
				t.Errorf("body = %v, want %v", r.body, tt.body)
			}
		})
	}
	if got := requests()[len(requests())-1].rawPath; !strings.HasSuffix(got, "/status/a%2Fb%20c%3F") {
		t.Errorf("status raw path = %q, want the id path-escaped", got)
	}
}

func TestInvalidRequestsAreNotSent(t *testing.T) {
	srv, requests := recorder(t, 201, body(true, 201, "INFO0001", "0"))
	c := newClient(t, srv.URL, time.Second)
	ok := gateway.Request{Operation: gateway.Capture, MerchantID: merchant, TransactionID: "t-1", Amount: 5}
	tests := []struct {
		name string
		edit func(*gateway.Request)
	}{
		{"unsupported operation", func(r *gateway.Request) { r.Operation = "refund" }},
		{"no transaction", func(r *gateway.Request) { r.TransactionID = "" }},
		{"transaction too long", func(r *gateway.Request) { r.TransactionID = strings.Repeat("x", 37) }},
		{"no merchant", func(r *gateway.Request) { r.MerchantID = "" }},
		{"merchant too long", func(r *gateway.Request) { r.MerchantID = "12345678901" }},
		{"zero capture", func(r *gateway.Request) { r.Amount = 0 }},
		{"notes too long", func(r *gateway.Request) { r.Notes = strings.Repeat("あ", 129) }},
	}
	for _, tt := range tests {
		r := ok
		tt.edit(&r)
		if got := c.Execute(context.Background(), r); got.Outcome != gateway.Declined || got.Message == "" {
			t.Errorf("%s: Execute = %s %q, want declined with a message", tt.name, got.Outcome, got.Message)
		}
	}
	if n := len(requests()); n != 0 {
		t.Errorf("server saw %d requests, want 0", n)
	}
}

func TestAgainstSandbox(t *testing.T) {
	type want struct {
		outcome gateway.Outcome
		status  int
		code    string
		rc      string
		amount  int64
	}
	tests := []struct {
		name   string
		setup  []gateway.Request // applied first; TransactionID filled in
		req    gateway.Request
		noAuth bool // use an unknown transaction id
		want   want
	}{
		{name: "full capture", req: gateway.Request{Operation: gateway.Capture, Amount: 1000},
			want: want{gateway.Succeeded, 201, "INFO0001", "0", 1000}},
		{name: "partial capture", req: gateway.Request{Operation: gateway.Capture, Amount: 400},
			want: want{gateway.Succeeded, 201, "INFO0001", "0", 400}},
		{name: "void", req: gateway.Request{Operation: gateway.Void},
			want: want{gateway.Succeeded, 201, "INFO0003", "0", 1000}},
		{name: "partial void is full", req: gateway.Request{Operation: gateway.Void, Amount: 100},
			want: want{gateway.Succeeded, 201, "INFO0003", "0", 1000}},
		{name: "over the authorised amount", req: gateway.Request{Operation: gateway.Capture, Amount: 1001},
			want: want{gateway.Declined, 400, "ERR0400", "836", 1001}},
		{name: "double capture", setup: []gateway.Request{{Operation: gateway.Capture, Amount: 1000}},
			req: gateway.Request{Operation: gateway.Capture, Amount: 1000}, want: want{gateway.Declined, 412, "ERR0412", "", 1000}},
		{name: "void after capture", setup: []gateway.Request{{Operation: gateway.Capture, Amount: 1000}},
			req: gateway.Request{Operation: gateway.Void}, want: want{gateway.Declined, 412, "ERR0412", "", 0}},
		{name: "unknown transaction", noAuth: true, req: gateway.Request{Operation: gateway.Capture, Amount: 1000},
			want: want{gateway.Declined, 404, "ERR0404", "", 1000}},
	}
	sb, c := startSandbox(t, sandbox.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := sb.Authorise(merchant, 1000, "JPY")
			for _, s := range tt.setup {
				s.MerchantID, s.TransactionID = merchant, auth
				if got := c.Execute(context.Background(), s); got.Outcome != gateway.Succeeded {
					t.Fatalf("setup %s = %+v", s.Operation, got)
				}
			}
			req := tt.req
			req.MerchantID, req.TransactionID = merchant, auth
			if tt.noAuth {
				req.TransactionID = unknownTxn
			}
			got := c.Execute(context.Background(), req)
			g := want{got.Outcome, got.HTTPStatus, got.Code, got.ResponseCode, got.Amount}
			if g != tt.want {
				t.Errorf("Execute(%+v) = %+v, want %+v (result %+v)", req, g, tt.want, got)
			}
			if got.Outcome == gateway.Succeeded {
				if got.MaskedPAN != wantMasked || got.Scheme != "MASTERCARD" || got.AuthCode == "" || got.Currency != "JPY" ||
					got.TransactionID == "" || got.TransactionID == auth || got.Ref == "" || got.Err != nil {
					t.Errorf("Execute result = %+v, want masked card %s, scheme, auth code, JPY and the operation's own id", got, wantMasked)
				}
			}
			if s := fmt.Sprintf("%+v %#v %v", got, got, got.Err); strings.Contains(s, fullPAN) || strings.Contains(s, "John Doe") {
				t.Errorf("result holds card data: %s", s)
			}
		})
	}
	if n := len(sb.Ledger()); n != 6 {
		t.Errorf("sandbox applied %d operations, want 6", n)
	}
}

func TestBadCredentialsAreDeclined(t *testing.T) {
	sb, _ := startSandbox(t, sandbox.Options{})
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: mustURL(t, srv.URL+"/api/v1"), APIKey: "wrong", XAPIKey: xAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	got := c.Capture(context.Background(), gateway.Request{MerchantID: merchant, TransactionID: sb.Authorise(merchant, 10, "JPY"), Amount: 10})
	if got.Outcome != gateway.Declined || got.HTTPStatus != 401 || got.Code != "ERR0401" {
		t.Errorf("Capture with a wrong key = %s %d %s, want declined 401 ERR0401", got.Outcome, got.HTTPStatus, got.Code)
	}
}

func TestSandboxFaults(t *testing.T) {
	tests := []struct {
		name       string
		faults     sandbox.Faults
		want       gateway.Outcome
		wantStatus int
		wantWait   time.Duration
		// state is what Status then says of the authorisation; applied is
		// whether the sandbox applied the capture.
		state   gateway.State
		applied bool
	}{
		{"500", sandbox.Faults{ErrorRate: 1, ErrorStatus: 500}, gateway.Unknown, 500, 0, gateway.StateAuthorised, false},
		{"502", sandbox.Faults{ErrorRate: 1, ErrorStatus: 502}, gateway.Unknown, 502, 0, gateway.StateAuthorised, false},
		{"503", sandbox.Faults{ErrorRate: 1, ErrorStatus: 503}, gateway.Retryable, 503, 0, gateway.StateAuthorised, false},
		{"504", sandbox.Faults{ErrorRate: 1, ErrorStatus: 504}, gateway.Unknown, 504, 0, gateway.StateAuthorised, false},
		{"429", sandbox.Faults{RateLimitRate: 1, RetryAfter: 2 * time.Second}, gateway.Retryable, 429, 2 * time.Second, gateway.StateAuthorised, false},
		{"apply then drop", sandbox.Faults{ApplyThenDropRate: 1}, gateway.Unknown, 0, 0, gateway.StateCaptured, true},
		{"down", sandbox.Faults{Down: true}, gateway.Unknown, 0, 0, gateway.StateAuthorised, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, c := startSandbox(t, sandbox.Options{})
			auth := sb.Authorise(merchant, 1000, "JPY")
			sb.SetFaults(tt.faults)
			req := gateway.Request{Operation: gateway.Capture, MerchantID: merchant, TransactionID: auth, Amount: 1000}
			got := c.Execute(context.Background(), req)
			if got.Outcome != tt.want || got.HTTPStatus != tt.wantStatus || got.RetryAfter != tt.wantWait {
				t.Errorf("Execute with %+v = %s HTTP %d wait %s (err %v), want %s HTTP %d wait %s",
					tt.faults, got.Outcome, got.HTTPStatus, got.RetryAfter, got.Err, tt.want, tt.wantStatus, tt.wantWait)
			}
			if tt.wantStatus == 0 && got.Err == nil {
				t.Errorf("no answer but Err is nil")
			}
			st, err := c.Status(context.Background(), req)
			if err != nil || st.State != tt.state {
				t.Errorf("Status after the fault = %s, %v; want %s", st.State, err, tt.state)
			}
			if applied := len(sb.Applied(auth)) == 1; applied != tt.applied {
				t.Errorf("sandbox applied = %v, want %v", applied, tt.applied)
			}
		})
	}
}

func TestUnclearAnswerIsUnknown(t *testing.T) {
	sb, c := startSandbox(t, sandbox.Options{Seed: 5})
	sb.SetFaults(sandbox.Faults{UnclearRate: 1})
	for range 10 {
		auth := sb.Authorise(merchant, 1000, "JPY")
		req := gateway.Request{Operation: gateway.Void, MerchantID: merchant, TransactionID: auth}
		got := c.Void(context.Background(), req)
		if got.Outcome != gateway.Unknown || got.ResponseCode != "680" {
			t.Fatalf("Void with an unclear answer = %s rc %q, want unknown rc 680", got.Outcome, got.ResponseCode)
		}
		st, err := c.Status(context.Background(), req)
		want := gateway.StateAuthorised
		if len(sb.Applied(auth)) == 1 {
			want = gateway.StateVoided
		}
		if err != nil || st.State != want {
			t.Errorf("Status = %s, %v; want %s", st.State, err, want)
		}
	}
}

func TestStatusAgainstSandbox(t *testing.T) {
	sb, c := startSandbox(t, sandbox.Options{})
	open := sb.Authorise(merchant, 1000, "JPY")
	partial := sb.Authorise(merchant, 1000, "JPY")
	voided := sb.Authorise(merchant, 1000, "JPY")
	ctx := context.Background()
	if r := c.Capture(ctx, gateway.Request{MerchantID: merchant, TransactionID: partial, Amount: 600}); r.Outcome != gateway.Succeeded {
		t.Fatalf("capture: %+v", r)
	}
	if r := c.Void(ctx, gateway.Request{MerchantID: merchant, TransactionID: voided}); r.Outcome != gateway.Succeeded {
		t.Fatalf("void: %+v", r)
	}
	tests := []struct {
		name    string
		id      string
		state   gateway.State
		auth    int64
		capt    int64
		voided  int64
		outcome gateway.Outcome
	}{
		{"authorised", open, gateway.StateAuthorised, 1000, 0, 0, 0},
		{"partially captured", partial, gateway.StateCaptured, 0, 600, 0, gateway.Succeeded},
		{"voided", voided, gateway.StateVoided, 1000, 0, 1000, gateway.Succeeded},
		{"unknown", unknownTxn, gateway.StateNotFound, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := c.Status(ctx, gateway.Request{MerchantID: merchant, TransactionID: tt.id})
			if err != nil {
				t.Fatalf("Status(%s) error = %v", tt.id, err)
			}
			if st.State != tt.state || st.AuthorisedAmount != tt.auth || st.CapturedAmount != tt.capt || st.VoidedAmount != tt.voided || st.Result.Outcome != tt.outcome {
				t.Errorf("Status(%s) = %s auth %d captured %d voided %d outcome %s, want %s %d %d %d %s",
					tt.id, st.State, st.AuthorisedAmount, st.CapturedAmount, st.VoidedAmount, st.Result.Outcome,
					tt.state, tt.auth, tt.capt, tt.voided, tt.outcome)
			}
			if tt.state != gateway.StateNotFound && (st.Result.MaskedPAN != wantMasked || st.Currency != "JPY" || st.AuthorisedAt.IsZero() || st.Result.AuthCode == "") {
				t.Errorf("Status(%s) = %+v, want masked card, JPY, the authorisation time and the auth code", tt.id, st)
			}
			if s := fmt.Sprintf("%+v", st); strings.Contains(s, fullPAN) {
				t.Errorf("Status holds the card number: %s", s)
			}
		})
	}
}

func TestStatusErrors(t *testing.T) {
	sb, c := startSandbox(t, sandbox.Options{})
	auth := sb.Authorise(merchant, 1000, "JPY")
	sb.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 500, FaultStatus: true})
	if _, err := c.Status(context.Background(), gateway.Request{TransactionID: auth}); !errors.Is(err, ErrUnexpectedAnswer) {
		t.Errorf("Status on a 500 error = %v, want ErrUnexpectedAnswer", err)
	}
	sb.SetFaults(sandbox.Faults{Down: true, FaultStatus: true})
	if st, err := c.Status(context.Background(), gateway.Request{TransactionID: auth}); err == nil || st.State != gateway.StateUnknown {
		t.Errorf("Status on a dropped connection = %s, %v; want an error", st.State, err)
	}
	if _, err := c.Status(context.Background(), gateway.Request{}); err == nil {
		t.Errorf("Status without an id: error = nil, want one")
	}
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, "http://"+addr+"/api/v1", time.Second)
	req := gateway.Request{Operation: gateway.Capture, MerchantID: merchant, TransactionID: "t-1", Amount: 1}
	got := c.Execute(context.Background(), req)
	if got.Outcome != gateway.Retryable || got.Err == nil || got.HTTPStatus != 0 {
		t.Errorf("Execute on a closed port = %s, %v; want retryable with an error", got.Outcome, got.Err)
	}
	if strings.Contains(got.Err.Error(), apiKey) || strings.Contains(got.Err.Error(), xAPIKey) {
		t.Errorf("error %q shows a key", got.Err)
	}
	if _, err := c.Status(context.Background(), req); err == nil {
		t.Errorf("Status on a closed port: error = nil, want one")
	}
}

// blocking serves requests that never answer until the test ends; started
// receives one value per request that arrived.
func blocking(t *testing.T) (*httptest.Server, chan struct{}) {
	t.Helper()
	started := make(chan struct{}, 8)
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		started <- struct{}{}
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(done)
		srv.Close()
	})
	return srv, started
}

func TestTimeoutAfterSendingIsUnknown(t *testing.T) {
	srv, _ := blocking(t)
	c := newClient(t, srv.URL, 100*time.Millisecond)
	got := c.Capture(context.Background(), gateway.Request{MerchantID: merchant, TransactionID: "t-1", Amount: 1})
	if got.Outcome != gateway.Unknown || !errors.Is(got.Err, context.DeadlineExceeded) {
		t.Errorf("Capture on a silent gateway = %s, %v; want unknown, deadline exceeded", got.Outcome, got.Err)
	}
}

func TestCallerCancellation(t *testing.T) {
	t.Run("after the request was sent", func(t *testing.T) {
		srv, started := blocking(t)
		c := newClient(t, srv.URL, 10*time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-started
			cancel()
		}()
		got := c.Capture(ctx, gateway.Request{MerchantID: merchant, TransactionID: "t-1", Amount: 1})
		if got.Outcome != gateway.Unknown || !errors.Is(got.Err, context.Canceled) {
			t.Errorf("Capture cancelled in flight = %s, %v; want unknown, context canceled", got.Outcome, got.Err)
		}
	})
	t.Run("before sending", func(t *testing.T) {
		srv, requests := recorder(t, 201, body(true, 201, "INFO0001", "0"))
		c := newClient(t, srv.URL, 10*time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		got := c.Capture(ctx, gateway.Request{MerchantID: merchant, TransactionID: "t-1", Amount: 1})
		if got.Outcome != gateway.Retryable || !errors.Is(got.Err, context.Canceled) || len(requests()) != 0 {
			t.Errorf("Capture with a cancelled context = %s, %v, %d requests; want retryable, context canceled, none sent", got.Outcome, got.Err, len(requests()))
		}
	})
}

func TestOddAnswers(t *testing.T) {
	tests := []struct {
		name   string
		status int
		answer string
		header map[string]string
		want   gateway.Outcome
	}{
		{"2xx not JSON", 201, "<html>", nil, gateway.Unknown},
		{"redirect", http.StatusFound, "", map[string]string{"Location": "/elsewhere"}, gateway.Unknown},
		{"429 with date", 429, "", map[string]string{"Retry-After": time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}, gateway.Retryable},
		{"408", 408, "", nil, gateway.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.answer)
			}))
			t.Cleanup(srv.Close)
			got := newClient(t, srv.URL, time.Second).Capture(context.Background(), gateway.Request{MerchantID: merchant, TransactionID: "t-1", Amount: 1})
			if got.Outcome != tt.want || got.HTTPStatus != tt.status {
				t.Errorf("Capture answered %d = %s HTTP %d, want %s HTTP %d", tt.status, got.Outcome, got.HTTPStatus, tt.want, tt.status)
			}
			if tt.status == 429 && (got.RetryAfter < 59*time.Minute || got.RetryAfter > time.Hour) {
				t.Errorf("RetryAfter = %s, want about 1h", got.RetryAfter)
			}
		})
	}
}

func TestAnswerCutMidBodyIsUnknown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "500")
		w.WriteHeader(201)
		_, _ = io.WriteString(w, `{"success":true,`)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	got := newClient(t, srv.URL, time.Second).Capture(context.Background(), gateway.Request{MerchantID: merchant, TransactionID: "t-1", Amount: 1})
	if got.Outcome != gateway.Unknown || got.Err == nil || got.HTTPStatus != 201 {
		t.Errorf("Capture with a cut answer = %s HTTP %d, %v; want unknown HTTP 201 with an error", got.Outcome, got.HTTPStatus, got.Err)
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	cfg := Config{BaseURL: mustURL(t, "https://api-dev.paymentoptions.com/api/v1"), APIKey: apiKey, XAPIKey: xAPIKey, Timeout: time.Second}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	log.Info("config", slog.Any("config", cfg), slog.Any("client", c), slog.Any("client_value", *c))
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", slog.Any("config", cfg), slog.Any("client", c))
	asJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"log":          logged.String(),
		"json":         string(asJSON),
		"nested %+v":   fmt.Sprintf("%+v", struct{ C Config }{cfg}),
		"pointer %v":   fmt.Sprintf("%v", &cfg),
		"client value": fmt.Sprintf("%+v", struct{ C Client }{*c}),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q", "%T %v"} {
		outputs["config "+verb] = fmt.Sprintf(verb, cfg)
		if verb != "%T %v" {
			outputs["client "+verb] = fmt.Sprintf(verb, c)
			outputs["client value "+verb] = fmt.Sprintf(verb, *c)
		}
	}
	for name, out := range outputs {
		for _, secret := range []string{apiKey, xAPIKey, fmt.Sprintf("%x", apiKey), fmt.Sprintf("%x", xAPIKey)} {
			if strings.Contains(out, secret) {
				t.Errorf("%s output %q shows a key", name, out)
			}
		}
	}
	if !strings.Contains(fmt.Sprint(cfg), "api-dev.paymentoptions.com") || !strings.Contains(fmt.Sprint(cfg), redacted) {
		t.Errorf("fmt.Sprint(cfg) = %q, want the base URL and %s", fmt.Sprint(cfg), redacted)
	}
	if got := c.Name(); got != "paymentoptions" {
		t.Errorf("Name() = %q, want paymentoptions", got)
	}
}
