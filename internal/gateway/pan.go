package gateway

import "strings"

// maxStackPAN is the longest masked number MaskPAN builds in a buffer of
// its own stack frame; a longer one is built in a strings.Builder.
const maxStackPAN = 32

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
	if n > maxStackPAN {
		var b strings.Builder
		b.Grow(n)
		k := 0
		for i := 0; i < len(pan); i++ {
			if c := pan[i]; c >= '0' && c <= '9' {
				b.WriteByte(masked(c, k, head, tail))
				k++
			}
		}
		return b.String()
	}
	var buf [maxStackPAN]byte
	if n == len(pan) {
		copy(buf[:head], pan)
		for k := head; k < tail; k++ {
			buf[k] = '*'
		}
		copy(buf[tail:n], pan[tail:])
		return string(buf[:n])
	}
	k := 0
	for i := 0; i < len(pan) && k < n; i++ {
		if c := pan[i]; c >= '0' && c <= '9' {
			buf[k] = masked(c, k, head, tail)
			k++
		}
	}
	return string(buf[:n])
}

// masked is the digit c at index k of a number shown from index 0 to head
// and from tail on.
func masked(c byte, k, head, tail int) byte {
	if k >= head && k < tail {
		return '*'
	}
	return c
}
