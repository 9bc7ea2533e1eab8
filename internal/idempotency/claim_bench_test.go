package idempotency_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/testenv"
)

// BenchmarkRedisClaimComplete measures what the Redis server spends on one
// command's records: a claim (with its transaction lock) and a completion
// with a 1.2 KB event, and, within the claim, what the check for lost
// records costs (the merchant's epoch marker read and the server's run id
// from INFO). Figures are the server's own (INFO commandstats), so they
// do not depend on the client or the network:
//
//	go test -run '^$' -bench BenchmarkRedisClaimComplete ./internal/idempotency
func BenchmarkRedisClaimComplete(b *testing.B) {
	r := testenv.StartRedis(b)
	rdb := r.Client(b)
	_, js := testenv.StartNATS(b).Connect(b)
	reg, err := idempotency.NewKVScopeRegistry(b.Context(), js, "", 1)
	if err != nil {
		b.Fatal(err)
	}
	s := idempotency.NewRedis(rdb, idempotency.RedisOptions{Prefix: r.Prefix, TTL: time.Hour, Registry: reg})
	ev := json.RawMessage(`{"specversion":"1.0","id":"` + strings.Repeat("x", 1200) + `"}`)
	ctx := b.Context()
	if _, err := s.Claim(ctx, lossRequest("M1", "warm")); err != nil {
		b.Fatal(err)
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		key := "k" + strconv.Itoa(i)
		req := lossRequest("M1", key)
		c, err := s.Claim(ctx, req)
		if err != nil || c.Status != idempotency.Acquired {
			b.Fatalf("Claim = %v, %v", c.Status, err)
		}
		if err := s.Complete(ctx, "M1", key, req.TxnLock, c.Record.Token, idempotency.Outcome{EventID: "e", Event: ev}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	stats := commandStats(b, rdb)
	n := float64(b.N)
	b.ReportMetric(stats["evalsha"]/n, "redis-µs/command")
	b.ReportMetric(stats["info"]/n, "info-µs/command")
	b.ReportMetric(0, "ns/op")
}

// commandStats returns the server's microseconds per command name.
func commandStats(b *testing.B, rdb *redis.Client) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(rdb.Info(b.Context(), "commandstats").Val(), "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "usec="); ok {
				f, _ := strconv.ParseFloat(v, 64)
				out[name] = f
			}
		}
	}
	return out
}
