package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/sandbox"
)

const (
	sibsToken  = "sibs-bearer"
	sibsClient = "sibs-client"
)

var sibsHeaders = map[string]string{"Authorization": "Bearer " + sibsToken, "x-ibm-client-id": sibsClient}

// sibsWire is the part of a SIBS answer the tests read.
type sibsWire struct {
	ReturnStatus struct {
		StatusCode        string `json:"statusCode"`
		StatusMsg         string `json:"statusMsg"`
		StatusDescription string `json:"statusDescription"`
	} `json:"returnStatus"`
	PaymentStatus        string `json:"paymentStatus"`
	PaymentType          string `json:"paymentType"`
	TransactionID        string `json:"transactionID"`
	TransactionTimestamp string `json:"transactionTimestamp"`
	Amount               *struct {
		Value    json.Number `json:"value"`
		Currency string      `json:"currency"`
	} `json:"amount"`
	Operations *[]struct {
		TransactionID         string `json:"transactionID"`
		PaymentType           string `json:"paymentType"`
		PaymentStatus         string `json:"paymentStatus"`
		MerchantTransactionID string `json:"merchantTransactionId"`
		Amount                struct {
			Value    json.Number `json:"value"`
			Currency string      `json:"currency"`
		} `json:"amount"`
	} `json:"operations"`
}

func sibsServer(t *testing.T) (*sandbox.Sandbox, *httptest.Server) {
	t.Helper()
	return server(t, sandbox.Options{SIBSToken: sibsToken, SIBSClientID: sibsClient, Seed: 3})
}

func sibsDo(t *testing.T, srv *httptest.Server, method, path string, body any) (reply, sibsWire) {
	t.Helper()
	r := do(t, srv, method, path, body, sibsHeaders)
	var w sibsWire
	if r.err == nil && len(r.raw) > 0 {
		if err := json.Unmarshal(r.raw, &w); err != nil {
			t.Fatalf("%s %s: answer %q is not JSON: %v", method, path, r.raw, err)
		}
	}
	return r, w
}

// sibsBody is a capture or cancellation body as the adapter sends it.
func sibsBody(id, ref, value, currency string) map[string]any {
	return map[string]any{
		"merchant": map[string]any{"terminalId": 24, "channel": "web", "merchantTransactionId": ref},
		"transaction": map[string]any{
			"transactionTimestamp": "2022-05-29T18:23:41.367Z",
			"description":          "This is a cancellation request",
			"amount":               map[string]any{"value": json.Number(value), "currency": currency},
			"originalTransaction":  map[string]any{"id": id, "datetime": "2022-05-29T17:23:36.105Z"},
		},
	}
}

func sibsOp(t *testing.T, srv *httptest.Server, id, op, ref, value, currency string) (reply, sibsWire) {
	t.Helper()
	return sibsDo(t, srv, http.MethodPost, "/api/v1/payments/"+url.PathEscape(id)+"/"+op, sibsBody(id, ref, value, currency))
}

func TestSIBSStateMachine(t *testing.T) {
	sb, srv := sibsServer(t)
	auth := sb.Authorise(merchant, 10_000, "EUR")
	steps := []struct {
		op, ref, value      string
		wantPS              string
		wantState           sandbox.State
		wantCapt, wantVoid  int64
		wantValue, wantType string
	}{
		{"capture", "c1", "19.99", "Success", sandbox.StatePartiallyCaptured, 1999, 0, "19.99", "CAPT"},
		{"capture", "c2", "30.01", "Success", sandbox.StatePartiallyCaptured, 5000, 0, "30.01", "CAPT"},
		{"capture", "c3", "50.01", "Declined", sandbox.StatePartiallyCaptured, 5000, 0, "50.01", "CAPT"},
		{"cancellation", "v1", "10", "Success", sandbox.StatePartiallyCaptured, 5000, 1000, "10", "CNCL"},
		{"capture", "c4", "40", "Success", sandbox.StateCaptured, 9000, 1000, "40", "CAPT"},
		{"cancellation", "v2", "0.01", "Declined", sandbox.StateCaptured, 9000, 1000, "0.01", "CNCL"},
		{"capture", "c5", "0.01", "Declined", sandbox.StateCaptured, 9000, 1000, "0.01", "CAPT"},
	}
	for i, s := range steps {
		r, w := sibsOp(t, srv, auth, s.op, s.ref, s.value, "EUR")
		if r.status != http.StatusOK || w.ReturnStatus.StatusCode != "000" || w.PaymentStatus != s.wantPS || w.PaymentType != s.wantType {
			t.Errorf("step %d %s %s = HTTP %d %s %s %s, want 200 000 %s %s; %s", i, s.op, s.value, r.status,
				w.ReturnStatus.StatusCode, w.PaymentStatus, w.PaymentType, s.wantPS, s.wantType, r.raw)
		}
		if w.Amount == nil || w.Amount.Value.String() != s.wantValue || w.Amount.Currency != "EUR" {
			t.Errorf("step %d: amount = %+v, want %s EUR", i, w.Amount, s.wantValue)
		}
		if s.wantPS == "Success" && w.TransactionID == "" {
			t.Errorf("step %d: no transactionID", i)
		}
		a, _ := sb.Authorisation(auth)
		if a.State != s.wantState || a.CapturedAmount != s.wantCapt || a.VoidedAmount != s.wantVoid {
			t.Errorf("step %d: authorisation %s captured %d voided %d, want %s %d %d", i, a.State, a.CapturedAmount, a.VoidedAmount,
				s.wantState, s.wantCapt, s.wantVoid)
		}
	}

	// The status lists the four applied operations with their references.
	_, w := sibsDo(t, srv, http.MethodGet, "/api/v1/payments/"+auth+"/status", nil)
	if w.ReturnStatus.StatusCode != "000" || w.PaymentStatus != "Success" || w.PaymentType != "AUTH" || w.TransactionID != auth ||
		w.Amount == nil || w.Amount.Value.String() != "100" || w.Operations == nil {
		t.Fatalf("status = %+v, want 000 Success AUTH of 100 EUR with operations", w)
	}
	var got []string
	for _, o := range *w.Operations {
		got = append(got, fmt.Sprintf("%s:%s:%s:%s", o.PaymentType, o.PaymentStatus, o.MerchantTransactionID, o.Amount.Value))
	}
	if want := "CAPT:Success:c1:19.99 CAPT:Success:c2:30.01 CNCL:Success:v1:10 CAPT:Success:c4:40"; strings.Join(got, " ") != want {
		t.Errorf("operations = %s, want %s", strings.Join(got, " "), want)
	}
	// Asked with an operation's id, the status is that operation.
	_, op := sibsDo(t, srv, http.MethodGet, "/api/v1/payments/"+(*w.Operations)[0].TransactionID+"/status", nil)
	if op.PaymentType != "CAPT" || op.Amount == nil || op.Amount.Value.String() != "19.99" {
		t.Errorf("status of a capture = %+v, want CAPT 19.99", op)
	}
	if ledger := sb.Applied(auth); len(ledger) != 4 || ledger[0].Reference != "c1" {
		t.Errorf("ledger = %+v, want 4 operations, the first c1", ledger)
	}
}

func TestSIBSPartialCancellationThenFull(t *testing.T) {
	sb, srv := sibsServer(t)
	auth := sb.Authorise(merchant, 1_000, "JPY")
	if _, w := sibsOp(t, srv, auth, "cancellation", "v1", "300", "JPY"); w.PaymentStatus != "Success" {
		t.Fatalf("partial cancellation = %s", w.PaymentStatus)
	}
	if a, _ := sb.Authorisation(auth); a.State != sandbox.StateAuthorised || a.VoidedAmount != 300 {
		t.Errorf("after a partial cancellation: %s voided %d, want authorised, 300", a.State, a.VoidedAmount)
	}
	// PaymentOptions sees the remainder only.
	if r := capture(t, srv, auth, 800); r.status != http.StatusBadRequest {
		t.Errorf("PaymentOptions capture above the open 700 = %d, want 400", r.status)
	}
	if _, w := sibsOp(t, srv, auth, "cancellation", "v2", "700", "JPY"); w.PaymentStatus != "Success" {
		t.Fatalf("cancellation of the rest = %s", w.PaymentStatus)
	}
	if a, _ := sb.Authorisation(auth); a.State != sandbox.StateVoided || a.VoidedAmount != 1_000 {
		t.Errorf("after cancelling the rest: %s voided %d, want voided 1000", a.State, a.VoidedAmount)
	}
	if r := status(t, srv, auth); r.body.TransactionType != "VOID" {
		t.Errorf("PaymentOptions status = %s, want VOID", r.body.TransactionType)
	}
}

func TestSIBSRefusals(t *testing.T) {
	sb, srv := sibsServer(t)
	auth := sb.Authorise(merchant, 1_000, "EUR")
	body := sibsBody(auth, "r", "1", "EUR")
	tests := []struct {
		name    string
		method  string
		path    string
		body    any
		headers map[string]string
		status  int
		code    string
		ps      string
	}{
		{"unknown transaction", http.MethodPost, "/api/v1/payments/nope/capture", sibsBody("nope", "r", "1", "EUR"), sibsHeaders, 404, "E0404", ""},
		{"no token", http.MethodPost, "/api/v1/payments/" + auth + "/capture", body, nil, 401, "E0401", ""},
		{"wrong client id", http.MethodPost, "/api/v1/payments/" + auth + "/capture", body,
			map[string]string{"Authorization": "Bearer " + sibsToken, "x-ibm-client-id": "x"}, 401, "E0401", ""},
		{"GET capture", http.MethodGet, "/api/v1/payments/" + auth + "/capture", nil, sibsHeaders, 405, "E0405", ""},
		{"POST status", http.MethodPost, "/api/v1/payments/" + auth + "/status", nil, sibsHeaders, 405, "E0405", ""},
		{"not JSON", http.MethodPost, "/api/v1/payments/" + auth + "/capture", `{"merchant":`, sibsHeaders, 400, "E0400", ""},
		{"unknown currency", http.MethodPost, "/api/v1/payments/" + auth + "/capture", sibsBody(auth, "r", "1", "XXX"), sibsHeaders, 400, "E0400", ""},
		{"too many decimals", http.MethodPost, "/api/v1/payments/" + auth + "/capture", sibsBody(auth, "r", "0.001", "EUR"), sibsHeaders, 400, "E0400", ""},
		{"zero", http.MethodPost, "/api/v1/payments/" + auth + "/capture", sibsBody(auth, "r", "0", "EUR"), sibsHeaders, 400, "E0400", ""},
		{"other original id", http.MethodPost, "/api/v1/payments/" + auth + "/capture", sibsBody("other", "r", "1", "EUR"), sibsHeaders, 400, "E0400", ""},
		{"no reference", http.MethodPost, "/api/v1/payments/" + auth + "/cancellation", sibsBody(auth, "", "1", "EUR"), sibsHeaders, 400, "E0400", ""},
		{"another currency", http.MethodPost, "/api/v1/payments/" + auth + "/capture", sibsBody(auth, "r", "1", "PLN"), sibsHeaders, 200, "000", "Declined"},
		{"unknown status", http.MethodGet, "/api/v1/payments/nope/status", nil, sibsHeaders, 404, "E0404", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, srv, tt.method, tt.path, tt.body, tt.headers)
			var w sibsWire
			_ = json.Unmarshal(r.raw, &w)
			if r.status != tt.status || w.ReturnStatus.StatusCode != tt.code || w.PaymentStatus != tt.ps {
				t.Errorf("%s %s = HTTP %d %s %q, want %d %s %q; %s", tt.method, tt.path, r.status, w.ReturnStatus.StatusCode,
					w.PaymentStatus, tt.status, tt.code, tt.ps, r.raw)
			}
		})
	}
	if ops := sb.Ledger(); len(ops) != 0 {
		t.Errorf("ledger = %+v, want nothing applied", ops)
	}
}

// TestSIBSRouting: the SIBS and PaymentOptions paths do not collide, with
// any prefix, and an id that escapes to a PaymentOptions path stays a SIBS
// id.
func TestSIBSRouting(t *testing.T) {
	sb, srv := sibsServer(t)
	tests := []struct {
		method, path string
		endpoint     string
	}{
		{http.MethodGet, "/api/v1/payments/x/status", sandbox.EndpointSIBSStatus},
		{http.MethodGet, "/prefix/api/v1/payments/x/status", sandbox.EndpointSIBSStatus},
		{http.MethodPost, "/api/v1/payments/x/capture", sandbox.EndpointSIBSCapture},
		{http.MethodPost, "/api/v1/payments/x/cancellation", sandbox.EndpointSIBSCancellation},
		{http.MethodPost, "/api/v1/payments", sandbox.EndpointSIBSPayment},
		{http.MethodGet, "/api/v1/payments/" + url.PathEscape("/api/v1/server-to-server-interface/capture") + "/status", sandbox.EndpointSIBSStatus},
		{http.MethodPost, "/api/v1/server-to-server-interface/capture", sandbox.EndpointCapture},
		{http.MethodPost, "/api/v1/api/v1/server-to-server-interface/void", sandbox.EndpointVoid},
		{http.MethodGet, "/api/v1/api/v1/server-to-server-interface/transaction/status/" + url.PathEscape("a/api/v1/payments/x/status"), sandbox.EndpointStatus},
	}
	for _, tt := range tests {
		before := sb.Calls(tt.endpoint)
		do(t, srv, tt.method, tt.path, "{}", sibsHeaders)
		if got := sb.Calls(tt.endpoint) - before; got != 1 {
			t.Errorf("%s %s: Calls(%s) grew by %d, want 1", tt.method, tt.path, tt.endpoint, got)
		}
	}
	if r := do(t, srv, http.MethodGet, "/api/v1/payments/x/refund", nil, sibsHeaders); r.status != http.StatusNotFound {
		t.Errorf("unknown SIBS operation = %d, want 404", r.status)
	}
}

// TestSIBSPaymentSharesTheStore: an authorisation made through either
// gateway's payment endpoint, or Authorise, serves both gateways.
func TestSIBSPaymentSharesTheStore(t *testing.T) {
	sb, srv := sibsServer(t)
	pay := map[string]any{
		"merchant": map[string]any{"terminalId": 24, "channel": "web", "merchantTransactionId": "order-1"},
		"transaction": map[string]any{"transactionTimestamp": "2022-05-29T17:23:36.105Z", "description": "order 1", "paymentType": "AUTH",
			"amount": map[string]any{"value": json.Number("12.5"), "currency": "EUR"}},
	}
	r, w := sibsDo(t, srv, http.MethodPost, "/api/v1/payments", pay)
	if r.status != 200 || w.PaymentStatus != "Success" || w.PaymentType != "AUTH" || w.TransactionID == "" {
		t.Fatalf("SIBS payment = %d %+v", r.status, w)
	}
	a, ok := sb.Authorisation(w.TransactionID)
	if !ok || a.Amount != 1250 || a.Currency != "EUR" || a.MerchantID != "24" {
		t.Errorf("Authorisation = %+v, want 1250 EUR for merchant 24", a)
	}
	// PaymentOptions captures it, under the terminal's id as merchant.
	po := do(t, srv, http.MethodPost, docPrefix+"capture", map[string]any{"transactionId": w.TransactionID, "amount": 1250, "merchant_id": "24"},
		map[string]string{"Authorization": "Basic k", "x-api-key": "x"})
	if po.status != http.StatusCreated {
		t.Errorf("PaymentOptions capture of a SIBS authorisation = %d, want 201; %s", po.status, po.raw)
	}
	// SIBS cancels part of one made by Authorise.
	auth := sb.Authorise(merchant, 500, "PLN")
	if _, w := sibsOp(t, srv, auth, "cancellation", "v", "2.5", "PLN"); w.PaymentStatus != "Success" {
		t.Errorf("SIBS cancellation of an Authorise authorisation = %s", w.PaymentStatus)
	}
}

func TestSIBSFaults(t *testing.T) {
	sb, srv := sibsServer(t)
	tests := []struct {
		name     string
		faults   sandbox.Faults
		path     string
		wantErr  bool
		status   int
		code, ps string
		mayApply bool
		retryHdr string
	}{
		{"rate limit", sandbox.Faults{RateLimitRate: 1, RetryAfter: 2500 * time.Millisecond}, "capture", false, 429, "E0429", "", false, "3"},
		{"502", sandbox.Faults{ErrorRate: 1, ErrorStatus: 502}, "cancellation", false, 502, "E0502", "Error", false, ""},
		{"down", sandbox.Faults{Down: true}, "capture", true, 0, "", "", false, ""},
		{"unclear: 000 Pending", sandbox.Faults{UnclearRate: 1}, "capture", false, 200, "000", "Pending", true, ""},
		{"apply then drop", sandbox.Faults{ApplyThenDropRate: 1}, "cancellation", true, 0, "", "", true, ""},
		{"status not faulted", sandbox.Faults{ErrorRate: 1}, "status", false, 200, "000", "Success", false, ""},
		{"status faulted", sandbox.Faults{ErrorRate: 1, ErrorStatus: 500, FaultStatus: true}, "status", false, 500, "E0500", "Error", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := sb.Authorise(merchant, 1_000, "EUR")
			sb.SetFaults(tt.faults)
			defer sb.SetFaults(sandbox.Faults{})
			var r reply
			if tt.path == "status" {
				r = do(t, srv, http.MethodGet, "/api/v1/payments/"+auth+"/status", nil, sibsHeaders)
			} else {
				r = do(t, srv, http.MethodPost, "/api/v1/payments/"+auth+"/"+tt.path, sibsBody(auth, "f", "1", "EUR"), sibsHeaders)
			}
			if tt.wantErr {
				if r.err == nil {
					t.Errorf("answer = %d %s, want the connection dropped", r.status, r.raw)
				}
			} else {
				var w sibsWire
				_ = json.Unmarshal(r.raw, &w)
				if r.err != nil || r.status != tt.status || w.ReturnStatus.StatusCode != tt.code || w.PaymentStatus != tt.ps {
					t.Errorf("answer = %d %s %q (%v), want %d %s %q", r.status, w.ReturnStatus.StatusCode, w.PaymentStatus, r.err, tt.status, tt.code, tt.ps)
				}
				if got := r.header.Get("Retry-After"); got != tt.retryHdr {
					t.Errorf("Retry-After = %q, want %q", got, tt.retryHdr)
				}
			}
			if n := len(sb.Applied(auth)); n > 1 || !tt.mayApply && n != 0 {
				t.Errorf("applied %d operations, want none (or one when the fault may apply)", n)
			}
		})
	}
}

func TestSIBSBaseURL(t *testing.T) {
	sb := sandbox.New(sandbox.Options{})
	if got := sb.SIBSBaseURL(); got != "" {
		t.Errorf("SIBSBaseURL before Start = %q, want empty", got)
	}
	base, stop, err := sb.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop(context.Background()) })
	got := sb.SIBSBaseURL()
	if want := strings.TrimSuffix(base, "/api/v1"); got != want || !strings.HasPrefix(got, "http://127.0.0.1:") {
		t.Errorf("SIBSBaseURL = %q, want %q", got, want)
	}
	auth := sb.Authorise(merchant, 100, "EUR")
	resp, err := http.Get(got + "/api/v1/payments/" + auth + "/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET status = %d, want 200", resp.StatusCode)
	}
	if _, ok := gateway.CurrencyExponent("EUR"); !ok {
		t.Errorf("EUR missing from the exponent table")
	}
}
