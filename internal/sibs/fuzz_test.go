package sibs

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
)

// view is the fuzz test's own reading of an answer, with only the fields
// that decide a success: it checks the adapter's decoder, not itself.
type view struct {
	ReturnStatus struct {
		StatusCode json.RawMessage `json:"statusCode"`
	} `json:"returnStatus"`
	PaymentStatus *string `json:"paymentStatus"`
	PaymentType   *string `json:"paymentType"`
}

// processed reports statusCode "000" sent as a JSON string (surrounding
// spaces aside): the gateway processed the request, whatever its outcome.
func (v view) processed() bool {
	var s string
	return json.Unmarshal(v.ReturnStatus.StatusCode, &s) == nil && strings.TrimSpace(s) == "000"
}

// paymentStatus is paymentStatus, or "" without one.
func (v view) paymentStatus() string {
	if v.PaymentStatus == nil {
		return ""
	}
	return *v.PaymentStatus
}

// FuzzClassifyAnswer checks the reading of a capture's or cancellation's
// answer and of a status answer (classify, statusOf): they never panic,
// and what they decide agrees with the documented answers: a success only
// from a 2xx with statusCode "000" and paymentStatus Success ("000" alone
// is technical success only, REFERENCE.md), a retry only on 429 or 503, a
// 5xx other than 503 always unknown, no negative amount, an operation of
// ours applied only when the status says so. The seed corpus holds the
// answers of the sandbox and of the classification table, and the request
// of the documentation's cancellation example (seed 003), which is no
// answer.
func FuzzClassifyAnswer(f *testing.F) {
	golden, err := os.ReadFile("testdata/cancellation_seed_003.golden.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(200, golden, "")
	ops := `[{"transactionID":"c1","paymentType":"CAPT","paymentStatus":"Success","merchantTransactionId":"ref-1","amount":{"value":4,"currency":"PLN"}},` +
		`{"transactionID":"v1","paymentType":"CNCL","paymentStatus":"Pending","merchantTransactionId":"ref-1","amount":{"value":1}},` +
		`{"transactionID":"r1","paymentType":"RFND","paymentStatus":"Success","amount":{"value":1,"currency":"PLN"}}]`
	for _, s := range []struct {
		status int
		body   string
		retry  string
	}{
		{200, answerJSON("000", "Success", "CAPT", "19.99", "EUR"), ""},
		{201, answerJSON("000", "success", "CNCL", "5", "PLN"), ""},
		{200, answerJSON("000", "Declined", "CAPT", "1", "EUR"), ""},
		{200, answerJSON("000", "Pending", "CAPT", "1", "EUR"), ""},
		{200, answerJSON(" 000 ", "Partial", "CAPT", "1", "EUR"), ""},
		{200, answerJSON("E0001", "Success", "CAPT", "1", "EUR"), ""},
		{200, `{"returnStatus":{"statusCode":0},"paymentStatus":"Success"}`, ""},
		{200, `{"returnStatus":{"statusCode":"000"}}`, ""},
		{200, `{"returnStatus":{"statusCode":"000"},"paymentStatus":"Success","amount":{"value":-5,"currency":"EUR"}}`, ""},
		{409, answerJSON("000", "Success", "CAPT", "1", "EUR"), ""},
		{500, answerJSON("000", "Declined", "CAPT", "1", "EUR"), ""},
		{429, `{"returnStatus":{"statusCode":"E0429"}}`, "7"},
		{503, ``, "Wed, 21 Oct 2099 07:28:00 GMT"},
		{404, `{"returnStatus":{"statusCode":"E0404"}}`, ""},
		{200, statusJSON("10", ops), ""},
		{200, statusJSON("10", "[]"), ""},
		{200, statusJSON("1e400", ""), ""},
		{200, `null`, ""}, {200, `[]`, ""}, {200, `{"returnStatus":`, ""}, {200, ``, ""},
	} {
		f.Add(s.status, []byte(s.body), s.retry)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		var v view
		viewErr := json.Unmarshal(body, &v)
		for _, op := range []gateway.Operation{gateway.Capture, gateway.Void} {
			checkResult(t, op, status, v, viewErr, classify(op, status, retryAfter, body, now))
			req := gateway.Request{Operation: op, Reference: "ref-1", TransactionID: "auth-1"}
			st, err := statusOf(req, status, body)
			checkStatus(t, op, status, v, viewErr, st, err)
		}
	})
}

func checkResult(t *testing.T, op gateway.Operation, status int, v view, viewErr error, res gateway.Result) {
	t.Helper()
	if res.Outcome < gateway.Succeeded || res.Outcome > gateway.Unknown {
		t.Fatalf("classify(%s, %d) outcome = %d, not one of the four", op, status, res.Outcome)
	}
	if res.HTTPStatus != status {
		t.Fatalf("classify(%s, %d) HTTPStatus = %d", op, status, res.HTTPStatus)
	}
	limited := status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
	is2xx := status >= 200 && status <= 299
	switch res.Outcome {
	case gateway.Succeeded:
		switch {
		case !is2xx:
			t.Fatalf("classify(%s, %d) = succeeded, but only a 2xx is a success", op, status)
		case viewErr != nil || !v.processed():
			t.Fatalf("classify(%s, %d) = succeeded without statusCode \"000\" (%s)", op, status, v.ReturnStatus.StatusCode)
		case !strings.EqualFold(v.paymentStatus(), "Success"):
			t.Fatalf("classify(%s, %d) = succeeded with paymentStatus %q: \"000\" alone is not a success", op, status, v.paymentStatus())
		}
	case gateway.Retryable:
		if !limited {
			t.Fatalf("classify(%s, %d) = retryable, but only 429 and 503 are", op, status)
		}
	case gateway.Declined:
		if !is2xx && (status < 400 || status > 499) || status == http.StatusRequestTimeout || limited {
			t.Fatalf("classify(%s, %d) = declined", op, status)
		}
	}
	if !is2xx && (status < 400 || status > 499) && !limited && res.Outcome != gateway.Unknown {
		t.Fatalf("classify(%s, %d) = %v, want unknown: it may have been applied", op, status, res.Outcome)
	}
	if is2xx && viewErr != nil && res.Outcome != gateway.Unknown {
		t.Fatalf("classify(%s, %d) of an undecodable answer = %v, want unknown", op, status, res.Outcome)
	}
	if res.RetryAfter < 0 || res.RetryAfter > 0 && !limited {
		t.Fatalf("classify(%s, %d) RetryAfter = %s", op, status, res.RetryAfter)
	}
	if res.Amount < 0 {
		t.Fatalf("classify(%s, %d) amount = %d", op, status, res.Amount)
	}
}

func checkStatus(t *testing.T, op gateway.Operation, status int, v view, viewErr error, st gateway.Status, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrUnexpectedAnswer) {
			t.Fatalf("statusOf(%s, %d) error %v does not wrap ErrUnexpectedAnswer", op, status, err)
		}
		return
	}
	if status == http.StatusNotFound {
		if st.State != gateway.StateNotFound {
			t.Fatalf("statusOf(404) state = %v", st.State)
		}
		return
	}
	switch {
	case status < 200 || status > 299:
		t.Fatalf("statusOf(%d) = %v, want an error", status, st.State)
	case viewErr != nil || !v.processed():
		t.Fatalf("statusOf(%d) = %v without statusCode \"000\" (%s)", status, st.State, v.ReturnStatus.StatusCode)
	case v.PaymentType == nil || !strings.EqualFold(*v.PaymentType, "AUTH"):
		t.Fatalf("statusOf(%d) = %v for paymentType %v, not an authorisation", status, st.State, v.PaymentType)
	}
	if st.State != gateway.StateUnknown && !strings.EqualFold(v.paymentStatus(), "Success") {
		t.Fatalf("statusOf = %v with paymentStatus %q", st.State, v.paymentStatus())
	}
	if st.AuthorisedAmount < 0 || st.CapturedAmount < 0 || st.VoidedAmount < 0 || st.OursAmount < 0 {
		t.Fatalf("statusOf amounts authorised %d, captured %d, voided %d, ours %d: negative",
			st.AuthorisedAmount, st.CapturedAmount, st.VoidedAmount, st.OursAmount)
	}
	if (st.Ours == gateway.OursApplied) != (st.Result.Outcome == gateway.Succeeded) {
		t.Fatalf("statusOf(%s) ours = %v but outcome = %v", op, st.Ours, st.Result.Outcome)
	}
}
