package paymentoptions

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
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
// unchanged.
func decodeAnswerFast(body []byte, ans *answer) bool {
	d := answerDecoder{data: body}
	a := *ans
	d.space()
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
// one, null leaves a string, bool or object as it is and reads as empty
// for a Text, a card number and an amount. Every method returns false, and
// the whole answer is left to json.Unmarshal, on invalid JSON and on
// anything it does not read the same way: a key written with an escape,
// with a non-ASCII byte, or matching a field only without regard to case;
// a value of a kind the field does not take (json.Unmarshal reports it);
// a read string with an escape or invalid UTF-8; nesting deeper than
// maxSkipDepth.
type answerDecoder struct {
	data []byte
	off  int
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
		case "success":
			ok = d.bool(&a.Success)
		case "transaction_type":
			ok = d.string(&a.TransactionType)
		case "gateway_response":
			ok = d.object(func() bool { return d.gatewayResponse(a) })
		case "payment_details":
			ok = d.object(func() bool { return d.paymentDetails(a) })
		case "transaction_details":
			ok = d.object(func() bool { return d.transactionDetails(a) })
		default:
			ok = d.unknown(key, "success", "transaction_type", "gateway_response", "payment_details", "transaction_details")
		}
		if !ok {
			return false
		}
	}
}

func (d *answerDecoder) gatewayResponse(a *answer) bool {
	for first := true; ; first = false {
		key, end, ok := d.member(first)
		switch {
		case !ok:
			return false
		case end:
			return true
		}
		switch string(key) {
		case "code":
			ok = d.string(&a.GatewayResponse.Code)
		case "message":
			ok = d.string(&a.GatewayResponse.Message)
		default:
			ok = d.unknown(key, "code", "message")
		}
		if !ok {
			return false
		}
	}
}

func (d *answerDecoder) paymentDetails(a *answer) bool {
	p := &a.PaymentDetails
	for first := true; ; first = false {
		key, end, ok := d.member(first)
		switch {
		case !ok:
			return false
		case end:
			return true
		}
		switch string(key) {
		case "amount":
			ok = d.amount(&p.Amount)
		case "response_code":
			ok = d.text(&p.ResponseCode)
		case "auth_code":
			ok = d.text(&p.AuthCode)
		case "currency":
			ok = d.string(&p.Currency)
		case "scheme":
			ok = d.string(&p.Scheme)
		case "card":
			ok = d.object(func() bool { return d.card(a) })
		default:
			ok = d.unknown(key, "amount", "response_code", "auth_code", "currency", "scheme", "card")
		}
		if !ok {
			return false
		}
	}
}

func (d *answerDecoder) card(a *answer) bool {
	for first := true; ; first = false {
		key, end, ok := d.member(first)
		switch {
		case !ok:
			return false
		case end:
			return true
		}
		switch string(key) {
		case "number":
			ok = d.pan(&a.PaymentDetails.Card.Number)
		default:
			ok = d.unknown(key, "number")
		}
		if !ok {
			return false
		}
	}
}

func (d *answerDecoder) transactionDetails(a *answer) bool {
	t := &a.TransactionDetails
	for first := true; ; first = false {
		key, end, ok := d.member(first)
		switch {
		case !ok:
			return false
		case end:
			return true
		}
		switch string(key) {
		case "id":
			ok = d.string(&t.ID)
		case "ref":
			ok = d.text(&t.Ref)
		case "timestamp":
			ok = d.string(&t.Timestamp)
		default:
			ok = d.unknown(key, "id", "ref", "timestamp")
		}
		if !ok {
			return false
		}
	}
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

func (d *answerDecoder) bool(v *bool) bool {
	switch d.peek() {
	case 't':
		*v = true
		return d.literal("true")
	case 'f':
		*v = false
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	return false
}

func (d *answerDecoder) string(v *string) bool {
	switch d.peek() {
	case '"':
		s, ok := d.plainString()
		if ok {
			*v = string(s)
		}
		return ok
	case 'n':
		return d.literal("null")
	}
	return false
}

// scalar reads a string or a number as gateway.Text.UnmarshalJSON does:
// the string's text, the number's literal; null is empty.
func (d *answerDecoder) scalar() (text []byte, ok bool) {
	switch c := d.peek(); {
	case c == '"':
		return d.plainString()
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	case c == 'n':
		return nil, d.literal("null")
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
	switch d.peek() {
	case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'n':
		s, ok := d.scalar()
		if !ok {
			return false
		}
		v.value = parseAmount(s)
		return true
	}
	return d.skip(0)
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

// number reads a JSON number and returns its literal.
func (d *answerDecoder) number() ([]byte, bool) {
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
		_, ok := d.number()
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
