package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
)

// ErrNoOutcome is returned by Pending.Wait when the context ends before an
// outcome arrived; the error also wraps the context's error.
var ErrNoOutcome = errors.New("no outcome")

// ErrWatcherClosed is returned by Pending.Wait after Watcher.Close.
var ErrWatcherClosed = errors.New("watcher closed")

// Outcome is the result event that answered a command.
type Outcome struct {
	// Kind is the kind of Event: a terminal kind, or command.rejected,
	// command.duplicate or command.dead_lettered.
	Kind  events.Kind
	Event events.Event
	// Original is the terminal event a duplicate repeats, when Client.Resolve
	// found it; nil otherwise.
	Original *events.Event
}

// Final returns the terminal event that decides the outcome (Original for a
// resolved duplicate, Event for a terminal one) and false when there is none
// (rejected, dead-lettered, or a duplicate whose original was not found).
func (o Outcome) Final() (events.Event, bool) {
	switch {
	case o.Kind.Terminal():
		return o.Event, true
	case o.Kind == events.Duplicate && o.Original != nil:
		return *o.Original, true
	}
	return events.Event{}, false
}

// Succeeded reports whether the command's key ended in success: a succeeded
// event, or a duplicate whose original event is a succeeded one.
func (o Outcome) Succeeded() bool {
	e, ok := o.Final()
	if !ok {
		return false
	}
	k, _ := events.KindOfType(e.Type)
	return k == events.CaptureSucceeded || k == events.VoidSucceeded
}

// Match selects the events that answer one command.
type Match struct {
	MerchantID     string
	IdempotencyKey string
	// CommandID, when set, further restricts the non-terminal events
	// (rejected, duplicate, dead-lettered), which answer one message, to those
	// of this command. A terminal event answers the key whichever command of
	// that key produced it (SPEC §4.2: one terminal event per key).
	CommandID string
}

// Matches reports whether the event of kind k with data d answers m.
func (m Match) Matches(k events.Kind, d events.Data) bool {
	if d.MerchantID != m.MerchantID || d.IdempotencyKey != m.IdempotencyKey {
		return false
	}
	switch k {
	case events.CaptureSucceeded, events.CaptureFailed, events.VoidSucceeded, events.VoidFailed:
		return true
	case events.Rejected, events.Duplicate, events.DeadLettered:
		return m.CommandID == "" || d.CommandID == "" || d.CommandID == m.CommandID
	}
	return false
}

// Watcher follows the result events from the moment it was created and hands
// each one to the Pending waits it answers. Create it before publishing, so
// that no outcome can be missed. It is safe for concurrent use.
type Watcher struct {
	it        jetstream.MessagesContext
	cleanup   func()
	closeOnce sync.Once

	mu      sync.Mutex
	pending map[watchKey][]*Pending
	err     error
	done    chan struct{}
	wg      sync.WaitGroup
}

type watchKey struct{ merchant, key string }

// Pending is a wait for the outcome of one command, registered with
// Watcher.Expect.
type Pending struct {
	w     *Watcher
	match Match
	ch    chan Outcome // buffered, receives at most one outcome
}

// Watch starts a Watcher: an ordered consumer on the events stream that
// delivers only events stored from now on (DeliverNewPolicy). Close it when
// done.
func (c *Client) Watch(ctx context.Context) (*Watcher, error) {
	cons, err := c.js.OrderedConsumer(ctx, c.streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.streams.EventWildcard()},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("watch events: %w", c.streamErr(err))
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("watch events: %w", err)
	}
	w := &Watcher{
		it:      it,
		cleanup: c.deleteConsumer(cons),
		pending: make(map[watchKey][]*Pending),
		done:    make(chan struct{}),
	}
	w.wg.Add(1)
	go w.loop()
	return w, nil
}

func (w *Watcher) loop() {
	defer w.wg.Done()
	for {
		msg, err := w.it.Next()
		if err != nil {
			w.stop(err)
			return
		}
		var e events.Event
		if json.Unmarshal(msg.Data(), &e) != nil {
			continue
		}
		k, ok := events.KindOfType(e.Type)
		if !ok {
			continue
		}
		w.dispatch(Outcome{Kind: k, Event: e})
	}
}

func (w *Watcher) dispatch(o Outcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := watchKey{o.Event.Data.MerchantID, o.Event.Data.IdempotencyKey}
	list := w.pending[key]
	kept := list[:0]
	for _, p := range list {
		if p.match.Matches(o.Kind, o.Event.Data) {
			p.ch <- o
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == 0 {
		delete(w.pending, key)
	} else {
		w.pending[key] = kept
	}
}

func (w *Watcher) stop(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		err = ErrWatcherClosed
	}
	w.err = err
	close(w.done)
}

// Expect registers a wait for the first event that matches m. Call it before
// publishing the command.
func (w *Watcher) Expect(m Match) *Pending {
	p := &Pending{w: w, match: m, ch: make(chan Outcome, 1)}
	w.mu.Lock()
	defer w.mu.Unlock()
	k := watchKey{m.MerchantID, m.IdempotencyKey}
	w.pending[k] = append(w.pending[k], p)
	return p
}

// Wait returns the outcome once it arrives. When ctx ends first it returns an
// error wrapping ErrNoOutcome and the context's error; when the Watcher
// stopped, the reason it stopped.
func (p *Pending) Wait(ctx context.Context) (Outcome, error) {
	select {
	case o := <-p.ch:
		return o, nil
	default:
	}
	select {
	case o := <-p.ch:
		return o, nil
	case <-ctx.Done():
		p.cancel()
		return Outcome{}, fmt.Errorf("%w: %w", ErrNoOutcome, ctx.Err())
	case <-p.w.done:
		select {
		case o := <-p.ch:
			return o, nil
		default:
		}
		p.w.mu.Lock()
		defer p.w.mu.Unlock()
		return Outcome{}, p.w.err
	}
}

// cancel removes p from its watcher.
func (p *Pending) cancel() {
	w := p.w
	w.mu.Lock()
	defer w.mu.Unlock()
	k := watchKey{p.match.MerchantID, p.match.IdempotencyKey}
	list := w.pending[k]
	for i, q := range list {
		if q == p {
			w.pending[k] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(w.pending[k]) == 0 {
		delete(w.pending, k)
	}
}

// Close stops the Watcher, waits for its goroutine and deletes its consumer.
// Pending waits then return ErrWatcherClosed. It is safe to call twice.
func (w *Watcher) Close() {
	w.closeOnce.Do(func() {
		w.it.Stop()
		w.wg.Wait()
		w.stop(ErrWatcherClosed)
		w.cleanup()
	})
}

// deleteConsumer returns a function that deletes the ordered consumer's
// current server-side consumer, which would otherwise linger until its
// inactivity threshold.
func (c *Client) deleteConsumer(cons jetstream.Consumer) func() {
	return func() {
		info := cons.CachedInfo()
		if info == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = c.js.DeleteConsumer(ctx, c.streams.Events, info.Name)
	}
}

// streamErr turns a missing events stream into streams.ErrNotProvisioned.
func (c *Client) streamErr(err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", c.streams.Events, streams.ErrNotProvisioned)
	}
	return err
}
