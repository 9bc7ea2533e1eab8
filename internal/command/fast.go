package command

import (
	"bytes"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// maxAmount is the schemas' maximum amount, 2^53-1.
const maxAmount = 9007199254740991

// span is the text of a JSON string in a message, as byte offsets: of its
// content between the quotes when it has no escape, and otherwise of its
// decoded text in fastFields.decoded, offset by the length of the message,
// as if that followed the message. runes is the text's length in code
// points, as JSON Schema counts it.
type span struct{ start, end, runes int }

// fastFields are the members decodeFast found, as spans of the message.
type fastFields struct {
	// decoded holds the text of the strings with escapes.
	decoded []byte

	seen                                                 uint16
	commandID, idempotencyKey, merchantID, transactionID span
	currency, notes, originalTransactionTime             span
	typ                                                  Type
	gateway                                              string
	amount                                               int64
	// metadataBuf holds the key and the value of the first metadata
	// members, metadataMore those of the others; metadataLen counts both.
	metadataBuf  [16]span
	metadataLen  int
	metadataMore []span
}

// Bits of fastFields.seen, one per member of the schemas.
const (
	seenCommandID uint16 = 1 << iota
	seenType
	seenIdempotencyKey
	seenMerchantID
	seenTransactionID
	seenAmount
	seenCurrency
	seenGateway
	seenNotes
	seenMetadata
	seenOriginalTransactionTime
)

// commandAmount holds a command and its amount in one allocation.
type commandAmount struct {
	cmd    Command
	amount int64
}

// decodeFast decodes a message in a single pass when it is a valid command
// of the plainest form: one JSON object whose members are the schema's, each
// at most once, with strings of valid UTF-8 (escapes are decoded as
// encoding/json decodes them), an amount written as digits only, an
// original_transaction_time, if any, in the strict RFC 3339 form (uppercase
// T and Z, at most nine fraction digits, seconds below 60), and nothing but
// JSON whitespace around the tokens. It then returns what decodeGeneral
// returns, and ok; for anything else (including every message
// decodeGeneral rejects) it returns ok false and decides nothing.
func decodeFast(subjectType string, data []byte) (c *Command, ok bool) {
	var f fastFields
	if !f.scan(subjectType, data) {
		return nil, false
	}
	return f.command(data)
}

// validFast reports whether decodeFast would decode data, without building
// the command.
func validFast(subjectType string, data []byte) bool {
	var f fastFields
	if !f.scan(subjectType, data) {
		return false
	}
	if f.metadataLen > len(f.metadataBuf) {
		_, ok := f.command(data) // the map finds repeated keys
		return ok
	}
	keys := f.metadataBuf[:f.metadataLen]
	for i := 0; i < len(keys); i += 2 {
		for j := i + 2; j < len(keys); j += 2 {
			if bytes.Equal(f.text(data, keys[i]), f.text(data, keys[j])) {
				return false
			}
		}
	}
	// strictDateTime accepts only times that time.Parse reads, so
	// command's time.Parse cannot fail (TestDecodeFastDateTimes).
	return true
}

// scan reads data into f and checks everything but the uniqueness of the
// metadata keys (which command checks) for subjectType.
func (f *fastFields) scan(subjectType string, data []byte) bool {
	if len(data) > MaxSize {
		return false
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i++
	for {
		key, next, ok := f.scanString(data, skipSpace(data, i))
		if !ok {
			return false
		}
		if i = skipSpace(data, next); i >= len(data) || data[i] != ':' {
			return false
		}
		if i, ok = f.member(data, f.text(data, key), skipSpace(data, i+1)); !ok {
			return false
		}
		if i = skipSpace(data, i); i >= len(data) {
			return false
		}
		if data[i] == '}' {
			break
		}
		if data[i] != ',' {
			return false
		}
		i++
	}
	return skipSpace(data, i+1) == len(data) && f.valid(subjectType)
}

// member reads the value of member key, which starts at data[i], and
// returns the offset after it; ok is false for a value the schema's member
// does not accept as it is written, an unknown member or a repeated one.
func (f *fastFields) member(data, key []byte, i int) (next int, ok bool) {
	var bit uint16
	var dst *span
	var minRunes, maxRunes int
	switch string(key) {
	case "command_id":
		bit, dst, minRunes, maxRunes = seenCommandID, &f.commandID, 1, 64
	case "idempotency_key":
		bit, dst, minRunes, maxRunes = seenIdempotencyKey, &f.idempotencyKey, 1, 255
	case "merchant_id":
		bit, dst, minRunes, maxRunes = seenMerchantID, &f.merchantID, 1, 10
	case "transaction_id":
		bit, dst, minRunes, maxRunes = seenTransactionID, &f.transactionID, 1, 36
	case "notes":
		bit, dst, minRunes, maxRunes = seenNotes, &f.notes, 0, 128
	case "currency":
		bit, dst = seenCurrency, &f.currency
	case "original_transaction_time":
		bit, dst = seenOriginalTransactionTime, &f.originalTransactionTime
	case "type":
		bit = seenType
	case "gateway":
		bit = seenGateway
	case "amount":
		bit = seenAmount
	case "metadata":
		bit = seenMetadata
	default:
		return 0, false
	}
	if f.seen&bit != 0 {
		return 0, false
	}
	f.seen |= bit
	switch bit {
	case seenAmount:
		return f.scanAmount(data, i)
	case seenMetadata:
		return f.scanMetadata(data, i)
	}
	s, next, ok := f.scanString(data, i)
	if !ok {
		return 0, false
	}
	v := f.text(data, s)
	switch bit {
	case seenType:
		switch string(v) {
		case string(Capture):
			f.typ = Capture
		case string(Void):
			f.typ = Void
		default:
			return 0, false
		}
	case seenGateway:
		switch string(v) {
		case "paymentoptions":
			f.gateway = "paymentoptions"
		case "sibs":
			f.gateway = "sibs"
		default:
			return 0, false
		}
	case seenCurrency:
		if len(v) != 3 || !isUpper(v[0]) || !isUpper(v[1]) || !isUpper(v[2]) {
			return 0, false
		}
	case seenOriginalTransactionTime:
		if !strictDateTime(v) {
			return 0, false
		}
	default:
		if s.runes < minRunes || s.runes > maxRunes {
			return 0, false
		}
	}
	if dst != nil {
		*dst = s
	}
	return next, true
}

// scanAmount reads an amount written as digits without a leading zero,
// within the schemas' range.
func (f *fastFields) scanAmount(data []byte, i int) (next int, ok bool) {
	start := i
	var n int64
	for ; i < len(data) && '0' <= data[i] && data[i] <= '9'; i++ {
		if i-start == 16 {
			return 0, false
		}
		n = n*10 + int64(data[i]-'0')
	}
	if i == start || data[start] == '0' || n > maxAmount {
		return 0, false
	}
	f.amount = n
	return i, true
}

// scanMetadata reads an object whose members are all strings. Repeated
// keys are found when the map is built.
func (f *fastFields) scanMetadata(data []byte, i int) (next int, ok bool) {
	if i >= len(data) || data[i] != '{' {
		return 0, false
	}
	if i = skipSpace(data, i+1); i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		key, next, ok := f.scanString(data, i)
		if !ok {
			return 0, false
		}
		if i = skipSpace(data, next); i >= len(data) || data[i] != ':' {
			return 0, false
		}
		val, next, ok := f.scanString(data, skipSpace(data, i+1))
		if !ok {
			return 0, false
		}
		if f.metadataLen < len(f.metadataBuf) {
			f.metadataBuf[f.metadataLen], f.metadataBuf[f.metadataLen+1] = key, val
		} else {
			f.metadataMore = append(f.metadataMore, key, val)
		}
		f.metadataLen += 2
		if i = skipSpace(data, next); i >= len(data) {
			return 0, false
		}
		if data[i] == '}' {
			return i + 1, true
		}
		if data[i] != ',' {
			return 0, false
		}
		i = skipSpace(data, i+1)
	}
}

// valid checks what the members cannot check alone: the required members,
// amount's dependency on currency, and the subject.
func (f *fastFields) valid(subjectType string) bool {
	required := seenCommandID | seenType | seenMerchantID | seenTransactionID
	if f.typ == Capture {
		required |= seenAmount
	}
	if f.seen&required != required {
		return false
	}
	if f.seen&seenAmount != 0 && f.seen&seenCurrency == 0 {
		return false
	}
	return subjectType == "" || subjectType == string(f.typ)
}

// command builds the command from the members of data, whose strings share
// one copy of data and of the decoded strings.
func (f *fastFields) command(data []byte) (*Command, bool) {
	var b strings.Builder
	b.Grow(len(data) + len(f.decoded))
	b.Write(data)
	b.Write(f.decoded)
	msg := b.String()
	str := func(s span) string { return msg[s.start:s.end] }
	ca := &commandAmount{cmd: Command{
		CommandID:      str(f.commandID),
		Type:           f.typ,
		IdempotencyKey: str(f.idempotencyKey),
		MerchantID:     str(f.merchantID),
		TransactionID:  str(f.transactionID),
		Currency:       str(f.currency),
		Gateway:        f.gateway,
		Notes:          str(f.notes),
	}}
	c := &ca.cmd
	if f.seen&seenAmount != 0 {
		ca.amount = f.amount
		c.Amount = &ca.amount
	}
	if f.seen&seenMetadata != 0 {
		c.Metadata = make(map[string]string, f.metadataLen/2)
		members := f.metadataBuf[:min(f.metadataLen, len(f.metadataBuf))]
		for _, kv := range [][]span{members, f.metadataMore} {
			for j := 0; j < len(kv); j += 2 {
				c.Metadata[str(kv[j])] = str(kv[j+1])
			}
		}
		if len(c.Metadata) != f.metadataLen/2 {
			return nil, false
		}
	}
	if f.seen&seenOriginalTransactionTime != 0 {
		t, err := time.Parse(time.RFC3339Nano, str(f.originalTransactionTime))
		if err != nil {
			return nil, false
		}
		c.OriginalTransactionTime = &t
	}
	return c, true
}

// skipSpace returns the offset of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(data []byte, i int) int {
	for ; i < len(data); i++ {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return i
		}
	}
	return i
}

// text returns the text of the string s of data.
func (f *fastFields) text(data []byte, s span) []byte {
	if s.start >= len(data) {
		return f.decoded[s.start-len(data) : s.end-len(data)]
	}
	return data[s.start:s.end]
}

// scanString reads the JSON string that starts at data[i] when it is valid
// UTF-8 (encoding/json would replace invalid bytes); next is the offset
// after its closing quote. A string without escapes is its bytes, shared;
// one with escapes is decoded into f.decoded.
func (f *fastFields) scanString(data []byte, i int) (s span, next int, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return span{}, 0, false
	}
	start := i + 1
	ascii, escaped := true, false
	for i = start; i < len(data); i++ {
		switch b := data[i]; {
		case b == '"':
			v := data[start:i]
			if !ascii && !utf8.Valid(v) {
				return span{}, 0, false
			}
			if !escaped {
				s = span{start: start, end: i, runes: len(v)}
				if !ascii {
					s.runes = utf8.RuneCount(v)
				}
				return s, i + 1, true
			}
			if f.decoded == nil {
				// The text of the strings left is no longer than they are.
				f.decoded = make([]byte, 0, len(data)-start)
			}
			n := len(f.decoded)
			if f.decoded, ok = appendUnescaped(f.decoded, v); !ok {
				return span{}, 0, false
			}
			s = span{start: len(data) + n, end: len(data) + len(f.decoded), runes: utf8.RuneCount(f.decoded[n:])}
			return s, i + 1, true
		case b == '\\':
			escaped = true
			i++ // the escaped byte, checked by appendUnescaped
		case b < 0x20:
			return span{}, 0, false
		case b >= utf8.RuneSelf:
			ascii = false
		}
	}
	return span{}, 0, false
}

// appendUnescaped appends the text of v, the content of a JSON string
// without control characters, as encoding/json decodes it: a \u escape of
// a surrogate that is not the first of a pair followed by the second gives
// U+FFFD. It reports false for an invalid escape.
func appendUnescaped(dst, v []byte) ([]byte, bool) {
	for i := 0; i < len(v); i++ {
		if v[i] != '\\' {
			dst = append(dst, v[i])
			continue
		}
		i++
		if i == len(v) {
			return dst, false
		}
		switch v[i] {
		case '"', '\\', '/':
			dst = append(dst, v[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(v[i+1:])
			if r < 0 {
				return dst, false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+2 < len(v) && v[i+1] == '\\' && v[i+2] == 'u' {
					r2 = hex4(v[i+3:])
				}
				if r = utf16.DecodeRune(r, r2); r != utf8.RuneError {
					i += 6
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, false
		}
	}
	return dst, true
}

// hex4 returns the value of the four hex digits that start b, or -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

func isUpper(b byte) bool { return 'A' <= b && b <= 'Z' }

// strictDateTime reports whether v has the form
// YYYY-MM-DDTHH:MM:SS[.F{1,9}](Z|±HH:MM) with a real date, an hour below 24,
// minutes and seconds below 60 and an offset below 24 hours: a subset of
// both the schemas' date-time format, leap seconds aside, and what
// time.Parse reads as RFC 3339.
func strictDateTime(v []byte) bool {
	if len(v) < len("2006-01-02T15:04:05Z") {
		return false
	}
	num := func(b []byte) int {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	year, month, day := num(v[0:4]), num(v[5:7]), num(v[8:10])
	hour, minute, second := num(v[11:13]), num(v[14:16]), num(v[17:19])
	if v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' || v[16] != ':' ||
		year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) ||
		hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59 {
		return false
	}
	rest := v[19:]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
			n++
		}
		if n == 1 || n > 10 {
			return false
		}
		rest = rest[n:]
	}
	if len(rest) == 1 {
		return rest[0] == 'Z'
	}
	return len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
		num(rest[1:3]) >= 0 && num(rest[1:3]) <= 23 && num(rest[4:6]) >= 0 && num(rest[4:6]) <= 59
}

// daysIn returns the number of days in month of year, in the proleptic
// Gregorian calendar.
func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
