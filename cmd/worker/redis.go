package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// newRedisClient builds the client of REDIS_URL as REDIS_MODE reads it: a
// plain client (standalone), a failover client that finds the master through
// the sentinels and follows it across a failover (sentinel), or a cluster
// client that sends each script to the master of its keys' slot (cluster).
// Every mode gets the same fail-fast timeouts and a pool sized to
// WORKER_CONCURRENCY (per node, in a cluster); what the URL sets wins. where
// names the servers, for logs.
func newRedisClient(cfg Config) (rdb redis.UniversalClient, where []any, err error) {
	pool := redisPoolSize(cfg.WorkerConcurrency)
	switch cfg.RedisMode {
	case RedisSentinel:
		o, err := redis.ParseFailoverURL(cfg.RedisURL.String())
		if err != nil {
			return nil, nil, err
		}
		failFast(&o.MaxRetries, &o.DialerRetries, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolSize, pool)
		where = []any{slog.String("mode", RedisSentinel), slog.String("master_name", o.MasterName),
			slog.String("sentinels", strings.Join(o.SentinelAddrs, ","))}
		return redis.NewFailoverClient(o), where, nil
	case RedisCluster:
		o, err := redis.ParseClusterURL(cfg.RedisURL.String())
		if err != nil {
			return nil, nil, err
		}
		failFast(&o.MaxRetries, &o.DialerRetries, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolSize, pool)
		where = []any{slog.String("mode", RedisCluster), slog.String("nodes", strings.Join(o.Addrs, ","))}
		return redis.NewClusterClient(o), where, nil
	case RedisStandalone:
		o, err := redis.ParseURL(cfg.RedisURL.String())
		if err != nil {
			return nil, nil, err
		}
		failFast(&o.MaxRetries, &o.DialerRetries, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolSize, pool)
		where = []any{slog.String("mode", RedisStandalone), slog.String("addr", o.Addr)}
		return redis.NewClient(o), where, nil
	}
	return nil, nil, fmt.Errorf("unknown mode %q", cfg.RedisMode)
}

// failFast makes a down Redis turn into a requeued command in about a
// second, not after go-redis's default dial and command retries (the
// handler does its own retrying), and sizes the pool; each setting is
// changed only where the URL left it unset (?max_retries=…,
// ?dial_timeout=…, ?pool_size=… win).
func failFast(maxRetries, dialerRetries *int, dial, read, write *time.Duration, poolSize *int, pool int) {
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setDuration := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setInt(maxRetries, 1)
	setInt(dialerRetries, 1)
	setDuration(dial, time.Second)
	setDuration(read, 2*time.Second)
	setDuration(write, 2*time.Second)
	setInt(poolSize, pool)
}

// redisPoolSize is one connection per command in flight (claim, complete),
// a quarter more for the lease renewals running beside them, and a few
// spare; go-redis's default, 10 per CPU, makes commands queue for a
// connection.
func redisPoolSize(concurrency int) int {
	return concurrency + concurrency/4 + 4
}
