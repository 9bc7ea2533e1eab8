package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/lmittmann/tint"
)

func TestNewHandlers(t *testing.T) {
	tests := []struct {
		format     string
		isTerminal bool
		wantJSON   bool
		wantColour bool
	}{
		{"json", true, true, false},
		{"json", false, true, false},
		{"auto", false, true, false},
		{"", false, true, false},
		{"auto", true, false, true},
		{"text", true, false, true},
		{"text", false, false, false},
		{"TEXT", false, false, false},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		log, err := New(&b, tt.format, "info", tt.isTerminal)
		if err != nil {
			t.Fatalf("New(%q, %v) error = %v", tt.format, tt.isTerminal, err)
		}
		log.Info("hello", slog.String("k", "v"))
		out := b.String()
		var m map[string]any
		isJSON := json.Unmarshal([]byte(out), &m) == nil
		if isJSON != tt.wantJSON {
			t.Errorf("New(%q, %v) wrote %q, JSON = %v, want %v", tt.format, tt.isTerminal, out, isJSON, tt.wantJSON)
		}
		if isJSON && (m["msg"] != "hello" || m["k"] != "v" || m["level"] != "INFO") {
			t.Errorf("New(%q, %v) wrote %v, want msg=hello k=v level=INFO", tt.format, tt.isTerminal, m)
		}
		if got := strings.Contains(out, "\x1b["); got != tt.wantColour {
			t.Errorf("New(%q, %v) wrote %q, colour = %v, want %v", tt.format, tt.isTerminal, out, got, tt.wantColour)
		}
		if plain := stripANSI(out); !isJSON && (!strings.Contains(plain, "INF hello k=v")) {
			t.Errorf("New(%q, %v) wrote %q, want INF hello k=v", tt.format, tt.isTerminal, plain)
		}
	}
}

func TestNewLevels(t *testing.T) {
	tests := []struct {
		level     string
		wantDebug bool
		wantInfo  bool
		wantWarn  bool
	}{
		{"debug", true, true, true},
		{"", false, true, true},
		{"info", false, true, true},
		{"WARN", false, false, true},
		{"error", false, false, false},
	}
	for _, tt := range tests {
		for _, format := range []string{"json", "text"} {
			var b bytes.Buffer
			log, err := New(&b, format, tt.level, false)
			if err != nil {
				t.Fatalf("New(%q, %q) error = %v", format, tt.level, err)
			}
			log.Debug("d-line")
			log.Info("i-line")
			log.Warn("w-line")
			out := b.String()
			for _, c := range []struct {
				msg  string
				want bool
			}{{"d-line", tt.wantDebug}, {"i-line", tt.wantInfo}, {"w-line", tt.wantWarn}} {
				if got := strings.Contains(out, c.msg); got != c.want {
					t.Errorf("New(%q, level %q) logs %s = %v, want %v", format, tt.level, c.msg, got, c.want)
				}
			}
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct{ format, level, want string }{
		{"xml", "info", `log format "xml" is not one of auto, json, text`},
		{"json", "loud", `log level "loud" is not one of debug, info, warn, error`},
	}
	for _, tt := range tests {
		_, err := New(&bytes.Buffer{}, tt.format, tt.level, false)
		if err == nil || err.Error() != tt.want {
			t.Errorf("New(%q, %q) error = %v, want %q", tt.format, tt.level, err, tt.want)
		}
	}
}

func TestRedaction(t *testing.T) {
	const (
		pan    = "4111111111111111"
		masked = "411111******1111"
		secret = "s3cr3t-value"
	)
	log := func(l *slog.Logger) {
		l.Info("card "+pan+" seen",
			slog.String("client_secret", secret),
			slog.String("Authorization", "Bearer "+secret),
			slog.String("access_token", secret),
			slog.String("db_password", secret),
			slog.String("PAYMENTOPTIONS_API_KEY", secret),
			slog.Group("credentials", slog.String("x", "y")),
			slog.Group("token", slog.String("value", secret)),
			slog.String("note", "pan="+pan+"."),
			slog.Any("error", errors.New("gateway echoed "+pan)),
			tint.Err(errors.New("tinted "+pan)),
			slog.String("short", "123456789012"),
			slog.String("long", "12345678901234567890"),
			slog.String("idempotency_key", "key-1"),
		)
	}
	for _, format := range []string{"json", "text"} {
		for _, term := range []bool{false, true} {
			var b bytes.Buffer
			l, err := New(&b, format, "debug", term)
			if err != nil {
				t.Fatal(err)
			}
			log(l)
			out := b.String()
			for _, leak := range []string{secret, pan} {
				if strings.Contains(out, leak) {
					t.Errorf("%s (terminal %v) output contains %q:\n%s", format, term, leak, out)
				}
			}
			for _, want := range []string{masked, "[REDACTED]", "123456789012", "12345678901234567890", "key-1", "y"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s (terminal %v) output lacks %q:\n%s", format, term, want, out)
				}
			}
		}
	}
}

func TestMaskPANs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"no digits", "no digits"},
		{"4111111111111111", "411111******1111"},
		{"a4111111111111111b", "a411111******1111b"},
		{"1234567890123", "123456***0123"},               // 13 digits
		{"1234567890123456789", "123456*********6789"},   // 19 digits
		{"123456789012", "123456789012"},                 // 12: not a PAN
		{"12345678901234567890", "12345678901234567890"}, // 20: not a PAN
		{"4111111111111111 and 5500000000000004", "411111******1111 and 550000******0004"},
		{"4111 1111 1111 1111", "4111 1111 1111 1111"}, // short runs
	}
	for _, tt := range tests {
		if got := MaskPANs(tt.in); got != tt.want {
			t.Errorf("MaskPANs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if IsTerminal(w) {
		t.Errorf("IsTerminal(pipe) = true, want false")
	}
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if IsTerminal(f) {
		t.Errorf("IsTerminal(file) = true, want false")
	}
}

// stripANSI removes terminal colour sequences.
func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\x1b' {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestTraceIDsAreNotMasked: a trace or span id whose hex digits happen to
// hold 13 or more decimal digits in a row is logged as it is, so logs can be
// joined with traces; the same run under another key is masked.
func TestTraceIDsAreNotMasked(t *testing.T) {
	const (
		traceID = "de2e39e8cf3ec21e4064801234563650"
		spanID  = "a1234567890123bc"
	)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: Redact}))
	log.Info("x", slog.String("trace_id", traceID), slog.String("span_id", spanID), slog.String("other", traceID),
		slog.String("trace_id_of_card", "4111111111111111"))
	out := buf.String()
	for _, want := range []string{`"trace_id":"` + traceID + `"`, `"span_id":"` + spanID + `"`,
		`"other":"de2e39e8cf3ec21e406480******3650"`, `"trace_id_of_card":"411111******1111"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %s\nlacks %s", out, want)
		}
	}
}
