package sandbox

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/payworker/payworker/internal/gateway"
)

// Endpoint names of the SIBS endpoints, as counted by Calls.
const (
	EndpointSIBSPayment      = "sibs_payment"
	EndpointSIBSCapture      = "sibs_capture"
	EndpointSIBSCancellation = "sibs_cancellation"
	EndpointSIBSStatus       = "sibs_status"
)

// sibsPath matches the escaped path of a SIBS endpoint: it ends in
// /api/v1/payments (payment) or /api/v1/payments/{id}/<op>, whatever comes
// before. No PaymentOptions path ends so: theirs end in
// /server-to-server-interface/<op> or .../transaction/status/<id>, with the
// id escaped into one segment.
var sibsPath = regexp.MustCompile(`/api/v1/payments(?:/([^/]+)/(capture|cancellation|status))?$`)

// SIBS answer vocabulary (SPEC §1): returnStatus.statusCode "000" means only
// that the request was processed; paymentStatus is the outcome.
const (
	sibsOK            = "000"
	sibsSuccess       = "Success"
	sibsDeclined      = "Declined"
	sibsPending       = "Pending"
	sibsError         = "Error"
	sibsTypeAuth      = "AUTH"
	sibsTypeCapture   = "CAPT"
	sibsTypeCancel    = "CNCL"
	sibsMethodCard    = "CARD"
	maxSIBSDesc       = 70
	maxSIBSMerchantID = 255
)

// SIBSBaseURL returns the base URL to configure the SIBS adapter with once
// Start has run: "http://HOST:PORT", the host root under which
// /api/v1/payments/... is served (the SIBS adapter also accepts Start's
// PaymentOptions base, ".../api/v1"). It is empty before Start.
func (s *Sandbox) SIBSBaseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr == "" {
		return ""
	}
	return "http://" + s.addr
}

type sibsReturnStatus struct {
	StatusCode        string `json:"statusCode"`
	StatusMsg         string `json:"statusMsg"`
	StatusDescription string `json:"statusDescription"`
}

type sibsAmount struct {
	Value    json.Number `json:"value"`
	Currency string      `json:"currency"`
}

type sibsMerchant struct {
	TerminalID            json.Number `json:"terminalId,omitempty"`
	Channel               string      `json:"channel,omitempty"`
	MerchantTransactionID string      `json:"merchantTransactionId,omitempty"`
}

type sibsOriginal struct {
	ID       string `json:"id"`
	Datetime string `json:"datetime"`
}

// sibsOperation is one entry of the status answer's operations list (our
// reading of SPEC §1: the captures and cancellations of the authorisation,
// each with the merchantTransactionId it was sent with).
type sibsOperation struct {
	TransactionID         string      `json:"transactionID"`
	PaymentType           string      `json:"paymentType"`
	PaymentStatus         string      `json:"paymentStatus"`
	MerchantTransactionID string      `json:"merchantTransactionId,omitempty"`
	TransactionTimestamp  string      `json:"transactionTimestamp"`
	Amount                *sibsAmount `json:"amount"`
}

type sibsAnswer struct {
	Merchant             *sibsMerchant    `json:"merchant,omitempty"`
	ReturnStatus         sibsReturnStatus `json:"returnStatus"`
	PaymentStatus        string           `json:"paymentStatus,omitempty"`
	PaymentType          string           `json:"paymentType,omitempty"`
	PaymentMethod        string           `json:"paymentMethod,omitempty"`
	TransactionID        string           `json:"transactionID,omitempty"`
	TransactionTimestamp string           `json:"transactionTimestamp,omitempty"`
	Amount               *sibsAmount      `json:"amount,omitempty"`
	OriginalTransaction  *sibsOriginal    `json:"originalTransaction,omitempty"`
	Operations           *[]sibsOperation `json:"operations,omitempty"`
}

// sibsRequest is the body of the SIBS payment, capture and cancellation.
type sibsRequest struct {
	Merchant struct {
		TerminalID            json.Number `json:"terminalId"`
		Channel               string      `json:"channel"`
		MerchantTransactionID string      `json:"merchantTransactionId"`
	} `json:"merchant"`
	Transaction struct {
		TransactionTimestamp string        `json:"transactionTimestamp"`
		Description          string        `json:"description"`
		PaymentType          string        `json:"paymentType"`
		Amount               *sibsAmount   `json:"amount"`
		OriginalTransaction  *sibsOriginal `json:"originalTransaction"`
	} `json:"transaction"`
}

// sibsMoney renders minor units as SIBS's decimal; a currency outside the
// ISO 4217 table (which only the PaymentOptions payment accepts) is carried
// in minor units, which the adapter will refuse to read.
func sibsMoney(amount int64, currency string) *sibsAmount {
	v, err := gateway.FormatMinor(amount, currency)
	if err != nil {
		v = strconv.FormatInt(amount, 10)
	}
	return &sibsAmount{Value: json.Number(v), Currency: currency}
}

func (s *Sandbox) serveSIBS(w http.ResponseWriter, r *http.Request, escapedID, op string) {
	endpoint := EndpointSIBSPayment
	switch op {
	case "capture":
		endpoint = EndpointSIBSCapture
	case "cancellation":
		endpoint = EndpointSIBSCancellation
	case "status":
		endpoint = EndpointSIBSStatus
	}
	id, err := url.PathUnescape(escapedID)
	if err != nil {
		writeSIBSError(w, http.StatusNotFound, "E0404", "Not Found", "unreadable transaction id")
		return
	}
	s.serveCall(w, r, endpoint, endpoint == EndpointSIBSStatus, answerSIBSFault, func(w http.ResponseWriter) outcome {
		return s.serveSIBSEndpoint(w, r, endpoint, id)
	})
}

// serveSIBSEndpoint handles a SIBS call that no fault struck before the
// request was read.
func (s *Sandbox) serveSIBSEndpoint(w http.ResponseWriter, r *http.Request, endpoint, id string) outcome {
	want := http.MethodPost
	if endpoint == EndpointSIBSStatus {
		want = http.MethodGet
	}
	switch {
	case r.Method != want:
		w.Header().Set("Allow", want)
		writeSIBSError(w, http.StatusMethodNotAllowed, "E0405", "Method Not Allowed", "use "+want)
	case !s.sibsAuthorised(r):
		writeSIBSError(w, http.StatusUnauthorized, "E0401", "Unauthorized", "missing or invalid bearer token or x-ibm-client-id")
	case endpoint == EndpointSIBSPayment:
		return s.sibsPayment(w, r)
	case endpoint == EndpointSIBSCapture:
		return s.sibsOperation(w, r, id, gateway.Capture)
	case endpoint == EndpointSIBSCancellation:
		return s.sibsOperation(w, r, id, gateway.Void)
	default:
		s.sibsStatus(w, id)
	}
	return outcome{}
}

func (s *Sandbox) sibsAuthorised(r *http.Request) bool {
	ok := true
	if s.opts.SIBSToken != "" {
		ok = subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+s.opts.SIBSToken)) == 1
	}
	if s.opts.SIBSClientID != "" {
		ok = subtle.ConstantTimeCompare([]byte(r.Header.Get("x-ibm-client-id")), []byte(s.opts.SIBSClientID)) == 1 && ok
	}
	return ok
}

// readSIBS decodes and checks the common part of a SIBS body and returns the
// amount in minor units; detail is non-empty for an invalid request.
func readSIBS(w http.ResponseWriter, r *http.Request, req *sibsRequest) (amount int64, detail string) {
	if err := decode(w, r, req); err != nil {
		return 0, err.Error()
	}
	m, t := &req.Merchant, &req.Transaction
	switch {
	case m.TerminalID == "" || !allDigits(string(m.TerminalID)) || len(m.TerminalID) > 10:
		return 0, "merchant.terminalId must be a number of 1 to 10 digits"
	case m.MerchantTransactionID == "" || len(m.MerchantTransactionID) > maxSIBSMerchantID:
		return 0, "merchant.merchantTransactionId is required, up to 255 characters"
	case utf8.RuneCountInString(t.Description) > maxSIBSDesc:
		return 0, "transaction.description is longer than 70 characters"
	case !isTimestamp(t.TransactionTimestamp):
		return 0, "transaction.transactionTimestamp must be an ISO date-time"
	case t.Amount == nil:
		return 0, "transaction.amount is required"
	}
	if _, ok := gateway.CurrencyExponent(t.Amount.Currency); !ok {
		return 0, "transaction.amount.currency must be an ISO 4217 currency"
	}
	v, err := gateway.ParseMajor(t.Amount.Value.String(), t.Amount.Currency)
	switch {
	case err != nil:
		return 0, "transaction.amount.value: " + err.Error()
	case v <= 0:
		return 0, "transaction.amount.value must be greater than 0"
	}
	return v, ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isTimestamp(v string) bool {
	_, err := time.Parse(time.RFC3339Nano, v)
	return err == nil
}

// sibsPayment creates an authorisation (paymentType AUTH), as a simplified
// stand-in for SIBS's checkout and card steps. Its merchant id, for the
// PaymentOptions endpoints, is the terminal id.
func (s *Sandbox) sibsPayment(w http.ResponseWriter, r *http.Request) outcome {
	var req sibsRequest
	amount, detail := readSIBS(w, r, &req)
	if detail == "" && req.Transaction.PaymentType != "" && req.Transaction.PaymentType != sibsTypeAuth {
		detail = "transaction.paymentType must be AUTH"
	}
	if detail != "" {
		writeSIBSError(w, http.StatusBadRequest, "E0400", "Bad Request", detail)
		return outcome{}
	}
	currency := req.Transaction.Amount.Currency
	s.mu.Lock()
	fault, apply, drop := s.afterDecisionLocked()
	var a authorisation
	if apply {
		a = *s.authoriseLocked(string(req.Merchant.TerminalID), amount, currency, card{
			number: defaultCardNumber, name: defaultCardName, expMonth: "12", expYear: "30",
		}, req.Merchant.MerchantTransactionID)
	}
	s.mu.Unlock()
	switch {
	case drop:
		return outcome{applied: true, drop: true, fault: fault}
	case fault != "":
		writeSIBSPending(w, sibsTypeAuth, &req)
		return outcome{applied: apply, fault: fault}
	}
	writeJSON(w, http.StatusOK, sibsAnswer{
		Merchant:             &sibsMerchant{TerminalID: req.Merchant.TerminalID, Channel: req.Merchant.Channel, MerchantTransactionID: a.merchantTxnRef},
		ReturnStatus:         sibsReturnStatus{StatusCode: sibsOK, StatusMsg: "Success", StatusDescription: "Success"},
		PaymentStatus:        sibsSuccess,
		PaymentType:          sibsTypeAuth,
		PaymentMethod:        sibsMethodCard,
		TransactionID:        a.ID,
		TransactionTimestamp: a.AuthorisedAt.Format(timestampLayout),
		Amount:               sibsMoney(a.Amount, a.Currency),
	})
	return outcome{applied: true}
}

// sibsOperation serves capture and cancellation of the authorisation id,
// full or partial: several captures up to the authorised amount (state
// partially captured, then captured), and cancellations of what is still
// open. A refusal on the merits is technically processed: HTTP 200,
// statusCode "000", paymentStatus Declined. An invalid request is a 400, an
// unknown authorisation a 404.
func (s *Sandbox) sibsOperation(w http.ResponseWriter, r *http.Request, id string, op gateway.Operation) outcome {
	var req sibsRequest
	amount, detail := readSIBS(w, r, &req)
	orig := req.Transaction.OriginalTransaction
	switch {
	case detail != "":
	case orig == nil || orig.ID == "":
		detail = "transaction.originalTransaction.id is required"
	case orig.ID != id:
		detail = "transaction.originalTransaction.id is not the transaction of the path"
	case !isTimestamp(orig.Datetime):
		detail = "transaction.originalTransaction.datetime must be an ISO date-time"
	}
	if detail != "" {
		writeSIBSError(w, http.StatusBadRequest, "E0400", "Bad Request", detail)
		return outcome{}
	}
	payType := sibsTypeCapture
	if op == gateway.Void {
		payType = sibsTypeCancel
	}
	currency := req.Transaction.Amount.Currency

	s.mu.Lock()
	a, ok := s.auths[id]
	if !ok {
		s.mu.Unlock()
		writeSIBSError(w, http.StatusNotFound, "E0404", "Not Found", "transaction not found")
		return outcome{}
	}
	open := a.Amount - a.CapturedAmount - a.VoidedAmount
	var refusal string
	switch {
	case a.Currency != currency:
		refusal = fmt.Sprintf("currency %s is not the authorisation's %s", currency, a.Currency)
	case a.State != StateAuthorised && a.State != StatePartiallyCaptured || open <= 0:
		refusal = "the authorisation is " + string(a.State) + ": nothing is left open"
	case amount > open:
		refusal = fmt.Sprintf("amount greater than what is left open on the authorisation (%s)", sibsMoney(open, a.Currency).Value)
	}
	if refusal != "" {
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, sibsAnswer{
			Merchant:      echoMerchant(&req),
			ReturnStatus:  sibsReturnStatus{StatusCode: sibsOK, StatusMsg: "Success", StatusDescription: refusal},
			PaymentStatus: sibsDeclined,
			PaymentType:   payType,
			Amount:        sibsMoney(amount, currency),
		})
		return outcome{}
	}
	fault, apply, drop := s.afterDecisionLocked()
	var e opEntry
	if apply {
		e = s.applySIBSLocked(a, op, amount, req.Merchant.MerchantTransactionID)
	}
	authAt := a.AuthorisedAt
	s.mu.Unlock()

	switch {
	case drop:
		return outcome{applied: true, drop: true, fault: fault}
	case fault != "":
		writeSIBSPending(w, payType, &req)
		return outcome{applied: apply, fault: fault}
	}
	writeJSON(w, http.StatusOK, sibsAnswer{
		Merchant:             echoMerchant(&req),
		ReturnStatus:         sibsReturnStatus{StatusCode: sibsOK, StatusMsg: "Success", StatusDescription: "Success"},
		PaymentStatus:        sibsSuccess,
		PaymentType:          payType,
		TransactionID:        e.ID,
		TransactionTimestamp: e.Time.Format(timestampLayout),
		Amount:               sibsMoney(e.Amount, e.Currency),
		OriginalTransaction:  &sibsOriginal{ID: id, Datetime: authAt.Format(timestampLayout)},
	})
	return outcome{applied: true}
}

// applySIBSLocked applies a SIBS capture or cancellation of amount (at most
// what is open) and moves the authorisation's state: partially captured
// while something is captured and something is still open, captured once
// nothing is open and something was captured, voided once nothing is open
// and nothing was captured; a partial cancellation of an uncaptured
// authorisation leaves it authorised.
func (s *Sandbox) applySIBSLocked(a *authorisation, op gateway.Operation, amount int64, reference string) opEntry {
	if op == gateway.Capture {
		a.CapturedAmount += amount
	} else {
		a.VoidedAmount += amount
	}
	open := a.Amount - a.CapturedAmount - a.VoidedAmount
	switch {
	case open > 0 && a.CapturedAmount > 0:
		a.State = StatePartiallyCaptured
	case open > 0:
		a.State = StateAuthorised
	case a.CapturedAmount > 0:
		a.State = StateCaptured
	default:
		a.State = StateVoided
	}
	return s.recordLocked(a, op, amount, reference)
}

// sibsStatus answers GET /api/v1/payments/{id}/status (our reading of SPEC
// §1): for an authorisation, paymentType AUTH with its amount and time, and
// every capture and cancellation applied to it, by either gateway, in
// "operations"; for the id of a capture or cancellation, that operation; 404
// for an unknown id.
func (s *Sandbox) sibsStatus(w http.ResponseWriter, id string) {
	s.mu.Lock()
	var ans sibsAnswer
	if a, ok := s.auths[id]; ok {
		ops := []sibsOperation{}
		for _, e := range s.ledger {
			if e.AuthorisationID != id {
				continue
			}
			ops = append(ops, sibsOperation{
				TransactionID:         e.ID,
				PaymentType:           sibsOperationType(e.Operation),
				PaymentStatus:         sibsSuccess,
				MerchantTransactionID: e.Reference,
				TransactionTimestamp:  e.Time.Format(timestampLayout),
				Amount:                sibsMoney(e.Amount, e.Currency),
			})
		}
		ans = sibsAnswer{
			Merchant:             &sibsMerchant{MerchantTransactionID: a.merchantTxnRef},
			PaymentType:          sibsTypeAuth,
			TransactionID:        a.ID,
			TransactionTimestamp: a.AuthorisedAt.Format(timestampLayout),
			Amount:               sibsMoney(a.Amount, a.Currency),
			Operations:           &ops,
		}
		if s.faults.SIBSUnlisted {
			ans.Operations = nil
		}
	} else if e, ok := s.ops[id]; ok {
		ans = sibsAnswer{
			Merchant:             &sibsMerchant{MerchantTransactionID: e.Reference},
			PaymentType:          sibsOperationType(e.Operation.Operation),
			TransactionID:        e.ID,
			TransactionTimestamp: e.Time.Format(timestampLayout),
			Amount:               sibsMoney(e.Amount, e.Currency),
			OriginalTransaction:  &sibsOriginal{ID: e.AuthorisationID, Datetime: s.auths[e.AuthorisationID].AuthorisedAt.Format(timestampLayout)},
		}
	} else {
		s.mu.Unlock()
		writeSIBSError(w, http.StatusNotFound, "E0404", "Not Found", "transaction not found")
		return
	}
	s.mu.Unlock()
	ans.ReturnStatus = sibsReturnStatus{StatusCode: sibsOK, StatusMsg: "Success", StatusDescription: "Success"}
	ans.PaymentStatus = sibsSuccess
	ans.PaymentMethod = sibsMethodCard
	writeJSON(w, http.StatusOK, ans)
}

func sibsOperationType(op gateway.Operation) string {
	if op == gateway.Void {
		return sibsTypeCancel
	}
	return sibsTypeCapture
}

func echoMerchant(req *sibsRequest) *sibsMerchant {
	return &sibsMerchant{
		TerminalID:            req.Merchant.TerminalID,
		Channel:               req.Merchant.Channel,
		MerchantTransactionID: req.Merchant.MerchantTransactionID,
	}
}

// writeSIBSPending is the unclear answer: processed ("000"), outcome
// Pending. The operation was applied or not on a coin toss; the status call
// tells which.
func writeSIBSPending(w http.ResponseWriter, payType string, req *sibsRequest) {
	writeJSON(w, http.StatusOK, sibsAnswer{
		Merchant:      echoMerchant(req),
		ReturnStatus:  sibsReturnStatus{StatusCode: sibsOK, StatusMsg: "Success", StatusDescription: "Transaction pending"},
		PaymentStatus: sibsPending,
		PaymentType:   payType,
		Amount:        req.Transaction.Amount,
	})
}

// writeSIBSError answers a refusal or a fault that was not processed.
func writeSIBSError(w http.ResponseWriter, status int, code, msg, description string) {
	ans := sibsAnswer{ReturnStatus: sibsReturnStatus{StatusCode: code, StatusMsg: msg, StatusDescription: description}}
	if status >= 500 {
		ans.PaymentStatus = sibsError
	}
	writeJSON(w, status, ans)
}

// answerSIBSFault answers a rate-limit or 5xx fault in the SIBS shape.
func answerSIBSFault(w http.ResponseWriter, fault string, status int, f Faults) {
	switch fault {
	case faultRateLimit:
		setRetryAfter(w, f)
		writeSIBSError(w, status, "E0429", "Too Many Requests", "rate limited: retry later")
	case faultError:
		writeSIBSError(w, status, fmt.Sprintf("E%04d", status), http.StatusText(status), "injected fault")
	}
}
