package idempotency

import "github.com/nats-io/nats.go/jetstream"

// LuaLib exposes the scripts' shared Lua functions to the tests.
const LuaLib = luaLib

// RecordKey is the Redis key of a record, in s's key layout.
func (s *RedisStore) RecordKey(scope, key string) string { return s.recordKey(scope, key) }

// TxnKey is the Redis key of a transaction lock, in s's key layout.
func (s *RedisStore) TxnKey(scope, txn string) string { return s.txnPrefix(scope) + txn }

// Bucket is the key-value bucket s stores in.
func (s *KVStore) Bucket() jetstream.KeyValue { return s.kv }

// RecordKVKey and TxnKVKey are the KV keys of a record and of a transaction
// lock.
var (
	RecordKVKey = recordKVKey
	TxnKVKey    = txnKVKey
)
