package gateway

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// ErrUnknownCurrency is wrapped by FormatMinor and ParseMajor errors for a
// currency that is not an active ISO 4217 code with a minor unit.
var ErrUnknownCurrency = errors.New("unknown currency")

// ErrInvalidAmount is wrapped by FormatMinor and ParseMajor errors for an
// amount that cannot be carried exactly: negative, not a decimal, with more
// decimals than the currency has, or outside int64 minor units.
var ErrInvalidAmount = errors.New("invalid amount")

// exponents is the ISO 4217 minor unit of every active currency code that has
// one (List One, 2025). Funds codes are kept (BOV, CHE, CHW, CLF, COU, MXV,
// USN, UYI, UYW); precious metals, testing and "no currency" codes (XAU, XTS,
// XXX...) have no minor unit and are absent.
var exponents = map[string]int{
	// Zero decimals.
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
	"PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
	"XPF": 0,
	// Three decimals.
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	// Four decimals.
	"CLF": 4, "UYW": 4,
	// Two decimals.
	"AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2,
	"AWG": 2, "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BMD": 2, "BND": 2,
	"BOB": 2, "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2,
	"CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CNY": 2, "COP": 2, "COU": 2,
	"CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2, "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2,
	"ERN": 2, "ETB": 2, "EUR": 2, "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2, "GHS": 2,
	"GIP": 2, "GMD": 2, "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2,
	"IDR": 2, "ILS": 2, "INR": 2, "IRR": 2, "JMD": 2, "KES": 2, "KGS": 2, "KHR": 2,
	"KPW": 2, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2,
	"MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2,
	"MUR": 2, "MVR": 2, "MWK": 2, "MXN": 2, "MXV": 2, "MYR": 2, "MZN": 2, "NAD": 2,
	"NGN": 2, "NIO": 2, "NOK": 2, "NPR": 2, "NZD": 2, "PAB": 2, "PEN": 2, "PGK": 2,
	"PHP": 2, "PKR": 2, "PLN": 2, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "SAR": 2,
	"SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2, "SOS": 2,
	"SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2, "TJS": 2,
	"TMT": 2, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2, "UAH": 2, "USD": 2,
	"USN": 2, "UYU": 2, "UZS": 2, "VED": 2, "VES": 2, "WST": 2, "XCD": 2, "XCG": 2,
	"YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
}

// CurrencyExponent returns the number of decimals of currency's minor unit
// (ISO 4217: 0 for JPY, 2 for EUR and PLN, 3 for BHD), and false for a code
// that is not in the table. The code must be upper case.
func CurrencyExponent(currency string) (int, bool) {
	e, ok := exponents[currency]
	return e, ok
}

// FormatMinor renders amount, in minor units of currency, as a decimal in
// major units with no trailing zeros and no exponent, computed on integers so
// that no floating-point rounding can occur: 1999 EUR is "19.99", 500 PLN is
// "5", 1000 JPY is "1000", 1234 BHD is "1.234". The result is valid JSON
// number text. A negative amount or an unknown currency is an error and
// nothing is rendered.
func FormatMinor(amount int64, currency string) (string, error) {
	e, ok := CurrencyExponent(currency)
	if !ok {
		return "", fmt.Errorf("%q: %w", currency, ErrUnknownCurrency)
	}
	if amount < 0 {
		return "", fmt.Errorf("%d is negative: %w", amount, ErrInvalidAmount)
	}
	digits := strconv.FormatInt(amount, 10)
	if e == 0 {
		return digits, nil
	}
	if len(digits) <= e {
		digits = strings.Repeat("0", e-len(digits)+1) + digits
	}
	whole, frac := digits[:len(digits)-e], strings.TrimRight(digits[len(digits)-e:], "0")
	if frac == "" {
		return whole, nil
	}
	return whole + "." + frac, nil
}

// maxDecimalText bounds the text ParseMajor reads, so that no exponent can
// make it build a huge number.
const maxDecimalText = 64

// ParseMajor reads s, a decimal in major units of currency in JSON number
// syntax (such as "19.99", "5", "1.5E1"), into minor units, exactly: it never
// rounds. A value that is negative, has a non-zero digit below the currency's
// minor unit (19.995 EUR), does not fit in int64 minor units, is longer than
// 64 characters, or is not a number is an error, as is an unknown currency.
func ParseMajor(s, currency string) (int64, error) {
	e, ok := CurrencyExponent(currency)
	if !ok {
		return 0, fmt.Errorf("%q: %w", currency, ErrUnknownCurrency)
	}
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("%q %s: %w", clipText(s), why, ErrInvalidAmount)
	}
	if len(s) > maxDecimalText {
		return bad("is too long")
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		x := s[i+1:]
		if len(x) > 0 && (x[0] == '+' || x[0] == '-') {
			x = x[1:]
		}
		n, err := strconv.Atoi(x)
		if x == "" || !allDigits(x) || err != nil {
			return bad("is not a number")
		}
		if s[i+1] == '-' {
			n = -n
		}
		exp = n
	}
	if strings.HasPrefix(mant, "-") {
		return bad("is negative")
	}
	whole, frac, hasPoint := strings.Cut(mant, ".")
	switch {
	case whole == "" || !allDigits(whole) || !allDigits(frac):
		return bad("is not a number")
	case hasPoint && frac == "":
		return bad("is not a number")
	case len(whole) > 1 && whole[0] == '0':
		return bad("is not a number") // JSON forbids leading zeros
	}
	n, _ := new(big.Int).SetString(whole+frac, 10)
	// The value is n × 10^(exp − len(frac)); in minor units, × 10^e.
	shift := exp - len(frac) + e
	ten := big.NewInt(10)
	switch {
	case n.Sign() == 0:
	case shift > 19:
		// n ≥ 1, so n × 10^shift ≥ 10^20 > MaxInt64.
		return bad("is out of range")
	case shift < -len(whole+frac):
		// 0 < n < 10^len(whole+frac): a non-zero digit lies below the unit.
		return bad(fmt.Sprintf("has more than %d decimals for %s", e, currency))
	case shift > 0:
		n.Mul(n, new(big.Int).Exp(ten, big.NewInt(int64(shift)), nil))
	case shift < 0:
		q, r := new(big.Int).QuoRem(n, new(big.Int).Exp(ten, big.NewInt(int64(-shift)), nil), new(big.Int))
		if r.Sign() != 0 {
			return bad(fmt.Sprintf("has more than %d decimals for %s", e, currency))
		}
		n = q
	}
	if !n.IsInt64() {
		return bad("is out of range")
	}
	return n.Int64(), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func clipText(s string) string {
	if len(s) > 24 {
		return s[:24] + "..."
	}
	return s
}
