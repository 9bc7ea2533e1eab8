package gateway

import "strings"

// MaskPAN returns a card number with every digit but the first six and the
// last four replaced by '*' (PCI DSS 3.4). Numbers of 10 digits or fewer keep
// only their last four. Non-digit characters are dropped first. It
// allocates only the string it returns, and nothing for a number of four
// digits or fewer.
func MaskPAN(pan string) string {
	n := 0
	for i := 0; i < len(pan); i++ {
		if c := pan[i]; c >= '0' && c <= '9' {
			n++
		}
	}
	if n <= 4 {
		return "****"[:n]
	}
	head, tail := 0, n-4
	if n > 10 {
		head = 6
	}
	var b strings.Builder
	b.Grow(n)
	for i := 0; i < len(pan); i++ {
		if c := pan[i]; c >= '0' && c <= '9' {
			if k := b.Len(); k >= head && k < tail {
				c = '*'
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}
