package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// Messages, in the gateway's language where the documentation shows it.
const (
	msgPayment      = "Payment Successful."
	msgCaptured     = "金額が正常にキャプチャされました。"
	msgVoided       = "承認が正常にキャンセルされました。"
	msgStatus       = "取引が見つかりました。"
	msgNoEndpoint   = "エンドポイントが見つかりません。"
	msgMethod       = "許可されていないメソッドです。"
	msgUnauthorised = "認証に失敗しました。APIキーを確認してください。"
	msgNotFound     = "取引が見つかりません。"
	msgWrongState   = "取引は既にキャプチャまたはキャンセルされています。"
	msgInvalid      = "無効なリクエストです。"
	msgOverAmount   = "キャプチャ金額が事前承認額を超えています。"
	msgUnclear      = "取引結果が不明です。"
	msgTooMany      = "リクエストが多すぎます。しばらくしてから再試行してください。"
	msgServerError  = "内部サーバーエラーが発生しました。"
	msgBadGateway   = "上流の処理でエラーが発生しました。"
	msgUnavailable  = "サービスは一時的に利用できません。"
	msgTimeout      = "上流の処理がタイムアウトしました。"
)

// Acquirer response codes the sandbox answers (payment_details.response_code).
const (
	rcApproved   = 0
	rcOverAmount = 836
	rcUnclear    = 680
)

type answer struct {
	Success            bool                `json:"success"`
	StatusCode         int                 `json:"status_code"`
	IsLive             bool                `json:"is_live"`
	TransactionType    string              `json:"transaction_type,omitempty"`
	GatewayResponse    gatewayResponse     `json:"gateway_response"`
	MerchantDetails    *merchantDetails    `json:"merchant_details,omitempty"`
	PaymentDetails     *paymentDetails     `json:"payment_details,omitempty"`
	TransactionDetails *transactionDetails `json:"transaction_details,omitempty"`
	RiskDetails        *riskDetails        `json:"risk-details,omitempty"`
}

type gatewayResponse struct {
	Version string `json:"version"`
	Type    string `json:"type"`
	Message string `json:"message"`
	Code    string `json:"code"`
}

type merchantDetails struct {
	LegalName      string          `json:"legal_name"`
	MID            string          `json:"mid"`
	MerchantTxnRef string          `json:"merchant_txn_ref"`
	BillingDetails *billingDetails `json:"billing_details,omitempty"`
	DeviceDetails  *deviceDetails  `json:"device_details,omitempty"`
}

type billingDetails struct {
	BillingAddress json.RawMessage `json:"billing_address,omitempty"`
}

type deviceDetails struct {
	VisitedIP  string `json:"visited_ip"`
	MerchantIP string `json:"merchant_ip"`
	CustomerIP string `json:"customer_ip"`
}

type paymentDetails struct {
	Amount         *int64          `json:"amount,omitempty"`
	ResponseCode   int             `json:"response_code"`
	AuthCode       string          `json:"auth_code,omitempty"`
	Currency       string          `json:"currency,omitempty"`
	PaymentMethod  string          `json:"payment_method,omitempty"`
	Scheme         string          `json:"scheme,omitempty"`
	Card           *cardDetails    `json:"card,omitempty"`
	AdditionalData *additionalData `json:"additional_data,omitempty"`
}

type cardDetails struct {
	Name     string `json:"name"`
	Number   string `json:"number"`
	ExpMonth string `json:"exp_month"`
	ExpYear  string `json:"exp_year"`
}

type additionalData struct {
	PaymentDataSource struct {
		Type string `json:"type"`
	} `json:"payment_data_source"`
}

type transactionDetails struct {
	ID                    string    `json:"id"`
	Ref                   int64     `json:"ref"`
	Timestamp             string    `json:"timestamp"`
	MerchantTxnRef        string    `json:"merchant_txn_ref"`
	StoredPaymentMethodID *jsonNull `json:"stored_payment_method_id,omitempty"`
}

type riskDetails struct {
	RiskScore *int `json:"risk_score"`
}

// jsonNull marshals as null, for fields the gateway sends as an explicit null.
type jsonNull struct{}

func (jsonNull) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// paymentRequest is the part of the documented payment body the sandbox uses.
type paymentRequest struct {
	Amount         amountField     `json:"amount"`
	Currency       string          `json:"currency"`
	MerchantID     string          `json:"merchant_id"`
	MerchantTxnRef string          `json:"merchant_txn_ref"`
	CustomerIP     string          `json:"customer_ip"`
	BillingAddress json.RawMessage `json:"billing_address"`
	Card           struct {
		Number      string `json:"number"`
		Name        string `json:"name"`
		ExpiryMonth string `json:"expiry_month"`
		ExpiryYear  string `json:"expiry_year"`
		CVC         string `json:"cvc"`
	} `json:"card"`
}

// operationRequest is the body of capture (with amount and notes) and void.
type operationRequest struct {
	TransactionID string      `json:"transactionId"`
	Amount        amountField `json:"amount"`
	MerchantID    string      `json:"merchant_id"`
	Notes         string      `json:"notes"`
}

// amountField accepts an integer amount as a JSON number or string: the
// payment example sends "1000", capture documents an integer.
type amountField struct {
	value int64
	set   bool
}

func (a *amountField) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*a = amountField{}
		return nil
	}
	text := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &text); err != nil {
			return err
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
	if err != nil {
		return errors.New("amount must be an integer")
	}
	*a = amountField{value: v, set: true}
	return nil
}

// decode reads a JSON body of at most maxBody bytes into v.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		return errors.New("body is not valid JSON of the expected shape")
	}
	if dec.More() {
		return errors.New("body holds more than one JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "sandbox: encode answer", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError answers a refusal in the shape of SPEC §1 reading (b); pd, when
// non-nil, carries the acquirer's response code.
func writeError(w http.ResponseWriter, status int, code, message string, pd *paymentDetails) {
	writeJSON(w, status, answer{
		Success:         false,
		StatusCode:      status,
		GatewayResponse: gatewayResponse{Version: "1", Type: "ERROR", Message: message, Code: code},
		PaymentDetails:  pd,
	})
}

func invalid(w http.ResponseWriter, detail string) {
	writeError(w, http.StatusBadRequest, "ERR0400", msgInvalid+" "+detail, nil)
}

// scheme names the card scheme and the gateway's payment method from the
// number's prefix.
func scheme(number string) (scheme, method string) {
	switch {
	case strings.HasPrefix(number, "4"):
		return "VISA", "VISA-SSL"
	case strings.HasPrefix(number, "34"), strings.HasPrefix(number, "37"):
		return "AMEX", "AMEX-SSL"
	case strings.HasPrefix(number, "35"):
		return "JCB", "JCB-SSL"
	case strings.HasPrefix(number, "5"), strings.HasPrefix(number, "2"):
		return "MASTERCARD", "ECMC-SSL"
	}
	return "CARD", "CARD-SSL"
}

func (a *authorisation) paymentDetails(amount int64) *paymentDetails {
	sch, method := scheme(a.card.number)
	pd := &paymentDetails{
		Amount:        &amount,
		ResponseCode:  rcApproved,
		AuthCode:      a.authCode,
		Currency:      a.Currency,
		PaymentMethod: method,
		Scheme:        sch,
		Card: &cardDetails{
			Name:     a.card.name,
			Number:   a.card.number,
			ExpMonth: a.card.expMonth,
			ExpYear:  a.card.expYear,
		},
		AdditionalData: &additionalData{},
	}
	pd.AdditionalData.PaymentDataSource.Type = "card"
	return pd
}

func (a *authorisation) merchantDetails() *merchantDetails {
	return &merchantDetails{LegalName: legalName, MID: a.MerchantID, MerchantTxnRef: a.merchantTxnRef}
}
