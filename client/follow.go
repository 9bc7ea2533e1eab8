package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
)

// How the waits read the events stream.
//
// One follower per Client reads the events stream from the moment it
// starts (an ordered consumer filtered to the event subjects, from the
// stream's next sequence), and hands every event to the waits it answers.
// It keeps a compact index of what it read lately (sequence, kind, command
// id per key; not the events), so that a wait that starts after its event
// was read finds it at once, and fetches that one event by its sequence.
//
// A wait that may need an event stored before the follower started, or
// before the index's horizon (Await, or AwaitCommand for a command
// published before), is also handed to a history pass: a second, short-lived
// ordered consumer that reads the stream from the earliest time any such
// wait needs up to the horizon, for every wait registered when it started.
// Waits that arrive meanwhile join the next pass. So there is one consumer
// for all waits, plus at most one for the history.

// indexRetention bounds how long the follower remembers an event it read.
// Older ones are found by a history pass.
const indexRetention = 10 * time.Minute

// clockSkew is the slack given to the server's store times, which
// DeliverByStartTime compares with this client's clock.
const clockSkew = time.Minute

// historyIdle ends a history pass that receives nothing for this long: the
// messages it expected were deleted meanwhile.
const historyIdle = 10 * time.Second

// originalGrace is how long a duplicate's original outcome is waited for
// when it is neither in the history nor read yet: the worker publishes it
// just after recording it, which a duplicate can overtake.
var originalGrace = 10 * time.Second

// conflictCode is the rejection code of a command that reused a key with
// other parameters: it says nothing of the key's own outcome.
const conflictCode = "idempotency_key_conflict"

type keyID struct{ merchant, key string }

// head is what the follower reads of every event; the whole event is
// decoded only when a wait wants it.
type head struct {
	id       keyID
	seq      uint64
	kind     Kind
	cmd      string
	conflict bool
}

type eventHead struct {
	Type string `json:"type"`
	Data struct {
		CommandID      string `json:"command_id"`
		IdempotencyKey string `json:"idempotency_key"`
		MerchantID     string `json:"merchant_id"`
		Error          *struct {
			Code string `json:"code"`
		} `json:"error"`
	} `json:"data"`
}

func readHead(data []byte, seq uint64) (head, bool) {
	var eh eventHead
	if json.Unmarshal(data, &eh) != nil {
		return head{}, false
	}
	k := Event{Type: eh.Type}.Kind()
	if k == "" || eh.Data.MerchantID == "" || eh.Data.IdempotencyKey == "" {
		return head{}, false
	}
	return head{
		id:       keyID{eh.Data.MerchantID, eh.Data.IdempotencyKey},
		seq:      seq,
		kind:     k,
		cmd:      eh.Data.CommandID,
		conflict: k == KindRejected && eh.Data.Error != nil && eh.Data.Error.Code == conflictCode,
	}, true
}

// answer is what ends a wait: an event (ev, or only its sequence, to
// fetch), nothing (a history-only wait that found none), or an error.
type answer struct {
	ev  *Event
	seq uint64
	err error
}

// waiter is one wait, registered under its key.
type waiter struct {
	id  keyID
	cmd string // "" waits for the key's outcome
	// terminalOnly accepts only the key's terminal event.
	terminalOnly bool
	// historyOnly ends the wait once the history is read, found or not.
	historyOnly bool
	// needHistory: events stored before the follower's horizon may
	// answer; since is the earliest store time that may.
	needHistory bool
	since       time.Time
	historyDone bool

	cand     *answer // the latest non-final answer so far
	done     chan answer
	resolved bool
}

// accepts reports whether an event answers w, and whether it is final:
// a terminal event ends any wait at once; the other answers only once no
// terminal event can be hidden in the history.
func (w *waiter) accepts(h head) (ok, final bool) {
	if h.id != w.id {
		return false, false
	}
	if w.cmd != "" {
		if h.cmd != w.cmd {
			return false, false
		}
		return true, h.kind.Terminal()
	}
	switch {
	case h.kind.Terminal():
		return true, true
	case w.terminalOnly:
		return false, false
	case h.kind == KindDeadLettered, h.kind == KindRejected && !h.conflict:
		return true, false
	}
	return false, false
}

// follower is the Client's one reader of the events stream.
type follower struct {
	c         *Client
	stream    jetstream.Stream
	cons      jetstream.Consumer
	it        jetstream.MessagesContext
	startedAt time.Time // after startSeq was read, on this client's clock
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu          sync.Mutex
	startSeq    uint64 // the stream's last sequence at start; the follower reads later ones
	lastSeq     uint64
	index       map[keyID][]head
	fifo        []fifoEntry // the index in reading order, for eviction, from fifoHead on
	fifoHead    int
	waiters     map[keyID][]*waiter
	pending     []*waiter // waiting for a history pass
	backfilling bool
	err         error // why the follower stopped
	dupWindow   time.Duration
}

type fifoEntry struct {
	at  time.Time
	id  keyID
	seq uint64
}

// startFollower starts reading the events stream after its last message.
func startFollower(ctx context.Context, c *Client) (*follower, error) {
	stream, err := c.js.Stream(ctx, c.streams.Events)
	if err != nil {
		return nil, c.streamErr(err)
	}
	last := stream.CachedInfo().State.LastSeq
	cons, err := c.js.OrderedConsumer(ctx, c.streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.streams.EventWildcard()},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    last + 1,
	})
	if err != nil {
		return nil, c.streamErr(err)
	}
	it, err := cons.Messages()
	if err != nil {
		c.deleteConsumer(cons)
		return nil, fmt.Errorf("follow events: %w", err)
	}
	fctx, cancel := context.WithCancel(context.Background())
	f := &follower{
		c: c, stream: stream, cons: cons, it: it, startedAt: time.Now(), ctx: fctx, cancel: cancel,
		startSeq: last, lastSeq: last,
		index: make(map[keyID][]head), waiters: make(map[keyID][]*waiter),
	}
	f.wg.Add(1)
	go f.run()
	return f, nil
}

// run reads the live events until the iterator stops.
func (f *follower) run() {
	defer f.wg.Done()
	for {
		msg, err := f.it.Next()
		if errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				err = ErrClosed
			}
			f.stop(fmt.Errorf("follow events: %w", err))
			return
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		seq := md.Sequence.Stream
		h, ok := readHead(msg.Data(), seq)
		f.mu.Lock()
		f.lastSeq = seq
		f.evict(time.Now())
		if ok {
			f.index[h.id] = append(f.index[h.id], h)
			f.fifo = append(f.fifo, fifoEntry{at: time.Now(), id: h.id, seq: seq})
			f.offerAll(h, msg.Data(), true)
		}
		f.mu.Unlock()
	}
}

// offerAll hands an event to the waits of its key. f.mu is held.
func (f *follower) offerAll(h head, data []byte, live bool) {
	ws := f.waiters[h.id]
	if len(ws) == 0 {
		return
	}
	var ev *Event
	for _, w := range ws {
		if w.resolved {
			continue
		}
		ok, final := w.accepts(h)
		if !ok {
			continue
		}
		if ev == nil {
			e, err := decodeEvent(data, h.seq)
			if err != nil {
				return
			}
			ev = &e
		}
		a := answer{ev: ev, seq: h.seq}
		if final || live && (!w.needHistory || w.historyDone) {
			f.resolve(w, a)
			continue
		}
		if w.cand == nil || a.seq > w.cand.seq {
			w.cand = &a
		}
	}
}

// resolve ends w with a and unregisters it. f.mu is held.
func (f *follower) resolve(w *waiter, a answer) {
	if w.resolved {
		return
	}
	w.resolved = true
	w.done <- a
	ws := f.waiters[w.id]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(f.waiters, w.id)
	} else {
		f.waiters[w.id] = ws
	}
}

// evict forgets the events read more than indexRetention ago. f.mu is
// held.
func (f *follower) evict(now time.Time) {
	for f.fifoHead < len(f.fifo) && now.Sub(f.fifo[f.fifoHead].at) > indexRetention {
		e := f.fifo[f.fifoHead]
		f.fifo[f.fifoHead] = fifoEntry{}
		f.fifoHead++
		hs := f.index[e.id]
		if len(hs) > 0 && hs[0].seq == e.seq {
			hs = hs[1:]
		}
		if len(hs) == 0 {
			delete(f.index, e.id)
		} else {
			f.index[e.id] = hs
		}
	}
	if f.fifoHead > 0 && f.fifoHead >= len(f.fifo)/2 {
		f.fifo = append(f.fifo[:0], f.fifo[f.fifoHead:]...)
		f.fifoHead = 0
	}
}

// horizon is the first sequence the index covers: a history pass reads
// the sequences before it. f.mu is held.
func (f *follower) horizon() uint64 {
	if f.fifoHead < len(f.fifo) {
		return f.fifo[f.fifoHead].seq
	}
	return f.lastSeq + 1
}

// stop ends every wait with err. Safe to call more than once.
func (f *follower) stop(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return
	}
	f.err = err
	for _, ws := range f.waiters {
		for _, w := range ws {
			if !w.resolved {
				w.resolved = true
				w.done <- answer{err: err}
			}
		}
	}
	f.waiters = make(map[keyID][]*waiter)
	f.pending = nil
}

// alive reports whether the follower still reads.
func (f *follower) alive() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err == nil
}

// close stops the follower and its history pass, and deletes its consumer.
func (f *follower) close() {
	f.closeOnce.Do(func() {
		// Stopped first, so that no wait starts a history pass any more.
		f.stop(ErrClosed)
		f.cancel()
		f.it.Stop()
		f.wg.Wait()
		f.c.deleteConsumer(f.cons)
	})
}

// wait registers w and returns its answer, or an error when ctx ends or
// the follower stops.
func (f *follower) wait(ctx context.Context, w *waiter) (answer, error) {
	w.done = make(chan answer, 1)
	f.mu.Lock()
	if f.err != nil {
		err := f.err
		f.mu.Unlock()
		return answer{}, err
	}
	// What the follower read lately is newer than any history.
	for _, h := range f.index[w.id] {
		ok, final := w.accepts(h)
		if !ok {
			continue
		}
		a := answer{seq: h.seq}
		if final {
			w.resolved = true
			f.mu.Unlock()
			return a, nil
		}
		w.cand = &a // the latest wins: the index is in stream order
	}
	if !w.needHistory && w.cand != nil {
		f.mu.Unlock()
		return *w.cand, nil
	}
	f.waiters[w.id] = append(f.waiters[w.id], w)
	if w.needHistory {
		f.pending = append(f.pending, w)
		if !f.backfilling {
			f.backfilling = true
			f.wg.Add(1)
			go f.backfill()
		}
	}
	f.mu.Unlock()

	select {
	case a := <-w.done:
		return a, a.err
	case <-ctx.Done():
		f.mu.Lock()
		if !w.resolved {
			f.resolve(w, answer{})
			<-w.done
			f.mu.Unlock()
			return answer{}, fmt.Errorf("%w: %w", ErrNoOutcome, ctx.Err())
		}
		f.mu.Unlock()
		a := <-w.done
		return a, a.err
	}
}

// backfill runs history passes while waits need them.
func (f *follower) backfill() {
	defer f.wg.Done()
	for {
		f.mu.Lock()
		var pass []*waiter
		var since time.Time
		for _, w := range f.pending {
			if w.resolved {
				continue
			}
			pass = append(pass, w)
			if since.IsZero() || w.since.Before(since) {
				since = w.since
			}
		}
		f.pending = nil
		if len(pass) == 0 || f.err != nil {
			f.backfilling = false
			f.mu.Unlock()
			return
		}
		horizon := f.horizon()
		f.mu.Unlock()

		err := f.history(since, horizon, pass)

		f.mu.Lock()
		for _, w := range pass {
			if w.resolved {
				continue
			}
			switch {
			case err != nil:
				f.resolve(w, answer{err: err})
			case w.cand != nil:
				f.resolve(w, *w.cand)
			case w.historyOnly:
				f.resolve(w, answer{})
			default:
				w.historyDone = true
			}
		}
		f.mu.Unlock()
	}
}

// history reads the events stored from since up to (not including)
// sequence horizon, and hands them to the waits of pass.
func (f *follower) history(since time.Time, horizon uint64, pass []*waiter) error {
	if horizon <= 1 {
		return nil
	}
	keys := make(map[keyID]bool, len(pass))
	for _, w := range pass {
		keys[w.id] = true
	}
	c := f.c
	start := since
	cons, err := c.js.OrderedConsumer(f.ctx, c.streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.streams.EventWildcard()},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		if f.ctx.Err() != nil {
			return ErrClosed
		}
		return fmt.Errorf("read event history: %w", c.streamErr(err))
	}
	defer c.deleteConsumer(cons)
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read event history: %w", err)
	}
	defer it.Stop()
	defer context.AfterFunc(f.ctx, it.Stop)()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(historyIdle))
		switch {
		case err != nil && f.ctx.Err() != nil:
			return ErrClosed
		case errors.Is(err, nats.ErrTimeout):
			return nil
		case err != nil:
			return fmt.Errorf("read event history: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		seq := md.Sequence.Stream
		if seq >= horizon {
			return nil
		}
		if h, ok := readHead(msg.Data(), seq); ok && keys[h.id] {
			f.mu.Lock()
			f.offerPass(h, msg.Data(), pass)
			f.mu.Unlock()
		}
		if md.NumPending == 0 {
			return nil
		}
	}
}

// offerPass hands a history event to the waits of a pass. f.mu is held.
func (f *follower) offerPass(h head, data []byte, pass []*waiter) {
	var ev *Event
	for _, w := range pass {
		if w.resolved {
			continue
		}
		ok, final := w.accepts(h)
		if !ok {
			continue
		}
		if ev == nil {
			e, err := decodeEvent(data, h.seq)
			if err != nil {
				return
			}
			ev = &e
		}
		a := answer{ev: ev, seq: h.seq}
		if final {
			f.resolve(w, a)
			continue
		}
		// The history is older than what the live follower or the index
		// gave: it never replaces that.
		if w.cand == nil || a.seq > w.cand.seq {
			w.cand = &a
		}
	}
}

// duplicateWindow returns the commands stream's de-duplication window:
// how long before a PubAck.Duplicate the first copy may have been stored.
func (f *follower) duplicateWindow(ctx context.Context) time.Duration {
	f.mu.Lock()
	d := f.dupWindow
	f.mu.Unlock()
	if d > 0 {
		return d
	}
	d = 2 * time.Minute // JetStream's default
	if s, err := f.c.js.Stream(ctx, f.c.streams.Commands); err == nil && s.CachedInfo().Config.Duplicates > 0 {
		d = s.CachedInfo().Config.Duplicates
	}
	f.mu.Lock()
	f.dupWindow = d
	f.mu.Unlock()
	return d
}

// fetch returns the event of a, reading it from the stream when a holds
// only its sequence.
func (f *follower) fetch(ctx context.Context, a answer) (Event, error) {
	if a.ev != nil {
		return *a.ev, nil
	}
	m, err := f.stream.GetMsg(ctx, a.seq)
	if err != nil {
		return Event{}, fmt.Errorf("read event at sequence %d: %w", a.seq, err)
	}
	return decodeEvent(m.Data, a.seq)
}

// deleteConsumer deletes an ordered consumer's current server-side
// consumer on the events stream.
func (c *Client) deleteConsumer(cons jetstream.Consumer) {
	streams.DeleteConsumer(c.js, c.streams.Events, cons)
}

// streamErr turns a missing events stream into ErrNotProvisioned.
func (c *Client) streamErr(err error) error { return streams.NotProvisioned(c.streams.Events, err) }
