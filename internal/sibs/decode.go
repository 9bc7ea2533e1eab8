package sibs

import (
	"encoding/json"

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
// unchanged. It declines an ans that already holds an amount or an
// operations list: json.Unmarshal writes into those in place, which a
// reader that may still decline must not do.
func decodeAnswerFast(body []byte, ans *answer) bool {
	if ans.Amount != nil || ans.Operations != nil {
		return false
	}
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
// one; null leaves a string, a json.Number or an object as it is, reads as
// empty for a gateway.Text, and sets a pointer to nil; an array fills the
// operations list as json.Unmarshal fills a slice, reusing what a previous
// "operations" left in it. Every method returns false, and the whole
// answer is left to json.Unmarshal, on invalid JSON and on anything it
// does not read the same way: a key written with an escape, with a
// non-ASCII byte, or matching a field only without regard to case; a
// value of a kind the field does not take, or a string that is no number
// for an amount's value (json.Unmarshal reports them); a read string with
// an escape, a control character or invalid UTF-8; nesting deeper than
// 64 (jsontext.Reader).
type answerDecoder struct{ jsontext.Reader }

func (d *answerDecoder) answer(a *answer) bool {
	return d.Members(func(key []byte) bool {
		switch string(key) {
		case "returnStatus":
			return d.Object(func() bool { return d.returnStatus(a) })
		case "paymentStatus":
			return d.string(&a.PaymentStatus)
		case "paymentType":
			return d.string(&a.PaymentType)
		case "transactionID":
			return d.string(&a.TransactionID)
		case "transactionTimestamp":
			return d.string(&a.TransactionTimestamp)
		case "amount":
			return d.money(&a.Amount)
		case "operations":
			return d.operations(&a.Operations)
		}
		return d.Unknown(key, "returnStatus", "paymentStatus", "paymentType", "transactionID", "transactionTimestamp", "amount", "operations")
	})
}

func (d *answerDecoder) returnStatus(a *answer) bool {
	r := &a.ReturnStatus
	return d.Members(func(key []byte) bool {
		switch string(key) {
		case "statusCode":
			return d.text(&r.StatusCode)
		case "statusMsg":
			return d.string(&r.StatusMsg)
		case "statusDescription":
			return d.string(&r.StatusDescription)
		}
		return d.Unknown(key, "statusCode", "statusMsg", "statusDescription")
	})
}

// money reads an amount into *p as json.Unmarshal reads it into a
// pointer: null sets it to nil, an object is read into *p, allocated when
// nil.
func (d *answerDecoder) money(p **money) bool {
	switch d.Peek() {
	case 'n':
		if !d.Literal("null") {
			return false
		}
		*p = nil
		return true
	case '{':
		d.Off++
		if *p == nil {
			*p = new(money)
		}
	default:
		return false
	}
	m := *p
	return d.Members(func(key []byte) bool {
		switch string(key) {
		case "value":
			return d.number(&m.Value)
		case "currency":
			return d.string(&m.Currency)
		}
		return d.Unknown(key, "value", "currency")
	})
}

// operations reads the operations list into *p as json.Unmarshal reads an
// array into a pointer to a slice: null sets *p to nil; an array is read
// into **p (allocated when *p is nil), its elements into the slice's from
// the first, growing it as needed, over what they held before (an element
// is merged into, as any object); the slice is then cut to the array's
// length, and an empty array makes it a new empty slice.
func (d *answerDecoder) operations(p **[]operation) bool {
	switch d.Peek() {
	case 'n':
		if !d.Literal("null") {
			return false
		}
		*p = nil
		return true
	case '[':
		d.Off++
		if *p == nil {
			*p = new([]operation)
		}
	default:
		return false
	}
	ops := *p
	s := *ops
	i := 0
	for more := d.Peek() != ']'; more; i++ {
		switch {
		case i >= cap(s):
			s = append(s[:i], operation{})
		case i >= len(s):
			s = s[:i+1]
		}
		if !d.operation(&s[i]) {
			return false
		}
		switch d.Peek() {
		case ',':
			d.Off++
		case ']':
			more = false
		default:
			return false
		}
	}
	d.Off++ // ']'
	switch {
	case i == 0:
		s = []operation{}
	case i < len(s):
		s = s[:i]
	}
	*ops = s
	return true
}

// operation reads one element of the operations list: an object is read
// into o, null leaves it as it is.
func (d *answerDecoder) operation(o *operation) bool {
	return d.Object(func() bool {
		return d.Members(func(key []byte) bool {
			switch string(key) {
			case "transactionID":
				return d.string(&o.TransactionID)
			case "paymentType":
				return d.string(&o.PaymentType)
			case "paymentStatus":
				return d.string(&o.PaymentStatus)
			case "merchantTransactionId":
				return d.string(&o.MerchantTransactionID)
			case "transactionTimestamp":
				return d.string(&o.TransactionTimestamp)
			case "amount":
				return d.money(&o.Amount)
			}
			return d.Unknown(key, "transactionID", "paymentType", "paymentStatus", "merchantTransactionId", "transactionTimestamp", "amount")
		})
	})
}

// string reads a string into v; null leaves v as it is.
func (d *answerDecoder) string(v *string) bool {
	switch d.Peek() {
	case '"':
		s, ok := d.PlainString()
		if ok {
			*v = word(s)
		}
		return ok
	case 'n':
		return d.Literal("null")
	}
	return false
}

// text reads a string or a number as gateway.Text.UnmarshalJSON does: the
// string's text, the number's literal; null is empty.
func (d *answerDecoder) text(v *gateway.Text) bool {
	switch c := d.Peek(); {
	case c == '"':
		s, ok := d.PlainString()
		if ok {
			*v = gateway.Text(word(s))
		}
		return ok
	case c == '-' || c >= '0' && c <= '9':
		s, ok := d.Number()
		if ok {
			*v = gateway.Text(s)
		}
		return ok
	case c == 'n' && d.Literal("null"):
		*v = ""
		return true
	}
	return false
}

// number reads a number into v as json.Unmarshal reads it into a
// json.Number: its literal, or a string's text when that is a JSON
// number; null leaves v as it is.
func (d *answerDecoder) number(v *json.Number) bool {
	switch c := d.Peek(); {
	case c == '"':
		s, ok := d.PlainString()
		if !ok || !jsontext.IsNumber(s) {
			return false
		}
		*v = json.Number(s)
		return true
	case c == '-' || c >= '0' && c <= '9':
		s, ok := d.Number()
		if ok {
			*v = json.Number(s)
		}
		return ok
	case c == 'n':
		return d.Literal("null")
	}
	return false
}

// word returns s as a string, without allocating for the words the
// gateway's answers are mostly made of.
func word(s []byte) string {
	switch string(s) {
	case "":
		return ""
	case statusOK:
		return statusOK
	case psSuccess:
		return psSuccess
	case psDeclined:
		return psDeclined
	case psError:
		return psError
	case psPending:
		return psPending
	case typeAuth:
		return typeAuth
	case typeCapture:
		return typeCapture
	case typeCancellation:
		return typeCancellation
	}
	return string(s)
}
