package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// Text is a field of a gateway's JSON answer that arrives as a string or as
// a number (codes, references, amounts): it holds the text as sent, a number
// in its literal form; null reads as empty.
type Text string

// UnmarshalJSON reads a JSON string, number or null. A string with no
// escape and a number are read without a second JSON decoding.
func (t *Text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		*t = ""
	case plainString(b):
		*t = Text(b[1 : len(b)-1])
	case isNumber(b):
		*t = Text(b)
	default:
		return t.unmarshalJSON(b)
	}
	return nil
}

// unmarshalJSON is UnmarshalJSON by json.Unmarshal, for b trimmed.
func (t *Text) unmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		*t = ""
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = Text(s)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*t = Text(n)
	}
	return nil
}

// plainString reports whether b is a JSON string with no escape, no
// control character and only valid UTF-8, whose text is then b unquoted.
func plainString(b []byte) bool {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return false
	}
	s := b[1 : len(b)-1]
	ascii := true
	for _, c := range s {
		switch {
		case c < 0x20 || c == '"' || c == '\\':
			return false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return ascii || utf8.Valid(s)
}

// isNumber reports whether b is exactly one JSON number.
func isNumber(b []byte) bool {
	i := 0
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	return i == len(b)
}

// Trim returns the text without surrounding white space.
func (t Text) Trim() string { return strings.TrimSpace(string(t)) }
