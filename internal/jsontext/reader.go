package jsontext

import (
	"strings"
	"unicode/utf8"
)

// maxSkipDepth bounds the nesting of a value Reader.Skip walks; a deeper one
// is declined (json.Unmarshal's own limit is 10000).
const maxSkipDepth = 64

// Reader reads JSON text in one pass, for decoders that fill a struct by
// hand exactly as json.Unmarshal would and leave to json.Unmarshal whatever
// they cannot read the same way. Each method returns false on invalid JSON
// and on what it declines: a key written with an escape or a non-ASCII byte
// (json.Unmarshal unescapes and folds keys before matching them), a kept
// string with an escape, a control character or invalid UTF-8, nesting
// deeper than 64. A decoder that gets false goes to json.Unmarshal.
type Reader struct {
	Data []byte
	Off  int
}

// Space skips JSON white space.
func (r *Reader) Space() {
	for r.Off < len(r.Data) {
		switch r.Data[r.Off] {
		case ' ', '\t', '\n', '\r':
			r.Off++
		default:
			return
		}
	}
}

// End reports whether only white space is left.
func (r *Reader) End() bool {
	r.Space()
	return r.Off == len(r.Data)
}

// Byte consumes c, after white space.
func (r *Reader) Byte(c byte) bool {
	r.Space()
	if r.Off < len(r.Data) && r.Data[r.Off] == c {
		r.Off++
		return true
	}
	return false
}

// Peek returns the next byte after white space, or 0 at the end.
func (r *Reader) Peek() byte {
	r.Space()
	if r.Off < len(r.Data) {
		return r.Data[r.Off]
	}
	return 0
}

// next moves to the next member of an object whose '{' has been read: it
// consumes the ',' before every member but the first, and reports the end
// at the closing '}', which it consumes.
func (r *Reader) next(first bool) (end, ok bool) {
	switch c := r.Peek(); {
	case c == '}':
		r.Off++
		return true, true
	case first:
		return false, true
	case c == ',':
		r.Off++
		return false, true
	}
	return false, false
}

// Member reads the next key of an object whose '{' has been read, and the
// ':' after it; first says no member has been read yet. It reports the end
// at the closing '}'. It declines a key that is not plain ASCII.
func (r *Reader) Member(first bool) (key []byte, end, ok bool) {
	if end, ok = r.next(first); end || !ok {
		return nil, end, ok
	}
	if !r.Byte('"') {
		return nil, false, false
	}
	start := r.Off
	for ; r.Off < len(r.Data); r.Off++ {
		c := r.Data[r.Off]
		if c == '"' {
			key = r.Data[start:r.Off]
			r.Off++
			return key, false, r.Byte(':')
		}
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			return nil, false, false
		}
	}
	return nil, false, false
}

// Members reads the members of an object whose '{' has been read, through
// its '}': for each key, member reads the value (Unknown, for a key of no
// field). It stops at the first that returns false.
func (r *Reader) Members(member func(key []byte) bool) bool {
	for first := true; ; first = false {
		key, end, ok := r.Member(first)
		switch {
		case !ok:
			return false
		case end:
			return true
		}
		if !member(key) {
			return false
		}
	}
}

// skipMember is Member for an object that is not read, whose keys may be
// any valid JSON string.
func (r *Reader) skipMember(first bool) (end, ok bool) {
	if end, ok = r.next(first); end || !ok {
		return end, ok
	}
	return false, r.Peek() == '"' && r.skipString() && r.Byte(':')
}

// Unknown skips the value of key, a key of no field of an object whose
// fields are named known, unless key matches one of them regardless of
// case (json.Unmarshal would store it there).
func (r *Reader) Unknown(key []byte, known ...string) bool {
	for _, name := range known {
		if strings.EqualFold(string(key), name) {
			return false
		}
	}
	return r.Skip()
}

// Object reads an object with members, or null, which leaves the struct
// members fills as it is.
func (r *Reader) Object(members func() bool) bool {
	switch r.Peek() {
	case '{':
		r.Off++
		return members()
	case 'n':
		return r.Literal("null")
	}
	return false
}

// Literal consumes the keyword lit (true, false, null).
func (r *Reader) Literal(lit string) bool {
	if len(r.Data)-r.Off < len(lit) || string(r.Data[r.Off:r.Off+len(lit)]) != lit {
		return false
	}
	r.Off += len(lit)
	return true
}

// PlainString reads a string, whose '"' is next, with no escape, no control
// character and only valid UTF-8, whose bytes are then its text, and
// returns them.
func (r *Reader) PlainString() ([]byte, bool) {
	r.Off++ // '"'
	start := r.Off
	ascii := true
	for ; r.Off < len(r.Data); r.Off++ {
		c := r.Data[r.Off]
		switch {
		case c == '"':
			s := r.Data[start:r.Off]
			r.Off++
			return s, ascii || utf8.Valid(s)
		case c < 0x20 || c == '\\':
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// Number reads a JSON number, whose first byte is next, and returns its
// literal.
func (r *Reader) Number() ([]byte, bool) {
	start := r.Off
	if r.Off < len(r.Data) && r.Data[r.Off] == '-' {
		r.Off++
	}
	switch {
	case r.Off < len(r.Data) && r.Data[r.Off] == '0':
		r.Off++
	case !r.digits():
		return nil, false
	}
	if r.Off < len(r.Data) && r.Data[r.Off] == '.' {
		r.Off++
		if !r.digits() {
			return nil, false
		}
	}
	if r.Off < len(r.Data) && (r.Data[r.Off] == 'e' || r.Data[r.Off] == 'E') {
		r.Off++
		if r.Off < len(r.Data) && (r.Data[r.Off] == '+' || r.Data[r.Off] == '-') {
			r.Off++
		}
		if !r.digits() {
			return nil, false
		}
	}
	return r.Data[start:r.Off], true
}

// IsNumber reports whether b is exactly one JSON number.
func IsNumber(b []byte) bool {
	r := Reader{Data: b}
	_, ok := r.Number()
	return ok && r.Off == len(b)
}

// PlainString returns the text of b when b is exactly one JSON string with
// no escape, no control character and only valid UTF-8 (its bytes between
// the quotes).
func PlainString(b []byte) ([]byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, false
	}
	r := Reader{Data: b}
	s, ok := r.PlainString()
	return s, ok && r.Off == len(b)
}

// digits consumes one or more decimal digits.
func (r *Reader) digits() bool {
	start := r.Off
	for r.Off < len(r.Data) && r.Data[r.Off] >= '0' && r.Data[r.Off] <= '9' {
		r.Off++
	}
	return r.Off > start
}

// Skip consumes a valid JSON value that is not read.
func (r *Reader) Skip() bool { return r.skip(0) }

func (r *Reader) skip(depth int) bool {
	if depth > maxSkipDepth {
		return false
	}
	switch c := r.Peek(); {
	case c == '{':
		r.Off++
		for first := true; ; first = false {
			end, ok := r.skipMember(first)
			switch {
			case !ok:
				return false
			case end:
				return true
			}
			if !r.skip(depth + 1) {
				return false
			}
		}
	case c == '[':
		r.Off++
		if r.Peek() == ']' {
			r.Off++
			return true
		}
		for {
			if !r.skip(depth + 1) {
				return false
			}
			switch r.Peek() {
			case ',':
				r.Off++
			case ']':
				r.Off++
				return true
			default:
				return false
			}
		}
	case c == '"':
		return r.skipString()
	case c == '-' || c >= '0' && c <= '9':
		_, ok := r.Number()
		return ok
	case c == 't':
		return r.Literal("true")
	case c == 'f':
		return r.Literal("false")
	case c == 'n':
		return r.Literal("null")
	}
	return false
}

// skipString consumes a valid JSON string, escapes included.
func (r *Reader) skipString() bool {
	r.Off++ // '"'
	for r.Off < len(r.Data) {
		c := r.Data[r.Off]
		r.Off++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if r.Off >= len(r.Data) {
				return false
			}
			e := r.Data[r.Off]
			r.Off++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if r.Off+4 > len(r.Data) {
					return false
				}
				for _, h := range r.Data[r.Off : r.Off+4] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				r.Off += 4
			default:
				return false
			}
		}
	}
	return false
}
