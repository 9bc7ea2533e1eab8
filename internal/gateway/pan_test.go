package gateway

import (
	"strings"
	"testing"
)

func TestMaskPAN(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"5200000000001005", "520000******1005"},
		{"4111 1111 1111 1111", "411111******1111"},
		{"4111-1111-1111-1111", "411111******1111"},
		{"378282246310005", "378282*****0005"},
		{"6011000990139424123", "601100*********4123"},
		{"1234567890", "******7890"},
		{"12345", "*2345"},
		{"1234", "****"},
		{"", ""},
		{"no digits", ""},
	} {
		if got := MaskPAN(tc.in); got != tc.want {
			t.Errorf("MaskPAN(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzMaskPAN checks the PCI DSS 3.4 rule on any input: at most the first six
// and the last four digits are shown, and the masked form is as long as the
// number's digits.
func FuzzMaskPAN(f *testing.F) {
	for _, s := range []string{"5200000000001005", "4111 1111 1111 1111", "12", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var digits []byte
		for i := 0; i < len(in); i++ {
			if in[i] >= '0' && in[i] <= '9' {
				digits = append(digits, in[i])
			}
		}
		got := MaskPAN(in)
		if len(got) != len(digits) {
			t.Fatalf("MaskPAN(%q) = %q: %d characters, want %d", in, got, len(got), len(digits))
		}
		shown := len(got) - strings.Count(got, "*")
		if max := min(10, len(digits)); shown > max || (len(digits) > 4 && shown > len(digits)-1) {
			t.Fatalf("MaskPAN(%q) = %q shows %d digits", in, got, shown)
		}
		if len(digits) >= 13 && got[6:len(got)-4] != strings.Repeat("*", len(got)-10) {
			t.Fatalf("MaskPAN(%q) = %q: middle digits visible", in, got)
		}
	})
}
