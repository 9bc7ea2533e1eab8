package paymentoptions

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
)

// body builds an answer in the gateway's shape.
func body(success bool, status int, code, responseCode string) string {
	pd := ""
	if responseCode != "" {
		pd = fmt.Sprintf(`,"payment_details":{"amount":1000,"response_code":%s,"auth_code":"264302","currency":"JPY","scheme":"MASTERCARD","card":{"name":"John Doe","number":"5200000000001005"}}`, responseCode)
	}
	typ := "INFO"
	if !success {
		typ = "ERROR"
	}
	return fmt.Sprintf(`{"success":%t,"status_code":%d,"gateway_response":{"type":%q,"code":%q,"message":"m"}%s,"transaction_details":{"id":"op-1","ref":74819}}`,
		success, status, typ, code, pd)
}

func TestClassify(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name       string
		op         gateway.Operation
		status     int
		retryAfter string
		body       string
		want       gateway.Outcome
		wantWait   time.Duration
		wantRC     string
	}{
		{"capture succeeded", gateway.Capture, 201, "", body(true, 201, "INFO0001", "0"), gateway.Succeeded, 0, "0"},
		{"void succeeded", gateway.Void, 201, "", body(true, 201, "INFO0003", "0"), gateway.Succeeded, 0, "0"},
		{"succeeded without response_code", gateway.Capture, 201, "", body(true, 201, "INFO0001", ""), gateway.Succeeded, 0, ""},
		{"response_code as string", gateway.Capture, 201, "", body(true, 201, "INFO0001", `"0"`), gateway.Succeeded, 0, "0"},
		{"void's code on a capture", gateway.Capture, 201, "", body(true, 201, "INFO0003", "0"), gateway.Unknown, 0, "0"},
		{"refund code", gateway.Void, 201, "", body(true, 201, "INFO0002", "0"), gateway.Unknown, 0, "0"},
		{"200 instead of 201", gateway.Capture, 200, "", body(true, 200, "INFO0001", "0"), gateway.Unknown, 0, "0"},
		{"success with response_code 5", gateway.Capture, 201, "", body(true, 201, "INFO0001", "5"), gateway.Unknown, 0, "5"},
		{"success with unclear code", gateway.Capture, 201, "", body(true, 201, "INFO0001", "680"), gateway.Unknown, 0, "680"},
		{"success with try-again code", gateway.Capture, 201, "", body(true, 201, "INFO0001", "450"), gateway.Unknown, 0, "450"},
		{"2xx not JSON", gateway.Capture, 201, "", `<html>ok</html>`, gateway.Unknown, 0, ""},
		{"2xx empty", gateway.Capture, 201, "", ``, gateway.Unknown, 0, ""},
		{"2xx truncated", gateway.Capture, 201, "", body(true, 201, "INFO0001", "0")[:40], gateway.Unknown, 0, ""},
		{"200 success false", gateway.Capture, 200, "", body(false, 200, "ERR0001", ""), gateway.Declined, 0, ""},
		{"200 unclear 680", gateway.Capture, 200, "", body(false, 200, "ERR0680", "680"), gateway.Unknown, 0, "680"},
		{"unclear 676", gateway.Capture, 400, "", body(false, 400, "ERR0400", "676"), gateway.Unknown, 0, "676"},
		{"unclear 705", gateway.Void, 400, "", body(false, 400, "ERR0400", "705"), gateway.Unknown, 0, "705"},
		{"706 is a refusal", gateway.Void, 400, "", body(false, 400, "ERR0400", "706"), gateway.Declined, 0, "706"},
		{"time out 68", gateway.Capture, 400, "", body(false, 400, "ERR0400", "68"), gateway.Unknown, 0, "68"},
		{"duplicate transmission 94", gateway.Capture, 400, "", body(false, 400, "ERR0400", "94"), gateway.Unknown, 0, "94"},
		{"try again 443", gateway.Capture, 400, "", body(false, 400, "ERR0400", "443"), gateway.Retryable, 0, "443"},
		{"try again 460", gateway.Capture, 200, "", body(false, 200, "ERR0400", "460"), gateway.Retryable, 0, "460"},
		{"461 is a refusal", gateway.Capture, 400, "", body(false, 400, "ERR0400", "461"), gateway.Declined, 0, "461"},
		{"risk block Err3001", gateway.Capture, 400, "", body(false, 400, "Err3001", ""), gateway.Declined, 0, ""},
		{"risk block Err3015 on 200", gateway.Capture, 200, "", body(false, 200, "Err3015", ""), gateway.Declined, 0, ""},
		{"risk block in response_code", gateway.Capture, 400, "", body(false, 400, "ERR0400", `"Err3007"`), gateway.Declined, 0, "Err3007"},
		{"400 over amount 836", gateway.Capture, 400, "", body(false, 400, "ERR0400", "836"), gateway.Declined, 0, "836"},
		{"401", gateway.Capture, 401, "", body(false, 401, "ERR0401", ""), gateway.Declined, 0, ""},
		{"404", gateway.Capture, 404, "", body(false, 404, "ERR0404", ""), gateway.Declined, 0, ""},
		{"406", gateway.Void, 406, "", body(false, 406, "ERR0406", ""), gateway.Declined, 0, ""},
		{"412", gateway.Void, 412, "", body(false, 412, "ERR0412", ""), gateway.Declined, 0, ""},
		{"409 other 4xx", gateway.Void, 409, "", body(false, 409, "ERR0409", ""), gateway.Declined, 0, ""},
		{"404 from a proxy", gateway.Capture, 404, "", `<html>not found</html>`, gateway.Declined, 0, ""},
		{"4xx saying success", gateway.Capture, 400, "", body(true, 400, "INFO0001", "0"), gateway.Unknown, 0, "0"},
		{"408", gateway.Capture, 408, "", ``, gateway.Unknown, 0, ""},
		{"429 seconds", gateway.Capture, 429, "7", body(false, 429, "ERR0429", ""), gateway.Retryable, 7 * time.Second, ""},
		{"429 date", gateway.Capture, 429, "Thu, 02 Jan 2025 03:04:35 GMT", ``, gateway.Retryable, 30 * time.Second, ""},
		{"429 without Retry-After", gateway.Capture, 429, "", ``, gateway.Retryable, 0, ""},
		{"500", gateway.Capture, 500, "", body(false, 500, "ERR0500", ""), gateway.Unknown, 0, ""},
		{"502", gateway.Capture, 502, "", `bad gateway`, gateway.Unknown, 0, ""},
		{"503", gateway.Capture, 503, "", ``, gateway.Retryable, 0, ""},
		{"503 with Retry-After", gateway.Void, 503, "4", ``, gateway.Retryable, 4 * time.Second, ""},
		{"504", gateway.Void, 504, "", ``, gateway.Unknown, 0, ""},
		{"501 other 5xx", gateway.Void, 501, "", ``, gateway.Unknown, 0, ""},
		{"302 redirect", gateway.Capture, 302, "", ``, gateway.Unknown, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.op, tt.status, tt.retryAfter, []byte(tt.body), now)
			if got.Outcome != tt.want || got.RetryAfter != tt.wantWait || got.ResponseCode != tt.wantRC || got.HTTPStatus != tt.status {
				t.Errorf("classify(%s, %d, %q) = %s wait %s rc %q status %d, want %s wait %s rc %q status %d",
					tt.op, tt.status, tt.body, got.Outcome, got.RetryAfter, got.ResponseCode, got.HTTPStatus,
					tt.want, tt.wantWait, tt.wantRC, tt.status)
			}
			if got.Outcome == gateway.Declined && got.Err != nil {
				t.Errorf("Declined with Err %v, want nil", got.Err)
			}
		})
	}
}

func TestClassifyFillsTheAnswer(t *testing.T) {
	got := classify(gateway.Capture, 201, "", []byte(body(true, 201, "INFO0001", "0")), time.Now())
	want := gateway.Result{
		Outcome: gateway.Succeeded, HTTPStatus: 201, Code: "INFO0001", Message: "m", ResponseCode: "0",
		TransactionID: "op-1", Ref: "74819", AuthCode: "264302", Scheme: "MASTERCARD",
		MaskedPAN: "520000******1005", Amount: 1000, Currency: "JPY",
	}
	if got != want {
		t.Errorf("classify = %+v, want %+v", got, want)
	}
	declined := classify(gateway.Capture, 412, "", []byte(body(false, 412, "ERR0412", "")), time.Now())
	if declined.Code != "ERR0412" || declined.Message != "m" {
		t.Errorf("412 Code, Message = %q, %q; want ERR0412, m", declined.Code, declined.Message)
	}
	proxy := classify(gateway.Capture, 401, "", []byte("denied"), time.Now())
	if proxy.Message != "Unauthorized" {
		t.Errorf("401 without a body: Message = %q, want the status text", proxy.Message)
	}
}

func TestIsRiskBlock(t *testing.T) {
	for code, want := range map[string]bool{
		"Err3001": true, "ERR3015": true, "err3008": true,
		"Err3000": false, "Err3016": false, "ERR0404": false, "Err30011": false, "": false,
	} {
		if got := isRiskBlock(code); got != want {
			t.Errorf("isRiskBlock(%q) = %v, want %v", code, got, want)
		}
	}
}

func TestStatusOf(t *testing.T) {
	answer := func(txType string, amount int64) string {
		return fmt.Sprintf(`{"success":true,"status_code":200,"transaction_type":%q,"gateway_response":{"code":"INFO0000"},
			"payment_details":{"amount":%d,"response_code":0,"currency":"JPY","card":{"number":"4111111111111111"}},
			"transaction_details":{"id":"a-1","timestamp":"2024-11-25T07:22:48.000Z"}}`, txType, amount)
	}
	at := time.Date(2024, 11, 25, 7, 22, 48, 0, time.UTC)
	tests := []struct {
		name    string
		status  int
		body    string
		want    gateway.Status
		wantErr bool
	}{
		{"pre-auth", 200, answer("PRE_AUTH", 1000), gateway.Status{State: gateway.StateAuthorised, AuthorisedAmount: 1000, Currency: "JPY", AuthorisedAt: at}, false},
		{"capture", 200, answer("CAPTURE", 600), gateway.Status{State: gateway.StateCaptured, CapturedAmount: 600, Currency: "JPY", AuthorisedAt: at}, false},
		{"void", 200, answer("VOID", 1000), gateway.Status{State: gateway.StateVoided, AuthorisedAmount: 1000, VoidedAmount: 1000, Currency: "JPY", AuthorisedAt: at}, false},
		{"not found", 404, body(false, 404, "ERR0404", ""), gateway.Status{State: gateway.StateNotFound}, false},
		{"refund type", 200, answer("REFUND", 1000), gateway.Status{}, true},
		{"success false", 200, body(false, 200, "ERR0001", ""), gateway.Status{}, true},
		{"not JSON", 200, "<html>", gateway.Status{}, true},
		{"500", 500, body(false, 500, "ERR0500", ""), gateway.Status{}, true},
		{"401", 401, body(false, 401, "ERR0401", ""), gateway.Status{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := statusOf(tt.status, []byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("statusOf(%d) error = %v, want error %v", tt.status, err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrUnexpectedAnswer) {
					t.Errorf("statusOf(%d) error = %v, want ErrUnexpectedAnswer", tt.status, err)
				}
				return
			}
			got.Result = gateway.Result{}
			if got != tt.want {
				t.Errorf("statusOf(%d, %s) = %+v, want %+v", tt.status, tt.body, got, tt.want)
			}
		})
	}
}

func TestAnswerNeverHoldsTheCardNumber(t *testing.T) {
	const pan = "5200000000001005"
	tests := []struct {
		name   string
		status int
		body   string
	}{
		{"success", 201, body(true, 201, "INFO0001", "0")},
		{"refusal with card", 400, body(false, 400, "ERR0400", "836")},
		{"number as JSON number", 201, `{"success":true,"gateway_response":{"code":"INFO0001"},"payment_details":{"card":{"number":5200000000001005}}}`},
		{"truncated after the number", 201, body(true, 201, "INFO0001", "0")[:strings.Index(body(true, 201, "INFO0001", "0"), pan)+len(pan)+2]},
		{"wrong type next to the number", 201, `{"success":"yes","payment_details":{"card":{"number":"5200000000001005"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := classify(gateway.Capture, tt.status, "", []byte(tt.body), time.Now())
			for _, s := range []string{fmt.Sprintf("%+v", res), fmt.Sprint(res.Err)} {
				if strings.Contains(s, pan) || strings.Contains(s, "John Doe") {
					t.Errorf("classify result %s holds card data", s)
				}
			}
			st, err := statusOf(200, []byte(strings.Replace(tt.body, `"INFO0001"`, `"INFO0000"`, 1)))
			if s := fmt.Sprintf("%+v %v", st, err); strings.Contains(s, pan) {
				t.Errorf("statusOf result %s holds the card number", s)
			}
		})
	}
}
