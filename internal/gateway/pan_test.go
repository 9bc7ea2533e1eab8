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

// maskPANCareful is MaskPAN as it was before it allocated only its result:
// the oracle of FuzzMaskPANAgrees.
func maskPANCareful(pan string) string {
	digits := make([]byte, 0, len(pan))
	for i := 0; i < len(pan); i++ {
		if c := pan[i]; c >= '0' && c <= '9' {
			digits = append(digits, c)
		}
	}
	n := len(digits)
	switch {
	case n == 0:
		return ""
	case n <= 4:
		return string(bytesRepeat('*', n))
	case n <= 10:
		out := bytesRepeat('*', n)
		copy(out[n-4:], digits[n-4:])
		return string(out)
	}
	out := bytesRepeat('*', n)
	copy(out[:6], digits[:6])
	copy(out[n-4:], digits[n-4:])
	return string(out)
}

func bytesRepeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// panSeeds are card numbers of every length class MaskPAN tells apart,
// with and without separators.
var panSeeds = []string{
	"", "no digits", "1", "12", "1234", "12345", "1234567890", "12345678901", "5200000000001005", "4111 1111 1111 1111",
	"4111-1111-1111-1111", "378282246310005", "6011000990139424123", " 4 1 1 1 ", "a1b2c3d4e5", "\xff5200\x0000000000001005",
	"１２３４５６７８９０１２", "12345678901234567890123456789012345678901234567890",
}

// FuzzMaskPANAgrees checks that MaskPAN gives what maskPANCareful gives for
// any input.
func FuzzMaskPANAgrees(f *testing.F) {
	for _, s := range panSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if got, want := MaskPAN(in), maskPANCareful(in); got != want {
			t.Fatalf("MaskPAN(%q) = %q, want %q", in, got, want)
		}
	})
}

func TestMaskPANAllocatesItsResultOnly(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{
		{"5200000000001005", 1},
		{"4111 1111 1111 1111", 1},
		{"1234567890", 1},
		{"12345", 1},
		{strings.Repeat("4111 ", 8), 1},
		{strings.Repeat("4111 ", 9), 1},
		{strings.Repeat("4", 100), 1},
		{"1234", 0},
		{"", 0},
		{"no digits", 0},
	} {
		if got := testing.AllocsPerRun(100, func() { _ = MaskPAN(tc.in) }); got != tc.want {
			t.Errorf("MaskPAN(%q) allocates %v times, want %v", tc.in, got, tc.want)
		}
	}
}

func BenchmarkMaskPAN(b *testing.B) {
	for _, pan := range []struct{ name, in string }{
		{"16", "5200000000001005"},
		{"16spaced", "4111 1111 1111 1111"},
		{"40spaced", "4111 1111 1111 1111 4111 1111 1111 1111 4111 1111"},
	} {
		want := maskPANCareful(pan.in)
		for _, bench := range []struct {
			name string
			mask func(string) string
		}{
			{"careful", maskPANCareful},
			{"fast", MaskPAN},
		} {
			b.Run(pan.name+"/"+bench.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if got := bench.mask(pan.in); got != want {
						b.Fatalf("mask = %q, want %q", got, want)
					}
				}
			})
		}
	}
}
