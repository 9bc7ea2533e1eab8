package idempotency

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ScopeRegistry remembers, durably and outside Redis, every scope (merchant)
// a RedisStore has ever held records for. It is how the store tells a
// merchant it has never seen from one whose records Redis has lost: both
// look the same from inside Redis (no epoch marker).
type ScopeRegistry interface {
	// Register records scope if it is new. It reports whether the scope was
	// already known.
	Register(ctx context.Context, scope string) (known bool, err error)
}

// KVScopeRegistry is a ScopeRegistry in a JetStream key-value bucket: a
// Raft-replicated log that acknowledges a write only once it is stored (on a
// quorum of servers in a cluster), so it does not lose what Redis can.
// One entry per merchant, written once; nothing on the hot path.
type KVScopeRegistry struct {
	kv *retryingKV
}

// NewKVScopeRegistry creates the bucket (if missing) and returns a registry
// on it. An empty bucket name means "payworker_scopes"; replicas 0 means 1.
// A bucket with fewer replicas is raised to replicas, never lowered.
func NewKVScopeRegistry(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*KVScopeRegistry, error) {
	if bucket == "" {
		bucket = "payworker_scopes"
	}
	if replicas == 0 {
		replicas = 1
	}
	kv, err := openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "payworker: merchants the Redis idempotency store has held records for",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency: scope registry bucket %s: %w", bucket, err)
	}
	return &KVScopeRegistry{kv: newRetryingKV(js, bucket, kv, 0, 0)}, nil
}

type scopeEntry struct {
	FirstSeen time.Time `json:"first_seen"`
}

// Register creates the scope's entry unless it exists. An entry found
// holding exactly what this call wrote is this call's own (its first
// attempt was stored, its answer lost): the scope was new.
func (r *KVScopeRegistry) Register(ctx context.Context, scope string) (bool, error) {
	key := "s." + b64.EncodeToString([]byte(scope))
	v, _ := json.Marshal(scopeEntry{FirstSeen: time.Now().UTC()})
	_, err := r.kv.Create(ctx, key, v)
	switch {
	case err == nil:
		return false, nil
	case isRace(err):
		e, gerr := r.kv.Get(ctx, key)
		return gerr != nil || !bytes.Equal(e.Value(), v), nil
	}
	return false, fmt.Errorf("idempotency: register scope: %w", err)
}
