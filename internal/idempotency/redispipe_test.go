package idempotency_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/testenv"
)

// pipelineCounter is a go-redis hook that counts pipelines and commands.
type pipelineCounter struct{ pipelines, cmds atomic.Int64 }

func (c *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.pipelines.Add(1)
		c.cmds.Add(1)
		return next(ctx, cmd)
	}
}
func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.pipelines.Add(1)
		c.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestRedisCoalescesConcurrentCalls: the scripts of concurrent callers go
// out in shared pipelines, each still getting its own answer, even when the
// server has lost its script cache and when one caller gives up.
func TestRedisCoalescesConcurrentCalls(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client(t)
	s, _ := newRedisStore(t, r, rdb, time.Hour)
	var count pipelineCounter
	rdb.AddHook(&count)
	ctx := t.Context()
	// The merchant's epoch marker first, so that what follows is claims only.
	claimStatus(t, s, lossRequest("M1", "warm"), idempotency.Acquired)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	count.pipelines.Store(0)
	count.cmds.Store(0)

	const n = 200
	var wg sync.WaitGroup
	tokens := make([]int64, n)
	gaveUp, cancel := context.WithCancel(ctx)
	cancel()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 0 {
				// A caller whose context has ended gets its error, and
				// costs the others nothing.
				if _, err := s.Claim(gaveUp, lossRequest("M1", "gave-up")); err == nil {
					t.Errorf("claim with an ended context succeeded")
				}
				return
			}
			key := "k" + strconv.Itoa(i)
			c, err := s.Claim(ctx, lossRequest("M1", key))
			if err != nil || c.Status != idempotency.Acquired {
				t.Errorf("Claim(%s) = %v, %v; want acquired", key, c.Status, err)
				return
			}
			tokens[i] = c.Record.Token
			if err := s.Renew(ctx, "M1", key, "txn-"+key, c.Record.Token, time.Minute); err != nil {
				t.Errorf("Renew(%s) = %v", key, err)
			}
			if err := s.Release(ctx, "M1", key, "txn-"+key, c.Record.Token+1, false); err != idempotency.ErrFenced {
				t.Errorf("Release(%s) with another token = %v, want ErrFenced", key, err)
			}
		}()
	}
	wg.Wait()
	calls := int64(3 * (n - 1))
	if got := count.pipelines.Load(); got >= calls/2 {
		t.Errorf("%d script calls went out in %d round trips, want them coalesced (fewer than half)", calls, got)
	}
	t.Logf("%d script calls in %d round trips (%d commands, EVAL retries included)", calls, count.pipelines.Load(), count.cmds.Load())
	for i := 1; i < n; i++ {
		rec, err := s.Get(ctx, "M1", "k"+strconv.Itoa(i))
		if err != nil || rec.Token != tokens[i] || rec.State != idempotency.StateInProgress {
			t.Errorf("k%d: record %+v, %v; want in progress with token %d", i, rec, err, tokens[i])
		}
	}
}

// TestRedisPipelineSurvivesAnOutage: calls queued behind a pipeline that
// fails get their own error, and the next ones succeed once Redis is back.
func TestRedisPipelineSurvivesAnOutage(t *testing.T) {
	r := startLossServer(t, false)
	s := idempotency.NewRedis(r.rdb, idempotency.RedisOptions{TTL: time.Hour, Registry: newRegistry(t)})
	claimStatus(t, s, lossRequest("M1", "warm"), idempotency.Acquired)
	_ = r.rdb.ShutdownNoSave(t.Context()).Err()
	_ = r.cmd.Wait()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if _, err := s.Claim(ctx, lossRequest("M1", "down-"+strconv.Itoa(i))); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 20 {
		t.Errorf("%d of 20 claims failed with Redis down, want 20", failed.Load())
	}
	r.start(t)
	c, err := s.Claim(t.Context(), lossRequest("M1", "after"))
	if err != nil || c.Status != idempotency.Acquired {
		t.Errorf("claim after the outage = %v, %v; want acquired", c.Status, err)
	}
}
