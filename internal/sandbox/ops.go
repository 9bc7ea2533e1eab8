package sandbox

import (
	"net"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/payworker/payworker/internal/gateway"
)

// Transaction types of the gateway's answers.
const (
	typePreAuth = "PRE_AUTH"
	typeCapture = "CAPTURE"
	typeVoid    = "VOID"
)

func (s *Sandbox) payment(w http.ResponseWriter, r *http.Request) outcome {
	var req paymentRequest
	if err := decode(w, r, &req); err != nil {
		invalid(w, err.Error())
		return outcome{}
	}
	if detail := validatePayment(&req); detail != "" {
		invalid(w, detail)
		return outcome{}
	}

	s.mu.Lock()
	fault, apply, drop := s.afterDecisionLocked()
	var a authorisation
	if apply {
		a = *s.authoriseLocked(req.MerchantID, req.Amount.value, req.Currency, card{
			number:   req.Card.Number,
			name:     req.Card.Name,
			expMonth: req.Card.ExpiryMonth,
			expYear:  req.Card.ExpiryYear,
		}, req.MerchantTxnRef)
	}
	s.mu.Unlock()

	switch {
	case drop:
		return outcome{applied: true, drop: true, fault: fault}
	case fault != "":
		writeUnclear(w, typePreAuth)
		return outcome{applied: apply, fault: fault}
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	md := a.merchantDetails()
	if len(req.BillingAddress) > 0 {
		md.BillingDetails = &billingDetails{BillingAddress: req.BillingAddress}
	}
	md.DeviceDetails = &deviceDetails{VisitedIP: host, MerchantIP: host, CustomerIP: req.CustomerIP}
	writeJSON(w, http.StatusCreated, answer{
		Success:         true,
		StatusCode:      http.StatusCreated,
		TransactionType: typePreAuth,
		GatewayResponse: gatewayResponse{Version: "1", Type: "INFO", Message: msgPayment, Code: "INFO0000"},
		MerchantDetails: md,
		PaymentDetails:  a.paymentDetails(a.Amount),
		TransactionDetails: &transactionDetails{
			ID:                    a.ID,
			Ref:                   a.ref,
			Timestamp:             a.AuthorisedAt.Format(timestampLayout),
			MerchantTxnRef:        a.merchantTxnRef,
			StoredPaymentMethodID: &jsonNull{},
		},
		RiskDetails: &riskDetails{},
	})
	return outcome{applied: true}
}

func validatePayment(req *paymentRequest) string {
	switch {
	case !req.Amount.set:
		return "amount is required"
	case req.Amount.value <= 0:
		return "amount must be greater than 0"
	case !isCurrency(req.Currency):
		return "currency must be an ISO 4217 alpha-3 code"
	case req.MerchantID == "":
		return "merchant_id is required"
	case len(req.MerchantID) > 10:
		return "merchant_id is longer than 10 characters"
	case !isCardNumber(req.Card.Number):
		return "card.number must be 12 to 19 digits"
	}
	return ""
}

func isCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return false
		}
	}
	return true
}

func isCardNumber(n string) bool {
	if len(n) < 12 || len(n) > 19 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}

// captureOrVoid serves capture and void. A capture takes an amount up to the
// authorised one (a partial capture releases the rest, as the gateway's
// documentation says); a void is always of the whole authorisation. Both
// apply to an open authorisation only.
func (s *Sandbox) captureOrVoid(w http.ResponseWriter, r *http.Request, op gateway.Operation) outcome {
	var req operationRequest
	if err := decode(w, r, &req); err != nil {
		invalid(w, err.Error())
		return outcome{}
	}
	if detail := validateOperation(op, &req); detail != "" {
		invalid(w, detail)
		return outcome{}
	}

	s.mu.Lock()
	a, ok := s.auths[req.TransactionID]
	switch {
	case !ok || a.MerchantID != req.MerchantID:
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "ERR0404", msgNotFound, nil)
		return outcome{}
	case a.State != StateAuthorised:
		s.mu.Unlock()
		writeError(w, http.StatusPreconditionFailed, "ERR0412", msgWrongState, nil)
		return outcome{}
	case op == gateway.Capture && req.Amount.value > a.Amount-a.VoidedAmount:
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "ERR0400", msgOverAmount, &paymentDetails{ResponseCode: rcOverAmount})
		return outcome{}
	}
	amount := a.Amount - a.VoidedAmount
	if op == gateway.Capture {
		amount = req.Amount.value
	}
	fault, apply, drop := s.afterDecisionLocked()
	var e opEntry
	if apply {
		e = s.applyLocked(a, op, amount)
	}
	snapshot := *a
	s.mu.Unlock()

	txType, code, msg := typeCapture, "INFO0001", msgCaptured
	if op == gateway.Void {
		txType, code, msg = typeVoid, "INFO0003", msgVoided
	}
	switch {
	case drop:
		return outcome{applied: true, drop: true, fault: fault}
	case fault != "":
		writeUnclear(w, txType)
		return outcome{applied: apply, fault: fault}
	}
	writeJSON(w, http.StatusCreated, answer{
		Success:         true,
		StatusCode:      http.StatusCreated,
		TransactionType: txType,
		GatewayResponse: gatewayResponse{Version: "1", Type: "INFO", Message: msg, Code: code},
		MerchantDetails: snapshot.merchantDetails(),
		PaymentDetails:  snapshot.paymentDetails(amount),
		TransactionDetails: &transactionDetails{
			ID:             e.ID,
			Ref:            e.ref,
			Timestamp:      e.Time.Format(timestampLayout),
			MerchantTxnRef: snapshot.merchantTxnRef,
		},
	})
	return outcome{applied: true}
}

func validateOperation(op gateway.Operation, req *operationRequest) string {
	switch {
	case req.TransactionID == "":
		return "transactionId is required"
	case len(req.TransactionID) > 36:
		return "transactionId is longer than 36 characters"
	case req.MerchantID == "":
		return "merchant_id is required"
	case len(req.MerchantID) > 10:
		return "merchant_id is longer than 10 characters"
	case op != gateway.Capture:
		return ""
	case !req.Amount.set:
		return "amount is required"
	case req.Amount.value <= 0:
		return "amount must be greater than 0"
	case utf8.RuneCountInString(req.Notes) > 128:
		return "notes is longer than 128 characters"
	}
	return ""
}

func (s *Sandbox) applyLocked(a *authorisation, op gateway.Operation, amount int64) opEntry {
	switch {
	case op == gateway.Void:
		a.State = StateVoided
		a.VoidedAmount += amount
	case amount < a.Amount-a.VoidedAmount:
		a.State = StatePartiallyCaptured
		a.CapturedAmount = amount
	default:
		a.State = StateCaptured
		a.CapturedAmount = amount
	}
	return s.recordLocked(a, op, amount, "")
}

// recordLocked records op of amount, applied to a now with the merchant's
// reference (empty for PaymentOptions), under a new id and reference
// number: in the ledger, among the operations the status call finds, and as
// a's last update. The caller has moved a's amounts and state.
func (s *Sandbox) recordLocked(a *authorisation, op gateway.Operation, amount int64, reference string) opEntry {
	now := time.Now().UTC()
	e := opEntry{
		Operation: Operation{
			ID:              uuid.NewString(),
			MerchantID:      a.MerchantID,
			AuthorisationID: a.ID,
			Operation:       op,
			Amount:          amount,
			Currency:        a.Currency,
			Time:            now,
			Reference:       reference,
		},
		ref: s.newRefLocked(),
	}
	a.UpdatedAt = now
	s.ops[e.ID] = e
	s.ledger = append(s.ledger, e.Operation)
	return e
}

// afterDecisionLocked rolls the faults that follow the decision to apply an
// operation: an unclear answer (applied on a coin toss) or an applied
// operation whose connection is then dropped.
func (s *Sandbox) afterDecisionLocked() (fault string, apply, drop bool) {
	switch {
	case s.rollLocked(s.faults.UnclearRate):
		return faultUnclear, s.rng.IntN(2) == 0, false
	case s.rollLocked(s.faults.ApplyThenDropRate):
		return faultApplyThenDrop, true, true
	}
	return "", true, false
}

func writeUnclear(w http.ResponseWriter, txType string) {
	writeJSON(w, http.StatusOK, answer{
		Success:         false,
		StatusCode:      http.StatusOK,
		TransactionType: txType,
		GatewayResponse: gatewayResponse{Version: "1", Type: "ERROR", Message: msgUnclear, Code: "ERR0680"},
		PaymentDetails:  &paymentDetails{ResponseCode: rcUnclear},
	})
}

// status answers an authorisation's current state (SPEC §1 reading (a)): for
// an authorisation id, PRE_AUTH with the authorised amount, CAPTURE with the
// captured amount, or VOID with the authorised amount; for the id of a
// capture or void, that operation.
func (s *Sandbox) status(w http.ResponseWriter, id string) {
	s.mu.Lock()
	var (
		a      authorisation
		txType string
		amount int64
		td     transactionDetails
	)
	if auth, ok := s.auths[id]; ok {
		a = *auth
		switch a.State {
		case StateAuthorised:
			txType, amount = typePreAuth, a.Amount
		case StateCaptured, StatePartiallyCaptured:
			txType, amount = typeCapture, a.CapturedAmount
		case StateVoided:
			txType, amount = typeVoid, a.Amount
		}
		td = transactionDetails{ID: a.ID, Ref: a.ref, Timestamp: a.AuthorisedAt.Format(timestampLayout)}
	} else if e, ok := s.ops[id]; ok {
		a = *s.auths[e.AuthorisationID]
		txType, amount = typeCapture, e.Amount
		if e.Operation.Operation == gateway.Void {
			txType = typeVoid
		}
		td = transactionDetails{ID: e.ID, Ref: e.ref, Timestamp: e.Time.Format(timestampLayout)}
	} else {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "ERR0404", msgNotFound, nil)
		return
	}
	s.mu.Unlock()

	td.MerchantTxnRef = a.merchantTxnRef
	writeJSON(w, http.StatusOK, answer{
		Success:            true,
		StatusCode:         http.StatusOK,
		TransactionType:    txType,
		GatewayResponse:    gatewayResponse{Version: "1", Type: "INFO", Message: msgStatus, Code: "INFO0000"},
		MerchantDetails:    a.merchantDetails(),
		PaymentDetails:     a.paymentDetails(amount),
		TransactionDetails: &td,
	})
}
