package paymentoptions

import (
	"strconv"
	"strings"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/jsontext"
)

// decodeAnswer reads body into ans as gateway.DecodeAnswerCareful does, the
// gateway's usual answers in one pass by decodeAnswerFast.
func decodeAnswer(body []byte, ans *answer) error {
	return gateway.DecodeAnswer(body, ans, decodeAnswerFast)
}

// decodeAnswerFast reads body into ans when body is valid JSON whose every
// part answerDecoder can read exactly as json.Unmarshal would, without
// error, and reports whether it did. When it reports false, ans is
// unchanged.
func decodeAnswerFast(body []byte, ans *answer) bool {
	d := answerDecoder{jsontext.Reader{Data: body}}
	a := *ans
	if !d.Byte('{') || !d.answer(&a) || !d.End() {
		return false
	}
	*ans = a
	return true
}

// answerDecoder reads the JSON object of an answer in one pass, storing
// each field as json.Unmarshal would into the same answer: a later
// duplicate key overwrites (or, for an object, merges into) an earlier
// one, null leaves a string, bool or object as it is and reads as empty
// for a Text, a card number and an amount. Every method returns false, and
// the whole answer is left to json.Unmarshal, on invalid JSON and on
// anything it does not read the same way: a key written with an escape,
// with a non-ASCII byte, or matching a field only without regard to case;
// a value of a kind the field does not take (json.Unmarshal reports it);
// a read string with an escape or invalid UTF-8; nesting deeper than
// 64 (jsontext.Reader).
type answerDecoder struct{ jsontext.Reader }

func (d *answerDecoder) answer(a *answer) bool {
	return d.Members(func(key []byte) bool {
		switch string(key) {
		case "success":
			return d.bool(&a.Success)
		case "transaction_type":
			return d.string(&a.TransactionType)
		case "gateway_response":
			return d.Object(func() bool { return d.gatewayResponse(a) })
		case "payment_details":
			return d.Object(func() bool { return d.paymentDetails(a) })
		case "transaction_details":
			return d.Object(func() bool { return d.transactionDetails(a) })
		}
		return d.Unknown(key, "success", "transaction_type", "gateway_response", "payment_details", "transaction_details")
	})
}

func (d *answerDecoder) gatewayResponse(a *answer) bool {
	return d.Members(func(key []byte) bool {
		switch string(key) {
		case "code":
			return d.string(&a.GatewayResponse.Code)
		case "message":
			return d.string(&a.GatewayResponse.Message)
		}
		return d.Unknown(key, "code", "message")
	})
}

func (d *answerDecoder) paymentDetails(a *answer) bool {
	p := &a.PaymentDetails
	return d.Members(func(key []byte) bool {
		switch string(key) {
		case "amount":
			return d.amount(&p.Amount)
		case "response_code":
			return d.text(&p.ResponseCode)
		case "auth_code":
			return d.text(&p.AuthCode)
		case "currency":
			return d.string(&p.Currency)
		case "scheme":
			return d.string(&p.Scheme)
		case "card":
			return d.Object(func() bool { return d.card(a) })
		}
		return d.Unknown(key, "amount", "response_code", "auth_code", "currency", "scheme", "card")
	})
}

func (d *answerDecoder) card(a *answer) bool {
	return d.Members(func(key []byte) bool {
		switch string(key) {
		case "number":
			return d.pan(&a.PaymentDetails.Card.Number)
		}
		return d.Unknown(key, "number")
	})
}

func (d *answerDecoder) transactionDetails(a *answer) bool {
	t := &a.TransactionDetails
	return d.Members(func(key []byte) bool {
		switch string(key) {
		case "id":
			return d.string(&t.ID)
		case "ref":
			return d.text(&t.Ref)
		case "timestamp":
			return d.string(&t.Timestamp)
		}
		return d.Unknown(key, "id", "ref", "timestamp")
	})
}

func (d *answerDecoder) bool(v *bool) bool {
	switch d.Peek() {
	case 't':
		*v = true
		return d.Literal("true")
	case 'f':
		*v = false
		return d.Literal("false")
	case 'n':
		return d.Literal("null")
	}
	return false
}

func (d *answerDecoder) string(v *string) bool {
	switch d.Peek() {
	case '"':
		s, ok := d.PlainString()
		if ok {
			*v = string(s)
		}
		return ok
	case 'n':
		return d.Literal("null")
	}
	return false
}

// scalar reads a string or a number as gateway.Text.UnmarshalJSON does:
// the string's text, the number's literal; null is empty.
func (d *answerDecoder) scalar() (text []byte, ok bool) {
	switch c := d.Peek(); {
	case c == '"':
		return d.PlainString()
	case c == '-' || c >= '0' && c <= '9':
		return d.Number()
	case c == 'n':
		return nil, d.Literal("null")
	}
	return nil, false
}

func (d *answerDecoder) text(v *gateway.Text) bool {
	s, ok := d.scalar()
	if ok {
		*v = gateway.Text(s)
	}
	return ok
}

func (d *answerDecoder) pan(v *maskedPAN) bool {
	s, ok := d.scalar()
	if ok {
		*v = maskedPAN(gateway.MaskPAN(string(s)))
	}
	return ok
}

// amount reads an amount as flexAmount.UnmarshalJSON does: an integer as a
// number or a string; any other value reads as absent.
func (d *answerDecoder) amount(v *flexAmount) bool {
	*v = flexAmount{}
	switch d.Peek() {
	case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'n':
		s, ok := d.scalar()
		if !ok {
			return false
		}
		v.value = parseAmount(s)
		return true
	}
	return d.Skip()
}

// parseAmount returns s as flexAmount reads it: an integer, surrounding
// white space allowed, or 0.
func parseAmount(s []byte) int64 {
	digits := s
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 18 {
		return parseAmountCareful(s)
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return parseAmountCareful(s)
		}
		n = n*10 + int64(c-'0')
	}
	if len(digits) < len(s) {
		n = -n
	}
	return n
}

// parseAmountCareful is parseAmount as flexAmount.UnmarshalJSON writes it.
func parseAmountCareful(s []byte) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(string(s)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
