// Package logging builds the process's slog.Logger: a colourful tint handler
// for people at a terminal, JSON for machines, and in both a last line of
// defence that redacts credentials and masks card numbers however they got
// into an attribute.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// Redacted replaces the value of an attribute whose key names a credential.
const Redacted = "[REDACTED]"

// New returns a logger writing to w at level ("debug", "info", "warn" or
// "error"; empty is info). format "text" uses the tint handler, coloured only
// when isTerminal; "json" uses slog's JSON handler; "auto" (or empty) picks
// tint on a terminal and JSON otherwise. Both handlers pass every attribute
// through Redact. When w is a *Buffer, lines at WARN and above flush it.
func New(w io.Writer, format, level string, isTerminal bool) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "text":
		h = textHandler(w, lvl, !isTerminal)
	case "auto", "":
		if isTerminal {
			h = textHandler(w, lvl, false)
		} else {
			h = jsonHandler(w, lvl)
		}
	case "json":
		h = jsonHandler(w, lvl)
	default:
		return nil, fmt.Errorf("log format %q is not one of auto, json, text", format)
	}
	if buf, ok := w.(*Buffer); ok {
		h = flushing{h, buf}
	}
	return slog.New(h), nil
}

func textHandler(w io.Writer, lvl slog.Level, noColor bool) slog.Handler {
	return tint.NewTextHandler(w, &tint.Options{
		Level:       lvl,
		ReplaceAttr: Redact,
		TimeFormat:  "15:04:05.000",
		NoColor:     noColor,
	})
}

func jsonHandler(w io.Writer, lvl slog.Level) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: Redact})
}

// ParseLevel parses "debug", "info", "warn" or "error" in any case; empty is
// info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q is not one of debug, info, warn, error", s)
}

// IsTerminal reports whether f is a terminal (a Cygwin or MSYS one included).
func IsTerminal(f *os.File) bool {
	fd := f.Fd()
	return isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd)
}

// sensitiveKeys are the substrings of an attribute key (or of an enclosing
// group's name) that make Redact replace its value, compared in lower case.
var sensitiveKeys = []string{"secret", "token", "password", "api_key", "authorization"}

// Redact is a slog ReplaceAttr function. It replaces the value of an
// attribute whose key, or whose group's name, contains "secret", "token",
// "password", "api_key" or "authorization" (in any case) with Redacted, and
// masks in string and error values every run of 13 to 19 digits (a card
// number) to its first six and last four digits. It is defence in depth:
// types that hold secrets or card data redact themselves with LogValue.
func Redact(groups []string, a slog.Attr) slog.Attr {
	if sensitive(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	for _, g := range groups {
		if sensitive(g) {
			return slog.String(a.Key, Redacted)
		}
	}
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); hasPAN(s) && !traceID(a.Key, s) {
			return slog.String(a.Key, MaskPANs(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && err != nil {
			if s := err.Error(); hasPAN(s) {
				return slog.String(a.Key, MaskPANs(s))
			}
		}
	}
	return a
}

func sensitive(key string) bool {
	k := strings.ToLower(key)
	for _, s := range sensitiveKeys {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// traceID reports whether the attribute is a W3C trace or span id
// (trace_id: 32 lowercase hex digits, span_id: 16), which may hold a run of
// 13 or more decimal digits by chance and is no card number.
func traceID(key, v string) bool {
	switch {
	case key == "trace_id" && len(v) == 32, key == "span_id" && len(v) == 16:
	default:
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isDigit(c) && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// PAN lengths (ISO/IEC 7812).
const (
	minPAN = 13
	maxPAN = 19
)

// hasPAN reports whether s contains a run of 13 to 19 digits.
func hasPAN(s string) bool {
	run := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && isDigit(s[i]) {
			run++
			continue
		}
		if run >= minPAN && run <= maxPAN {
			return true
		}
		run = 0
	}
	return false
}

// MaskPANs returns s with every run of 13 to 19 digits (not part of a longer
// run) masked to its first six and last four digits, the rest '*'.
func MaskPANs(s string) string {
	if !hasPAN(s) {
		return s
	}
	b := []byte(s)
	start := -1
	for i := 0; i <= len(b); i++ {
		if i < len(b) && isDigit(b[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			if n := i - start; n >= minPAN && n <= maxPAN {
				for j := start + 6; j < i-4; j++ {
					b[j] = '*'
				}
			}
			start = -1
		}
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
