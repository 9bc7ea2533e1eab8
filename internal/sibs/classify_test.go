package sibs

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
)

func TestClassify(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	ok := func(ps string) string { return answerJSON("000", ps, "CAPT", "19.99", "EUR") }
	tests := []struct {
		name   string
		status int
		body   string
		retry  string
		want   gateway.Outcome
	}{
		{"000 Success", 200, ok("Success"), "", gateway.Succeeded},
		{"000 success, any case", 200, ok("SUCCESS"), "", gateway.Succeeded},
		{"000 Success, 201", 201, ok("Success"), "", gateway.Succeeded},
		{"000 Declined", 200, ok("Declined"), "", gateway.Declined},
		{"000 Error", 200, ok("Error"), "", gateway.Declined},
		{"000 Pending", 200, ok("Pending"), "", gateway.Unknown},
		{"000 InProcessing", 200, ok("InProcessing"), "", gateway.Unknown},
		{"000 Timeout", 200, ok("Timeout"), "", gateway.Unknown},
		{"000 without paymentStatus", 200, `{"returnStatus":{"statusCode":"000"}}`, "", gateway.Unknown},
		{"000 unknown paymentStatus", 200, ok("Partial"), "", gateway.Unknown},
		{"000 as the number 0: not \"000\", do not guess", 200, `{"returnStatus":{"statusCode":0},"paymentStatus":"Success"}`, "", gateway.Unknown},
		{"other code, Success", 200, answerJSON("E0001", "Success", "CAPT", "1", "EUR"), "", gateway.Unknown},
		{"other code, Declined", 200, answerJSON("E0001", "Declined", "CAPT", "1", "EUR"), "", gateway.Declined},
		{"other code, Pending", 200, answerJSON("E0001", "Pending", "CAPT", "1", "EUR"), "", gateway.Unknown},
		{"other code, nothing else", 200, `{"returnStatus":{"statusCode":"E0506","statusMsg":"Invalid amount"}}`, "", gateway.Declined},
		{"2xx, not JSON", 200, `<html>ok</html>`, "", gateway.Unknown},
		{"2xx, empty", 200, ``, "", gateway.Unknown},
		{"400", 400, `{"returnStatus":{"statusCode":"E0400","statusMsg":"Bad Request"}}`, "", gateway.Declined},
		{"401", 401, `{"returnStatus":{"statusCode":"E0401"}}`, "", gateway.Declined},
		{"403, no body", 403, ``, "", gateway.Declined},
		{"404", 404, `{"returnStatus":{"statusCode":"E0404"}}`, "", gateway.Declined},
		{"409, 000 Success contradicts", 409, ok("Success"), "", gateway.Unknown},
		{"400, Pending", 400, ok("Pending"), "", gateway.Unknown},
		{"408", 408, ``, "", gateway.Unknown},
		{"429", 429, `{"returnStatus":{"statusCode":"E0429"}}`, "7", gateway.Retryable},
		{"503", 503, ``, "", gateway.Retryable},
		{"500", 500, `{"returnStatus":{"statusCode":"E0500"},"paymentStatus":"Error"}`, "", gateway.Unknown},
		{"502", 502, ``, "", gateway.Unknown},
		{"504", 504, ``, "", gateway.Unknown},
		{"500, 000 Declined", 500, ok("Declined"), "", gateway.Unknown},
		{"302", 302, ``, "", gateway.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := classify(gateway.Capture, tt.status, tt.retry, []byte(tt.body), now)
			if res.Outcome != tt.want {
				t.Errorf("classify(%d, %s) = %v, want %v", tt.status, tt.body, res.Outcome, tt.want)
			}
			if res.HTTPStatus != tt.status {
				t.Errorf("HTTPStatus = %d, want %d", res.HTTPStatus, tt.status)
			}
			if tt.status == 429 && res.RetryAfter != 7*time.Second {
				t.Errorf("RetryAfter = %s, want 7s", res.RetryAfter)
			}
			if res.Outcome == gateway.Succeeded && (res.Amount != 1999 || res.Currency != "EUR" || res.Code != "000" || res.TransactionID != "op-1") {
				t.Errorf("result = %+v, want 1999 EUR, code 000, transaction op-1", res)
			}
		})
	}
}

func TestStatusOf(t *testing.T) {
	op := func(typ, ps, ref, value string) string {
		return fmt.Sprintf(`{"transactionID":"op-%s","paymentType":%q,"paymentStatus":%q,"merchantTransactionId":%q,"amount":{"value":%s,"currency":"PLN"}}`,
			ref, typ, ps, ref, value)
	}
	list := func(ops ...string) string {
		out := "["
		for i, o := range ops {
			if i > 0 {
				out += ","
			}
			out += o
		}
		return out + "]"
	}
	capture := gateway.Request{Operation: gateway.Capture, TransactionID: "auth-1", Reference: "mine", Amount: 300}
	tests := []struct {
		name        string
		status      int
		body        string
		wantErr     bool
		wantState   gateway.State
		wantOurs    gateway.OursState
		wantOursAmt int64
		wantCap     int64
		wantVoid    int64
	}{
		{"open, empty list", 200, statusJSON("10", "[]"), false, gateway.StateAuthorised, gateway.OursAbsent, 0, 0, 0},
		{"no list: cannot tell", 200, statusJSON("10", ""), false, gateway.StateUnknown, gateway.OursUnlisted, 0, 0, 0},
		{"ours applied among others", 200, statusJSON("10", list(op("CAPT", "Success", "other", "2"), op("CAPT", "Success", "mine", "3"))),
			false, gateway.StateCaptured, gateway.OursApplied, 300, 500, 0},
		{"ours pending", 200, statusJSON("10", list(op("CAPT", "Pending", "mine", "3"))), false, gateway.StateAuthorised, gateway.OursPending, 0, 0, 0},
		{"ours declined, then applied", 200, statusJSON("10", list(op("CAPT", "Declined", "mine", "3"), op("CAPT", "Success", "mine", "3"))),
			false, gateway.StateCaptured, gateway.OursApplied, 300, 300, 0},
		{"ours declined only", 200, statusJSON("10", list(op("CAPT", "Declined", "mine", "3"))), false, gateway.StateAuthorised, gateway.OursAbsent, 0, 0, 0},
		{"a cancellation with our key is not our capture", 200, statusJSON("10", list(op("CNCL", "Success", "mine", "10"))),
			false, gateway.StateVoided, gateway.OursAbsent, 0, 0, 1000},
		{"someone else's refund is skipped", 200, statusJSON("10", list(op("RFND", "Success", "other", "1"))), false, gateway.StateAuthorised, gateway.OursAbsent, 0, 0, 0},
		{"an unknown type with our key", 200, statusJSON("10", list(op("RFND", "Success", "mine", "1"))), true, 0, 0, 0, 0, 0},
		{"our amount unreadable", 200, statusJSON("10", list(op("CAPT", "Success", "mine", "1.001"))), true, 0, 0, 0, 0, 0},
		{"authorisation pending", 200, `{"returnStatus":{"statusCode":"000"},"paymentStatus":"Pending","paymentType":"AUTH","transactionTimestamp":"2022-05-29T17:23:36.105Z","amount":{"value":10,"currency":"PLN"},"operations":[]}`,
			false, gateway.StateUnknown, gateway.OursAbsent, 0, 0, 0},
		{"not an authorisation", 200, `{"returnStatus":{"statusCode":"000"},"paymentStatus":"Success","paymentType":"PURS","amount":{"value":10,"currency":"PLN"}}`,
			true, 0, 0, 0, 0, 0},
		{"other statusCode", 200, `{"returnStatus":{"statusCode":"E0001"}}`, true, 0, 0, 0, 0, 0},
		{"no amount", 200, `{"returnStatus":{"statusCode":"000"},"paymentStatus":"Success","paymentType":"AUTH"}`, true, 0, 0, 0, 0, 0},
		{"not JSON", 200, `nope`, true, 0, 0, 0, 0, 0},
		{"404", 404, `{"returnStatus":{"statusCode":"E0404"}}`, false, gateway.StateNotFound, gateway.OursUnlisted, 0, 0, 0},
		{"500", 500, ``, true, 0, 0, 0, 0, 0},
		{"401", 401, ``, true, 0, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := statusOf(capture, tt.status, []byte(tt.body))
			if tt.wantErr {
				if err == nil || tt.status < 300 && !errors.Is(err, ErrUnexpectedAnswer) {
					t.Errorf("statusOf = %+v, %v; want an ErrUnexpectedAnswer", st, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("statusOf: %v", err)
			}
			if st.State != tt.wantState || st.Ours != tt.wantOurs || st.OursAmount != tt.wantOursAmt ||
				st.CapturedAmount != tt.wantCap || st.VoidedAmount != tt.wantVoid {
				t.Errorf("statusOf = state %v ours %v %d captured %d voided %d, want %v %v %d %d %d",
					st.State, st.Ours, st.OursAmount, st.CapturedAmount, st.VoidedAmount,
					tt.wantState, tt.wantOurs, tt.wantOursAmt, tt.wantCap, tt.wantVoid)
			}
			if tt.status == http.StatusOK && (st.AuthorisedAmount != 1000 || st.Currency != "PLN" || st.AuthorisedAt.IsZero()) {
				t.Errorf("statusOf = authorised %d %s at %s, want 1000 PLN at the transaction timestamp", st.AuthorisedAmount, st.Currency, st.AuthorisedAt)
			}
			if (st.Ours == gateway.OursApplied) != (st.Result.Outcome == gateway.Succeeded) {
				t.Errorf("Result.Outcome = %v with Ours %v: want succeeded exactly when ours is applied", st.Result.Outcome, st.Ours)
			}
		})
	}
}
