package idempotency

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/payworker/payworker/internal/jsontext"
)

// This file holds the hand-written Record codec of the hot path. It handles
// the shapes the stores write (any key order, as Lua cjson writes them) and
// declines everything else (escapes other than the short ones, \u escapes,
// unknown or case-folded keys, duplicates, null, numbers that are not plain
// integers, invalid UTF-8, unusual nesting) to encoding/json, whose answer
// it must equal exactly whenever it gives one.

// maxFastDepth bounds the nesting the fast decoder follows; encoding/json
// allows 10000 levels, so anything it accepts below this bound it accepts too.
const maxFastDepth = 1000

// Indices of the Record and Outcome string fields in recordDecoder.strs.
const (
	strFingerprint = iota
	strCommandID
	strState
	strHolder
	strTxnLock
	strEventID
	strSubject
	numStrs
)

// rawString is a JSON string in the input: its contents b[start:end],
// escaped when they contain a backslash.
type rawString struct {
	start, end int
	escaped    bool
}

// recordDecoder decodes one record in a single pass. The string fields are
// first located, then copied into one allocation together.
type recordDecoder struct {
	b    []byte
	i    int
	seen uint32
	strs [numStrs]rawString
}

// Record keys, as bits of recordDecoder.seen.
const (
	seenFingerprint = 1 << iota
	seenCommandID
	seenState
	seenHolder
	seenLeaseUntil
	seenToken
	seenClaims
	seenUncertain
	seenTxnLock
	seenOutcome
	seenCreatedAt
	seenUpdatedAt
	seenSucceeded
	seenEventID
	seenSubject
	seenEvent
)

// decodeRecord decodes b as json.Unmarshal into a zero Record would, or
// reports false when b is not in the shape it knows (then json.Unmarshal
// must decide, including whether b is valid at all).
func decodeRecord(b []byte) (Record, bool) {
	d := recordDecoder{b: b}
	var r Record
	d.space()
	if !d.object(&r, false) {
		return Record{}, false
	}
	d.space()
	if d.i != len(b) {
		return Record{}, false
	}
	if !d.copyStrings(&r) {
		return Record{}, false
	}
	return r, true
}

// object decodes a Record object (outcome false) or its Outcome object
// (outcome true) starting at d.i.
func (d *recordDecoder) object(r *Record, outcome bool) bool {
	if !d.byte('{') {
		return false
	}
	d.space()
	if d.peek() == '}' {
		d.i++
		return true
	}
	for {
		key, ok := d.key()
		if !ok {
			return false
		}
		d.space()
		if !d.byte(':') {
			return false
		}
		d.space()
		if !d.field(r, key, outcome) {
			return false
		}
		d.space()
		switch d.peek() {
		case ',':
			d.i++
			d.space()
		case '}':
			d.i++
			return true
		default:
			return false
		}
	}
}

// field decodes the value of key into r (or r.Outcome).
func (d *recordDecoder) field(r *Record, key []byte, outcome bool) bool {
	var bit uint32
	ok := false
	if outcome {
		switch string(key) {
		case "succeeded":
			bit = seenSucceeded
			r.Outcome.Succeeded, ok = d.bool()
		case "event_id":
			bit, ok = seenEventID, d.str(strEventID)
		case "subject":
			bit, ok = seenSubject, d.str(strSubject)
		case "event":
			bit = seenEvent
			start := d.i
			if end := skipValue(d.b, start, 3); end > 0 {
				r.Outcome.Event = append(json.RawMessage(nil), d.b[start:end]...)
				d.i, ok = end, true
			}
		}
	} else {
		switch string(key) {
		case "fingerprint":
			bit, ok = seenFingerprint, d.str(strFingerprint)
		case "command_id":
			bit, ok = seenCommandID, d.str(strCommandID)
		case "state":
			bit, ok = seenState, d.str(strState)
		case "holder":
			bit, ok = seenHolder, d.str(strHolder)
		case "txn_lock":
			bit, ok = seenTxnLock, d.str(strTxnLock)
		case "lease_until":
			bit, ok = seenLeaseUntil, d.time(&r.LeaseUntil)
		case "created_at":
			bit, ok = seenCreatedAt, d.time(&r.CreatedAt)
		case "updated_at":
			bit, ok = seenUpdatedAt, d.time(&r.UpdatedAt)
		case "token":
			bit = seenToken
			r.Token, ok = d.int()
		case "claims":
			bit = seenClaims
			var n int64
			n, ok = d.int()
			r.Claims = int(n)
			ok = ok && int64(r.Claims) == n
		case "uncertain":
			bit = seenUncertain
			r.Uncertain, ok = d.bool()
		case "outcome":
			bit = seenOutcome
			if d.peek() == '{' {
				r.Outcome = new(Outcome)
				ok = d.object(r, true)
			}
		}
	}
	if !ok || d.seen&bit != 0 {
		return false
	}
	d.seen |= bit
	return true
}

// key reads an object key made of plain ASCII (no escapes).
func (d *recordDecoder) key() ([]byte, bool) {
	if !d.byte('"') {
		return nil, false
	}
	start := d.i
	for ; d.i < len(d.b); d.i++ {
		switch c := d.b[d.i]; {
		case c == '"':
			d.i++
			return d.b[start : d.i-1], true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return nil, false
		}
	}
	return nil, false
}

// str locates the string value of field k; copyStrings copies it later.
// Escapes other than the two-character ones, and invalid UTF-8 (which
// encoding/json replaces), are declined.
func (d *recordDecoder) str(k int) bool {
	if !d.byte('"') {
		return false
	}
	s := rawString{start: d.i}
	ascii := true
	for ; d.i < len(d.b); d.i++ {
		switch c := d.b[d.i]; {
		case c == '"':
			if !ascii && !utf8.Valid(d.b[s.start:d.i]) {
				return false
			}
			s.end = d.i
			d.i++
			d.strs[k] = s
			return true
		case c == '\\':
			d.i++
			if d.i == len(d.b) || unescape(d.b[d.i]) == 0 {
				return false
			}
			s.escaped = true
		case c < 0x20:
			return false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return false
}

// unescape returns the byte the escape \c stands for, 0 for \u and
// anything invalid.
func unescape(c byte) byte {
	switch c {
	case '"', '\\', '/':
		return c
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return 0
}

// copyStrings fills r's string fields from the located strings, all in one
// allocation.
func (d *recordDecoder) copyStrings(r *Record) bool {
	n := 0
	for _, s := range d.strs {
		n += s.end - s.start
	}
	if n == 0 {
		return true
	}
	var sb strings.Builder
	sb.Grow(n)
	var ends [numStrs]int
	for k, s := range d.strs {
		raw := d.b[s.start:s.end]
		if !s.escaped {
			sb.Write(raw)
		} else {
			for j := 0; j < len(raw); j++ {
				if raw[j] == '\\' {
					j++
					sb.WriteByte(unescape(raw[j]))
				} else {
					sb.WriteByte(raw[j])
				}
			}
		}
		ends[k] = sb.Len()
	}
	all := sb.String()
	at := func(k int) string {
		if k == 0 {
			return all[:ends[0]]
		}
		return all[ends[k-1]:ends[k]]
	}
	r.Fingerprint = at(strFingerprint)
	r.CommandID = at(strCommandID)
	r.State = State(at(strState))
	r.Holder = at(strHolder)
	r.TxnLock = at(strTxnLock)
	if r.Outcome != nil {
		r.Outcome.EventID = at(strEventID)
		r.Outcome.Subject = at(strSubject)
	}
	return true
}

// time parses a JSON string the way encoding/json does for a time.Time:
// by handing the quoted bytes to UnmarshalJSON. Strings with escapes are
// declined.
func (d *recordDecoder) time(t *time.Time) bool {
	start := d.i
	if !d.byte('"') {
		return false
	}
	for ; d.i < len(d.b); d.i++ {
		switch c := d.b[d.i]; {
		case c == '"':
			d.i++
			return t.UnmarshalJSON(d.b[start:d.i]) == nil
		case c == '\\' || c < 0x20:
			return false
		}
	}
	return false
}

// int reads a JSON integer of at most 18 digits (so it fits an int64),
// as strconv.ParseInt reads it for encoding/json. A fraction or exponent
// is left unread, so the caller declines it as an unexpected byte.
func (d *recordDecoder) int() (int64, bool) {
	neg := d.peek() == '-'
	if neg {
		d.i++
	}
	start := d.i
	var n int64
	for d.i < len(d.b) && '0' <= d.b[d.i] && d.b[d.i] <= '9' {
		n = n*10 + int64(d.b[d.i]-'0')
		d.i++
	}
	digits := d.i - start
	if digits == 0 || digits > 18 || (digits > 1 && d.b[start] == '0') {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// bool reads true or false.
func (d *recordDecoder) bool() (bool, bool) {
	rest := d.b[d.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		d.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		d.i += 5
		return false, true
	}
	return false, false
}

// peek returns the byte at d.i, 0 at the end.
func (d *recordDecoder) peek() byte {
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// byte consumes c.
func (d *recordDecoder) byte(c byte) bool {
	if d.peek() != c {
		return false
	}
	d.i++
	return true
}

// space skips JSON white space.
func (d *recordDecoder) space() {
	d.i = skipSpace(d.b, d.i)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipValue returns the end of the valid JSON value that starts at b[i]
// (no white space before it), at nesting depth depth, or -1 when there is
// none or it nests deeper than maxFastDepth. It accepts only what
// encoding/json's scanner accepts; like it, it lets any byte from 0x20 up
// stand in a string, valid UTF-8 or not.
func skipValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth >= maxFastDepth {
			return -1
		}
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == end {
			return i + 1
		}
		for {
			if c == '{' {
				if i = skipString(b, i); i < 0 {
					return -1
				}
				if i = skipSpace(b, i); i >= len(b) || b[i] != ':' {
					return -1
				}
				i = skipSpace(b, i+1)
			}
			if i = skipValue(b, i, depth+1); i < 0 {
				return -1
			}
			if i = skipSpace(b, i); i >= len(b) {
				return -1
			}
			switch b[i] {
			case end:
				return i + 1
			case ',':
				i = skipSpace(b, i+1)
			default:
				return -1
			}
		}
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || ('0' <= c && c <= '9'):
		return skipNumber(b, i)
	}
	return -1
}

func skipLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// skipString returns the end of the JSON string at b[i], -1 if invalid.
func skipString(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c == '\\':
			i++
			if i == len(b) {
				return -1
			}
			if b[i] == 'u' {
				if len(b)-i <= 4 {
					return -1
				}
				for _, h := range b[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return -1
					}
				}
				i += 4
			} else if unescape(b[i]) == 0 {
				return -1
			}
		}
	}
	return -1
}

// skipNumber returns the end of the JSON number at b[i], -1 if invalid.
func skipNumber(b []byte, i int) int {
	digits := func(i int) int {
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
	if b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if i = digits(i); i < 0 {
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}

// appendRecord appends r in the Record JSON format, byte for byte what
// marshalRecordJSON writes, or reports false when it cannot be sure to (a
// time outside RFC 3339, an outcome event it cannot vouch for): then
// marshalRecordJSON must answer.
func appendRecord(b []byte, r *Record) ([]byte, bool) {
	ok := true
	b = append(b, `{"fingerprint":`...)
	b = jsontext.AppendString(b, r.Fingerprint)
	b = append(b, `,"command_id":`...)
	b = jsontext.AppendString(b, r.CommandID)
	b = append(b, `,"state":`...)
	b = jsontext.AppendString(b, string(r.State))
	if r.Holder != "" {
		b = append(b, `,"holder":`...)
		b = jsontext.AppendString(b, r.Holder)
	}
	if !r.LeaseUntil.IsZero() {
		b = append(b, `,"lease_until":`...)
		b, ok = appendTime(b, r.LeaseUntil)
		if !ok {
			return nil, false
		}
	}
	b = append(b, `,"token":`...)
	b = strconv.AppendInt(b, r.Token, 10)
	b = append(b, `,"claims":`...)
	b = strconv.AppendInt(b, int64(r.Claims), 10)
	if r.Uncertain {
		b = append(b, `,"uncertain":true`...)
	}
	if r.TxnLock != "" {
		b = append(b, `,"txn_lock":`...)
		b = jsontext.AppendString(b, r.TxnLock)
	}
	b = append(b, `,"created_at":`...)
	if b, ok = appendTime(b, r.CreatedAt); !ok {
		return nil, false
	}
	b = append(b, `,"updated_at":`...)
	if b, ok = appendTime(b, r.UpdatedAt); !ok {
		return nil, false
	}
	if r.Outcome != nil {
		ev, ok := outcomeEvent(r.Outcome.Event)
		if !ok {
			return nil, false
		}
		b = append(b, `,"outcome":`...)
		b = appendOutcome(b, r.Outcome, ev)
	}
	return append(b, '}'), true
}

// appendOutcome appends out with ev for its event, as marshalOutcomeJSON
// writes it.
func appendOutcome(b []byte, out *Outcome, ev []byte) []byte {
	if out.Succeeded {
		b = append(b, `{"succeeded":true,"event_id":`...)
	} else {
		b = append(b, `{"succeeded":false,"event_id":`...)
	}
	b = jsontext.AppendString(b, out.EventID)
	b = append(b, `,"subject":`...)
	b = jsontext.AppendString(b, out.Subject)
	b = append(b, `,"event":`...)
	b = append(b, ev...)
	return append(b, '}')
}

// outcomeEvent returns the event bytes marshalOutcomeJSON stores, when it
// can vouch that they are valid JSON; false leaves the decision (and the
// error) to marshalOutcomeJSON.
func outcomeEvent(ev json.RawMessage) ([]byte, bool) {
	ev = trimSpace(ev)
	if len(ev) == 0 {
		return []byte("null"), true
	}
	return ev, skipValue(ev, 0, 3) == len(ev)
}

// trimSpace is bytes.TrimSpace where the ends are ASCII; it leaves the
// slice alone (and outcomeEvent then declines) when a non-ASCII byte ends
// it, which bytes.TrimSpace might trim as Unicode white space.
func trimSpace(b []byte) []byte {
	start, end := 0, len(b)
	for start < end && isASCIISpace(b[start]) {
		start++
	}
	for end > start && isASCIISpace(b[end-1]) {
		end--
	}
	return b[start:end]
}

func isASCIISpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// appendTime appends t as time.Time.MarshalJSON writes it, or reports
// false when t has no RFC 3339 form.
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return nil, false
	}
	return append(b, '"'), true
}
