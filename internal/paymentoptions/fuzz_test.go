package paymentoptions

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
)

// longDigits is a run of digits longer than a masked card number keeps
// together (its first six).
var longDigits = regexp.MustCompile(`[0-9]{7,}`)

// view is the fuzz test's own reading of an answer, with only the fields
// that decide a success: it checks the adapter's decoder, not itself.
type view struct {
	Success         *bool   `json:"success"`
	TransactionType *string `json:"transaction_type"`
	GatewayResponse struct {
		Code *string `json:"code"`
	} `json:"gateway_response"`
	PaymentDetails struct {
		ResponseCode json.RawMessage `json:"response_code"`
	} `json:"payment_details"`
}

// responseCodeZero reports a response_code that is absent, null, an empty
// or blank string, or the whole number 0 as a JSON number or string.
func (v view) responseCodeZero() bool {
	raw := strings.TrimSpace(string(v.PaymentDetails.ResponseCode))
	if raw == "" || raw == "null" {
		return true
	}
	var s string
	if json.Unmarshal(v.PaymentDetails.ResponseCode, &s) != nil {
		s = raw
	}
	if strings.TrimSpace(s) == "" {
		return true
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	return err == nil && n == 0
}

// FuzzClassifyAnswer checks the reading of a capture's or void's answer and
// of a status answer (classify, statusOf): they never panic, and what they
// decide agrees with the documented answers: a success only from HTTP 201
// with success true, the operation's INFO code and response_code 0 or
// none; a retry only on 429, 503 or an acquirer's "try again"; a 5xx never
// a success; a card number never kept whole. The seed corpus holds the
// gateway documentation's example answers (testdata, from the capture and
// void pages) and the classification table's edge cases.
func FuzzClassifyAnswer(f *testing.F) {
	examples, err := filepath.Glob(filepath.Join("testdata", "seed_*_answer.json"))
	if err != nil || len(examples) == 0 {
		f.Fatalf("seed answers: %v %v", examples, err)
	}
	for _, name := range examples {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(201, b, "")
		f.Add(200, b, "")
		f.Add(500, b, "")
	}
	for _, s := range []struct {
		status int
		body   string
		retry  string
	}{
		{201, body(true, 201, "INFO0001", "0"), ""},
		{201, body(true, 201, "INFO0003", `"0"`), ""},
		{201, body(true, 201, "INFO0001", `" 00 "`), ""},
		{201, body(true, 201, "INFO0001", "680"), ""},
		{201, body(true, 201, "INFO0001", `""`), ""},
		{201, body(true, 201, "INFO0001", `"05A"`), ""},
		{200, body(false, 200, "ERR0680", "680"), ""},
		{400, body(false, 400, "ERR0400", "450"), ""},
		{500, body(false, 500, "ERR0400", "450"), ""},
		{500, body(false, 500, "Err3001", ""), ""},
		{429, `{}`, "7"},
		{503, ``, "Wed, 21 Oct 2099 07:28:00 GMT"},
		{404, `{"success":false}`, ""},
		{201, `{"success":true,"SUCCESS":false,"gateway_response":{"code":"INFO0001"}}`, ""},
		{201, `{"success":true,"transaction_type":"CAPTURE","gateway_response":{"code":"INFO0001"},"payment_details":{"amount":"-5","card":{"number":"4111 1111 1111 1111"}}}`, ""},
		{201, `{"payment_details":{"card":{"number":12345678901234567890}}}`, ""},
		{201, `{"success":"true"}`, ""},
		{201, `null`, ""}, {201, `[]`, ""}, {201, `{"success":true`, ""},
	} {
		f.Add(s.status, []byte(s.body), s.retry)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		var v view
		viewErr := json.Unmarshal(body, &v)
		for _, op := range []gateway.Operation{gateway.Capture, gateway.Void} {
			res := classify(op, status, retryAfter, body, now)
			checkResult(t, op, status, v, viewErr, res)
		}
		st, err := statusOf(status, body)
		checkStatus(t, status, v, viewErr, st, err)
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
	switch res.Outcome {
	case gateway.Succeeded:
		switch {
		case status != http.StatusCreated:
			t.Fatalf("classify(%s, %d) = succeeded, but only 201 is a success", op, status)
		case viewErr != nil || v.Success == nil || !*v.Success:
			t.Fatalf("classify(%s, %d) = succeeded without success true (decode: %v)", op, status, viewErr)
		case v.GatewayResponse.Code == nil || *v.GatewayResponse.Code != successCode[op]:
			t.Fatalf("classify(%s) = succeeded with code %v, want %s", op, v.GatewayResponse.Code, successCode[op])
		case !v.responseCodeZero():
			t.Fatalf("classify(%s) = succeeded with response_code %s", op, v.PaymentDetails.ResponseCode)
		}
		if res.Err != nil {
			t.Fatalf("classify(%s) = succeeded with error %v", op, res.Err)
		}
	case gateway.Retryable:
		if !limited {
			rc, ok := number(gateway.Text(strings.Trim(string(v.PaymentDetails.ResponseCode), `"`)))
			// A refusal: success false, or absent (it reads as false).
			if viewErr != nil || v.Success != nil && *v.Success || !ok || rc < 443 || rc > 460 {
				t.Fatalf("classify(%s, %d) = retryable, but neither 429, 503 nor a refusal with 443–460 (response_code %s)",
					op, status, v.PaymentDetails.ResponseCode)
			}
		}
	case gateway.Declined:
		if status == http.StatusRequestTimeout || limited {
			t.Fatalf("classify(%s, %d) = declined", op, status)
		}
	}
	if res.RetryAfter < 0 || res.RetryAfter > 0 && !limited {
		t.Fatalf("classify(%s, %d) RetryAfter = %s", op, status, res.RetryAfter)
	}
	if status >= 200 && status <= 299 && viewErr != nil && !limited {
		if res.Outcome != gateway.Unknown || res.Err == nil {
			t.Fatalf("classify(%s, %d) of an undecodable answer = %v, %v; want unknown with the decoding error", op, status, res.Outcome, res.Err)
		}
	}
	checkMasked(t, res)
}

// checkMasked fails when the result keeps a card number whole.
func checkMasked(t *testing.T, res gateway.Result) {
	t.Helper()
	digits := 0
	for _, c := range res.MaskedPAN {
		if c >= '0' && c <= '9' {
			digits++
		}
	}
	if digits > 10 || longDigits.MatchString(res.MaskedPAN) {
		t.Fatalf("MaskedPAN %q keeps more than the first six and last four digits", res.MaskedPAN)
	}
}

func checkStatus(t *testing.T, status int, v view, viewErr error, st gateway.Status, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrUnexpectedAnswer) {
			t.Fatalf("statusOf(%d) error %v does not wrap ErrUnexpectedAnswer", status, err)
		}
		return
	}
	checkMasked(t, st.Result)
	if status == http.StatusNotFound {
		if st.State != gateway.StateNotFound {
			t.Fatalf("statusOf(404) state = %v", st.State)
		}
		return
	}
	if status < 200 || status > 299 || viewErr != nil || v.Success == nil || !*v.Success || v.TransactionType == nil {
		t.Fatalf("statusOf(%d) = %v without a 2xx success answer with a transaction_type", status, st.State)
	}
	want := map[string]gateway.State{"PRE_AUTH": gateway.StateAuthorised, "CAPTURE": gateway.StateCaptured, "VOID": gateway.StateVoided}[*v.TransactionType]
	if st.State != want {
		t.Fatalf("statusOf(%s) state = %v, want %v", *v.TransactionType, st.State, want)
	}
	applied := st.State == gateway.StateCaptured || st.State == gateway.StateVoided
	if (st.Result.Outcome == gateway.Succeeded) != applied {
		t.Fatalf("statusOf(%s) outcome = %v", *v.TransactionType, st.Result.Outcome)
	}
}
