package sibs

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

	"golang.org/x/oauth2"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/sandbox"
)

const (
	token    = "sekret-bearer-token"
	clientID = "client-123"
	terminal = "24"
	merchant = "M000001"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", s, err)
	}
	return u
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%v): %v", cfg, err)
	}
	return c
}

// startSandbox serves a sandbox that requires the test token and client id
// on a loopback port, and returns it with a Client configured for it.
func startSandbox(t *testing.T) (*sandbox.Sandbox, *Client) {
	t.Helper()
	sb := sandbox.New(sandbox.Options{SIBSToken: token, SIBSClientID: clientID, Seed: 7})
	_, stop, err := sb.Start("127.0.0.1:0")
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
	return sb, newClient(t, Config{BaseURL: mustURL(t, sb.SIBSBaseURL()), ClientID: clientID, TerminalID: terminal, Token: token})
}

// recorded is one request a test server saw.
type recorded struct {
	method, path string
	header       http.Header
	raw          []byte
}

// recorder serves answer with status to every request and records it.
func recorder(t *testing.T, status int, answer string) (*httptest.Server, func() []recorded) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []recorded
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, recorded{method: r.Method, path: r.URL.EscapedPath(), header: r.Header.Clone(), raw: raw})
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

// answerJSON is an operation answer.
func answerJSON(code, paymentStatus, paymentType, value, currency string) string {
	return fmt.Sprintf(`{"returnStatus":{"statusCode":%q,"statusMsg":"Success","statusDescription":"Success"},
		"paymentStatus":%q,"paymentType":%q,"transactionID":"op-1","transactionTimestamp":"2022-05-29T18:23:42.000Z",
		"amount":{"value":%s,"currency":%q}}`, code, paymentStatus, paymentType, value, currency)
}

// statusJSON is a status answer for an authorisation of value PLN made at
// 2022-05-29T17:23:36.105Z; ops, when not empty, is the operations list.
func statusJSON(value string, ops string) string {
	list := ""
	if ops != "" {
		list = `,"operations":` + ops
	}
	return `{"returnStatus":{"statusCode":"000","statusMsg":"Success"},"paymentStatus":"Success","paymentType":"AUTH",
		"transactionID":"auth-1","transactionTimestamp":"2022-05-29T17:23:36.105Z","amount":{"value":` + value + `,"currency":"PLN"}` + list + `}`
}

func TestNew(t *testing.T) {
	tokenURL := mustURL(t, "https://auth.example.com/token")
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"static token", Config{BaseURL: mustURL(t, "https://stargate-cer.qly.site1.sibs.pt"), ClientID: clientID, TerminalID: "24", Token: token}, ""},
		{"oauth", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "24", TokenURL: tokenURL, ClientSecret: "cs"}, ""},
		{"token source", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "24",
			TokenSource: staticSource("x")}, ""},
		{"loopback without token", Config{BaseURL: mustURL(t, "http://127.0.0.1:8099"), TerminalID: "1"}, ""},
		{"localhost", Config{BaseURL: mustURL(t, "http://localhost:8099/api/v1"), TerminalID: "1"}, ""},
		{"ipv6 loopback", Config{BaseURL: mustURL(t, "http://[::1]:8099"), TerminalID: "1"}, ""},
		{"http remote", Config{BaseURL: mustURL(t, "http://stargate.example.com"), ClientID: clientID, TerminalID: "24", Token: token},
			"http:// is accepted only for a loopback host"},
		{"http token url", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "24",
			TokenURL: mustURL(t, "http://auth.example.com/token"), ClientSecret: "cs"}, "token URL"},
		{"http remote allowed", Config{BaseURL: mustURL(t, "http://sandbox:8099/api/v1"), TerminalID: "24", AllowHTTP: true}, ""},
		{"http token url allowed", Config{BaseURL: mustURL(t, "http://sandbox:8099"), ClientID: clientID, TerminalID: "24",
			TokenURL: mustURL(t, "http://auth.example.com/token"), ClientSecret: "cs", AllowHTTP: true}, ""},
		{"allowed http still no user info", Config{BaseURL: mustURL(t, "http://u:pw@sandbox:8099"), TerminalID: "24", AllowHTTP: true}, "user info"},
		{"no base", Config{TerminalID: "24", Token: token}, "base URL is required"},
		{"scheme", Config{BaseURL: mustURL(t, "ftp://127.0.0.1"), TerminalID: "24"}, "scheme must be https"},
		{"user info", Config{BaseURL: mustURL(t, "https://u:pw@stargate.example.com"), TerminalID: "24", Token: token, ClientID: clientID}, "user info"},
		{"query", Config{BaseURL: mustURL(t, "https://stargate.example.com?x=1"), TerminalID: "24", Token: token, ClientID: clientID}, "query or fragment"},
		{"terminal letters", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "24a", Token: token}, "terminal id"},
		{"terminal long", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "12345678901", Token: token}, "terminal id"},
		{"terminal empty", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, Token: token}, "terminal id"},
		{"no token", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "24"}, "a token"},
		{"no client id", Config{BaseURL: mustURL(t, "https://stargate.example.com"), TerminalID: "24", Token: token}, "ClientID is required"},
		{"two sources", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "24", Token: token,
			TokenURL: tokenURL, ClientSecret: "cs"}, "set one token source"},
		{"secret without url", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "24", ClientSecret: "cs"},
			"TokenURL is required"},
		{"url without secret", Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: "24", TokenURL: tokenURL},
			"ClientSecret is required"},
		{"negative timeout", Config{BaseURL: mustURL(t, "http://127.0.0.1"), TerminalID: "1", Timeout: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("New() error = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("New() error = %v, want one containing %q", err, tt.wantErr)
			case err != nil && (strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "pw@")):
				t.Errorf("New() error %q shows a secret", err)
			}
		})
	}
}

type staticSource string

func (s staticSource) Token() (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: string(s)}, nil
}

func TestRequests(t *testing.T) {
	srv, requests := recorder(t, 200, answerJSON("000", "Success", "CAPT", "19.99", "EUR"))
	orig := time.Date(2022, 5, 29, 17, 23, 36, 105_000_000, time.UTC)
	now := time.Date(2022, 5, 29, 18, 0, 0, 0, time.FixedZone("X", 3600))
	capture := gateway.Request{Operation: gateway.Capture, MerchantID: merchant, TransactionID: "1ach2CGpZ2BAKUfqJ9Rp",
		Amount: 1999, Currency: "EUR", Reference: "key-1", OriginalTime: orig}
	tests := []struct {
		name   string
		base   string
		req    func() gateway.Request
		status bool
		method string
		path   string
		body   string
	}{
		{"capture, host root", srv.URL, func() gateway.Request { return capture }, false, http.MethodPost,
			"/api/v1/payments/1ach2CGpZ2BAKUfqJ9Rp/capture",
			`{"merchant":{"terminalId":24,"channel":"web","merchantTransactionId":"key-1"},"transaction":{"transactionTimestamp":"2022-05-29T17:00:00.000Z","description":"This is a capture request","amount":{"value":19.99,"currency":"EUR"},"originalTransaction":{"id":"1ach2CGpZ2BAKUfqJ9Rp","datetime":"2022-05-29T17:23:36.105Z"}}}`},
		{"partial cancellation, base ending in /api/v1/", srv.URL + "/api/v1/", func() gateway.Request {
			r := capture
			r.Operation, r.Amount, r.Notes = gateway.Void, 1, "customer cancelled <one> item & more"
			return r
		}, false, http.MethodPost, "/api/v1/payments/1ach2CGpZ2BAKUfqJ9Rp/cancellation",
			`{"merchant":{"terminalId":24,"channel":"web","merchantTransactionId":"key-1"},"transaction":{"transactionTimestamp":"2022-05-29T17:00:00.000Z","description":"customer cancelled <one> item & more","amount":{"value":0.01,"currency":"EUR"},"originalTransaction":{"id":"1ach2CGpZ2BAKUfqJ9Rp","datetime":"2022-05-29T17:23:36.105Z"}}}`},
		{"notes clipped to 70 characters", srv.URL, func() gateway.Request {
			r := capture
			r.Notes = strings.Repeat("é", 80)
			return r
		}, false, http.MethodPost, "/api/v1/payments/1ach2CGpZ2BAKUfqJ9Rp/capture",
			`{"merchant":{"terminalId":24,"channel":"web","merchantTransactionId":"key-1"},"transaction":{"transactionTimestamp":"2022-05-29T17:00:00.000Z","description":"` + strings.Repeat("é", 70) + `","amount":{"value":19.99,"currency":"EUR"},"originalTransaction":{"id":"1ach2CGpZ2BAKUfqJ9Rp","datetime":"2022-05-29T17:23:36.105Z"}}}`},
		{"status escapes the id", srv.URL, func() gateway.Request { return gateway.Request{TransactionID: "a/b c?"} }, true,
			http.MethodGet, "/api/v1/payments/a%2Fb%20c%3F/status", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, Config{BaseURL: mustURL(t, tt.base), ClientID: clientID, TerminalID: "0024", Token: token,
				Now: func() time.Time { return now }})
			before := len(requests())
			if tt.status {
				_, _ = c.Status(context.Background(), tt.req())
			} else {
				c.Execute(context.Background(), tt.req())
			}
			all := requests()
			if len(all) != before+1 {
				t.Fatalf("server saw %d requests, want 1", len(all)-before)
			}
			r := all[before]
			if r.method != tt.method || r.path != tt.path {
				t.Errorf("request = %s %s, want %s %s", r.method, r.path, tt.method, tt.path)
			}
			if got, want := r.header.Get("Authorization"), "Bearer "+token; got != want {
				t.Errorf("Authorization = %q, want %q", got, want)
			}
			if got := r.header.Get("x-ibm-client-id"); got != clientID {
				t.Errorf("x-ibm-client-id = %q, want %q", got, clientID)
			}
			wantType := ""
			if tt.body != "" {
				wantType = "application/json"
			}
			if got := r.header.Get("Content-Type"); got != wantType {
				t.Errorf("Content-Type = %q, want %q", got, wantType)
			}
			var compact bytes.Buffer
			if len(r.raw) > 0 {
				if err := json.Compact(&compact, r.raw); err != nil {
					t.Fatalf("body %q is not JSON: %v", r.raw, err)
				}
			}
			if got := compact.String(); got != tt.body {
				t.Errorf("body =\n%s\nwant\n%s", got, tt.body)
			}
		})
	}
}

// TestRejectedUnsent: a request the gateway would refuse, or that cannot be
// expressed in SIBS's amounts, is Declined without a call.
func TestRejectedUnsent(t *testing.T) {
	srv, requests := recorder(t, 200, answerJSON("000", "Success", "CAPT", "1", "EUR"))
	c := newClient(t, Config{BaseURL: mustURL(t, srv.URL), ClientID: clientID, TerminalID: terminal, Token: token})
	orig := time.Date(2022, 5, 29, 17, 23, 36, 0, time.UTC)
	ok := gateway.Request{Operation: gateway.Capture, TransactionID: "t1", Amount: 100, Currency: "EUR", Reference: "k", OriginalTime: orig}
	tests := []struct {
		name   string
		change func(*gateway.Request)
	}{
		{"unknown currency", func(r *gateway.Request) { r.Currency = "XXX" }},
		{"lower-case currency", func(r *gateway.Request) { r.Currency = "eur" }},
		{"no currency", func(r *gateway.Request) { r.Currency = "" }},
		{"void of an unknown currency", func(r *gateway.Request) { r.Operation, r.Currency = gateway.Void, "ABC" }},
		{"void with an amount and no currency", func(r *gateway.Request) { r.Operation, r.Currency = gateway.Void, "" }},
		{"zero capture", func(r *gateway.Request) { r.Amount = 0 }},
		{"negative void", func(r *gateway.Request) { r.Operation, r.Amount = gateway.Void, -5 }},
		{"no reference", func(r *gateway.Request) { r.Reference = "" }},
		{"no transaction", func(r *gateway.Request) { r.TransactionID = "" }},
		{"refund", func(r *gateway.Request) { r.Operation = "refund" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := ok
			tt.change(&req)
			if res := c.Execute(context.Background(), req); res.Outcome != gateway.Declined {
				t.Errorf("Execute(%+v) = %v, want declined", req, res.Outcome)
			}
		})
	}
	if n := len(requests()); n != 0 {
		t.Errorf("server saw %d requests, want none", n)
	}
}

// TestSandboxLifecycle runs captures and cancellations against the sandbox:
// several partial captures up to the authorised total, a partial and a full
// cancellation of what is left, and the refusals after it.
func TestSandboxLifecycle(t *testing.T) {
	sb, c := startSandbox(t)
	ctx := context.Background()
	auth := sb.Authorise(merchant, 10_000, "EUR") // 100.00 EUR
	other := sb.Authorise(merchant, 5_000, "PLN")
	at, _ := sb.Authorisation(auth)
	steps := []struct {
		op          gateway.Operation
		auth        string
		amount      int64
		ref         string
		want        gateway.Outcome
		wantAmount  int64
		wantState   sandbox.State
		wantCapture int64
		wantVoided  int64
	}{
		{gateway.Capture, auth, 1999, "cap-1", gateway.Succeeded, 1999, sandbox.StatePartiallyCaptured, 1999, 0},
		{gateway.Capture, auth, 3001, "cap-2", gateway.Succeeded, 3001, sandbox.StatePartiallyCaptured, 5000, 0},
		{gateway.Capture, auth, 5001, "cap-3", gateway.Declined, 5001, sandbox.StatePartiallyCaptured, 5000, 0}, // above the 50.00 left
		{gateway.Void, auth, 1000, "void-1", gateway.Succeeded, 1000, sandbox.StatePartiallyCaptured, 5000, 1000},
		{gateway.Void, auth, 0, "void-2", gateway.Succeeded, 4000, sandbox.StateCaptured, 5000, 5000}, // full: the rest
		{gateway.Capture, auth, 1, "cap-4", gateway.Declined, 1, sandbox.StateCaptured, 5000, 5000},
		{gateway.Void, auth, 0, "void-3", gateway.Declined, 0, sandbox.StateCaptured, 5000, 5000}, // nothing left, unsent
		{gateway.Capture, other, 5000, "cap-5", gateway.Succeeded, 5000, sandbox.StateCaptured, 5000, 0},
	}
	for i, s := range steps {
		currency := "EUR"
		if s.auth == other {
			currency = "PLN"
		}
		req := gateway.Request{Operation: s.op, MerchantID: merchant, TransactionID: s.auth, Amount: s.amount, Reference: s.ref}
		if s.amount != 0 {
			req.Currency = currency
		}
		res := c.Execute(ctx, req)
		if res.Outcome != s.want || res.Amount != s.wantAmount {
			t.Errorf("step %d: %s %d = %v amount %d (%s), want %v amount %d", i, s.op, s.amount, res.Outcome, res.Amount, res.Message, s.want, s.wantAmount)
		}
		if s.want == gateway.Succeeded && (res.Code != "000" || res.TransactionID == "" || res.Currency != currency) {
			t.Errorf("step %d: result = %+v, want code 000, an operation id, currency %s", i, res, currency)
		}
		a, _ := sb.Authorisation(s.auth)
		if a.State != s.wantState || a.CapturedAmount != s.wantCapture || a.VoidedAmount != s.wantVoided {
			t.Errorf("step %d: authorisation = %s captured %d voided %d, want %s captured %d voided %d",
				i, a.State, a.CapturedAmount, a.VoidedAmount, s.wantState, s.wantCapture, s.wantVoided)
		}
	}
	var refs []string
	for _, op := range sb.Applied(auth) {
		refs = append(refs, fmt.Sprintf("%s:%s:%d", op.Operation, op.Reference, op.Amount))
	}
	if got, want := strings.Join(refs, " "), "capture:cap-1:1999 capture:cap-2:3001 void:void-1:1000 void:void-2:4000"; got != want {
		t.Errorf("ledger = %s, want %s", got, want)
	}

	// The status now lists all four; each reference is found as ours.
	for _, tt := range []struct {
		op     gateway.Operation
		ref    string
		want   gateway.OursState
		amount int64
	}{
		{gateway.Capture, "cap-2", gateway.OursApplied, 3001},
		{gateway.Void, "void-2", gateway.OursApplied, 4000},
		{gateway.Capture, "cap-3", gateway.OursAbsent, 0}, // refused: not applied
		{gateway.Void, "cap-1", gateway.OursAbsent, 0},    // a capture is not our void
		{gateway.Capture, "never", gateway.OursAbsent, 0},
	} {
		st, err := c.Status(ctx, gateway.Request{Operation: tt.op, TransactionID: auth, Reference: tt.ref})
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if st.State != gateway.StateCaptured || st.AuthorisedAmount != 10_000 || st.CapturedAmount != 5000 || st.VoidedAmount != 5000 ||
			st.Currency != "EUR" || !st.AuthorisedAt.Equal(at.AuthorisedAt.Truncate(time.Millisecond)) {
			t.Errorf("Status = %+v, want captured 5000 of 10000 EUR, voided 5000, authorised at %s", st, at.AuthorisedAt)
		}
		if st.Ours != tt.want || st.OursAmount != tt.amount {
			t.Errorf("Status(%s %s).Ours = %v %d, want %v %d", tt.op, tt.ref, st.Ours, st.OursAmount, tt.want, tt.amount)
		}
		if tt.want == gateway.OursApplied && (st.Result.Outcome != gateway.Succeeded || st.Result.TransactionID == "" || st.Result.Amount != tt.amount) {
			t.Errorf("Status(%s).Result = %+v, want our operation, succeeded", tt.ref, st.Result)
		}
	}
	if st, err := c.Status(ctx, gateway.Request{TransactionID: "nope", Reference: "k"}); err != nil || st.State != gateway.StateNotFound {
		t.Errorf("Status(unknown) = %v, %v; want not_found", st.State, err)
	}
}

// TestVoidReadsTheAuthorisation: a void without the original time or
// without an amount reads them from the status call first; with both it
// sends the cancellation alone.
func TestVoidReadsTheAuthorisation(t *testing.T) {
	sb, c := startSandbox(t)
	ctx := context.Background()
	orig := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name       string
		amount     int64
		original   time.Time
		wantStatus int
	}{
		{"amount and time given", 300, orig, 0},
		{"no time", 300, time.Time{}, 1},
		{"no amount", 0, orig, 1},
		{"neither", 0, time.Time{}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := sb.Authorise(merchant, 1_000, "JPY")
			before := sb.Calls(sandbox.EndpointSIBSStatus)
			req := gateway.Request{Operation: gateway.Void, TransactionID: auth, Amount: tt.amount, Reference: "v-" + tt.name, OriginalTime: tt.original}
			if tt.amount != 0 {
				req.Currency = "JPY"
			}
			res := c.Execute(ctx, req)
			want := tt.amount
			if want == 0 {
				want = 1_000
			}
			if res.Outcome != gateway.Succeeded || res.Amount != want || res.Currency != "JPY" {
				t.Errorf("Execute = %v %d %s (%s %v), want succeeded %d JPY", res.Outcome, res.Amount, res.Currency, res.Message, res.Err, want)
			}
			if got := sb.Calls(sandbox.EndpointSIBSStatus) - before; got != tt.wantStatus {
				t.Errorf("status calls = %d, want %d", got, tt.wantStatus)
			}
		})
	}
	// An unknown authorisation: the lookup's 404 is a decline, nothing sent.
	before := sb.Calls(sandbox.EndpointSIBSCancellation)
	if res := c.Execute(ctx, gateway.Request{Operation: gateway.Void, TransactionID: "nope", Reference: "v"}); res.Outcome != gateway.Declined {
		t.Errorf("void of an unknown authorisation = %v, want declined", res.Outcome)
	}
	if got := sb.Calls(sandbox.EndpointSIBSCancellation) - before; got != 0 {
		t.Errorf("cancellation calls = %d, want 0", got)
	}
	// A failing status call: nothing was sent, so retryable.
	sb.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 502, FaultStatus: true})
	auth := sb.Authorise(merchant, 1_000, "JPY")
	if res := c.Execute(ctx, gateway.Request{Operation: gateway.Void, TransactionID: auth, Reference: "v2"}); res.Outcome != gateway.Retryable {
		t.Errorf("void while the status fails = %v (%v), want retryable", res.Outcome, res.Err)
	}
	sb.SetFaults(sandbox.Faults{})
	if ops := sb.Applied(auth); len(ops) != 0 {
		t.Errorf("ledger = %+v, want nothing applied", ops)
	}
}

// TestDeclinedIsNeverSuccess: "000" with paymentStatus Declined is a final
// failure, never a success.
func TestDeclinedIsNeverSuccess(t *testing.T) {
	srv, _ := recorder(t, 200, answerJSON("000", "Declined", "CAPT", "1", "EUR"))
	c := newClient(t, Config{BaseURL: mustURL(t, srv.URL), ClientID: clientID, TerminalID: terminal, Token: token})
	res := c.Execute(context.Background(), gateway.Request{Operation: gateway.Capture, TransactionID: "t", Amount: 100, Currency: "EUR",
		Reference: "k", OriginalTime: time.Now()})
	if res.Outcome != gateway.Declined || res.Code != "000" || !strings.Contains(res.Message, "Declined") {
		t.Errorf("Execute = %v code %q message %q, want declined, 000, a message naming Declined", res.Outcome, res.Code, res.Message)
	}
}

// TestPendingThenStatus: "000" + Pending is unknown; the status call then
// tells whether our operation was applied. The sandbox's unclear fault
// applies on a coin toss, so both sides are seen.
func TestPendingThenStatus(t *testing.T) {
	sb, c := startSandbox(t)
	ctx := context.Background()
	sb.SetFaults(sandbox.Faults{UnclearRate: 1})
	seen := map[gateway.OursState]bool{}
	for i := 0; i < 20 && len(seen) < 2; i++ {
		auth := sb.Authorise(merchant, 500, "PLN")
		req := gateway.Request{Operation: gateway.Capture, TransactionID: auth, Amount: 200, Currency: "PLN",
			Reference: fmt.Sprintf("p-%d", i), OriginalTime: time.Now()}
		res := c.Execute(ctx, req)
		if res.Outcome != gateway.Unknown {
			t.Fatalf("Execute under the pending fault = %v, want unknown", res.Outcome)
		}
		st, err := c.Status(ctx, req)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		applied := len(sb.Applied(auth)) == 1
		want := gateway.OursAbsent
		if applied {
			want = gateway.OursApplied
		}
		if st.Ours != want {
			t.Errorf("Status.Ours = %v, want %v (applied %v)", st.Ours, want, applied)
		}
		seen[st.Ours] = true
	}
	if len(seen) != 2 {
		t.Errorf("20 pending answers were all %v; want both applied and absent", seen)
	}
}

func TestTransport(t *testing.T) {
	ctx := context.Background()
	req := gateway.Request{Operation: gateway.Capture, TransactionID: "t", Amount: 100, Currency: "EUR", Reference: "k", OriginalTime: time.Now()}

	// Connection refused: nothing sent.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, Config{BaseURL: mustURL(t, "http://"+addr), TerminalID: terminal, Token: token})
	if res := c.Execute(ctx, req); res.Outcome != gateway.Retryable || res.Err == nil {
		t.Errorf("connection refused = %v (%v), want retryable with an error", res.Outcome, res.Err)
	}

	// Applied, then the connection dropped: unknown.
	sb, sc := startSandbox(t)
	sb.SetFaults(sandbox.Faults{ApplyThenDropRate: 1})
	auth := sb.Authorise(merchant, 100, "EUR")
	req.TransactionID = auth
	if res := sc.Execute(ctx, req); res.Outcome != gateway.Unknown {
		t.Errorf("apply then drop = %v, want unknown", res.Outcome)
	}
	sb.SetFaults(sandbox.Faults{})
	if ops := sb.Applied(auth); len(ops) != 1 {
		t.Errorf("ledger = %+v, want the capture applied", ops)
	}

	// A slow gateway: the request was sent, the timeout is unknown.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(300 * time.Millisecond):
		}
	}))
	t.Cleanup(slow.Close)
	c = newClient(t, Config{BaseURL: mustURL(t, slow.URL), TerminalID: terminal, Token: token, Timeout: 50 * time.Millisecond})
	if res := c.Execute(ctx, req); res.Outcome != gateway.Unknown || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Errorf("timeout = %v (%v), want unknown with DeadlineExceeded", res.Outcome, res.Err)
	}

	// Faults on the SIBS endpoints: 429 and 503 retryable, 502 unknown,
	// down (no answer, nothing applied, but the request was sent) unknown.
	for _, tt := range []struct {
		faults sandbox.Faults
		want   gateway.Outcome
	}{
		{sandbox.Faults{RateLimitRate: 1, RetryAfter: 3 * time.Second}, gateway.Retryable},
		{sandbox.Faults{ErrorRate: 1, ErrorStatus: 503}, gateway.Retryable},
		{sandbox.Faults{ErrorRate: 1, ErrorStatus: 502}, gateway.Unknown},
		{sandbox.Faults{Down: true}, gateway.Unknown},
	} {
		sb.SetFaults(tt.faults)
		res := sc.Execute(ctx, req)
		if res.Outcome != tt.want {
			t.Errorf("faults %+v: Execute = %v, want %v", tt.faults, res.Outcome, tt.want)
		}
		if tt.faults.RateLimitRate == 1 && res.RetryAfter != 3*time.Second {
			t.Errorf("429: RetryAfter = %s, want 3s", res.RetryAfter)
		}
	}
	sb.SetFaults(sandbox.Faults{})
}

// TestSecretsNeverShown: the token and the client secret appear in no
// formatted, logged or marshalled Config or Client, and in no error.
func TestSecretsNeverShown(t *testing.T) {
	cfg := Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: terminal, Token: token}
	oauth := Config{BaseURL: mustURL(t, "https://stargate.example.com"), ClientID: clientID, TerminalID: terminal,
		TokenURL: mustURL(t, "https://auth.example.com/token"), ClientSecret: "sekret-client-secret"}
	c := newClient(t, cfg)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "cfg", cfg, "oauth", oauth, "client", c)
	j1, _ := json.Marshal(cfg)
	j2, _ := json.Marshal(oauth)
	outs := []string{
		fmt.Sprintf("%v %+v %#v %s %d %x", cfg, cfg, cfg, cfg, cfg, cfg),
		fmt.Sprintf("%v %+v %#v %s", oauth, oauth, oauth, oauth),
		fmt.Sprintf("%v %+v %#v %s", c, c, *c, c),
		buf.String(), string(j1), string(j2),
	}
	for _, out := range outs {
		if strings.Contains(out, token) || strings.Contains(out, "sekret-client-secret") {
			t.Errorf("output shows a secret: %s", out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("output %s does not say the secret is redacted", out)
		}
	}
}
