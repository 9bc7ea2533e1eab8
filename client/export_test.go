package client

import "time"

// SetOriginalGrace sets how long a duplicate's original is waited for,
// and returns a function that restores it.
func SetOriginalGrace(d time.Duration) (restore func()) {
	old := originalGrace
	originalGrace = d
	return func() { originalGrace = old }
}
