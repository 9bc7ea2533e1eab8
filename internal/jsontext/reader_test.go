package jsontext

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzReaderSkip: Skip accepts a whole input exactly when it is one valid
// JSON value, but for nesting deeper than it walks, which it declines.
func FuzzReaderSkip(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `null`, `true`, `false`, `0`, `-0.5e+3`, `"a\u00e9\n"`, `{"a":[1,{"b":null}],"c":"\ud800"}`,
		` { "k" : "v" } `, `{"a":1,}`, `[1,]`, `01`, `"\x01"`, `"\q"`, `{"a" 1}`, `[1 2]`, "\"\xff\"", `1.`, `-`,
		strings.Repeat("[", 70) + strings.Repeat("]", 70),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r := Reader{Data: []byte(s)}
		got := r.Skip() && r.End()
		want := json.Valid([]byte(s))
		if got && !want {
			t.Fatalf("Skip accepted %q, which is not valid JSON", s)
		}
		if !got && want && depth(s) <= maxSkipDepth {
			t.Fatalf("Skip declined %q, valid JSON nested %d deep", s, depth(s))
		}
	})
}

// depth is the deepest nesting of brackets in s outside strings.
func depth(s string) int {
	d, deepest, inString := 0, 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			d++
			deepest = max(deepest, d)
		case c == '}' || c == ']':
			d--
		}
	}
	return deepest
}

// FuzzReaderStrings: what PlainString, Number and Member return is what
// json.Unmarshal reads from the same text.
func FuzzReaderStrings(f *testing.F) {
	for _, s := range []string{`"plain"`, `"café"`, `"a\"b"`, "\"\xff\"", `12.5e3`, `-0`, `{"key":1}`, `{"Ké":1}`, `"\u2028"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		data := []byte(s)
		switch {
		case strings.HasPrefix(s, `"`):
			r := Reader{Data: data}
			text, ok := r.PlainString()
			if !ok || !r.End() {
				return
			}
			var want string
			if err := json.Unmarshal(data, &want); err != nil || want != string(text) {
				t.Fatalf("PlainString(%q) = %q; json.Unmarshal: %q, %v", s, text, want, err)
			}
		case strings.HasPrefix(s, `{`):
			r := Reader{Data: data}
			r.Off++
			key, end, ok := r.Member(true)
			if !ok || end {
				return
			}
			var want string
			if err := json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &want); err != nil || want != string(key) {
				t.Fatalf("Member(%q) = %q; json.Unmarshal: %q, %v", s, key, want, err)
			}
		default:
			r := Reader{Data: data}
			lit, ok := r.Number()
			if !ok || !r.End() {
				return
			}
			var n json.Number
			if err := json.Unmarshal(data, &n); err != nil || string(n) != string(lit) {
				t.Fatalf("Number(%q) = %q; json.Unmarshal: %q, %v", s, lit, n, err)
			}
		}
	})
}
