package idempotency

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/jsretry"
)

// Defaults of KVOptions.RequestTimeout and KVOptions.RetryFor.
const (
	defaultKVRequestTimeout = 2 * time.Second
	defaultKVRetryFor       = 15 * time.Second
)

// retryingKV is a key-value bucket whose every request has its own short
// timeout and is sent again while the bucket cannot answer (a leader
// election in a cluster: requests time out or meet no responders), so that
// a leader change costs a request about the election time, not the caller's
// whole deadline.
//
// Sending a write again is safe because every write of the stores is a
// compare-and-set: Create (only if absent) and Update at the revision read
// carry the same value and the same expected revision on each attempt, so
// the stream applies at most one of them, and an attempt whose first try
// was applied with its answer lost fails as a lost race (the key is no
// longer at that revision). The caller then reads again and decides again,
// as after any lost race, and may find its own write there (see
// KVStore.claimOnce and KVScopeRegistry.Register).
//
// Get reads as jetstream.KeyValue does, from whichever replica answers a
// direct get first, which can be a write behind the leader (a follower
// applies an entry only once the leader's next message tells it the entry is
// committed). getLeader reads from the leader: the KV store reads every
// record and lock that way, since a decision taken without a write (busy,
// completed, fenced) rests on the read alone.
type retryingKV struct {
	jetstream.KeyValue
	nc       *nats.Conn
	getSubj  string        // the stream's JetStream API subject STREAM.MSG.GET
	keyPre   string        // the subject prefix of the bucket's keys
	timeout  time.Duration // of one request
	retryFor time.Duration // how long a call keeps sending again
}

func newRetryingKV(js jetstream.JetStream, bucket string, kv jetstream.KeyValue, timeout, retryFor time.Duration) *retryingKV {
	if timeout <= 0 {
		timeout = defaultKVRequestTimeout
	}
	if retryFor <= 0 {
		retryFor = defaultKVRetryFor
	}
	// The API prefix as jetstream.New, NewWithAPIPrefix and NewWithDomain
	// make it.
	o := js.Options()
	prefix := o.APIPrefix
	switch {
	case o.Domain != "":
		prefix = "$JS." + o.Domain + ".API."
	case prefix == "":
		prefix = jetstream.DefaultAPIPrefix
	case !strings.HasSuffix(prefix, "."):
		prefix += "."
	}
	return &retryingKV{KeyValue: kv, nc: js.Conn(), getSubj: prefix + "STREAM.MSG.GET.KV_" + bucket, keyPre: "$KV." + bucket + ".",
		timeout: timeout, retryFor: retryFor}
}

// do runs request as jsretry.Do does, for at most retryFor.
func (r *retryingKV) do(ctx context.Context, request func(ctx context.Context) error) error {
	return jsretry.Do(ctx, jsretry.Policy{Timeout: r.timeout, For: r.retryFor}, request)
}

// getLeader reads the last value of key from the leader of the bucket's
// stream: the JetStream API's STREAM.MSG.GET, which only the stream's leader
// answers (unlike a direct get, which any replica may). Absent, deleted and
// purged keys read as absent. It retries transient failures.
func (r *retryingKV) getLeader(ctx context.Context, key string) (entry, error) {
	req, err := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{r.keyPre + key})
	if err != nil {
		return entry{}, err
	}
	var e entry
	err = r.do(ctx, func(ctx context.Context) error {
		msg, err := r.nc.RequestWithContext(ctx, r.getSubj, req)
		if err != nil {
			return err
		}
		var resp struct {
			Error   *jetstream.APIError `json:"error"`
			Message *struct {
				Sequence uint64 `json:"seq"`
				Header   []byte `json:"hdrs"`
				Data     []byte `json:"data"`
			} `json:"message"`
		}
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			return fmt.Errorf("kv get %s: %w", key, err)
		}
		switch {
		case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
			e = entry{}
			return nil
		case resp.Error != nil:
			return resp.Error
		case resp.Message == nil:
			return fmt.Errorf("kv get %s: %w", key, jetstream.ErrInvalidJetStreamResponse)
		}
		e = entry{present: true, value: resp.Message.Data, rev: resp.Message.Sequence}
		if len(resp.Message.Header) > 0 {
			hdr, err := nats.DecodeHeadersMsg(resp.Message.Header)
			if err != nil {
				return fmt.Errorf("kv get %s: %w", key, err)
			}
			if op := hdr.Get(kvOperationHeader); op == "DEL" || op == "PURGE" {
				e = entry{}
			}
		}
		return nil
	})
	return e, err
}

// kvOperationHeader marks a key-value delete ("DEL") or purge ("PURGE").
const kvOperationHeader = "KV-Operation"

// Get reads key as jetstream.KeyValue.Get does, retrying transient failures.
func (r *retryingKV) Get(ctx context.Context, key string) (e jetstream.KeyValueEntry, err error) {
	err = r.do(ctx, func(ctx context.Context) error { e, err = r.KeyValue.Get(ctx, key); return err })
	return e, err
}

// Create writes key if it is absent, retrying transient failures.
func (r *retryingKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (rev uint64, err error) {
	err = r.do(ctx, func(ctx context.Context) error { rev, err = r.KeyValue.Create(ctx, key, value, opts...); return err })
	return rev, err
}

// Update writes key if it is at revision last, retrying transient failures.
func (r *retryingKV) Update(ctx context.Context, key string, value []byte, last uint64) (rev uint64, err error) {
	err = r.do(ctx, func(ctx context.Context) error { rev, err = r.KeyValue.Update(ctx, key, value, last); return err })
	return rev, err
}

// Delete deletes key (at the revision an option names), retrying transient
// failures.
func (r *retryingKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	return r.do(ctx, func(ctx context.Context) error { return r.KeyValue.Delete(ctx, key, opts...) })
}

// openBucket binds the bucket cfg names, or creates it with cfg when it is
// missing. A bucket that exists is brought towards cfg without taking
// anything away: its replicas are raised to cfg.Replicas, never lowered, and
// its TTL is set to cfg.TTL when cfg has one (the idempotency bucket's TTL
// is IDEMPOTENCY_TTL). Everything else is left as it is.
func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if !errors.Is(err, jetstream.ErrBucketExists) {
			return kv, err
		}
		// Another worker created it a moment ago.
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return kv, nil
	}
	sc := bs.StreamInfo().Config
	changed := false
	if sc.Replicas < cfg.Replicas {
		sc.Replicas, changed = cfg.Replicas, true
	}
	if cfg.TTL > 0 && sc.MaxAge != cfg.TTL {
		sc.MaxAge, changed = cfg.TTL, true
	}
	if changed {
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, err
		}
	}
	return kv, nil
}
