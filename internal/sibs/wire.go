package sibs

import "encoding/json"

// operationBody is the body of a capture or cancellation, in the seed's key
// order (003: merchant, then transaction).
type operationBody struct {
	Merchant    merchantBody    `json:"merchant"`
	Transaction transactionBody `json:"transaction"`
}

type merchantBody struct {
	// TerminalID is numeric on the wire (the seed sends 24).
	TerminalID            json.Number `json:"terminalId"`
	Channel               string      `json:"channel"`
	MerchantTransactionID string      `json:"merchantTransactionId"`
}

type transactionBody struct {
	TransactionTimestamp string              `json:"transactionTimestamp"`
	Description          string              `json:"description"`
	Amount               money               `json:"amount"`
	OriginalTransaction  originalTransaction `json:"originalTransaction"`
}

// money is SIBS's amount: a decimal in major units, carried as the exact
// JSON number text (never a float64), and an ISO 4217 alpha-3 currency.
type money struct {
	Value    json.Number `json:"value"`
	Currency string      `json:"currency"`
}

type originalTransaction struct {
	ID       string `json:"id"`
	Datetime string `json:"datetime"`
}
