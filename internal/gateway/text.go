package gateway

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/payworker/payworker/internal/jsontext"
)

// Text is a field of a gateway's JSON answer that arrives as a string or as
// a number (codes, references, amounts): it holds the text as sent, a number
// in its literal form; null reads as empty.
type Text string

// UnmarshalJSON reads a JSON string, number or null. A string with no
// escape and a number are read without a second JSON decoding.
func (t *Text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if s, ok := jsontext.PlainString(b); ok {
		*t = Text(s)
		return nil
	}
	if jsontext.IsNumber(b) {
		*t = Text(b)
		return nil
	}
	return t.unmarshalJSON(b)
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

// Trim returns the text without surrounding white space.
func (t Text) Trim() string { return strings.TrimSpace(string(t)) }
