// Package ratelimit paces the calls to one payment gateway so that the whole
// fleet of workers stays under the gateway's requests per second, status
// calls included.
//
// Two pacers, one per idempotency store:
//   - Redis: one GCRA limiter in Redis (github.com/go-redis/redis_rate) that
//     every worker asks before each call: the fleet shares one schedule.
//   - Local: without Redis, each worker paces itself with the same GCRA
//     at its share of the rate, the rate divided by the number of live
//     workers it is told of (internal/fleet counts them).
//
// Both pace a little under the limit (Margin): a gateway counts requests as
// they arrive, and the network moves them by milliseconds, so a schedule at
// exactly the limit would now and then put one request too many into a
// second. After a pause a burst of the margin's worth of calls less one (at
// least one) may go at once, so that a caller that came late catches up
// without a second ever holding more than the rate: at most
// floor(rate × (1 − Margin)) + burst ≤ rate calls. Both honour a 429's Retry-After for the whole fleet (Slow).
package ratelimit

import "time"

// Margin is the share of the limit left unused so that jitter between our
// clock and the gateway's never puts one request too many into a second.
const Margin = 0.03

// minSlow is the least a 429 holds the fleet back when it names no wait.
const minSlow = time.Second

// slowFor is how long a 429 holds calls back: its Retry-After, at least
// minSlow.
func slowFor(retryAfter time.Duration) time.Duration {
	return max(retryAfter, minSlow)
}

// burst is how many calls may go at once after a pause at rate per second:
// the margin's worth of calls less one, at least one.
func burst(rate float64) int {
	return max(1, int(rate*Margin)-1)
}
