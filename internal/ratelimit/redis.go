package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Redis paces the calls to one gateway across every worker that shares the
// Redis: a GCRA limiter (redis_rate), Margin under the rate, with a small
// burst (see the package comment), so that calls are spaced evenly
// and no second holds more than the rate. Within one process a
// single caller at a time asks Redis (the others queue behind it), so the
// fleet makes about one Redis call per gateway call, not one per waiting
// command per slot.
//
// A Redis that cannot be reached fails closed: Wait keeps asking until it
// answers or the caller's context ends, and no call is let through unpaced.
type Redis struct {
	rdb    redis.Scripter
	lim    *redis_rate.Limiter
	key    string
	limit  redis_rate.Limit
	onWait func(time.Duration)
	// turn is held by the caller asking Redis.
	turn chan struct{}
}

// RedisOptions configure a Redis pacer.
type RedisOptions struct {
	// Key names the gateway's schedule in Redis (redis_rate adds "rate:");
	// every worker calling the gateway must use the same.
	Key string
	// Rate is the gateway's limit in requests per second (> 0).
	Rate int
	// OnWait, when set, is told how long each Wait waited.
	OnWait func(time.Duration)
}

// redisClient is what the pacer needs of go-redis: redis_rate's calls and
// the script of Slow. *redis.Client, *redis.ClusterClient and the failover
// client all have them.
type redisClient interface {
	redis.Scripter
	Del(ctx context.Context, keys ...string) *redis.IntCmd
}

// NewRedis returns the pacer of one gateway.
func NewRedis(rdb redisClient, o RedisOptions) *Redis {
	if o.Rate <= 0 {
		panic(fmt.Sprintf("ratelimit: rate %d is not positive", o.Rate))
	}
	return &Redis{
		rdb: rdb,
		lim: redis_rate.NewLimiter(rdb),
		key: o.Key,
		// One call every Period/Rate, Margin under the limit; the burst
		// lets a caller that came late catch up by less than the margin,
		// so a second holds at most Rate calls.
		limit:  redis_rate.Limit{Rate: o.Rate, Burst: burst(float64(o.Rate)), Period: marginPeriod()},
		onWait: o.OnWait,
		turn:   make(chan struct{}, 1),
	}
}

// marginPeriod is a second stretched by Margin: Rate calls per marginPeriod
// is Margin under Rate per second.
func marginPeriod() time.Duration {
	m := Margin
	return time.Duration(float64(time.Second) / (1 - m))
}

// Wait blocks until this call's turn in the fleet's schedule, or until ctx
// ends (its error). While Redis cannot be reached it keeps asking.
func (r *Redis) Wait(ctx context.Context) error {
	start := time.Now()
	defer func() {
		if r.onWait != nil {
			r.onWait(time.Since(start))
		}
	}()
	select {
	case r.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.turn }()
	retry := 50 * time.Millisecond
	for {
		res, err := r.lim.Allow(ctx, r.key, r.limit)
		var d time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d, retry = retry, min(2*retry, time.Second)
		case res.Allowed > 0:
			return nil
		default:
			d = res.RetryAfter
		}
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
}

// pushScript moves the schedule's next free slot to at least ARGV[1]
// seconds from now (Redis time), in redis_rate's own format: the key holds
// the theoretical arrival time (TAT), in seconds since 2017-01-01, and a
// call is allowed once the TAT less burst-1 intervals has come, so ARGV[1]
// carries those intervals too.
var pushScript = redis.NewScript(`
redis.replicate_commands()
local t = redis.call("TIME")
local now = (t[1] - 1483228800) + (t[2] / 1000000)
local target = now + tonumber(ARGV[1])
local tat = tonumber(redis.call("GET", KEYS[1]))
if tat == nil or tat < target then
  redis.call("SET", KEYS[1], tostring(target), "EX", math.ceil(target - now) + 1)
end
return 0
`)

// Slow holds back every call to the gateway, in every worker, for d (at
// least a second): the gateway answered 429 with Retry-After d. A Slow that
// Redis does not take is dropped: the gateway will say so again.
func (r *Redis) Slow(ctx context.Context, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	hold := slowFor(d) + time.Duration(r.limit.Burst-1)*r.limit.Period/time.Duration(r.limit.Rate)
	_ = pushScript.Run(ctx, r.rdb, []string{"rate:" + r.key}, hold.Seconds()).Err()
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
