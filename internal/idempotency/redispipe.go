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

	res   any
	err   error
	acked int64 // replicas that acknowledged, when wait
	// done receives true when the call has its result, false when its
	// caller is to send the next pipeline.
	done chan bool
}

// pipe coalesces the script calls of concurrent callers into pipelines: one
// pipeline is in flight at a time, and what queues meanwhile goes out
// together in the next, in one write and one read. A lone caller goes out at
// once, so nothing waits on a timer; under load the round trips per command
// fall with the number of callers. The caller whose call finds no pipeline
// in flight sends it; when it returns, the oldest waiting caller sends the
// next.
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

// run runs c, alone or with others, and returns when it has its result.
func (p *pipe) run(c *scriptCall) {
	c.done = make(chan bool, 1)
	p.mu.Lock()
	p.queue = append(p.queue, c)
	if p.sending {
		p.mu.Unlock()
		if <-c.done {
			return
		}
		p.mu.Lock()
	}
	p.sending = true
	n := min(len(p.queue), maxPipeline)
	batch := p.queue[:n:n]
	p.queue = p.queue[n:]
	p.mu.Unlock()

	p.send(batch)

	p.mu.Lock()
	if len(p.queue) > 0 {
		p.queue[0].done <- false // its caller sends the next pipeline
	} else {
		p.sending = false
	}
	p.mu.Unlock()
	for _, b := range batch {
		b.done <- true
	}
	// c is in batch: it was queued first or handed the turn.
	<-c.done
}

// send runs batch as one pipeline (EVALSHA, then EVAL for any script the
// server does not have cached), followed by one WAIT if any call asks for it.
func (p *pipe) send(batch []*scriptCall) {
	live := batch[:0:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.err = err
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
	p.exec(ctx, live, true)
	var again []*scriptCall
	for _, c := range live {
		if redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			again = append(again, c)
		}
	}
	if len(again) > 0 {
		p.exec(ctx, again, false)
	}
}

func (p *pipe) exec(ctx context.Context, calls []*scriptCall, cached bool) {
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
	for i, c := range calls {
		c.res, c.err = cmds[i].Result()
		if c.err == nil && c.wait {
			c.acked = acked
			if waitErr != nil {
				c.err = errors.Join(errors.New("WAIT"), waitErr)
			}
		}
	}
}
