package paymentoptions

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/payworker/payworker/internal/gateway"
)

// successCode is gateway_response.code of an applied operation.
var successCode = map[gateway.Operation]string{
	gateway.Capture: "INFO0001",
	gateway.Void:    "INFO0003",
}

// classify maps one answer of a capture or void to its outcome. The first
// matching row wins:
//
//	| answer                                          | outcome   | why                                                       |
//	|-------------------------------------------------|-----------|-----------------------------------------------------------|
//	| 429                                             | Retryable | rate limited before processing; wait Retry-After          |
//	| 503                                             | Retryable | service unavailable: the request was not processed        |
//	| 408, whatever its body says                     | Unknown   | the timeout may come from a proxy after forwarding        |
//	| success:false, response_code 68 or 676–705      | Unknown   | acquirer timed out / "result unclear": may be applied     |
//	| success:false, response_code 94                 | Unknown   | duplicate transmission: an earlier one may be applied     |
//	| success:false, response_code 443–460            | Retryable | acquirer's "try again": refused now, not applied          |
//	| success:false, code or response_code Err3001–15 | Declined  | risk block: final                                         |
//	| 2xx, body not decodable                         | Unknown   | cannot tell what the gateway did                          |
//	| 201, success:true, the operation's INFO code,   | Succeeded | the documented success                                    |
//	|   response_code 0, absent or empty              |           |                                                           |
//	| 2xx, success:true, anything else                | Unknown   | says success in an undocumented way: do not guess         |
//	| 2xx, success:false                              | Declined  | the gateway answered and refused (SPEC §5)                |
//	| other 4xx, success:true                         | Unknown   | contradicts itself: do not guess                          |
//	| other 4xx (400, 401, 404, 406, 412, ...)        | Declined  | refused (SPEC §1 reading (b)); not applied, final         |
//	| 500, 502, 504, other 5xx, 1xx, 3xx              | Unknown   | may have been applied before the error: reconcile first   |
//
// A 4xx is final even without a JSON body (a proxy's 401 or 404): SPEC §5
// retries no 4xx but 408 and 429.
func classify(op gateway.Operation, status int, retryAfter string, body []byte, now time.Time) gateway.Result {
	var ans answer
	decodeErr := decodeAnswer(body, &ans)
	res := gateway.Result{HTTPStatus: status}
	if decodeErr == nil {
		ans.fill(&res)
	}
	refused := decodeErr == nil && !ans.Success
	rc, hasRC := number(ans.PaymentDetails.ResponseCode)
	// A response_code that is there but not a whole number ("05A", "n/a")
	// is no proof of success: only 0 or none is. An empty one is none.
	oddRC := !hasRC && ans.PaymentDetails.ResponseCode.Trim() != ""
	is2xx := status >= 200 && status <= 299

	switch {
	case status == http.StatusTooManyRequests, status == http.StatusServiceUnavailable:
		res.Outcome = gateway.Retryable
		res.RetryAfter = gateway.ParseRetryAfter(retryAfter, now)
	case status == http.StatusRequestTimeout:
		res.Outcome = gateway.Unknown
	case refused && hasRC && (rc == 68 || rc >= 676 && rc <= 705):
		res.Outcome = gateway.Unknown
	case refused && hasRC && rc == 94:
		res.Outcome = gateway.Unknown
	case refused && hasRC && rc >= 443 && rc <= 460:
		res.Outcome = gateway.Retryable
	case refused && (isRiskBlock(res.Code) || isRiskBlock(res.ResponseCode)):
		res.Outcome = gateway.Declined
	case is2xx && decodeErr != nil:
		res.Outcome = gateway.Unknown
		res.Err = fmt.Errorf("paymentoptions: %s: decode answer: %w", op, decodeErr)
	case is2xx && ans.Success:
		if status == http.StatusCreated && res.Code == successCode[op] && (!hasRC && !oddRC || hasRC && rc == 0) {
			res.Outcome = gateway.Succeeded
		} else {
			res.Outcome = gateway.Unknown
		}
	case is2xx:
		res.Outcome = gateway.Declined
	case status >= 400 && status <= 499 && decodeErr == nil && ans.Success:
		res.Outcome = gateway.Unknown
	case status >= 400 && status <= 499:
		res.Outcome = gateway.Declined
		if res.Message == "" {
			res.Message = http.StatusText(status)
		}
	default:
		res.Outcome = gateway.Unknown
	}
	return res
}

// isRiskBlock reports a risk-block code Err3001 to Err3015 (final).
func isRiskBlock(code string) bool {
	if len(code) != 7 || !strings.EqualFold(code[:3], "err") {
		return false
	}
	n, err := strconv.Atoi(code[3:])
	return err == nil && n >= 3001 && n <= 3015
}

// answer is the part of the gateway's answer the adapter reads. The card
// number is masked as it is decoded; the cardholder's name is not read.
type answer struct {
	Success         bool   `json:"success"`
	TransactionType string `json:"transaction_type"`
	GatewayResponse struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"gateway_response"`
	PaymentDetails struct {
		Amount       flexAmount   `json:"amount"`
		ResponseCode gateway.Text `json:"response_code"`
		AuthCode     gateway.Text `json:"auth_code"`
		Currency     string       `json:"currency"`
		Scheme       string       `json:"scheme"`
		Card         struct {
			Number maskedPAN `json:"number"`
		} `json:"card"`
	} `json:"payment_details"`
	TransactionDetails struct {
		ID        string       `json:"id"`
		Ref       gateway.Text `json:"ref"`
		Timestamp string       `json:"timestamp"`
	} `json:"transaction_details"`
}

func (a *answer) fill(res *gateway.Result) {
	res.Code = a.GatewayResponse.Code
	res.Message = a.GatewayResponse.Message
	res.ResponseCode = string(a.PaymentDetails.ResponseCode)
	res.TransactionID = a.TransactionDetails.ID
	res.Ref = string(a.TransactionDetails.Ref)
	res.AuthCode = string(a.PaymentDetails.AuthCode)
	res.Scheme = a.PaymentDetails.Scheme
	res.MaskedPAN = string(a.PaymentDetails.Card.Number)
	res.Amount = a.PaymentDetails.Amount.value
	res.Currency = a.PaymentDetails.Currency
}

// maskedPAN holds a card number masked with gateway.MaskPAN; the full number
// is never stored.
type maskedPAN string

func (m *maskedPAN) UnmarshalJSON(b []byte) error {
	var t gateway.Text
	if err := t.UnmarshalJSON(b); err != nil {
		return errors.New("card number is neither a string nor a number")
	}
	*m = maskedPAN(gateway.MaskPAN(string(t)))
	return nil
}

// number reads t as a whole number.
func number(t gateway.Text) (int, bool) {
	n, err := strconv.Atoi(t.Trim())
	return n, err == nil
}

// flexAmount reads an integer amount sent as a JSON number or string; an
// amount that is not an integer reads as absent rather than failing the
// whole answer.
type flexAmount struct {
	value int64
}

func (a *flexAmount) UnmarshalJSON(b []byte) error {
	*a = flexAmount{}
	var t gateway.Text
	if t.UnmarshalJSON(b) != nil {
		return nil
	}
	if v, err := strconv.ParseInt(strings.TrimSpace(string(t)), 10, 64); err == nil {
		a.value = v
	}
	return nil
}
