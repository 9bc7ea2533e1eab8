package sibs

import (
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"testing"

	"github.com/payworker/payworker/internal/gateway"
)

func TestAmountConversion(t *testing.T) {
	tests := []struct {
		minor    int64
		currency string
		wire     string
	}{
		{1000, "JPY", "1000"},
		{1, "JPY", "1"},
		{0, "JPY", "0"},
		{1999, "EUR", "19.99"},
		{1990, "EUR", "19.9"},
		{1900, "EUR", "19"},
		{1, "EUR", "0.01"},
		{10, "EUR", "0.1"},
		{500, "PLN", "5"},
		{123456789, "PLN", "1234567.89"},
		{1234, "BHD", "1.234"},
		{1230, "BHD", "1.23"},
		{5, "BHD", "0.005"},
		{1000, "BHD", "1"},
		{9223372036854775807, "EUR", "92233720368547758.07"},
		{10001, "CLF", "1.0001"},
	}
	for _, tt := range tests {
		got, err := gateway.FormatMinor(tt.minor, tt.currency)
		if err != nil || got != tt.wire {
			t.Errorf("FormatMinor(%d, %s) = %q, %v; want %q", tt.minor, tt.currency, got, err, tt.wire)
			continue
		}
		// The wire form, inside the body, is the JSON number itself.
		body, err := json.Marshal(money{Value: json.Number(got), Currency: tt.currency})
		if want := `{"value":` + tt.wire + `,"currency":"` + tt.currency + `"}`; err != nil || string(body) != want {
			t.Errorf("money JSON = %s, %v; want %s", body, err, want)
		}
		back, err := gateway.ParseMajor(tt.wire, tt.currency)
		if err != nil || back != tt.minor {
			t.Errorf("ParseMajor(%q, %s) = %d, %v; want %d", tt.wire, tt.currency, back, err, tt.minor)
		}
	}
}

func TestParseMajor(t *testing.T) {
	tests := []struct {
		in       string
		currency string
		want     int64
		wantErr  error
	}{
		{"19.99", "EUR", 1999, nil},
		{"19.990", "EUR", 1999, nil},
		{"1.999E1", "EUR", 1999, nil},
		{"1999e-2", "EUR", 1999, nil},
		{"0.05E+2", "PLN", 500, nil},
		{"5", "PLN", 500, nil},
		{"0", "JPY", 0, nil},
		{"1000.0", "JPY", 1000, nil},
		{"1.234", "BHD", 1234, nil},
		{"19.995", "EUR", 0, gateway.ErrInvalidAmount},
		{"1000.5", "JPY", 0, gateway.ErrInvalidAmount},
		{"1.2345", "BHD", 0, gateway.ErrInvalidAmount},
		{"-1", "EUR", 0, gateway.ErrInvalidAmount},
		{"1e400", "EUR", 0, gateway.ErrInvalidAmount},
		{"1e-400", "EUR", 0, gateway.ErrInvalidAmount},
		{"1e999999999999", "EUR", 0, gateway.ErrInvalidAmount},
		{"92233720368547758.08", "EUR", 0, gateway.ErrInvalidAmount},
		{"01", "EUR", 0, gateway.ErrInvalidAmount},
		{".5", "EUR", 0, gateway.ErrInvalidAmount},
		{"5.", "EUR", 0, gateway.ErrInvalidAmount},
		{"1e", "EUR", 0, gateway.ErrInvalidAmount},
		{"1e+", "EUR", 0, gateway.ErrInvalidAmount},
		{"0x10", "EUR", 0, gateway.ErrInvalidAmount},
		{"", "EUR", 0, gateway.ErrInvalidAmount},
		{" 5", "EUR", 0, gateway.ErrInvalidAmount},
		{strings.Repeat("1", 65), "EUR", 0, gateway.ErrInvalidAmount},
		{"5", "XXX", 0, gateway.ErrUnknownCurrency},
		{"5", "eur", 0, gateway.ErrUnknownCurrency},
	}
	for _, tt := range tests {
		got, err := gateway.ParseMajor(tt.in, tt.currency)
		if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("ParseMajor(%q, %s) = %d, %v; want %d, %v", tt.in, tt.currency, got, err, tt.want, tt.wantErr)
		}
	}
	if _, err := gateway.FormatMinor(-1, "EUR"); !errors.Is(err, gateway.ErrInvalidAmount) {
		t.Errorf("FormatMinor(-1) error = %v, want ErrInvalidAmount", err)
	}
	if _, err := gateway.FormatMinor(1, "XXX"); !errors.Is(err, gateway.ErrUnknownCurrency) {
		t.Errorf("FormatMinor(XXX) error = %v, want ErrUnknownCurrency", err)
	}
}

// fuzzCurrencies are the table's codes, one per exponent at least.
var fuzzCurrencies = func() []string {
	out := []string{"JPY", "EUR", "PLN", "BHD", "KWD", "CLF", "ISK", "USD"}
	sort.Strings(out)
	return out
}()

// FuzzAmountRoundTrip: minor units → decimal string → minor units is the
// identity for every non-negative amount, and the decimal has no trailing
// zero and no more decimals than the currency.
func FuzzAmountRoundTrip(f *testing.F) {
	for _, seed := range []struct {
		amount int64
		cur    uint8
	}{{0, 0}, {1, 1}, {1999, 2}, {500, 3}, {1234, 4}, {9223372036854775807, 5}, {-1, 6}, {100, 7}} {
		f.Add(seed.amount, seed.cur)
	}
	f.Fuzz(func(t *testing.T, amount int64, cur uint8) {
		if amount < 0 {
			amount = ^amount // every int64 maps to a non-negative one
		}
		currency := fuzzCurrencies[int(cur)%len(fuzzCurrencies)]
		exp, _ := gateway.CurrencyExponent(currency)
		s, err := gateway.FormatMinor(amount, currency)
		if err != nil {
			t.Fatalf("FormatMinor(%d, %s): %v", amount, currency, err)
		}
		if whole, frac, ok := strings.Cut(s, "."); ok {
			if len(frac) == 0 || len(frac) > exp || strings.HasSuffix(frac, "0") || whole == "" {
				t.Fatalf("FormatMinor(%d, %s) = %q: not a canonical decimal", amount, currency, s)
			}
		}
		back, err := gateway.ParseMajor(s, currency)
		if err != nil || back != amount {
			t.Fatalf("ParseMajor(FormatMinor(%d, %s) = %q) = %d, %v; want %d", amount, currency, s, back, err, amount)
		}
		// Through the wire type and JSON, as in a request and an answer.
		body, err := json.Marshal(money{Value: json.Number(s), Currency: currency})
		if err != nil {
			t.Fatal(err)
		}
		var m money
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		if back, err := gateway.ParseMajor(m.Value.String(), m.Currency); err != nil || back != amount {
			t.Fatalf("JSON round trip of %d %s = %d, %v", amount, currency, back, err)
		}
	})
}
