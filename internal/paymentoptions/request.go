package paymentoptions

import (
	"strconv"

	"github.com/payworker/payworker/internal/jsontext"
)

// appendJSON appends b as json.Marshal encodes it, byte for byte.
func (b captureBody) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"transactionId":`...)
	dst = jsontext.AppendString(dst, b.TransactionID)
	dst = append(dst, `,"amount":`...)
	dst = strconv.AppendInt(dst, b.Amount, 10)
	dst = append(dst, `,"merchant_id":`...)
	dst = jsontext.AppendString(dst, b.MerchantID)
	if b.Notes != "" {
		dst = append(dst, `,"notes":`...)
		dst = jsontext.AppendString(dst, b.Notes)
	}
	return append(dst, '}')
}

// appendJSON appends b as json.Marshal encodes it, byte for byte.
func (b voidBody) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"transactionId":`...)
	dst = jsontext.AppendString(dst, b.TransactionID)
	dst = append(dst, `,"merchant_id":`...)
	dst = jsontext.AppendString(dst, b.MerchantID)
	return append(dst, '}')
}
