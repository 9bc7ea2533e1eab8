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
	jsontext.Reader
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
	d := recordDecoder{Reader: jsontext.Reader{Data: b}}
	var r Record
	if !d.object(&r, false) || !d.End() {
		return Record{}, false
	}
	if !d.copyStrings(&r) {
		return Record{}, false
	}
	return r, true
}

// object decodes a Record object (outcome false) or its Outcome object
// (outcome true) starting at d.Off.
func (d *recordDecoder) object(r *Record, outcome bool) bool {
	return d.Byte('{') && d.Members(func(key []byte) bool {
		d.Space()
		return d.field(r, key, outcome)
	})
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
			start := d.Off
			if d.Skip() {
				r.Outcome.Event = append(json.RawMessage(nil), d.Data[start:d.Off]...)
				ok = true
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
			if d.Peek() == '{' {
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

// str locates the string value of field k; copyStrings copies it later.
// Escapes other than the two-character ones, and invalid UTF-8 (which
// encoding/json replaces), are declined.
func (d *recordDecoder) str(k int) bool {
	if !d.Byte('"') {
		return false
	}
	s := rawString{start: d.Off}
	ascii := true
	for ; d.Off < len(d.Data); d.Off++ {
		switch c := d.Data[d.Off]; {
		case c == '"':
			if !ascii && !utf8.Valid(d.Data[s.start:d.Off]) {
				return false
			}
			s.end = d.Off
			d.Off++
			d.strs[k] = s
			return true
		case c == '\\':
			d.Off++
			if d.Off == len(d.Data) || unescape(d.Data[d.Off]) == 0 {
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
		raw := d.Data[s.start:s.end]
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
	start := d.Off
	if !d.Byte('"') {
		return false
	}
	for ; d.Off < len(d.Data); d.Off++ {
		switch c := d.Data[d.Off]; {
		case c == '"':
			d.Off++
			return t.UnmarshalJSON(d.Data[start:d.Off]) == nil
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
	neg := d.Peek() == '-'
	if neg {
		d.Off++
	}
	start := d.Off
	var n int64
	for d.Off < len(d.Data) && '0' <= d.Data[d.Off] && d.Data[d.Off] <= '9' {
		n = n*10 + int64(d.Data[d.Off]-'0')
		d.Off++
	}
	digits := d.Off - start
	if digits == 0 || digits > 18 || (digits > 1 && d.Data[start] == '0') {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// bool reads true or false.
func (d *recordDecoder) bool() (bool, bool) {
	rest := d.Data[d.Off:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		d.Off += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		d.Off += 5
		return false, true
	}
	return false, false
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
	r := jsontext.Reader{Data: ev}
	return ev, r.Skip() && r.Off == len(ev)
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
