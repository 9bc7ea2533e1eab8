package idempotency

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KVOptions configures a KVStore.
type KVOptions struct {
	// Bucket names the key-value bucket; "" means "payworker_idempotency".
	Bucket string
	// TTL is the bucket's MaxAge: a record is kept for TTL after its last
	// write. Required.
	TTL time.Duration
	// Replicas is the bucket's replica count in a cluster; 0 means 1.
	Replicas int
	// Now is the clock leases are measured by; nil means time.Now. Workers
	// sharing a bucket must have clocks that agree to well within a lease
	// (docs/design.md says why a lesser skew is safe).
	Now func() time.Time
	// RequestTimeout bounds each JetStream request (default 2s), and
	// RetryFor how long one call sends a request again while the bucket
	// cannot answer (default 15s, about a leader election; never past the
	// caller's context).
	RequestTimeout time.Duration
	RetryFor       time.Duration
}

// kvAttempts bounds the read-decide-write rounds of one call that lose a
// revision race; past it the call fails (closed) and the caller retries later.
const kvAttempts = 16

// errContention is returned when kvAttempts rounds all lost a revision race.
var errContention = errors.New("idempotency: kv: too many concurrent writers")

// KVStore is a Store in a JetStream key-value bucket (History 1, file storage).
//
// A record is the Record JSON under k.<scope>.<key>, and a transaction lock
// the JSON {"key","token","lease_until_ms"} under t.<scope>.<transaction>,
// each part base64url-encoded (unpadded) because KV keys allow only
// [-/_=.a-zA-Z0-9]. Every write is a compare-and-set on the key's revision
// (kv.Create for an absent or deleted key, kv.Update otherwise); a call that
// loses a race reads again and decides again, a bounded number of times. Delete
// and purge markers count as absent.
//
// A claim with a transaction lock writes two keys, which KV cannot do
// atomically, so it writes the lock first and the record second, and undoes
// its lock write (compare-and-set back to the value it replaced) when the
// record write loses its race. This is safe because the two keys have
// different jobs. The record's compare-and-set is what fences: exactly one
// claimant of a token wins it, and every later write checks the token. The
// lock only serialises keys on a transaction: a claimant of key B reads it
// before writing its own record and backs off while it names another key
// under a live lease; since every lock write is itself a compare-and-set, two
// keys can never both believe they took it. A lock left behind by a crash
// between the two writes names a key whose record is not held, and blocks the
// transaction only until its lease ends. Complete and Release write the record
// first and then free the lock, so a crash there likewise costs at most one
// lease of waiting, never a second operation in flight.
//
// Lease times come from KVOptions.Now, the calling worker's clock.
//
// Every request has its own timeout and is sent again while the bucket
// cannot answer, as during a leader election in a cluster (retryingKV says
// why sending a compare-and-set again is safe).
type KVStore struct {
	kv  *retryingKV
	now func() time.Time
}

// NewKV creates the bucket if it is missing and returns a store on it. A
// bucket that exists keeps its configuration, except that its replicas are
// raised to opts.Replicas (never lowered) and its TTL set to opts.TTL.
func NewKV(ctx context.Context, js jetstream.JetStream, opts KVOptions) (*KVStore, error) {
	if opts.TTL <= 0 {
		return nil, fmt.Errorf("%w: KVOptions.TTL must be positive", errInvalid)
	}
	if opts.Bucket == "" {
		opts.Bucket = "payworker_idempotency"
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	kv, err := openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket,
		Description: "payworker idempotency records and transaction locks",
		History:     1,
		TTL:         opts.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency: kv bucket %s: %w", opts.Bucket, err)
	}
	return &KVStore{kv: newRetryingKV(js, opts.Bucket, kv, opts.RequestTimeout, opts.RetryFor), now: opts.Now}, nil
}

var b64 = base64.RawURLEncoding

func recordKVKey(scope, key string) string {
	return "k." + b64.EncodeToString([]byte(scope)) + "." + b64.EncodeToString([]byte(key))
}

func txnKVKey(scope, txn string) string {
	return "t." + b64.EncodeToString([]byte(scope)) + "." + b64.EncodeToString([]byte(txn))
}

// txnLock is the value of a transaction lock.
type txnLock struct {
	Key          string `json:"key"`
	Token        int64  `json:"token"`
	LeaseUntilMS int64  `json:"lease_until_ms"`
}

// entry is one key as read: absent, or a value at a revision.
type entry struct {
	present bool
	value   []byte
	rev     uint64
}

// read reads key from the bucket's leader (retryingKV.getLeader): a
// follower can be a write behind, and a record read missing or with an old
// token would fence its own holder.
func (s *KVStore) read(ctx context.Context, key string) (entry, error) {
	return s.kv.getLeader(ctx, key)
}

// write stores value over what read returned: Create when it was absent,
// Update at its revision otherwise. It returns the new revision.
func (s *KVStore) write(ctx context.Context, key string, was entry, value []byte) (uint64, error) {
	if !was.present {
		return s.kv.Create(ctx, key, value)
	}
	return s.kv.Update(ctx, key, value, was.rev)
}

// undo puts back what write replaced, if nothing has been written since.
func (s *KVStore) undo(ctx context.Context, key string, was entry, rev uint64) error {
	if !was.present {
		return s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	}
	_, err := s.kv.Update(ctx, key, was.value, rev)
	return err
}

// landed reports whether key holds exactly value: a write of it whose
// answer was lost was applied. Values are unique to one write (they carry
// the writer's token, holder and time). A read that fails or lags behind
// (a follower) says no, and the caller takes the slow, safe path.
func (s *KVStore) landed(ctx context.Context, key string, value []byte) bool {
	ctx, cancel := detached(ctx)
	defer cancel()
	e, err := s.read(ctx, key)
	return err == nil && e.present && bytes.Equal(e.value, value)
}

// cleanupTimeout bounds the clean-up writes that run after the caller's
// context may have ended (undoing a lock write, freeing a lock).
const cleanupTimeout = 2 * time.Second

// detached returns a context for clean-up: not cancelled with ctx, but
// bounded by cleanupTimeout.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// isRace reports whether err is a compare-and-set conflict (code 10071, or
// 10164 on replicated buckets).
func isRace(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// backoff waits a little, more after each lost race, so racing callers
// do not keep colliding.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(attempt+1) * int64(time.Millisecond)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retry runs round until it returns something other than a lost race.
func retry(ctx context.Context, op string, round func() error) error {
	for attempt := range kvAttempts {
		err := round()
		if !isRace(err) {
			return err
		}
		if err := backoff(ctx, attempt); err != nil {
			return fmt.Errorf("idempotency: kv %s: %w", op, err)
		}
	}
	return fmt.Errorf("idempotency: kv %s: %w", op, errContention)
}

// kvErr wraps a backend error; ErrFenced and ErrNotFound pass unchanged.
func kvErr(op string, err error) error {
	if err == nil || errors.Is(err, ErrFenced) || errors.Is(err, ErrNotFound) || errors.Is(err, errInvalid) {
		return err
	}
	return fmt.Errorf("idempotency: kv %s: %w", op, err)
}

// Claim takes the key as the Store contract says: the transaction lock is
// written first, then the record (see KVStore).
func (s *KVStore) Claim(ctx context.Context, req ClaimRequest) (Claim, error) {
	if err := checkClaim(req); err != nil {
		return Claim{}, err
	}
	var c Claim
	err := retry(ctx, "claim", func() error {
		var err error
		c, err = s.claimOnce(ctx, req)
		return err
	})
	return c, kvErr("claim", err)
}

func (s *KVStore) claimOnce(ctx context.Context, req ClaimRequest) (Claim, error) {
	now := s.now().UTC()
	rk := recordKVKey(req.Scope, req.Key)
	re, err := s.read(ctx, rk)
	if err != nil {
		return Claim{}, err
	}
	var rec Record
	if re.present {
		if rec, err = unmarshalRecord(re.value); err != nil {
			return Claim{}, err
		}
		if rec.Fingerprint != req.Fingerprint {
			return Claim{Status: Conflict, Record: rec}, nil
		}
		switch rec.State {
		case StateCompleted:
			return Claim{Status: Completed, Record: rec}, nil
		case StateInProgress:
			if left := rec.LeaseUntil.Sub(now); left > 0 {
				return Claim{Status: Busy, Record: rec, RetryAfter: left}, nil
			}
		case StateReleased:
		default:
			return Claim{}, fmt.Errorf("idempotency: record %s: unknown state %q", rk, rec.State)
		}
	}

	status := Acquired
	next := Record{
		Fingerprint: req.Fingerprint, CommandID: req.CommandID,
		Token: now.UnixMilli(), Claims: 1, CreatedAt: now,
	}
	if re.present {
		status = Resumed
		next = rec
		next.Uncertain = rec.Uncertain || rec.State == StateInProgress
		next.Token = max(rec.Token+1, now.UnixMilli())
		next.Claims++
	}
	until := now.Add(req.Lease)
	next.State, next.Holder, next.LeaseUntil, next.UpdatedAt = StateInProgress, req.Holder, until, now
	next.TxnLock = req.TxnLock

	var (
		tk      string
		le      entry
		lockRev uint64
	)
	if req.TxnLock != "" {
		tk = txnKVKey(req.Scope, req.TxnLock)
		if le, err = s.read(ctx, tk); err != nil {
			return Claim{}, err
		}
		if le.present {
			var l txnLock
			if err := json.Unmarshal(le.value, &l); err != nil {
				return Claim{}, fmt.Errorf("idempotency: lock %s: %w", tk, err)
			}
			if left := time.UnixMilli(l.LeaseUntilMS).Sub(now); l.Key != req.Key && left > 0 {
				return Claim{Status: Busy, Record: rec, RetryAfter: left}, nil
			}
		}
		v, _ := json.Marshal(txnLock{Key: req.Key, Token: next.Token, LeaseUntilMS: until.UnixMilli()})
		if lockRev, err = s.write(ctx, tk, le, v); err != nil {
			return Claim{}, err
		}
	}

	v, err := marshalRecord(next)
	if err == nil {
		_, err = s.write(ctx, rk, re, v)
		if err != nil && s.landed(ctx, rk, v) {
			// Applied, its answer lost (a leader change): a retry of it
			// then fails as a lost race. The key is ours, and so is the
			// lock, written before it.
			err = nil
		}
	}
	if err != nil {
		if tk != "" {
			// Best effort: if it fails, the lock names this key and lapses
			// with the lease.
			uctx, cancel := detached(ctx)
			_ = s.undo(uctx, tk, le, lockRev)
			cancel()
		}
		return Claim{}, err
	}
	return Claim{Status: status, Record: next, Settle: re.present && rec.State == StateInProgress}, nil
}

// Renew extends the lease of token's holder, and its transaction lock, to
// lease from now. It returns ErrFenced when the record is missing, not in
// progress, or claimed by another token, and also when another key holds
// the transaction lock under a live lease (taken after this lease expired):
// the holder no longer runs alone on the transaction and must stop.
func (s *KVStore) Renew(ctx context.Context, scope, key, txn string, token int64, lease time.Duration) error {
	if err := checkKey(scope, key); err != nil {
		return err
	}
	if err := checkLease(lease); err != nil {
		return err
	}
	return kvErr("renew", retry(ctx, "renew", func() error {
		now := s.now().UTC()
		rk := recordKVKey(scope, key)
		re, rec, err := s.readHeld(ctx, rk, txn, token)
		if err != nil {
			return err
		}
		if rec.State != StateInProgress {
			return ErrFenced
		}
		until := now.Add(lease)
		if rec.TxnLock != "" {
			tk := txnKVKey(scope, rec.TxnLock)
			le, err := s.read(ctx, tk)
			if err != nil {
				return err
			}
			if le.present {
				var l txnLock
				if err := json.Unmarshal(le.value, &l); err != nil {
					return fmt.Errorf("idempotency: lock %s: %w", tk, err)
				}
				switch {
				case l.Key != key && time.UnixMilli(l.LeaseUntilMS).After(now):
					return ErrFenced
				case l.Key == key && l.Token > token:
					return ErrFenced
				}
			}
			v, _ := json.Marshal(txnLock{Key: key, Token: token, LeaseUntilMS: until.UnixMilli()})
			if _, err := s.write(ctx, tk, le, v); err != nil {
				return err
			}
		}
		rec.LeaseUntil, rec.UpdatedAt = until, now
		v, err := marshalRecord(rec)
		if err != nil {
			return err
		}
		_, err = s.kv.Update(ctx, rk, v, re.rev)
		return err
	}))
}

// Complete stores the outcome under token, then frees the transaction lock
// if this key and token still hold it (best effort: a lock left behind lapses
// with its lease). The record is then kept for the TTL from now. Repeating a
// Complete that succeeded (its reply lost) with the same token and outcome
// EventID returns nil; any other Complete of a completed, released, missing
// or re-claimed record returns ErrFenced.
func (s *KVStore) Complete(ctx context.Context, scope, key, txn string, token int64, out Outcome) error {
	if _, err := marshalOutcome(out); err != nil {
		return err
	}
	return s.finish(ctx, "complete", scope, key, txn, token, func(rec *Record) (bool, error) {
		switch {
		case rec.State == StateCompleted && rec.Outcome != nil && rec.Outcome.EventID == out.EventID:
			return false, nil // the same Complete again: done already
		case rec.State != StateInProgress:
			return false, ErrFenced
		}
		o := out
		rec.State, rec.Holder, rec.LeaseUntil, rec.Outcome = StateCompleted, "", time.Time{}, &o
		return true, nil
	})
}

// Release gives the key back under token: the record becomes released, its
// Uncertain flag is set if uncertain or already set, and then the transaction
// lock is freed if this key and token still hold it. Repeating it with the
// same token is harmless. It returns ErrFenced when the record is missing,
// completed or claimed by another token.
func (s *KVStore) Release(ctx context.Context, scope, key, txn string, token int64, uncertain bool) error {
	return s.finish(ctx, "release", scope, key, txn, token, func(rec *Record) (bool, error) {
		if rec.State != StateInProgress && rec.State != StateReleased {
			return false, ErrFenced
		}
		rec.State, rec.Holder, rec.LeaseUntil = StateReleased, "", time.Time{}
		rec.Uncertain = rec.Uncertain || uncertain
		return true, nil
	})
}

// finish ends token's hold on a record: change decides from the record held
// under token whether to write it (and edits it) or fails with ErrFenced; the
// write is a compare-and-set on the revision read, retried on a lost race.
// Afterwards the transaction lock is freed if this key and token hold it.
func (s *KVStore) finish(ctx context.Context, op, scope, key, txn string, token int64, change func(*Record) (write bool, err error)) error {
	if err := checkKey(scope, key); err != nil {
		return err
	}
	var freeLock string
	err := retry(ctx, op, func() error {
		rk := recordKVKey(scope, key)
		re, rec, err := s.readHeld(ctx, rk, txn, token)
		if err != nil {
			return err
		}
		write, err := change(&rec)
		if err != nil {
			return err
		}
		freeLock = rec.TxnLock
		if !write {
			return nil
		}
		rec.UpdatedAt = s.now().UTC()
		v, err := marshalRecord(rec)
		if err != nil {
			return err
		}
		_, err = s.kv.Update(ctx, rk, v, re.rev)
		return err
	})
	if err != nil {
		return kvErr(op, err)
	}
	s.freeLock(ctx, scope, freeLock, key, token)
	return nil
}

// readHeld reads the record of rk and checks that token is its token;
// ErrFenced otherwise, and when the record is missing. It refuses a txn
// other than the one the token's claim locked.
func (s *KVStore) readHeld(ctx context.Context, rk, txn string, token int64) (entry, Record, error) {
	re, err := s.read(ctx, rk)
	if err != nil {
		return entry{}, Record{}, err
	}
	if !re.present {
		return entry{}, Record{}, ErrFenced
	}
	rec, err := unmarshalRecord(re.value)
	if err != nil {
		return entry{}, Record{}, err
	}
	if rec.Token != token {
		return entry{}, Record{}, ErrFenced
	}
	if rec.TxnLock != txn {
		return entry{}, Record{}, wrongTxn(txn, rec.TxnLock)
	}
	return re, rec, nil
}

// freeLock deletes the lock on txn if key and token hold it. It is best
// effort: the record is already written, and a lock it fails to free lapses
// with its lease.
func (s *KVStore) freeLock(ctx context.Context, scope, txn, key string, token int64) {
	if txn == "" {
		return
	}
	ctx, cancel := detached(ctx)
	defer cancel()
	tk := txnKVKey(scope, txn)
	_ = retry(ctx, "free lock", func() error {
		le, err := s.read(ctx, tk)
		if err != nil || !le.present {
			return err
		}
		var l txnLock
		if err := json.Unmarshal(le.value, &l); err != nil || l.Key != key || l.Token != token {
			return nil
		}
		return s.kv.Delete(ctx, tk, jetstream.LastRevision(le.rev))
	})
}

// Get reads the record of key, ErrNotFound if there is none.
func (s *KVStore) Get(ctx context.Context, scope, key string) (Record, error) {
	if err := checkKey(scope, key); err != nil {
		return Record{}, err
	}
	re, err := s.read(ctx, recordKVKey(scope, key))
	if err != nil {
		return Record{}, kvErr("get", err)
	}
	if !re.present {
		return Record{}, ErrNotFound
	}
	return unmarshalRecord(re.value)
}

// Ping checks that the bucket answers.
func (s *KVStore) Ping(ctx context.Context) error {
	if _, err := s.kv.Status(ctx); err != nil {
		return kvErr("ping", err)
	}
	return nil
}
