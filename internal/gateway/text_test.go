package gateway

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestTextUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{`"000"`, "000", false},
		{`0`, "0", false},
		{`836`, "836", false},
		{`1.50`, "1.50", false},
		{`" 94 "`, " 94 ", false},
		{`null`, "", false},
		{`true`, "", true},
		{`{}`, "", true},
	} {
		var got Text
		err := json.Unmarshal([]byte(tc.in), &got)
		if (err != nil) != tc.err || string(got) != tc.want {
			t.Errorf("Unmarshal(%s) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	if got := Text(" 000 ").Trim(); got != "000" {
		t.Errorf("Trim = %q, want 000", got)
	}
}

// FuzzTextUnmarshal checks that UnmarshalJSON reads every input as the
// careful reading by json.Unmarshal does: the same text, from an empty or
// a set Text, and an error for the same inputs.
func FuzzTextUnmarshal(f *testing.F) {
	for _, s := range []string{
		`"000"`, `0`, `836`, `1.50`, `" 94 "`, `null`, `true`, `{}`, ` "x" `, "\u00a0\"x\"", `""`, `"`, `"a"b"`,
		`"\u0030"`, `"é"`, "\"\xff\"", "\"\xed\xa0\x80\"", "\"a\tb\"", `-0`, `-`, `01`, `1.`, `1e`, `1e+5`, `-1.5E-3`,
		`1 2`, `nul`, `nullx`, `[1]`, `1x`, `+1`, `.5`, `NaN`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, start := range []Text{"", "set"} {
			got, want := start, start
			err := got.UnmarshalJSON(b)
			wantErr := want.unmarshalJSON(bytes.TrimSpace(b))
			if got != want || (err == nil) != (wantErr == nil) {
				t.Fatalf("UnmarshalJSON(%q) = %q, %v; json.Unmarshal reads %q, %v", b, got, err, want, wantErr)
			}
		}
	})
}

func BenchmarkTextUnmarshal(b *testing.B) {
	for _, in := range []string{`"264302"`, `74819`} {
		for _, bench := range []struct {
			name      string
			unmarshal func(*Text, []byte) error
		}{
			{"careful", (*Text).unmarshalJSON},
			{"fast", (*Text).UnmarshalJSON},
		} {
			input := []byte(in)
			b.Run(in+"/"+bench.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var t Text
					if err := bench.unmarshal(&t, input); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
