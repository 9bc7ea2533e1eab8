package streams

import (
	"testing"
	"time"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"1048576", 1 << 20},
		{"1MiB", 1 << 20},
		{"1024KiB", 1 << 20},
		{"10GiB", 10 << 30},
		{"10gib", 10 << 30},
		{" 2 TiB ", 2 << 40},
		{"5000000B", 5000000},
		{"8388607TiB", 8388607 << 40},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v, want %d, nil", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "GiB", "1 GB", "0x100000", "-1GiB", "-9223372036854775808", "8388608TiB", "1e9"} {
		if got, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, nil, want an error", in, got)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for in, want := range map[time.Duration]string{
		168 * time.Hour: "168h", 10 * time.Minute: "10m", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1.5s",
	} {
		if got := shortDuration(in); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", in, got, want)
		}
		if d, err := time.ParseDuration(shortDuration(in)); err != nil || d != in {
			t.Errorf("shortDuration(%v) = %q reads back as %v, %v", in, shortDuration(in), d, err)
		}
	}
}
