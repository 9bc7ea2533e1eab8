package idempotency

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// scriptCall is one script run waiting for its turn in a pipeline.
type scriptCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	// wait asks for WAIT after the call (claims, with WaitReplicas).
	wait bool

	// done receives the call's result once its pipeline has returned.
	done chan callResult
}

type callResult struct {
	res   any
	err   error
	acked int64 // replicas that acknowledged, when wait
}

// pipe coalesces the script calls of concurrent callers into pipelines: one
// pipeline is in flight at a time, and what queues meanwhile goes out
// together in the next, in one write and one read. A lone call goes out at
// once, so nothing waits on a timer; under load the round trips per command
// fall with the number of callers. A sender goroutine runs while calls are
// queued and ends when the queue is empty.
type pipe struct {
	rdb          redis.UniversalClient
	waitReplicas int
	waitTimeout  time.Duration

	mu      sync.Mutex
	queue   []*scriptCall
	sending bool
}

// maxPipeline bounds the calls of one pipeline.
const maxPipeline = 256

// run runs c, alone or with others, and returns its result, or c.ctx's error
// as soon as c.ctx ends (the call may still reach Redis, like any request
// cut short).
func (p *pipe) run(c *scriptCall) callResult {
	c.done = make(chan callResult, 1)
	p.mu.Lock()
	p.queue = append(p.queue, c)
	if !p.sending {
		p.sending = true
		go p.drain()
	}
	p.mu.Unlock()
	select {
	case r := <-c.done:
		return r
	case <-c.ctx.Done():
		return callResult{err: c.ctx.Err()}
	}
}

// drain sends pipelines until the queue is empty.
func (p *pipe) drain() {
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.sending = false
			p.mu.Unlock()
			return
		}
		n := min(len(p.queue), maxPipeline)
		batch := p.queue[:n:n]
		p.queue = p.queue[n:]
		p.mu.Unlock()
		p.send(batch)
	}
}

// send runs batch as one pipeline (EVALSHA, then EVAL for any script the
// server does not have cached), followed by one WAIT if any call asks for it,
// and hands each call its result.
func (p *pipe) send(batch []*scriptCall) {
	live := batch[:0:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- callResult{err: err}
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	// The pipeline is shared: one caller's cancellation must not fail the
	// others' calls. The client's own timeouts bound it.
	ctx := context.WithoutCancel(live[0].ctx)
	results := p.exec(ctx, live, true)
	var again []*scriptCall
	var at []int
	for i, c := range live {
		if redis.HasErrorPrefix(results[i].err, "NOSCRIPT") {
			again, at = append(again, c), append(at, i)
		}
	}
	if len(again) > 0 {
		for j, r := range p.exec(ctx, again, false) {
			results[at[j]] = r
		}
	}
	for i, c := range live {
		c.done <- results[i]
	}
}

func (p *pipe) exec(ctx context.Context, calls []*scriptCall, cached bool) []callResult {
	cmds := make([]*redis.Cmd, len(calls))
	var wait *redis.Cmd
	_, _ = p.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		waitAsked := false
		for i, c := range calls {
			if cached {
				cmds[i] = c.script.EvalSha(ctx, pl, c.keys, c.args...)
			} else {
				cmds[i] = c.script.Eval(ctx, pl, c.keys, c.args...)
			}
			waitAsked = waitAsked || c.wait
		}
		if waitAsked {
			wait = pl.Do(ctx, "wait", p.waitReplicas, p.waitTimeout.Milliseconds())
		}
		return nil
	})
	var acked int64
	var waitErr error
	if wait != nil {
		acked, waitErr = wait.Int64()
	}
	out := make([]callResult, len(calls))
	for i, c := range calls {
		r := &out[i]
		r.res, r.err = cmds[i].Result()
		if r.err == nil && c.wait {
			r.acked = acked
			if waitErr != nil {
				r.err = errors.Join(errors.New("WAIT"), waitErr)
			}
		}
	}
	return out
}
