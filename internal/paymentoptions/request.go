package paymentoptions

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// appendJSON appends b as json.Marshal encodes it, byte for byte.
func (b captureBody) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"transactionId":`...)
	dst = appendString(dst, b.TransactionID)
	dst = append(dst, `,"amount":`...)
	dst = strconv.AppendInt(dst, b.Amount, 10)
	dst = append(dst, `,"merchant_id":`...)
	dst = appendString(dst, b.MerchantID)
	if b.Notes != "" {
		dst = append(dst, `,"notes":`...)
		dst = appendString(dst, b.Notes)
	}
	return append(dst, '}')
}

// appendJSON appends b as json.Marshal encodes it, byte for byte.
func (b voidBody) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"transactionId":`...)
	dst = appendString(dst, b.TransactionID)
	dst = append(dst, `,"merchant_id":`...)
	dst = appendString(dst, b.MerchantID)
	return append(dst, '}')
}

// appendString appends s as a JSON string as json.Marshal writes it: a
// string of printable ASCII with nothing json.Marshal escapes (a quote, a
// backslash, <, > or &) is written as it is, any other by json.Marshal.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= utf8.RuneSelf, c == '"', c == '\\', c == '<', c == '>', c == '&':
			q, err := json.Marshal(s)
			if err != nil {
				panic(err) // json.Marshal encodes every string
			}
			return append(dst, q...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
