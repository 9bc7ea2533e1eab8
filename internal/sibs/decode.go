package sibs

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/payworker/payworker/internal/gateway"
)

// decodeAnswer reads body into ans exactly as decodeAnswerCareful does
// (the same answer, an error or not): the gateway's usual answers in one
// pass by decodeAnswerFast, any other by decodeAnswerCareful.
func decodeAnswer(body []byte, ans *answer) error {
	if decodeAnswerFast(body, ans) {
		return nil
	}
	return decodeAnswerCareful(body, ans)
}

// decodeAnswerCareful refuses a blank body and reads any other with
// json.Unmarshal.
func decodeAnswerCareful(body []byte, ans *answer) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("empty body")
	}
	return json.Unmarshal(body, ans)
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
	d := answerDecoder{data: body}
	a := *ans
	if !d.byte('{') || !d.answer(&a) {
		return false
	}
	d.space()
	if d.off != len(d.data) {
		return false
	}
	*ans = a
	return true
}

// maxSkipDepth bounds the nesting of an unread value the single-pass reader
// walks; a deeper one goes to json.Unmarshal (whose own limit is 10000).
const maxSkipDepth = 64

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
// maxSkipDepth.
type answerDecoder struct {
	data []byte
	off  int
}

func (d *answerDecoder) answer(a *answer) bool {
	for first := true; ; first = false {
		key, end, ok := d.member(first)
		switch {
		case !ok:
			return false
		case end:
			return true
		}
		switch string(key) {
		case "returnStatus":
			ok = d.object(func() bool { return d.returnStatus(a) })
		case "paymentStatus":
			ok = d.string(&a.PaymentStatus)
		case "paymentType":
			ok = d.string(&a.PaymentType)
		case "transactionID":
			ok = d.string(&a.TransactionID)
		case "transactionTimestamp":
			ok = d.string(&a.TransactionTimestamp)
		case "amount":
			ok = d.money(&a.Amount)
		case "operations":
			ok = d.operations(&a.Operations)
		default:
			ok = d.unknown(key, "returnStatus", "paymentStatus", "paymentType", "transactionID", "transactionTimestamp", "amount", "operations")
		}
		if !ok {
			return false
		}
	}
}

func (d *answerDecoder) returnStatus(a *answer) bool {
	r := &a.ReturnStatus
	for first := true; ; first = false {
		key, end, ok := d.member(first)
		switch {
		case !ok:
			return false
		case end:
			return true
		}
		switch string(key) {
		case "statusCode":
			ok = d.text(&r.StatusCode)
		case "statusMsg":
			ok = d.string(&r.StatusMsg)
		case "statusDescription":
			ok = d.string(&r.StatusDescription)
		default:
			ok = d.unknown(key, "statusCode", "statusMsg", "statusDescription")
		}
		if !ok {
			return false
		}
	}
}

// money reads an amount into *p as json.Unmarshal reads it into a
// pointer: null sets it to nil, an object is read into *p, allocated when
// nil.
func (d *answerDecoder) money(p **money) bool {
	switch d.peek() {
	case 'n':
		if !d.literal("null") {
			return false
		}
		*p = nil
		return true
	case '{':
		d.off++
		if *p == nil {
			*p = new(money)
		}
	default:
		return false
	}
	m := *p
	for first := true; ; first = false {
		key, end, ok := d.member(first)
		switch {
		case !ok:
			return false
		case end:
			return true
		}
		switch string(key) {
		case "value":
			ok = d.number(&m.Value)
		case "currency":
			ok = d.string(&m.Currency)
		default:
			ok = d.unknown(key, "value", "currency")
		}
		if !ok {
			return false
		}
	}
}

// operations reads the operations list into *p as json.Unmarshal reads an
// array into a pointer to a slice: null sets *p to nil; an array is read
// into **p (allocated when *p is nil), its elements into the slice's from
// the first, growing it as needed, over what they held before (an element
// is merged into, as any object); the slice is then cut to the array's
// length, and an empty array makes it a new empty slice.
func (d *answerDecoder) operations(p **[]operation) bool {
	switch d.peek() {
	case 'n':
		if !d.literal("null") {
			return false
		}
		*p = nil
		return true
	case '[':
		d.off++
		if *p == nil {
			*p = new([]operation)
		}
	default:
		return false
	}
	ops := *p
	s := *ops
	i := 0
	for more := d.peek() != ']'; more; i++ {
		switch {
		case i >= cap(s):
			s = append(s[:i], operation{})
		case i >= len(s):
			s = s[:i+1]
		}
		if !d.operation(&s[i]) {
			return false
		}
		switch d.peek() {
		case ',':
			d.off++
		case ']':
			more = false
		default:
			return false
		}
	}
	d.off++ // ']'
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
	return d.object(func() bool {
		for first := true; ; first = false {
			key, end, ok := d.member(first)
			switch {
			case !ok:
				return false
			case end:
				return true
			}
			switch string(key) {
			case "transactionID":
				ok = d.string(&o.TransactionID)
			case "paymentType":
				ok = d.string(&o.PaymentType)
			case "paymentStatus":
				ok = d.string(&o.PaymentStatus)
			case "merchantTransactionId":
				ok = d.string(&o.MerchantTransactionID)
			case "transactionTimestamp":
				ok = d.string(&o.TransactionTimestamp)
			case "amount":
				ok = d.money(&o.Amount)
			default:
				ok = d.unknown(key, "transactionID", "paymentType", "paymentStatus", "merchantTransactionId", "transactionTimestamp", "amount")
			}
			if !ok {
				return false
			}
		}
	})
}

// space skips JSON white space.
func (d *answerDecoder) space() {
	for d.off < len(d.data) {
		switch d.data[d.off] {
		case ' ', '\t', '\n', '\r':
			d.off++
		default:
			return
		}
	}
}

// byte consumes c, after white space.
func (d *answerDecoder) byte(c byte) bool {
	d.space()
	if d.off < len(d.data) && d.data[d.off] == c {
		d.off++
		return true
	}
	return false
}

// peek returns the next byte after white space, or 0 at the end.
func (d *answerDecoder) peek() byte {
	d.space()
	if d.off < len(d.data) {
		return d.data[d.off]
	}
	return 0
}

// next moves to the next member of an object whose '{' has been read:
// it consumes the ',' before every member but the first, and reports the
// end at the closing '}', which it consumes.
func (d *answerDecoder) next(first bool) (end, ok bool) {
	switch c := d.peek(); {
	case c == '}':
		d.off++
		return true, true
	case first:
		return false, true
	case c == ',':
		d.off++
		return false, true
	}
	return false, false
}

// member reads the next key of an object whose '{' has been read, and the
// ':' after it; first says no member has been read yet. It reports the end
// at the closing '}'. It declines a key that is not plain ASCII
// (json.Unmarshal unescapes and folds keys before matching them).
func (d *answerDecoder) member(first bool) (key []byte, end, ok bool) {
	if end, ok = d.next(first); end || !ok {
		return nil, end, ok
	}
	if !d.byte('"') {
		return nil, false, false
	}
	start := d.off
	for ; d.off < len(d.data); d.off++ {
		c := d.data[d.off]
		if c == '"' {
			key = d.data[start:d.off]
			d.off++
			return key, false, d.byte(':')
		}
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			return nil, false, false
		}
	}
	return nil, false, false
}

// skipMember is member for an object that is not read, whose keys may be
// any valid JSON string.
func (d *answerDecoder) skipMember(first bool) (end, ok bool) {
	if end, ok = d.next(first); end || !ok {
		return end, ok
	}
	return false, d.peek() == '"' && d.skipString() && d.byte(':')
}

// unknown skips the value of key, a key of no field of an object whose
// fields are named known, unless key matches one of them regardless of
// case (json.Unmarshal would store it there).
func (d *answerDecoder) unknown(key []byte, known ...string) bool {
	for _, name := range known {
		if strings.EqualFold(string(key), name) {
			return false
		}
	}
	return d.skip(0)
}

// object reads an object with members, or null, which leaves the struct
// members fills as it is.
func (d *answerDecoder) object(members func() bool) bool {
	switch d.peek() {
	case '{':
		d.off++
		return members()
	case 'n':
		return d.literal("null")
	}
	return false
}

// literal consumes the keyword lit (true, false, null).
func (d *answerDecoder) literal(lit string) bool {
	if len(d.data)-d.off < len(lit) || string(d.data[d.off:d.off+len(lit)]) != lit {
		return false
	}
	d.off += len(lit)
	return true
}

// string reads a string into v; null leaves v as it is.
func (d *answerDecoder) string(v *string) bool {
	switch d.peek() {
	case '"':
		s, ok := d.plainString()
		if ok {
			*v = word(s)
		}
		return ok
	case 'n':
		return d.literal("null")
	}
	return false
}

// text reads a string or a number as gateway.Text.UnmarshalJSON does: the
// string's text, the number's literal; null is empty.
func (d *answerDecoder) text(v *gateway.Text) bool {
	switch c := d.peek(); {
	case c == '"':
		s, ok := d.plainString()
		if ok {
			*v = gateway.Text(word(s))
		}
		return ok
	case c == '-' || c >= '0' && c <= '9':
		s, ok := d.numberLiteral()
		if ok {
			*v = gateway.Text(s)
		}
		return ok
	case c == 'n' && d.literal("null"):
		*v = ""
		return true
	}
	return false
}

// number reads a number into v as json.Unmarshal reads it into a
// json.Number: its literal, or a string's text when that is a JSON
// number; null leaves v as it is.
func (d *answerDecoder) number(v *json.Number) bool {
	switch c := d.peek(); {
	case c == '"':
		s, ok := d.plainString()
		if !ok || !isNumber(s) {
			return false
		}
		*v = json.Number(s)
		return true
	case c == '-' || c >= '0' && c <= '9':
		s, ok := d.numberLiteral()
		if ok {
			*v = json.Number(s)
		}
		return ok
	case c == 'n':
		return d.literal("null")
	}
	return false
}

// isNumber reports whether s is exactly one JSON number.
func isNumber(s []byte) bool {
	n := answerDecoder{data: s}
	_, ok := n.numberLiteral()
	return ok && n.off == len(s)
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

// plainString reads a string with no escape, no control character and
// only valid UTF-8, whose bytes are then its text, and returns them.
func (d *answerDecoder) plainString() ([]byte, bool) {
	d.off++ // '"'
	start := d.off
	ascii := true
	for ; d.off < len(d.data); d.off++ {
		c := d.data[d.off]
		switch {
		case c == '"':
			s := d.data[start:d.off]
			d.off++
			return s, ascii || utf8.Valid(s)
		case c < 0x20 || c == '\\':
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// numberLiteral reads a JSON number and returns its literal.
func (d *answerDecoder) numberLiteral() ([]byte, bool) {
	start := d.off
	if d.off < len(d.data) && d.data[d.off] == '-' {
		d.off++
	}
	switch {
	case d.off < len(d.data) && d.data[d.off] == '0':
		d.off++
	case !d.digits():
		return nil, false
	}
	if d.off < len(d.data) && d.data[d.off] == '.' {
		d.off++
		if !d.digits() {
			return nil, false
		}
	}
	if d.off < len(d.data) && (d.data[d.off] == 'e' || d.data[d.off] == 'E') {
		d.off++
		if d.off < len(d.data) && (d.data[d.off] == '+' || d.data[d.off] == '-') {
			d.off++
		}
		if !d.digits() {
			return nil, false
		}
	}
	return d.data[start:d.off], true
}

// digits consumes one or more decimal digits.
func (d *answerDecoder) digits() bool {
	start := d.off
	for d.off < len(d.data) && d.data[d.off] >= '0' && d.data[d.off] <= '9' {
		d.off++
	}
	return d.off > start
}

// skip consumes a valid JSON value that is not read, at nesting depth.
func (d *answerDecoder) skip(depth int) bool {
	if depth > maxSkipDepth {
		return false
	}
	switch c := d.peek(); {
	case c == '{':
		d.off++
		for first := true; ; first = false {
			end, ok := d.skipMember(first)
			switch {
			case !ok:
				return false
			case end:
				return true
			}
			if !d.skip(depth + 1) {
				return false
			}
		}
	case c == '[':
		d.off++
		if d.peek() == ']' {
			d.off++
			return true
		}
		for {
			if !d.skip(depth + 1) {
				return false
			}
			switch d.peek() {
			case ',':
				d.off++
			case ']':
				d.off++
				return true
			default:
				return false
			}
		}
	case c == '"':
		return d.skipString()
	case c == '-' || c >= '0' && c <= '9':
		_, ok := d.numberLiteral()
		return ok
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	}
	return false
}

// skipString consumes a valid JSON string, escapes included.
func (d *answerDecoder) skipString() bool {
	d.off++ // '"'
	for d.off < len(d.data) {
		c := d.data[d.off]
		d.off++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if d.off >= len(d.data) {
				return false
			}
			e := d.data[d.off]
			d.off++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if d.off+4 > len(d.data) {
					return false
				}
				for _, h := range d.data[d.off : d.off+4] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				d.off += 4
			default:
				return false
			}
		}
	}
	return false
}
