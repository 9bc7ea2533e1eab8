package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/sandbox"
)

const (
	merchant = "M000001"
	testCard = "5200000000001005"
	// docPrefix is the path the documented base URL joins to.
	docPrefix = "/api/v1/api/v1/server-to-server-interface/"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// wire is the part of an answer the tests read.
type wire struct {
	Success         bool   `json:"success"`
	StatusCode      int    `json:"status_code"`
	TransactionType string `json:"transaction_type"`
	GatewayResponse struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"gateway_response"`
	PaymentDetails struct {
		Amount       int64  `json:"amount"`
		ResponseCode *int   `json:"response_code"`
		Currency     string `json:"currency"`
		Scheme       string `json:"scheme"`
		Card         struct {
			Number string `json:"number"`
		} `json:"card"`
	} `json:"payment_details"`
	TransactionDetails struct {
		ID string `json:"id"`
	} `json:"transaction_details"`
}

type reply struct {
	status int
	header http.Header
	raw    []byte
	body   wire
	err    error
}

// server serves a new sandbox over HTTP and returns it with its server.
func server(t *testing.T, opts sandbox.Options) (*sandbox.Sandbox, *httptest.Server) {
	t.Helper()
	sb := sandbox.New(opts)
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(srv.Close)
	return sb, srv
}

func do(t *testing.T, srv *httptest.Server, method, path string, body any, header map[string]string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{status: resp.StatusCode, err: err}
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if bytes.HasPrefix(raw, []byte("[")) || (r.status == http.StatusNoContent && len(raw) == 0) {
		return r
	}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("%s %s: answer %q is not JSON: %v", method, path, raw, err)
	}
	return r
}

func capture(t *testing.T, srv *httptest.Server, id string, amount any) reply {
	t.Helper()
	return do(t, srv, http.MethodPost, docPrefix+"capture", map[string]any{
		"transactionId": id, "amount": amount, "merchant_id": merchant, "notes": "test",
	}, nil)
}

func void(t *testing.T, srv *httptest.Server, id string) reply {
	t.Helper()
	return do(t, srv, http.MethodPost, docPrefix+"void", map[string]any{"transactionId": id, "merchant_id": merchant}, nil)
}

func status(t *testing.T, srv *httptest.Server, id string) reply {
	t.Helper()
	return do(t, srv, http.MethodGet, docPrefix+"transaction/status/"+id, nil, nil)
}

func rc(w wire) int {
	if w.PaymentDetails.ResponseCode == nil {
		return -1
	}
	return *w.PaymentDetails.ResponseCode
}

// seedPayment is the documentation's payment request.
const seedPayment = `{
"amount": "1000", "currency": "JPY",
"card": {"cvc": "100", "expiry_month": "12", "expiry_year": "24", "name": "John Doe", "number": "5200000000001005"},
"merchant_txn_ref": "qwe", "customer_ip": "127.0.0.1", "merchant_id": "M000001",
"return_url": {"webhook_url": "< Webhook url >", "success_url": "http://www.successurl.com/", "decline_url": "http://www.declineurl.com/"},
"billing_address": {"country": "JP", "email": "billing@testemail.com", "phone_number": "8112345678", "address1": "1-2-3 Shinjuku", "city": "Shinjuku-ku", "state": "Tokyo", "postal_code": "1600022"},
"browser_info": {"acceptHeader": "text/html", "javaEnabled": false, "language": "en"},
"time_zone": "Asia/Kuala_Lumpur"
}`

func TestPaymentAnswersTheSeedShape(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	r := do(t, srv, http.MethodPost, docPrefix+"payment", seedPayment, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("payment status = %d, want 201; body %s", r.status, r.raw)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"success", r.body.Success, true},
		{"status_code", r.body.StatusCode, 201},
		{"transaction_type", r.body.TransactionType, "PRE_AUTH"},
		{"gateway_response.code", r.body.GatewayResponse.Code, "INFO0000"},
		{"gateway_response.message", r.body.GatewayResponse.Message, "Payment Successful."},
		{"payment_details.amount", r.body.PaymentDetails.Amount, int64(1000)},
		{"payment_details.response_code", rc(r.body), 0},
		{"payment_details.currency", r.body.PaymentDetails.Currency, "JPY"},
		{"payment_details.scheme", r.body.PaymentDetails.Scheme, "MASTERCARD"},
		{"payment_details.card.number", r.body.PaymentDetails.Card.Number, testCard},
		{"transaction_details.id is a UUID", uuidRE.MatchString(r.body.TransactionDetails.ID), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("payment answer %s = %v, want %v", c.name, c.got, c.want)
		}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.raw, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"success", "status_code", "is_live", "transaction_type", "gateway_response",
		"merchant_details", "payment_details", "transaction_details", "risk-details"} {
		if _, ok := top[k]; !ok {
			t.Errorf("payment answer lacks %q: %s", k, r.raw)
		}
	}
	a, ok := sb.Authorisation(r.body.TransactionDetails.ID)
	if !ok || a.State != sandbox.StateAuthorised || a.Amount != 1000 || a.Currency != "JPY" || a.MerchantID != merchant {
		t.Errorf("Authorisation(%s) = %+v, %v; want authorised 1000 JPY for %s", r.body.TransactionDetails.ID, a, ok, merchant)
	}
}

func TestPaymentRefusesInvalidRequests(t *testing.T) {
	_, srv := server(t, sandbox.Options{})
	tests := []struct {
		name string
		body string
	}{
		{"not JSON", `{"amount":`},
		{"no amount", `{"currency":"JPY","merchant_id":"M1","card":{"number":"5200000000001005"}}`},
		{"zero amount", `{"amount":0,"currency":"JPY","merchant_id":"M1","card":{"number":"5200000000001005"}}`},
		{"decimal amount", `{"amount":"10.5","currency":"JPY","merchant_id":"M1","card":{"number":"5200000000001005"}}`},
		{"bad currency", `{"amount":1,"currency":"yen","merchant_id":"M1","card":{"number":"5200000000001005"}}`},
		{"no merchant", `{"amount":1,"currency":"JPY","card":{"number":"5200000000001005"}}`},
		{"no card", `{"amount":1,"currency":"JPY","merchant_id":"M1"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, srv, http.MethodPost, docPrefix+"payment", tt.body, nil)
			if r.status != http.StatusBadRequest || r.body.Success || r.body.GatewayResponse.Type != "ERROR" || r.body.GatewayResponse.Code != "ERR0400" {
				t.Errorf("payment(%s) = %d %s, want 400 ERR0400 success false", tt.body, r.status, r.raw)
			}
		})
	}
}

// step is one capture or void of a state-machine test.
type step struct {
	op     gateway.Operation
	amount any
}

func TestStateMachine(t *testing.T) {
	tests := []struct {
		name     string
		before   []step
		last     step
		id       string // transaction id of the last step; empty: the authorisation
		merchant string // merchant of the last step; empty: the authorisation's
		want     int
		wantCode string
		wantRC   int // -1: no response_code
		wantAmt  int64
		state    sandbox.State
		captured int64
		applied  int
	}{
		{name: "full capture", last: step{gateway.Capture, 1000},
			want: 201, wantCode: "INFO0001", wantRC: 0, wantAmt: 1000, state: sandbox.StateCaptured, captured: 1000, applied: 1},
		{name: "partial capture", last: step{gateway.Capture, 600},
			want: 201, wantCode: "INFO0001", wantRC: 0, wantAmt: 600, state: sandbox.StatePartiallyCaptured, captured: 600, applied: 1},
		{name: "amount as string", last: step{gateway.Capture, "600"},
			want: 201, wantCode: "INFO0001", wantRC: 0, wantAmt: 600, state: sandbox.StatePartiallyCaptured, captured: 600, applied: 1},
		{name: "capture above authorised", last: step{gateway.Capture, 1001},
			want: 400, wantCode: "ERR0400", wantRC: 836, state: sandbox.StateAuthorised},
		{name: "double capture", before: []step{{gateway.Capture, 1000}}, last: step{gateway.Capture, 1000},
			want: 412, wantCode: "ERR0412", wantRC: -1, state: sandbox.StateCaptured, captured: 1000, applied: 1},
		{name: "capture after partial capture", before: []step{{gateway.Capture, 400}}, last: step{gateway.Capture, 400},
			want: 412, wantCode: "ERR0412", wantRC: -1, state: sandbox.StatePartiallyCaptured, captured: 400, applied: 1},
		{name: "void", last: step{op: gateway.Void},
			want: 201, wantCode: "INFO0003", wantRC: 0, wantAmt: 1000, state: sandbox.StateVoided, applied: 1},
		{name: "void after capture", before: []step{{gateway.Capture, 1000}}, last: step{op: gateway.Void},
			want: 412, wantCode: "ERR0412", wantRC: -1, state: sandbox.StateCaptured, captured: 1000, applied: 1},
		{name: "capture after void", before: []step{{op: gateway.Void}}, last: step{gateway.Capture, 1000},
			want: 412, wantCode: "ERR0412", wantRC: -1, state: sandbox.StateVoided, applied: 1},
		{name: "double void", before: []step{{op: gateway.Void}}, last: step{op: gateway.Void},
			want: 412, wantCode: "ERR0412", wantRC: -1, state: sandbox.StateVoided, applied: 1},
		{name: "unknown transaction", last: step{gateway.Capture, 1000}, id: "00000000-0000-0000-0000-000000000000",
			want: 404, wantCode: "ERR0404", wantRC: -1, state: sandbox.StateAuthorised},
		{name: "other merchant", last: step{gateway.Capture, 1000}, merchant: "OTHER",
			want: 404, wantCode: "ERR0404", wantRC: -1, state: sandbox.StateAuthorised},
		{name: "void of other merchant", last: step{op: gateway.Void}, merchant: "OTHER",
			want: 404, wantCode: "ERR0404", wantRC: -1, state: sandbox.StateAuthorised},
		{name: "zero amount", last: step{gateway.Capture, 0},
			want: 400, wantCode: "ERR0400", wantRC: -1, state: sandbox.StateAuthorised},
		{name: "no amount", last: step{gateway.Capture, nil},
			want: 400, wantCode: "ERR0400", wantRC: -1, state: sandbox.StateAuthorised},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, srv := server(t, sandbox.Options{})
			auth := sb.Authorise(merchant, 1000, "JPY")
			for _, s := range tt.before {
				if r := send(t, srv, s, auth, merchant); r.status != 201 {
					t.Fatalf("setup %s = %d %s", s.op, r.status, r.raw)
				}
			}
			id, m := auth, merchant
			if tt.id != "" {
				id = tt.id
			}
			if tt.merchant != "" {
				m = tt.merchant
			}
			r := send(t, srv, tt.last, id, m)
			if r.status != tt.want || r.body.StatusCode != tt.want || r.body.GatewayResponse.Code != tt.wantCode || rc(r.body) != tt.wantRC {
				t.Errorf("%s = HTTP %d status_code %d code %s response_code %d, want %d %d %s %d; body %s",
					tt.last.op, r.status, r.body.StatusCode, r.body.GatewayResponse.Code, rc(r.body), tt.want, tt.want, tt.wantCode, tt.wantRC, r.raw)
			}
			if tt.want == 201 {
				if r.body.PaymentDetails.Amount != tt.wantAmt || !r.body.Success || r.body.PaymentDetails.Card.Number != testCard {
					t.Errorf("answer amount %d success %v card %q, want %d true %s", r.body.PaymentDetails.Amount, r.body.Success, r.body.PaymentDetails.Card.Number, tt.wantAmt, testCard)
				}
				if id := r.body.TransactionDetails.ID; id == auth || !uuidRE.MatchString(id) {
					t.Errorf("operation id = %q, want a new UUID (authorisation %s)", id, auth)
				}
			} else if r.body.Success || r.body.GatewayResponse.Type != "ERROR" {
				t.Errorf("refusal success %v type %q, want false ERROR", r.body.Success, r.body.GatewayResponse.Type)
			}
			a, _ := sb.Authorisation(auth)
			if a.State != tt.state || a.CapturedAmount != tt.captured {
				t.Errorf("state = %s captured %d, want %s %d", a.State, a.CapturedAmount, tt.state, tt.captured)
			}
			if got := len(sb.Applied(auth)); got != tt.applied {
				t.Errorf("len(Applied) = %d, want %d", got, tt.applied)
			}
			if got := len(sb.Ledger()); got != tt.applied {
				t.Errorf("len(Ledger) = %d, want %d", got, tt.applied)
			}
		})
	}
}

func send(t *testing.T, srv *httptest.Server, s step, id, m string) reply {
	t.Helper()
	body := map[string]any{"transactionId": id, "merchant_id": m}
	if s.op == gateway.Capture && s.amount != nil {
		body["amount"] = s.amount
	}
	return do(t, srv, http.MethodPost, docPrefix+string(s.op), body, nil)
}

func TestLedgerRecordsAppliedOperations(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	a1 := sb.Authorise(merchant, 1000, "JPY")
	a2 := sb.Authorise(merchant, 2500, "EUR")
	r1 := capture(t, srv, a1, 700)
	r2 := void(t, srv, a2)
	capture(t, srv, a1, 300) // refused: already captured
	want := []sandbox.Operation{
		{ID: r1.body.TransactionDetails.ID, MerchantID: merchant, AuthorisationID: a1, Operation: gateway.Capture, Amount: 700, Currency: "JPY"},
		{ID: r2.body.TransactionDetails.ID, MerchantID: merchant, AuthorisationID: a2, Operation: gateway.Void, Amount: 2500, Currency: "EUR"},
	}
	got := sb.Ledger()
	if len(got) != len(want) {
		t.Fatalf("Ledger() = %+v, want %+v", got, want)
	}
	for i := range want {
		g := got[i]
		if g.Time.IsZero() {
			t.Errorf("Ledger()[%d].Time is zero", i)
		}
		g.Time = time.Time{}
		if g != want[i] {
			t.Errorf("Ledger()[%d] = %+v, want %+v", i, g, want[i])
		}
	}
	r := do(t, srv, http.MethodGet, "/_sandbox/ledger", nil, nil)
	var overHTTP []sandbox.Operation
	if err := json.Unmarshal(r.raw, &overHTTP); err != nil || len(overHTTP) != 2 || overHTTP[0].ID != want[0].ID {
		t.Errorf("GET /_sandbox/ledger = %d %s (%v), want the two operations", r.status, r.raw, err)
	}
}

func TestGCCollectsAndKeepsTheLedger(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	auth := sb.Authorise(merchant, 1000, "JPY")
	capture(t, srv, auth, 700)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if r := do(t, srv, http.MethodPost, "/_sandbox/gc", nil, nil); r.err != nil || r.status != http.StatusNoContent {
		t.Fatalf("POST /_sandbox/gc = %d %s (%v), want 204", r.status, r.raw, r.err)
	}
	runtime.ReadMemStats(&after)
	if after.NumGC <= before.NumGC {
		t.Errorf("NumGC %d after POST /_sandbox/gc, %d before: no collection ran", after.NumGC, before.NumGC)
	}
	if got := sb.Ledger(); len(got) != 1 || got[0].AuthorisationID != auth {
		t.Errorf("Ledger() after the collection = %+v, want the capture of %s", got, auth)
	}
	r := do(t, srv, http.MethodGet, "/_sandbox/gc", nil, nil)
	if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Errorf("GET /_sandbox/gc = %d, Allow %q, want 405 and Allow POST", r.status, r.header.Get("Allow"))
	}
}

func TestStatusAnswersEachState(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	open := sb.Authorise(merchant, 1000, "JPY")
	partial := sb.Authorise(merchant, 1000, "JPY")
	full := sb.Authorise(merchant, 1000, "JPY")
	voided := sb.Authorise(merchant, 1000, "JPY")
	capOp := capture(t, srv, partial, 600).body.TransactionDetails.ID
	capture(t, srv, full, 1000)
	voidOp := void(t, srv, voided).body.TransactionDetails.ID

	tests := []struct {
		name   string
		id     string
		want   int
		txType string
		amount int64
	}{
		{"authorised", open, 200, "PRE_AUTH", 1000},
		{"partially captured", partial, 200, "CAPTURE", 600},
		{"captured", full, 200, "CAPTURE", 1000},
		{"voided", voided, 200, "VOID", 1000},
		{"capture operation id", capOp, 200, "CAPTURE", 600},
		{"void operation id", voidOp, 200, "VOID", 1000},
		{"unknown", "5b4f3cf4-0000-4000-8000-000000000000", 404, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := status(t, srv, tt.id)
			if r.status != tt.want || r.body.TransactionType != tt.txType || r.body.PaymentDetails.Amount != tt.amount {
				t.Errorf("status(%s) = %d %s %d, want %d %s %d; body %s",
					tt.id, r.status, r.body.TransactionType, r.body.PaymentDetails.Amount, tt.want, tt.txType, tt.amount, r.raw)
			}
			if tt.want == 200 && (!r.body.Success || r.body.TransactionDetails.ID != tt.id) {
				t.Errorf("status(%s) success %v id %s, want true %s", tt.id, r.body.Success, r.body.TransactionDetails.ID, tt.id)
			}
		})
	}
	if got := sb.Calls(sandbox.EndpointStatus); got != len(tests) {
		t.Errorf("Calls(status) = %d, want %d", got, len(tests))
	}
}

func TestCredentials(t *testing.T) {
	tests := []struct {
		name   string
		opts   sandbox.Options
		header map[string]string
		want   int
	}{
		{"none required", sandbox.Options{}, nil, 201},
		{"both right", sandbox.Options{APIKey: "k1", XAPIKey: "k2"}, map[string]string{"Authorization": "Basic k1", "x-api-key": "k2"}, 201},
		{"missing", sandbox.Options{APIKey: "k1", XAPIKey: "k2"}, nil, 401},
		{"no Basic", sandbox.Options{APIKey: "k1", XAPIKey: "k2"}, map[string]string{"Authorization": "k1", "x-api-key": "k2"}, 401},
		{"wrong x-api-key", sandbox.Options{APIKey: "k1", XAPIKey: "k2"}, map[string]string{"Authorization": "Basic k1", "x-api-key": "k1"}, 401},
		{"only x-api-key required", sandbox.Options{XAPIKey: "k2"}, map[string]string{"x-api-key": "k2"}, 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, srv := server(t, tt.opts)
			auth := sb.Authorise(merchant, 1000, "JPY")
			r := do(t, srv, http.MethodPost, docPrefix+"capture", map[string]any{"transactionId": auth, "amount": 1000, "merchant_id": merchant}, tt.header)
			if r.status != tt.want {
				t.Fatalf("capture = %d %s, want %d", r.status, r.raw, tt.want)
			}
			if tt.want == 401 && (r.body.GatewayResponse.Code != "ERR0401" || r.body.StatusCode != 401 || len(sb.Ledger()) != 0) {
				t.Errorf("401 answer = %s, ledger %v; want ERR0401, nothing applied", r.raw, sb.Ledger())
			}
		})
	}
}

func TestRouting(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	tests := []struct {
		method, path string
		want         int
		endpoint     string
	}{
		{http.MethodPost, "/api/v1/api/v1/server-to-server-interface/capture", 400, sandbox.EndpointCapture},
		{http.MethodPost, "/api/v1/server-to-server-interface/capture", 400, sandbox.EndpointCapture},
		{http.MethodPost, "/gw/x/api/v1/server-to-server-interface/void", 400, sandbox.EndpointVoid},
		{http.MethodPost, "/api/v1/server-to-server-interface/payment", 400, sandbox.EndpointPayment},
		{http.MethodGet, "/api/v1/server-to-server-interface/capture", 405, sandbox.EndpointCapture},
		{http.MethodPost, "/api/v1/server-to-server-interface/transaction/status/x", 405, sandbox.EndpointStatus},
		{http.MethodPost, "/api/v1/server-to-server-interface/refund", 404, ""},
		{http.MethodPost, "/capture", 404, ""},
	}
	for _, tt := range tests {
		before := 0
		if tt.endpoint != "" {
			before = sb.Calls(tt.endpoint)
		}
		r := do(t, srv, tt.method, tt.path, "{}", nil)
		if r.status != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, r.status, tt.want)
		}
		if tt.endpoint != "" {
			if got := sb.Calls(tt.endpoint) - before; got != 1 {
				t.Errorf("%s %s counted %d calls of %s, want 1", tt.method, tt.path, got, tt.endpoint)
			}
		}
	}
}

// result is what a client saw of one faulted call.
type result struct {
	status     int
	retryAfter string
	code       string
	rc         int
	dropped    bool
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name    string
		faults  sandbox.Faults
		op      gateway.Operation
		want    result
		applied int
	}{
		{"500", sandbox.Faults{ErrorRate: 1, ErrorStatus: 500}, gateway.Capture, result{status: 500, code: "ERR0500", rc: -1}, 0},
		{"502", sandbox.Faults{ErrorRate: 1, ErrorStatus: 502}, gateway.Capture, result{status: 502, code: "ERR0502", rc: -1}, 0},
		{"503", sandbox.Faults{ErrorRate: 1, ErrorStatus: 503}, gateway.Void, result{status: 503, code: "ERR0503", rc: -1}, 0},
		{"504", sandbox.Faults{ErrorRate: 1, ErrorStatus: 504}, gateway.Void, result{status: 504, code: "ERR0504", rc: -1}, 0},
		{"429", sandbox.Faults{RateLimitRate: 1, RetryAfter: 2500 * time.Millisecond}, gateway.Capture, result{status: 429, retryAfter: "3", code: "ERR0429", rc: -1}, 0},
		{"429 default wait", sandbox.Faults{RateLimitRate: 1}, gateway.Capture, result{status: 429, retryAfter: "1", code: "ERR0429", rc: -1}, 0},
		{"down", sandbox.Faults{Down: true}, gateway.Capture, result{dropped: true}, 0},
		{"apply then drop capture", sandbox.Faults{ApplyThenDropRate: 1}, gateway.Capture, result{dropped: true}, 1},
		{"apply then drop void", sandbox.Faults{ApplyThenDropRate: 1}, gateway.Void, result{dropped: true}, 1},
		{"zero faults", sandbox.Faults{}, gateway.Capture, result{status: 201, code: "INFO0001", rc: 0}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, srv := server(t, sandbox.Options{})
			auth := sb.Authorise(merchant, 1000, "JPY")
			sb.SetFaults(tt.faults)
			r := send(t, srv, step{tt.op, 1000}, auth, merchant)
			got := result{status: r.status, code: r.body.GatewayResponse.Code, rc: rc(r.body), dropped: r.err != nil}
			if r.header != nil {
				got.retryAfter = r.header.Get("Retry-After")
			}
			if got.dropped {
				got.status, got.code, got.rc = 0, "", 0
			}
			if got != tt.want {
				t.Errorf("%s with %+v = %+v (err %v), want %+v", tt.op, tt.faults, got, r.err, tt.want)
			}
			if n := len(sb.Applied(auth)); n != tt.applied {
				t.Errorf("applied %d operations, want %d", n, tt.applied)
			}
			if n := sb.Calls(string(tt.op)); n != 1 {
				t.Errorf("Calls(%s) = %d, want 1", tt.op, n)
			}
		})
	}
}

func TestErrorRatePicksA5xx(t *testing.T) {
	sb, srv := server(t, sandbox.Options{Seed: 7})
	sb.SetFaults(sandbox.Faults{ErrorRate: 1})
	seen := map[int]bool{}
	for range 40 {
		r := capture(t, srv, "00000000-0000-0000-0000-000000000000", 1)
		switch r.status {
		case 500, 502, 503, 504:
			seen[r.status] = true
		default:
			t.Fatalf("capture with ErrorRate 1 = %d, want 500, 502, 503 or 504", r.status)
		}
	}
	if len(seen) != 4 {
		t.Errorf("40 faulted calls answered %v, want all of 500, 502, 503, 504", seen)
	}
}

func TestUnclearAppliesOnACoinToss(t *testing.T) {
	sb, srv := server(t, sandbox.Options{Seed: 3})
	sb.SetFaults(sandbox.Faults{UnclearRate: 1})
	const n = 40
	applied := 0
	for range n {
		auth := sb.Authorise(merchant, 1000, "JPY")
		r := capture(t, srv, auth, 1000)
		if r.status != 200 || r.body.Success || rc(r.body) != 680 || r.body.TransactionType != "CAPTURE" {
			t.Fatalf("capture with UnclearRate 1 = %d %s, want 200 success false response_code 680", r.status, r.raw)
		}
		a, _ := sb.Authorisation(auth)
		ops := len(sb.Applied(auth))
		if (a.State == sandbox.StateCaptured) != (ops == 1) {
			t.Fatalf("state %s with %d applied operations", a.State, ops)
		}
		applied += ops
	}
	if applied == 0 || applied == n {
		t.Errorf("%d of %d unclear captures applied, want some but not all", applied, n)
	}
}

func TestRefusalsAreNotFaultedAfterTheRequestIsRead(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	sb.SetFaults(sandbox.Faults{UnclearRate: 1, ApplyThenDropRate: 1})
	r := capture(t, srv, "00000000-0000-0000-0000-000000000000", 1000)
	if r.err != nil || r.status != 404 {
		t.Errorf("capture of unknown transaction = %d %v, want 404", r.status, r.err)
	}
}

func TestStatusIsFaultedOnlyWithFaultStatus(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	auth := sb.Authorise(merchant, 1000, "JPY")
	sb.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 502})
	if r := status(t, srv, auth); r.status != 200 {
		t.Errorf("status with ErrorRate 1 = %d, want 200", r.status)
	}
	sb.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: 502, FaultStatus: true})
	if r := status(t, srv, auth); r.status != 502 {
		t.Errorf("status with ErrorRate 1 and FaultStatus = %d, want 502", r.status)
	}
}

func TestLatency(t *testing.T) {
	sb, srv := server(t, sandbox.Options{Latency: 20 * time.Millisecond})
	sb.SetFaults(sandbox.Faults{Latency: 60 * time.Millisecond})
	auth := sb.Authorise(merchant, 1000, "JPY")
	tests := []struct {
		name string
		call func() reply
		min  time.Duration
	}{
		{"capture", func() reply { return capture(t, srv, auth, 1000) }, 80 * time.Millisecond},
		{"status", func() reply { return status(t, srv, auth) }, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		start := time.Now()
		tt.call()
		if got := time.Since(start); got < tt.min {
			t.Errorf("%s took %s, want at least %s", tt.name, got, tt.min)
		}
	}
}

func TestSeedMakesFaultsDeterministic(t *testing.T) {
	run := func(seed int64) string {
		sb, srv := server(t, sandbox.Options{Seed: seed})
		sb.SetFaults(sandbox.Faults{ErrorRate: 0.5, RateLimitRate: 0.2})
		var b strings.Builder
		for range 30 {
			fmt.Fprintf(&b, "%d ", capture(t, srv, "00000000-0000-0000-0000-000000000000", 1).status)
		}
		return b.String()
	}
	a, b := run(42), run(42)
	if a != b {
		t.Errorf("seed 42 gave %q then %q, want the same", a, b)
	}
	if c := run(43); c == a {
		t.Errorf("seeds 42 and 43 both gave %q", a)
	}
}

func TestFaultsOverHTTP(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	tests := []struct {
		name string
		body string
		want int
		got  sandbox.Faults
	}{
		{"set", `{"error_rate":0.5,"error_status":503,"rate_limit_rate":0.1,"retry_after":"2s","latency":"15ms","apply_then_drop_rate":0.25,"unclear_rate":0.05,"down":true,"fault_status":true}`, 200,
			sandbox.Faults{ErrorRate: 0.5, ErrorStatus: 503, RateLimitRate: 0.1, RetryAfter: 2 * time.Second, Latency: 15 * time.Millisecond, ApplyThenDropRate: 0.25, UnclearRate: 0.05, Down: true, FaultStatus: true}},
		{"rate above 1", `{"error_rate":1.5}`, 400, sandbox.Faults{}},
		{"unknown field", `{"eror_rate":1}`, 400, sandbox.Faults{}},
		{"bad duration", `{"latency":"soon"}`, 400, sandbox.Faults{}},
		{"status not 5xx", `{"error_status":404}`, 400, sandbox.Faults{}},
		{"clear", `{}`, 200, sandbox.Faults{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb.SetFaults(sandbox.Faults{})
			r := do(t, srv, http.MethodPost, "/_sandbox/faults", tt.body, nil)
			if r.status != tt.want || sb.Faults() != tt.got {
				t.Errorf("POST /_sandbox/faults %s = %d, faults %+v; want %d, %+v", tt.body, r.status, sb.Faults(), tt.want, tt.got)
			}
		})
	}
	sb.SetFaults(sandbox.Faults{ErrorRate: 1, RetryAfter: time.Second})
	r := do(t, srv, http.MethodGet, "/_sandbox/faults", nil, nil)
	var got sandbox.Faults
	if err := json.Unmarshal(r.raw, &got); err != nil || got != sb.Faults() {
		t.Errorf("GET /_sandbox/faults = %s (%v), want %+v", r.raw, err, sb.Faults())
	}
}

func TestConcurrentCapturesApplyOnce(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	const auths, perAuth = 8, 16
	ids := make([]string, auths)
	for i := range ids {
		ids[i] = sb.Authorise(merchant, 1000, "JPY")
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	for _, id := range ids {
		for j := range perAuth {
			wg.Go(func() {
				var r reply
				if j%2 == 0 {
					r = send(t, srv, step{gateway.Capture, 1000}, id, merchant)
				} else {
					r = send(t, srv, step{op: gateway.Void}, id, merchant)
				}
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
				status(t, srv, id)
			})
		}
	}
	for range auths {
		wg.Go(func() { sb.Authorise(merchant, 1, "JPY") })
	}
	wg.Wait()
	if statuses[201] != auths || statuses[412] != auths*(perAuth-1) {
		t.Errorf("answers = %v, want %d×201 and %d×412", statuses, auths, auths*(perAuth-1))
	}
	for _, id := range ids {
		if n := len(sb.Applied(id)); n != 1 {
			t.Errorf("Applied(%s) has %d operations, want 1", id, n)
		}
	}
	if got, want := sb.Calls(sandbox.EndpointCapture)+sb.Calls(sandbox.EndpointVoid), auths*perAuth; got != want {
		t.Errorf("capture+void calls = %d, want %d", got, want)
	}
}

func TestStart(t *testing.T) {
	sb := sandbox.New(sandbox.Options{APIKey: "k", XAPIKey: "x"})
	base, stop, err := sb.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") || !strings.HasSuffix(base, "/api/v1") {
		t.Errorf("Start base URL = %q, want http://127.0.0.1:PORT/api/v1", base)
	}
	auth := sb.Authorise(merchant, 1000, "JPY")
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/server-to-server-interface/transaction/status/"+auth, nil)
	req.Header.Set("Authorization", "Basic k")
	req.Header.Set("x-api-key", "x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("status over Start's listener: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status = %d, want 200", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
	if _, err := http.Get(base + "/_sandbox/faults"); err == nil {
		t.Errorf("GET after stop succeeded, want a connection error")
	}
	if _, _, err := sb.Start("256.0.0.1:0"); err == nil {
		t.Errorf("Start(bad address) error = %v, want an error", err)
	}
}
