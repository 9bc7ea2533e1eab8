package sibs

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/payworker/payworker/internal/gateway"
)

// statusOK is returnStatus.statusCode of a request the gateway processed. It
// says nothing of the outcome, which is paymentStatus.
const statusOK = "000"

// paymentStatus values (compared without regard to case).
const (
	psSuccess      = "Success"
	psDeclined     = "Declined"
	psError        = "Error"
	psPending      = "Pending"
	psInProcessing = "InProcessing"
	psTimeout      = "Timeout"
)

// paymentType values of the status answer: the authorisation, and the
// operations our sandbox lists on it (our reading, SPEC §1).
const (
	typeAuth         = "AUTH"
	typeCapture      = "CAPT"
	typeCancellation = "CNCL"
)

// processing reports a paymentStatus that leaves the outcome open.
func processing(ps string) bool {
	return strings.EqualFold(ps, psPending) || strings.EqualFold(ps, psInProcessing) || strings.EqualFold(ps, psTimeout)
}

// classify maps one answer of a capture or cancellation to its outcome. The
// first matching row wins:
//
//	| answer                                           | outcome   | why                                                     |
//	|--------------------------------------------------|-----------|---------------------------------------------------------|
//	| 429                                              | Retryable | rate limited before processing; wait Retry-After        |
//	| 503                                              | Retryable | service unavailable: the request was not processed      |
//	| 2xx, body not decodable                          | Unknown   | cannot tell what the gateway did                        |
//	| any, paymentStatus Pending, InProcessing, Timeout| Unknown   | not final yet: reconcile through the status call        |
//	| 2xx, "000", Success                              | Succeeded | processed, and the payment operation succeeded          |
//	| 2xx, "000", Declined or Error                    | Declined  | processed, and refused or failed: final                 |
//	| 2xx, "000", paymentStatus missing or other       | Unknown   | processed, outcome not stated: do not guess             |
//	| 2xx, other statusCode, Success                   | Unknown   | contradicts itself: do not guess                        |
//	| 2xx, other statusCode                            | Declined  | the gateway answered and refused (SPEC §5)              |
//	| 408                                              | Unknown   | the timeout may come from a proxy after forwarding      |
//	| other 4xx, paymentStatus Success                 | Unknown   | contradicts itself: do not guess                        |
//	| other 4xx (400, 401 after one refresh, 404, ...) | Declined  | refused, not applied: final                             |
//	| 500, 502, 504, other 5xx, 1xx, 3xx               | Unknown   | may have been applied before the error: reconcile first |
//
// "000" alone never makes a success. An error statusCode is judged by the
// HTTP status it comes with: final with a 4xx or 2xx, unknown with a 5xx,
// retryable with 429 or 503.
func classify(op gateway.Operation, status int, retryAfter string, body []byte, now time.Time) gateway.Result {
	var ans answer
	decodeErr := decodeAnswer(body, &ans)
	res := gateway.Result{HTTPStatus: status}
	if decodeErr == nil {
		ans.fill(&res)
	}
	ps := ans.PaymentStatus
	ok := ans.ReturnStatus.StatusCode.Trim() == statusOK
	success := strings.EqualFold(ps, psSuccess)
	is2xx := status >= 200 && status <= 299

	switch {
	case status == http.StatusTooManyRequests, status == http.StatusServiceUnavailable:
		res.Outcome = gateway.Retryable
		res.RetryAfter = gateway.ParseRetryAfter(retryAfter, now)
	case is2xx && decodeErr != nil:
		res.Outcome = gateway.Unknown
		res.Err = fmt.Errorf("sibs: %s: decode answer: %w", op, decodeErr)
	case processing(ps):
		res.Outcome = gateway.Unknown
	case is2xx && ok && success:
		res.Outcome = gateway.Succeeded
	case is2xx && ok && (strings.EqualFold(ps, psDeclined) || strings.EqualFold(ps, psError)):
		res.Outcome = gateway.Declined
	case is2xx && ok:
		res.Outcome = gateway.Unknown
	case is2xx && success:
		res.Outcome = gateway.Unknown
	case is2xx:
		res.Outcome = gateway.Declined
	case status == http.StatusRequestTimeout:
		res.Outcome = gateway.Unknown
	case status >= 400 && status <= 499 && success:
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

// statusOf reads a status answer; see Client.Status.
func statusOf(req gateway.Request, httpStatus int, body []byte) (gateway.Status, error) {
	var ans answer
	decodeErr := decodeAnswer(body, &ans)
	res := gateway.Result{HTTPStatus: httpStatus}
	if decodeErr == nil {
		ans.fill(&res)
	}
	if httpStatus == http.StatusNotFound {
		return gateway.Status{State: gateway.StateNotFound, Result: res}, nil
	}
	if httpStatus < 200 || httpStatus > 299 {
		return gateway.Status{}, fmt.Errorf("sibs: status: HTTP %d %s: %w", httpStatus, res.Code, ErrUnexpectedAnswer)
	}
	if decodeErr != nil {
		return gateway.Status{}, fmt.Errorf("sibs: status: decode answer: %w: %w", decodeErr, ErrUnexpectedAnswer)
	}
	if code := ans.ReturnStatus.StatusCode.Trim(); code != statusOK {
		return gateway.Status{}, fmt.Errorf("sibs: status: statusCode %q: %w", code, ErrUnexpectedAnswer)
	}
	if !strings.EqualFold(ans.PaymentType, typeAuth) {
		return gateway.Status{}, fmt.Errorf("sibs: status: paymentType %q is not an authorisation: %w", ans.PaymentType, ErrUnexpectedAnswer)
	}
	if ans.Amount == nil {
		return gateway.Status{}, fmt.Errorf("sibs: status: no amount: %w", ErrUnexpectedAnswer)
	}
	currency := ans.Amount.Currency
	authorised, err := gateway.ParseMajor(ans.Amount.Value.String(), currency)
	if err != nil {
		return gateway.Status{}, fmt.Errorf("sibs: status: amount: %w: %w", err, ErrUnexpectedAnswer)
	}
	st := gateway.Status{State: gateway.StateUnknown, AuthorisedAmount: authorised, Currency: currency, Result: res}
	st.Result.Amount = 0
	if t, err := time.Parse(time.RFC3339Nano, ans.TransactionTimestamp); err == nil {
		st.AuthorisedAt = t
	}
	listed := ans.Operations != nil
	if listed && req.Reference != "" {
		st.Ours = gateway.OursAbsent
	}
	if listed {
		for i, o := range *ans.Operations {
			ours := req.Reference != "" && o.MerchantTransactionID == req.Reference
			rec, err := o.record(currency)
			if err != nil {
				if ours {
					return gateway.Status{}, fmt.Errorf("sibs: status: operation %d, ours: %w: %w", i, err, ErrUnexpectedAnswer)
				}
				continue // another kind of operation (a refund...): not ours, no effect on the open amount
			}
			ours = ours && rec.op == req.Operation
			switch {
			case rec.outcome == gateway.Succeeded && rec.op == gateway.Capture:
				st.CapturedAmount += rec.amount
			case rec.outcome == gateway.Succeeded:
				st.VoidedAmount += rec.amount
			}
			switch {
			case !ours || st.Ours == gateway.OursApplied:
			case rec.outcome == gateway.Succeeded:
				st.Ours, st.OursAmount = gateway.OursApplied, rec.amount
				st.Result.Outcome = gateway.Succeeded
				st.Result.TransactionID = rec.id
				st.Result.Amount = rec.amount
			case rec.outcome == gateway.Unknown:
				st.Ours = gateway.OursPending
			}
		}
	}
	switch {
	case !strings.EqualFold(ans.PaymentStatus, psSuccess) || !listed:
		st.State = gateway.StateUnknown
	case st.CapturedAmount > 0:
		st.State = gateway.StateCaptured
	case st.VoidedAmount > 0:
		st.State = gateway.StateVoided
	default:
		st.State = gateway.StateAuthorised
	}
	return st, nil
}

// answer is the part of a SIBS answer the adapter reads. No card data is
// read.
type answer struct {
	ReturnStatus struct {
		StatusCode        gateway.Text `json:"statusCode"`
		StatusMsg         string       `json:"statusMsg"`
		StatusDescription string       `json:"statusDescription"`
	} `json:"returnStatus"`
	PaymentStatus        string       `json:"paymentStatus"`
	PaymentType          string       `json:"paymentType"`
	TransactionID        string       `json:"transactionID"`
	TransactionTimestamp string       `json:"transactionTimestamp"`
	Amount               *money       `json:"amount"`
	Operations           *[]operation `json:"operations"`
}

// operation is one entry of the status answer's operations list.
type operation struct {
	TransactionID         string `json:"transactionID"`
	PaymentType           string `json:"paymentType"`
	PaymentStatus         string `json:"paymentStatus"`
	MerchantTransactionID string `json:"merchantTransactionId"`
	TransactionTimestamp  string `json:"transactionTimestamp"`
	Amount                *money `json:"amount"`
}

// opRecord is a listed operation, read.
type opRecord struct {
	op      gateway.Operation
	outcome gateway.Outcome
	amount  int64
	id      string
}

// record reads o: CAPT is a capture, CNCL a cancellation; Success is
// applied, Declined and Error refused, anything else still processing.
func (o operation) record(authCurrency string) (opRecord, error) {
	rec := opRecord{id: o.TransactionID}
	switch {
	case strings.EqualFold(o.PaymentType, typeCapture):
		rec.op = gateway.Capture
	case strings.EqualFold(o.PaymentType, typeCancellation):
		rec.op = gateway.Void
	default:
		return rec, fmt.Errorf("paymentType %q", o.PaymentType)
	}
	switch {
	case strings.EqualFold(o.PaymentStatus, psSuccess):
		rec.outcome = gateway.Succeeded
	case strings.EqualFold(o.PaymentStatus, psDeclined), strings.EqualFold(o.PaymentStatus, psError):
		rec.outcome = gateway.Declined
	default:
		rec.outcome = gateway.Unknown
	}
	if o.Amount == nil {
		return rec, errors.New("no amount")
	}
	currency := o.Amount.Currency
	if currency == "" {
		currency = authCurrency
	}
	if currency != authCurrency {
		return rec, fmt.Errorf("currency %s is not the authorisation's %s", currency, authCurrency)
	}
	amount, err := gateway.ParseMajor(o.Amount.Value.String(), currency)
	if err != nil {
		return rec, err
	}
	rec.amount = amount
	return rec, nil
}

func (a *answer) fill(res *gateway.Result) {
	res.Code = a.ReturnStatus.StatusCode.Trim()
	res.Message = a.ReturnStatus.StatusMsg
	if res.Message == "" {
		res.Message = a.ReturnStatus.StatusDescription
	}
	// A refusal says so first: "000 Success" with paymentStatus Declined is
	// reported as "paymentStatus Declined: Success".
	if a.PaymentStatus != "" && !strings.EqualFold(a.PaymentStatus, psSuccess) {
		if res.Message == "" {
			res.Message = "paymentStatus " + a.PaymentStatus
		} else {
			res.Message = "paymentStatus " + a.PaymentStatus + ": " + res.Message
		}
	}
	res.TransactionID = a.TransactionID
	if a.Amount != nil {
		if v, err := gateway.ParseMajor(a.Amount.Value.String(), a.Amount.Currency); err == nil {
			res.Amount, res.Currency = v, a.Amount.Currency
		}
	}
}
