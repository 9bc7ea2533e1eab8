package publish

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
)

// BatchOutcome is what became of one row of a batch.
type BatchOutcome struct {
	Line int
	// Key is the row's idempotency key.
	Key string
	// Kind is the kind of the event that decided the row: a terminal kind
	// (capture.succeeded, void.failed, ...), command.rejected,
	// command.dead_lettered, or command.duplicate for a repeat whose
	// original outcome is not known here. It is empty for a row without an
	// outcome (Result pending or unpublished).
	Kind events.Kind
	// Event is the deciding event (the original terminal event for a
	// repeat whose original is known).
	Event events.Event
	// Repeat is true when the row repeated work done before: the stream
	// dropped its publication as already published, the worker answered it
	// with a duplicate event, or its key's terminal event was stored before
	// this batch started, or came from another command with the same key.
	Repeat bool
	// Published is true once the row's publication was acknowledged.
	Published bool
	// PublishErr is set when the row could not be published.
	PublishErr error
}

// Batch results, as BatchOutcome.Result names them.
const (
	ResultSucceeded    = "succeeded"
	ResultFailed       = "failed"
	ResultRejected     = "rejected"
	ResultDuplicate    = "duplicate"
	ResultDeadLettered = "dead_lettered"
	ResultPending      = "pending"
	ResultUnpublished  = "unpublished"
)

// Result is the one-word outcome of the row: succeeded, failed, rejected,
// dead_lettered, duplicate (a repeat whose original outcome is not known),
// pending (published, no outcome yet) or unpublished.
func (o BatchOutcome) Result() string {
	switch {
	case o.Kind.Terminal():
		_, r, _ := strings.Cut(string(o.Kind), ".")
		return r
	case o.Kind == events.Rejected:
		return ResultRejected
	case o.Kind == events.DeadLettered:
		return ResultDeadLettered
	case o.Kind == events.Duplicate:
		return ResultDuplicate
	case o.Published:
		return ResultPending
	}
	return ResultUnpublished
}

// Message is a short explanation of the outcome: the gateway's message or
// the error of a failure, what a duplicate repeats, why a row is pending or
// unpublished.
func (o BatchOutcome) Message() string {
	d := o.Event.Data
	var parts []string
	if d.Error != nil {
		msg := d.Error.Code
		if d.Error.Field != "" {
			msg = d.Error.Field + ": " + msg
		}
		if d.Error.Message != "" {
			msg += ": " + d.Error.Message
		}
		parts = append(parts, msg)
	} else if d.GatewayMessage != "" {
		parts = append(parts, d.GatewayMessage)
	}
	switch {
	case o.Kind == events.Duplicate:
		parts = append(parts, "repeat of event "+d.OriginalEventID+", whose outcome was not found")
	case o.Kind == events.DeadLettered && d.DLQSubject != "":
		parts = append(parts, fmt.Sprintf("kept in %s#%d for replay", d.DLQSubject, d.DLQSequence))
	case o.Repeat:
		parts = append(parts, "repeat: done before, no new gateway call")
	case o.Kind == "" && o.PublishErr != nil:
		parts = append(parts, "not published: "+o.PublishErr.Error())
	case o.Kind == "" && o.Published:
		parts = append(parts, "no outcome yet")
	case o.Kind == "":
		parts = append(parts, "not published")
	}
	return strings.Join(parts, "; ")
}

// BatchTracker correlates result events with the rows of a batch by
// (merchant, idempotency key): each row gets the terminal event of its key,
// or the rejection, dead-lettering or duplicate answer of its own command.
// Register every row with Add before following the events (FollowBatch), so
// that no event of a row can pass unnoticed; report each publication with
// Acked. Memory grows with the file, by design, since every row is awaited:
// about 80 bytes a row (the key, and a few numbers), in structures without
// pointers, which the garbage collector does not scan. It is safe for
// concurrent use.
type BatchTracker struct {
	onOutcome func(BatchOutcome)
	seed      maphash.Seed

	mu        sync.Mutex
	index     map[uint64]int32 // hash of (merchant, key) → first row with it
	rows      []trackRow       // in line order
	keys      keyArena
	merchants []string          // interned merchant ids
	merchant  map[string]uint32 // merchant id → index in merchants
	prov      map[int32]events.Event
	startSeq  uint64 // events stored before FollowBatch started
	waiting   int    // acknowledged rows without an outcome
	decided   int
	signal    chan struct{}
}

// trackRow is one row; it holds no pointer.
type trackRow struct {
	line     int32
	next     int32  // next row with the same hash, -1 for none
	key      keyRef // the idempotency key
	merchant uint32 // index in BatchTracker.merchants
	cmd      uint32 // hash of the command id
	state    uint8
}

const (
	stAcked uint8 = 1 << iota
	stDupPub
	stDecided
	// stProv marks a row with an event of an earlier run for its command
	// (in BatchTracker.prov), which decides the row only if the stream
	// drops this run's publication.
	stProv
)

// keyArena stores the keys back to back in blocks of arenaBlock bytes, so
// that a key costs its bytes and no pointer.
type keyArena struct{ blocks [][]byte }

// keyRef locates a key in a keyArena: block, offset and length.
type keyRef struct {
	block  uint32
	offset uint32
	length uint32
}

const arenaBlock = 1 << 20

func (a *keyArena) add(s string) keyRef {
	n := len(a.blocks)
	if n == 0 || len(a.blocks[n-1])+len(s) > cap(a.blocks[n-1]) {
		a.blocks = append(a.blocks, make([]byte, 0, max(arenaBlock, len(s))))
		n++
	}
	b := a.blocks[n-1]
	ref := keyRef{block: uint32(n - 1), offset: uint32(len(b)), length: uint32(len(s))}
	a.blocks[n-1] = append(b, s...)
	return ref
}

func (a *keyArena) bytes(r keyRef) []byte {
	return a.blocks[r.block][r.offset : r.offset+r.length]
}

// NewBatchTracker returns an empty tracker. onOutcome is called once for
// each row that gets its outcome, with the tracker's lock held (it must not
// call the tracker); it may be nil.
func NewBatchTracker(onOutcome func(BatchOutcome)) *BatchTracker {
	return &BatchTracker{
		onOutcome: onOutcome,
		seed:      maphash.MakeSeed(),
		index:     make(map[uint64]int32),
		merchant:  make(map[string]uint32),
		prov:      make(map[int32]events.Event),
		signal:    make(chan struct{}, 1),
	}
}

// hash is the index hash of (merchant, key).
func (t *BatchTracker) hash(merchant, key string) uint64 {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(merchant)
	h.WriteByte(0)
	h.WriteString(key)
	return h.Sum64()
}

func (t *BatchTracker) cmdHash(commandID string) uint32 {
	return uint32(maphash.String(t.seed, commandID))
}

// Add registers a row, in line order.
func (t *BatchTracker) Add(line int, merchant, key, commandID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.merchant[merchant]
	if !ok {
		m = uint32(len(t.merchants))
		t.merchants = append(t.merchants, strings.Clone(merchant))
		t.merchant[t.merchants[m]] = m
	}
	idx := int32(len(t.rows))
	t.rows = append(t.rows, trackRow{line: int32(line), next: -1, key: t.keys.add(key), merchant: m, cmd: t.cmdHash(commandID)})
	h := t.hash(merchant, key)
	first, ok := t.index[h]
	if !ok {
		t.index[h] = idx
		return
	}
	for t.rows[first].next >= 0 {
		first = t.rows[first].next
	}
	t.rows[first].next = idx
}

// is reports whether row r has this merchant and key.
func (t *BatchTracker) is(r *trackRow, merchant, key string) bool {
	return t.merchants[r.merchant] == merchant && string(t.keys.bytes(r.key)) == key
}

// Len returns the number of rows added.
func (t *BatchTracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.rows)
}

// Acked records the end of a row's publication.
func (t *BatchTracker) Acked(a BatchAck) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := slices.BinarySearchFunc(t.rows, a.Line, func(r trackRow, line int) int { return cmp.Compare(int(r.line), line) })
	if !ok {
		return
	}
	r := &t.rows[i]
	if a.Err != nil {
		if r.state&stDecided == 0 {
			t.decide(int32(i), BatchOutcome{Line: a.Line, Key: a.Key, PublishErr: a.Err})
		}
		return
	}
	r.state |= stAcked
	if a.Duplicate {
		r.state |= stDupPub
	}
	if r.state&stDecided != 0 {
		return
	}
	t.waiting++
	if r.state&stProv != 0 && a.Duplicate {
		// The stream dropped the publication: the earlier run's answer to
		// this very command is the answer.
		e := t.prov[int32(i)]
		k, _ := events.KindOfType(e.Type)
		t.decide(int32(i), BatchOutcome{Line: a.Line, Key: a.Key, Kind: k, Event: e, Repeat: true, Published: true})
		return
	}
	t.dropProv(int32(i))
}

func (t *BatchTracker) dropProv(i int32) {
	if t.rows[i].state&stProv != 0 {
		t.rows[i].state &^= stProv
		delete(t.prov, i)
	}
}

// event applies one result event, stored at stream sequence seq.
func (t *BatchTracker) event(seq uint64, e events.Event) {
	k, ok := events.KindOfType(e.Type)
	if !ok {
		return
	}
	merchant, key := e.Data.MerchantID, e.Data.IdempotencyKey
	t.mu.Lock()
	defer t.mu.Unlock()
	first, ok := t.index[t.hash(merchant, key)]
	if !ok {
		return
	}
	before := seq <= t.startSeq
	var cmd uint32
	if e.Data.CommandID != "" {
		cmd = t.cmdHash(e.Data.CommandID)
	}
	for i := first; i >= 0; i = t.rows[i].next {
		r := &t.rows[i]
		if r.state&stDecided != 0 || !t.is(r, merchant, key) {
			continue
		}
		o := BatchOutcome{Line: int(r.line), Key: key, Kind: k, Event: e, Published: r.state&stAcked != 0}
		if k.Terminal() {
			// The key's one terminal event answers every row of the key.
			o.Repeat = before || r.state&stDupPub != 0 || (e.Data.CommandID != "" && cmd != r.cmd)
			t.decide(i, o)
			continue
		}
		if e.Data.CommandID != "" && cmd != r.cmd {
			continue // the answer to another command of the key
		}
		if before && r.state&stDupPub == 0 {
			if r.state&stAcked == 0 {
				r.state |= stProv
				t.prov[i] = e
			}
			// Acknowledged and stored anew: the worker answers again.
			continue
		}
		o.Repeat = k == events.Duplicate || before || r.state&stDupPub != 0
		t.decide(i, o)
	}
}

// decide records the outcome of row i. t.mu is held.
func (t *BatchTracker) decide(i int32, o BatchOutcome) {
	t.dropProv(i)
	r := &t.rows[i]
	r.state |= stDecided
	if r.state&stAcked != 0 {
		t.waiting--
	}
	t.decided++
	if t.onOutcome != nil {
		t.onOutcome(o)
	}
	select {
	case t.signal <- struct{}{}:
	default:
	}
}

// Counts returns the number of rows with an outcome, and of acknowledged
// rows still waiting for one.
func (t *BatchTracker) Counts() (decided, waiting int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.decided, t.waiting
}

// Wait returns nil once every acknowledged row has its outcome, or ctx's
// error when ctx ends first. Call it when publishing is over.
func (t *BatchTracker) Wait(ctx context.Context) error {
	for {
		if _, waiting := t.Counts(); waiting == 0 {
			return nil
		}
		select {
		case <-t.signal:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Undecided calls fn, in line order, for every row without an outcome:
// pending (published) or unpublished. fn is called with the tracker's lock
// held.
func (t *BatchTracker) Undecided(fn func(BatchOutcome)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.rows {
		r := &t.rows[i]
		if r.state&stDecided == 0 {
			fn(BatchOutcome{Line: int(r.line), Key: string(t.keys.bytes(r.key)), Published: r.state&stAcked != 0})
		}
	}
}

// batchLookback is added to the commands stream's duplicate window when
// FollowBatch reads back earlier events, for clock skew between us and the
// server.
const batchLookback = time.Minute

// FollowBatch reads the result events into t until the returned stop is
// called (or ctx ends). Call it after every row is added and before the
// first is published. Besides the events to come, it reads back the events
// stored since the commands stream's duplicate window (plus a minute)
// before now: a row whose publication the stream drops as already published
// was first published within that window, so every event of its command is
// among them; so are the recent outcomes of the keys a rerun repeats.
func (c *Client) FollowBatch(ctx context.Context, t *BatchTracker) (stop func(), err error) {
	evs, err := c.js.Stream(ctx, c.streams.Events)
	if err != nil {
		return nil, fmt.Errorf("follow batch events: %w", c.streamErr(err))
	}
	window := 2 * time.Minute // JetStream's default
	if cs, err := c.js.Stream(ctx, c.streams.Commands); err == nil && cs.CachedInfo().Config.Duplicates > 0 {
		window = cs.CachedInfo().Config.Duplicates
	}
	t.mu.Lock()
	t.startSeq = evs.CachedInfo().State.LastSeq
	t.mu.Unlock()
	since := time.Now().Add(-window - batchLookback)
	cons, err := c.js.OrderedConsumer(ctx, c.streams.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.streams.EventWildcard()},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return nil, fmt.Errorf("follow batch events: %w", c.streamErr(err))
	}
	it, err := cons.Messages()
	if err != nil {
		c.deleteConsumer(cons)()
		return nil, fmt.Errorf("follow batch events: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := it.Next()
			if err != nil {
				return
			}
			var e events.Event
			if json.Unmarshal(msg.Data(), &e) != nil {
				continue
			}
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			t.event(md.Sequence.Stream, e)
		}
	}()
	stopCtx := context.AfterFunc(ctx, it.Stop)
	var once sync.Once
	return func() {
		once.Do(func() {
			stopCtx()
			it.Stop()
			wg.Wait()
			c.deleteConsumer(cons)()
		})
	}, nil
}
