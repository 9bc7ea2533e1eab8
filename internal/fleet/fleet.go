// Package fleet tells a worker how many workers are live, and passes
// gateway slow-downs (a 429's Retry-After) between them, through a JetStream
// key-value bucket. It is what spreads a gateway's rate limit over the
// workers when there is no Redis to hold one shared schedule.
//
// Each worker puts a heartbeat under a key of its own every Period and
// watches the whole bucket: a worker is live while its last heartbeat is
// younger than TTL. A worker that joins is seen by the others within
// milliseconds (the watch), one that stops cleanly deletes its key and is
// gone as fast, one that dies is dropped after TTL. A slow-down is one more
// key per gateway, seen by every watcher at once.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Options configure a Fleet; zero fields get the defaults in brackets.
type Options struct {
	// Bucket is the key-value bucket the workers share ["payworker_fleet"].
	Bucket string
	// Replicas of the bucket, as the streams' [1].
	Replicas int
	// WorkerID names this worker in its key (a random suffix keeps two
	// workers given the same id apart).
	WorkerID string
	// Period between heartbeats [1s]; TTL after which a silent worker is no
	// longer counted [5s].
	Period time.Duration
	TTL    time.Duration
	// OnWorkers, when set, is told the number of live workers (this one
	// included) each time it changes, and once at the start.
	OnWorkers func(n int)
	// OnSlow, when set, is told of every slow-down put by any worker (this
	// one included) that has not ended yet.
	OnSlow func(gateway string, until time.Time)
	Logger *slog.Logger
}

// Fleet is this worker's membership in the fleet.
type Fleet struct {
	o   Options
	kv  jetstream.KeyValue
	key string

	mu      sync.Mutex
	seen    map[string]time.Time // worker key → last heartbeat
	workers int
	ready   chan struct{} // closed once the watch has read the bucket
	readyOK bool
}

const (
	workerPrefix = "w."
	slowPrefix   = "slow."
)

// Join opens (or creates) the bucket and puts this worker's first
// heartbeat. Run keeps it alive.
func Join(ctx context.Context, js jetstream.JetStream, o Options) (*Fleet, error) {
	if o.Bucket == "" {
		o.Bucket = "payworker_fleet"
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Period <= 0 {
		o.Period = time.Second
	}
	if o.TTL <= 0 {
		o.TTL = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	kv, err := open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      o.Bucket,
		Description: "payworker live workers (heartbeats) and gateway slow-downs",
		History:     1,
		// Keys of workers gone without a goodbye, and old slow-downs,
		// leave by themselves.
		TTL:      time.Minute + o.TTL,
		Storage:  jetstream.MemoryStorage,
		Replicas: o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: kv bucket %s: %w", o.Bucket, err)
	}
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	f := &Fleet{
		o: o, kv: kv,
		key:     workerPrefix + keySafe(o.WorkerID) + "." + hex.EncodeToString(nonce),
		seen:    map[string]time.Time{},
		workers: 1,
		ready:   make(chan struct{}),
	}
	if _, err := kv.Put(ctx, f.key, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return nil, fmt.Errorf("fleet: heartbeat: %w", err)
	}
	return f, nil
}

func open(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	return kv, err
}

// keySafe maps id to the characters a key token may hold.
func keySafe(id string) string {
	if id == "" {
		return "worker"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, id)
}

// Run keeps this worker's heartbeat and watches the bucket until ctx ends;
// then it deletes its key, so the others count it out at once. It returns
// nil when ctx ends, or the error that stopped the watch from starting.
func (f *Fleet) Run(ctx context.Context) error {
	w, err := f.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("fleet: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = f.kv.Delete(dctx, f.key)
	}()
	tick := time.NewTicker(f.o.Period)
	defer tick.Stop()
	initial := true
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil { // the bucket as it was is read
				initial = false
				f.recount()
				f.mu.Lock()
				if !f.readyOK {
					f.readyOK = true
					close(f.ready)
				}
				f.mu.Unlock()
				continue
			}
			f.apply(e, initial)
		case <-tick.C:
			pctx, cancel := context.WithTimeout(ctx, f.o.Period)
			_, err := f.kv.Put(pctx, f.key, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
			cancel()
			switch {
			case err != nil && !failing && ctx.Err() == nil:
				f.o.Logger.Warn("fleet heartbeat failed; the other workers will count this one out after the TTL",
					slog.Duration("ttl", f.o.TTL), slog.Any("error", err))
				failing = true
			case err == nil && failing:
				f.o.Logger.Info("fleet heartbeat back")
				failing = false
			}
			f.recount()
		}
	}
}

// apply takes one change of the bucket. A worker's heartbeat counts from
// when it is seen here; one read from the bucket at the start counts from
// when the server stored it.
func (f *Fleet) apply(e jetstream.KeyValueEntry, initial bool) {
	key := e.Key()
	switch {
	case strings.HasPrefix(key, workerPrefix):
		f.mu.Lock()
		if e.Operation() == jetstream.KeyValuePut {
			at := time.Now()
			if initial {
				at = e.Created()
			}
			f.seen[key] = at
		} else {
			delete(f.seen, key)
		}
		f.mu.Unlock()
		if !initial {
			f.recount()
		}
	case strings.HasPrefix(key, slowPrefix) && e.Operation() == jetstream.KeyValuePut:
		until, err := time.Parse(time.RFC3339Nano, string(e.Value()))
		if err == nil && until.After(time.Now()) && f.o.OnSlow != nil {
			f.o.OnSlow(strings.TrimPrefix(key, slowPrefix), until)
		}
	}
}

// recount counts the live workers and tells OnWorkers of a change.
func (f *Fleet) recount() {
	f.mu.Lock()
	n := 1 // this one, whatever the bucket says
	for k, at := range f.seen {
		if k != f.key && time.Since(at) < f.o.TTL {
			n++
		}
	}
	changed := n != f.workers || !f.readyOK
	f.workers = n
	f.mu.Unlock()
	if changed && f.o.OnWorkers != nil {
		f.o.OnWorkers(n)
	}
}

// Workers is the number of live workers, this one included.
func (f *Fleet) Workers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.workers
}

// Ready is closed once Run has read the bucket: Workers counts the workers
// that were there before this one.
func (f *Fleet) Ready() <-chan struct{} { return f.ready }

// Slow tells every worker to hold back its calls to gateway until until.
func (f *Fleet) Slow(ctx context.Context, gateway string, until time.Time) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_, err := f.kv.Put(ctx, slowPrefix+keySafe(gateway), []byte(until.UTC().Format(time.RFC3339Nano)))
	return err
}
