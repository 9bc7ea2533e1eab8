package benchproc

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
)

// command is one capture command, ready to publish.
type command struct {
	id   string
	body []byte
}

// captures builds one capture command per authorisation, named
// <prefix>-<i>, as the publisher sends them (command_id also the
// Nats-Msg-Id).
func captures(prefix string, auths []string) []command {
	cmds := make([]command, len(auths))
	for i, txn := range auths {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		body, _ := json.Marshal(map[string]any{
			"command_id": id, "type": "capture", "merchant_id": merchant,
			"transaction_id": txn, "amount": amount, "currency": currency,
		})
		cmds[i] = command{id: id, body: body}
	}
	return cmds
}

// collector reads PAYMENT_EVENTS and times the result of every command it
// is told of: from the moment it was published to the arrival of its event.
type collector struct {
	cc        jetstream.ConsumeContext
	asyncErrs *errList // the publisher's asynchronous errors, reported with ours

	mu      sync.Mutex
	sent    map[string]time.Time // awaiting an event
	lats    []time.Duration      // of capture.succeeded events, in arrival order
	last    time.Time            // arrival of the last of them
	want    int
	done    chan struct{} // closed when len(lats) == want
	unhappy []string      // other events for our commands
}

// follow starts reading every new event of the events stream.
func follow(ctx context.Context, js jetstream.JetStream, sc streams.Config, asyncErrs *errList) (*collector, error) {
	c := &collector{asyncErrs: asyncErrs}
	cons, err := js.OrderedConsumer(ctx, sc.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{sc.EventWildcard()},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("events consumer: %w", err)
	}
	succeeded := events.CaptureSucceeded.Type()
	c.cc, err = cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		var ev struct {
			Type string `json:"type"`
			Data struct {
				CommandID string `json:"command_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		t0, ok := c.sent[ev.Data.CommandID]
		if !ok {
			return
		}
		delete(c.sent, ev.Data.CommandID)
		if ev.Type != succeeded {
			c.unhappy = append(c.unhappy, ev.Type+" for "+ev.Data.CommandID)
			return
		}
		c.lats = append(c.lats, now.Sub(t0))
		c.last = now
		if len(c.lats) == c.want {
			close(c.done)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("events consumer: %w", err)
	}
	return c, nil
}

func (c *collector) stop() { c.cc.Stop() }

// expect starts a phase of n commands.
func (c *collector) expect(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = make(map[string]time.Time, n)
	c.lats = make([]time.Duration, 0, n)
	c.want, c.done, c.unhappy = n, make(chan struct{}), nil
}

// sending records that id is about to be published.
func (c *collector) sending(id string, at time.Time) {
	c.mu.Lock()
	c.sent[id] = at
	c.mu.Unlock()
}

// wait returns the latencies, sorted, and the last event's arrival once
// every command's capture.succeeded event has arrived; an error after
// timeout, at another event for one of the commands, or at a failed publish.
func (c *collector) wait(timeout time.Duration, alive func() error) ([]time.Duration, time.Time, error) {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			c.mu.Lock()
			defer c.mu.Unlock()
			lats := slices.Clone(c.lats)
			slices.Sort(lats)
			return lats, c.last, nil
		case <-tick.C:
			c.mu.Lock()
			unhappy := slices.Clone(c.unhappy)
			c.mu.Unlock()
			if len(unhappy) > 0 {
				return nil, time.Time{}, fmt.Errorf("%d commands did not succeed, first: %s", len(unhappy), unhappy[0])
			}
			if err := c.asyncErrs.err(); err != nil {
				return nil, time.Time{}, err
			}
			if err := alive(); err != nil {
				return nil, time.Time{}, err
			}
		case <-deadline.C:
			c.mu.Lock()
			defer c.mu.Unlock()
			return nil, time.Time{}, fmt.Errorf("%d of %d capture.succeeded events after %s (%d other events)",
				len(c.lats), c.want, timeout, len(c.unhappy))
		}
	}
}

// phase is what one load on the worker measured.
type phase struct {
	n       int
	elapsed time.Duration   // first publish to the last event
	lats    []time.Duration // command to event, sorted
	cpu     cpuUse
	alloc   float64 // bytes the worker allocated
}

func (p phase) rate() float64 { return float64(p.n) / p.elapsed.Seconds() }

func (p phase) percentile(q float64) time.Duration {
	return p.lats[min(len(p.lats)-1, int(q*float64(len(p.lats))))]
}

// loadStored measures the worker as the floors are measured: cmds are
// published and stored while the worker's consumer is paused, and the clock
// (and the CPU and allocation counts) start when the pause ends, so the
// commands' publication is outside the phase, as it is outside the floors'.
// Its latencies are from publishing, so only its rate means anything.
func (s *system) loadStored(ctx context.Context, cmds []command, timeout time.Duration) phase {
	s.b.Helper()
	subject := s.streams.CommandSubject("capture")
	if _, err := s.js.PauseConsumer(ctx, s.streams.Commands, s.streams.Consumer, time.Now().Add(time.Hour)); err != nil {
		s.b.Fatalf("pause the worker's consumer: %v", err)
	}
	s.events.expect(len(cmds))
	for _, c := range cmds {
		s.publish(subject, c)
	}
	select {
	case <-s.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		s.b.Fatalf("%d commands not stored after a minute", s.js.PublishAsyncPending())
	}
	// The pause ends by its deadline, not by ResumeConsumer: the server
	// wakes the consumer at the deadline, while a resume leaves the
	// worker's waiting pull requests asleep until they are renewed.
	start := time.Now().Add(200 * time.Millisecond)
	if _, err := s.js.PauseConsumer(ctx, s.streams.Commands, s.streams.Consumer, start); err != nil {
		s.b.Fatalf("end the pause of the worker's consumer: %v", err)
	}
	time.Sleep(time.Until(start) - 20*time.Millisecond)
	return s.measure(ctx, len(cmds), start, timeout, nil)
}

// exited returns the error of the first server or worker process that
// exited.
func (s *system) exited() error {
	for _, p := range []*proc{s.nats, s.redis, s.sandbox, s.worker} {
		if err := p.exitedErr(); err != nil {
			return err
		}
	}
	return nil
}

// load publishes cmds to the worker, all at once (perSecond 0, asynchronous
// publishes with a window of publishWindow) or paced at perSecond, and
// waits for every capture.succeeded event.
func (s *system) load(ctx context.Context, cmds []command, perSecond float64, timeout time.Duration) phase {
	s.b.Helper()
	subject := s.streams.CommandSubject("capture")
	s.events.expect(len(cmds))
	return s.measure(ctx, len(cmds), time.Time{}, timeout, func(start time.Time) {
		for i, c := range cmds {
			if perSecond > 0 {
				if d := time.Until(start.Add(time.Duration(float64(i) / perSecond * float64(time.Second)))); d > 0 {
					time.Sleep(d)
				}
			}
			s.publish(subject, c)
		}
	})
}

// measure counts the worker's allocations and every process's CPU from
// now, runs send (if any) with start (now, when zero), and waits for the n
// events expected; the phase's time runs from start to the last event.
func (s *system) measure(ctx context.Context, n int, start time.Time, timeout time.Duration, send func(start time.Time)) phase {
	s.b.Helper()
	alloc0 := s.allocatedBytes(ctx)
	cpu0 := s.cpuSnapshot()
	if start.IsZero() {
		start = time.Now()
	}
	if send != nil {
		send(start)
	}
	lats, last, err := s.events.wait(timeout, s.exited)
	if err != nil {
		s.b.Fatalf("worker: %v", err)
	}
	cpu1 := s.cpuSnapshot()
	return phase{
		n: n, elapsed: last.Sub(start), lats: lats,
		cpu: cpu0.until(cpu1), alloc: s.allocatedBytes(ctx) - alloc0,
	}
}

// publish sends the command c to subject, asynchronously, and records when.
func (s *system) publish(subject string, c command) {
	s.events.sending(c.id, time.Now())
	if _, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: c.body},
		jetstream.WithMsgID(c.id), jetstream.WithStallWait(time.Minute)); err != nil {
		s.b.Fatalf("publish %s: %v", c.id, err)
	}
}
