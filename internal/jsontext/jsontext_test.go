package jsontext

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

var samples = []string{
	"", "plain", `quote " and \ backslash`, "<b>Café & Co</b>", "tab\tnew\nline\rcr\bbs\fff",
	"\x00\x01\x1f\x7f", "\xff\xfe invalid", "line\u2028sep\u2029para", "日本語", "a\xc3", "\U0001F600",
}

// FuzzAppendString: AppendString writes what json.Marshal writes for every
// string, after any prefix.
func FuzzAppendString(f *testing.F) {
	for _, s := range samples {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString([]byte("x"), s); !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Fatalf("AppendString(%q) = %s, json.Marshal = %s", s, got[1:], want)
		}
	})
}

func TestAppendStringAllocatesNothing(t *testing.T) {
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { _ = AppendString(buf, "<b>Café & Co</b>\n") }); n != 0 {
		t.Errorf("AppendString into a large enough buffer: %.0f allocations, want 0", n)
	}
}

// FuzzAppendStringMap: AppendStringMap writes what json.Marshal writes for
// a map[string]string, keys sorted.
func FuzzAppendStringMap(f *testing.F) {
	f.Add("b\x00<v>\x00a\x00\xff\x00\x00empty key")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		parts := strings.Split(s, "\x00")
		m := map[string]string{}
		for i := 0; i+1 < len(parts); i += 2 {
			m[parts[i]] = parts[i+1]
		}
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendStringMap(nil, m); !bytes.Equal(got, want) {
			t.Fatalf("AppendStringMap(%q) = %s, json.Marshal = %s", m, got, want)
		}
	})
}
