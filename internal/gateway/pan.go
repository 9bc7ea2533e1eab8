package gateway

// MaskPAN returns a card number with every digit but the first six and the
// last four replaced by '*' (PCI DSS 3.4). Numbers of 10 digits or fewer keep
// only their last four. Non-digit characters are dropped first.
func MaskPAN(pan string) string {
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
