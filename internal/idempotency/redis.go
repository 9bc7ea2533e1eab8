package idempotency

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures a RedisStore.
type RedisOptions struct {
	// Prefix starts every key; "" means "payworker:". It must not contain
	// '{' or '}', which would move the hash tag.
	Prefix string
	// TTL is how long a record is kept after its last write (claim, renewal,
	// release, completion), and never less than the lease being granted.
	// Required: NewRedis panics when it is not positive.
	TTL time.Duration
	// Registry remembers, outside Redis, the scopes that have had records,
	// so that a scope whose epoch marker is missing can be told apart: new
	// (no doubt) or lost (doubt). Nil treats every missing marker as a loss:
	// safe, but every new merchant then starts in doubt.
	Registry ScopeRegistry
	// DoubtWindow is how long, after the store is seen to have lost records,
	// a key without a record counts as possibly done (Claim marks it
	// Uncertain). 0 means TTL: a lost record would have lived at most that
	// long, so after it no key can have lost one.
	DoubtWindow time.Duration
	// WaitReplicas, when positive, makes a claim count only once that many
	// replicas have acknowledged it (WAIT, on the claim's connection, in the
	// same round trip); a claim that does not reach them in WaitTimeout
	// fails (closed) and no gateway call is made. Not for Redis Cluster.
	WaitReplicas int
	// WaitTimeout bounds the WAIT; 0 means 500ms.
	WaitTimeout time.Duration
	// OnDoubt, if set, is told when the store detects that it lost records
	// and from when until when keys without a record are in doubt.
	OnDoubt func(scope, reason string, until time.Time)
}

// ErrNotDurable is returned by Claim when the claim did not reach
// RedisOptions.WaitReplicas replicas in time: a failover could lose it, so
// the caller must not act on it (fail closed).
var ErrNotDurable = errors.New("idempotency: claim not acknowledged by enough replicas")

// registeringGrace is how long a claim that finds a known scope without an
// epoch marker waits for one (polling every registeringPoll) before it
// takes the scope's records for lost: the worker that registered the scope
// writes its marker a moment after.
const (
	registeringGrace = time.Second
	registeringPoll  = 20 * time.Millisecond
)

// RedisStore is a Store in Redis (standalone, Sentinel or Cluster).
//
// A record is a JSON string (the Record JSON format) under
// <prefix>{<scope>}:key:<key>, and a transaction lock a JSON string
// {"key","token","lease_until_ms"} under <prefix>{<scope>}:txn:<transaction>
// that expires with the lease (PX). The hash tag on the scope keeps the two in
// one Cluster slot. Every transition is one Lua script (EVALSHA, falling
// back to EVAL after a restart or failover) that reads, decides and writes
// atomically. The scripts of concurrent callers share pipelines: while one
// pipeline is in flight the next calls queue, and go out together in one
// write and one read, so a busy worker makes a few round trips per batch of
// commands rather than two per command, and a lone call goes out at once.
// Lease times come from the Redis server's clock (TIME), so workers whose
// clocks disagree still agree on who holds a lease.
//
// Every script declares every key it touches in KEYS (Redis Cluster, proxies
// and Redis-compatible servers refuse or misroute undeclared keys): Renew,
// Complete and Release are told the transaction the claim locked, so they can
// name its lock before reading the record, and refuse a transaction other
// than the one the record says was locked.
//
// Replication is asynchronous: a failover can lose a record. Renew, Complete
// and Release on a missing record return ErrFenced, so a lost record is never
// resurrected by a late write; the next Claim then Acquires the key afresh, and
// the caller must learn from the gateway's status call what an earlier attempt
// did (SPEC §4.1 relies on it).
type RedisStore struct {
	rdb          redis.UniversalClient
	prefix       string
	ttl          time.Duration
	registry     ScopeRegistry
	doubt        time.Duration
	waitReplicas int
	waitTimeout  time.Duration
	onDoubt      func(scope, reason string, until time.Time)
	pipe         *pipe
}

// NewRedis returns a store on rdb. It panics when opts.TTL is not positive or
// opts.Prefix contains a brace: both are programming errors.
func NewRedis(rdb redis.UniversalClient, opts RedisOptions) *RedisStore {
	if opts.TTL <= 0 {
		panic("idempotency: RedisOptions.TTL must be positive")
	}
	if opts.Prefix == "" {
		opts.Prefix = "payworker:"
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		panic("idempotency: RedisOptions.Prefix must not contain '{' or '}'")
	}
	if _, cluster := rdb.(*redis.ClusterClient); cluster && opts.WaitReplicas > 0 {
		panic("idempotency: RedisOptions.WaitReplicas is not supported on Redis Cluster")
	}
	if opts.DoubtWindow <= 0 {
		opts.DoubtWindow = opts.TTL
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 500 * time.Millisecond
	}
	if opts.OnDoubt == nil {
		opts.OnDoubt = func(string, string, time.Time) {}
	}
	return &RedisStore{rdb: rdb, prefix: opts.Prefix, ttl: opts.TTL, registry: opts.Registry,
		doubt: opts.DoubtWindow, waitReplicas: opts.WaitReplicas, waitTimeout: opts.WaitTimeout, onDoubt: opts.OnDoubt,
		pipe: &pipe{rdb: rdb, waitReplicas: opts.WaitReplicas, waitTimeout: opts.WaitTimeout}}
}

// epochKey is <prefix>{<scope>}:epoch, the scope's epoch marker.
func (s *RedisStore) epochKey(scope string) string {
	return s.prefix + "{" + scope + "}:epoch"
}

// recordKey is <prefix>{<scope>}:key:<key>.
func (s *RedisStore) recordKey(scope, key string) string {
	return s.prefix + "{" + scope + "}:key:" + key
}

// txnPrefix is <prefix>{<scope>}:txn:, followed by the transaction id.
func (s *RedisStore) txnPrefix(scope string) string {
	return s.prefix + "{" + scope + "}:txn:"
}

// checkScope refuses a scope with a brace: "{a}b}" would let two merchants'
// keys collide and move the hash tag.
func checkScope(scope string) error {
	if strings.ContainsAny(scope, "{}") {
		return fmt.Errorf("%w: scope %q contains a brace", errInvalid, scope)
	}
	return nil
}

// Claim results as the scripts return them.
const (
	luaAcquired  = 1
	luaResumed   = 2
	luaCompleted = 3
	luaConflict  = 4
	luaBusy      = 5
	luaNoEpoch   = 6
)

// luaWrongTxn starts the reply {luaWrongTxn, locked transaction} of a Renew,
// Complete or Release script told another transaction than the one the
// record's claim locked.
const luaWrongTxn = 7

// luaLib is prepended to every script: the server clock, and RFC 3339 times
// in UTC with milliseconds ("2006-01-02T15:04:05.000Z") so that records keep
// the Record JSON format. The calendar arithmetic is Howard Hinnant's
// days_from_civil / civil_from_days.
const luaLib = `
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function fmt_ms(ms)
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local sod = secs - days * 86400
  local y, m, d = civil_from_days(days)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(sod / 3600), math.floor(sod / 60) % 60, sod % 60, ms - secs * 1000)
end

local function parse_ms(s)
  if type(s) ~= 'string' then error('idempotency: record time missing') end
  local y, mo, d, h, mi, sec, frac = string.match(s, '^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z$')
  if not y then error('idempotency: bad record time ' .. s) end
  local ms = tonumber(string.sub(frac .. '000', 1, 3))
  local days = days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  return ((days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)) * 1000) + ms
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- server_run_id names the server process: it changes with every restart,
-- and a replica promoted by a failover has its own. A plain find, then a
-- match anchored after it: a pattern search through the whole section
-- costs more than INFO itself.
local function server_run_id()
  local info = redis.call('INFO', 'server')
  local at = string.find(info, '\nrun_id:', 1, true)
  if not at then error('idempotency: INFO server has no run_id') end
  return string.match(info, '^%x+', at + 8)
end

local function lock_value(key, token, until_ms)
  return string.format('{"key":%s,"token":%d,"lease_until_ms":%d}', cjson.encode(key), token, until_ms)
end

-- locked_txn is the transaction a record's claim locked, '' for none.
local function locked_txn(rec)
  if type(rec.txn_lock) == 'string' then return rec.txn_lock end
  return ''
end

-- free_lock deletes the transaction lock tk (nil: none) if key+token still
-- hold it.
local function free_lock(rec, tk, key)
  if not tk then return end
  local l = redis.call('GET', tk)
  if not l then return end
  local lock = cjson.decode(l)
  if lock.key == key and lock.token == rec.token then redis.call('DEL', tk) end
end
`

// claimScript: KEYS[1] record, KEYS[2] the scope's epoch marker, KEYS[3]
// transaction lock (only with a lock). ARGV: key, fingerprint, command id,
// holder, lease ms, ttl ms, transaction, doubt window ms.
// Returns {status, record JSON or "", retry-after ms, settle (0 or 1),
// the reason a doubt began with this call or ""}.
//
// The marker is {"run_id","doubt_since_ms","doubt_until_ms"}. Without it the
// script writes nothing and answers luaNoEpoch (Go decides, with the scope
// registry, whether the scope is new or lost). A marker written by another
// server process (a restart, a failover) means writes acknowledged before may
// be lost: a doubt window begins. In doubt, a claimed key is marked uncertain
// whether its record exists or not, since a surviving record may be an older
// version of it.
var claimScript = redis.NewScript(luaLib + `
local key, lease, ttl, doubt_ms = ARGV[1], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])
if ttl < lease then ttl = lease end
local now = now_ms()
local m = redis.call('GET', KEYS[2])
if not m then return {` + strconv.Itoa(luaNoEpoch) + `, '', 0, 0, ''} end
local ep = cjson.decode(m)
local started = ''
local run_id = server_run_id()
if ep.run_id ~= run_id then
  started = 'the Redis server holding this merchant changed (restart or failover): writes it acknowledged before may be lost'
  ep.run_id = run_id
  ep.doubt_since_ms = now
  ep.doubt_until_ms = math.max(tonumber(ep.doubt_until_ms) or 0, now + doubt_ms)
  redis.call('SET', KEYS[2], cjson.encode(ep))
end
local doubt = (tonumber(ep.doubt_until_ms) or 0) > now
local settle = 0
if doubt and now - (tonumber(ep.doubt_since_ms) or 0) < 2 * lease then settle = 1 end
local raw = redis.call('GET', KEYS[1])
local rec = nil
if raw then
  rec = cjson.decode(raw)
  if rec.fingerprint ~= ARGV[2] then return {` + strconv.Itoa(luaConflict) + `, raw, 0, 0, started} end
  if rec.state == 'completed' then return {` + strconv.Itoa(luaCompleted) + `, raw, 0, 0, started} end
  if rec.state == 'in_progress' then
    local lease_until = parse_ms(rec.lease_until)
    if lease_until > now then return {` + strconv.Itoa(luaBusy) + `, raw, lease_until - now, 0, started} end
  elseif rec.state ~= 'released' then
    error('idempotency: unknown record state')
  end
else
  raw = ''
end
if KEYS[3] then
  local l = redis.call('GET', KEYS[3])
  if l then
    local lock = cjson.decode(l)
    if lock.key ~= key and lock.lease_until_ms > now then
      return {` + strconv.Itoa(luaBusy) + `, raw, lock.lease_until_ms - now, 0, started}
    end
  end
end
local now_text = fmt_ms(now)
local status
if rec then
  status = ` + strconv.Itoa(luaResumed) + `
  if rec.state == 'in_progress' then
    rec.uncertain = true
    settle = 1
  end
  rec.token = math.max(rec.token + 1, now)
  rec.claims = rec.claims + 1
else
  status = ` + strconv.Itoa(luaAcquired) + `
  rec = {fingerprint = ARGV[2], command_id = ARGV[3], token = now, claims = 1, created_at = now_text}
end
if doubt then rec.uncertain = true end
rec.state = 'in_progress'
rec.holder = nil
if ARGV[4] ~= '' then rec.holder = ARGV[4] end
rec.lease_until = fmt_ms(now + lease)
rec.updated_at = now_text
rec.txn_lock = nil
if KEYS[3] then
  rec.txn_lock = ARGV[7]
  redis.call('SET', KEYS[3], lock_value(key, rec.token, now + lease), 'PX', lease)
end
local out = cjson.encode(rec)
redis.call('SET', KEYS[1], out, 'PX', ttl)
return {status, out, 0, settle, started}
`)

// epochScript: KEYS[1] the scope's epoch marker. ARGV: "1" when the scope
// lost its records (a doubt window begins), "0" for a new scope; the doubt
// window ms. Writes the marker unless one exists; returns 1 if it wrote it.
var epochScript = redis.NewScript(luaLib + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = now_ms()
local ep = {run_id = server_run_id(), created_ms = now, doubt_since_ms = 0, doubt_until_ms = 0}
if ARGV[1] == '1' then
  ep.doubt_since_ms = now
  ep.doubt_until_ms = now + tonumber(ARGV[2])
end
redis.call('SET', KEYS[1], cjson.encode(ep))
return 1
`)

// renewScript: KEYS[1] record, KEYS[2] transaction lock (only with a
// transaction). ARGV: key, token, transaction or "", lease ms, ttl ms.
// Returns 1, 0 when fenced, or luaWrongTxn.
var renewScript = redis.NewScript(luaLib + `
local key, token, lease, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
if ttl < lease then ttl = lease end
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec.state ~= 'in_progress' or rec.token ~= token then return 0 end
if locked_txn(rec) ~= ARGV[3] then return {` + strconv.Itoa(luaWrongTxn) + `, locked_txn(rec)} end
local now = now_ms()
local tk = KEYS[2]
if tk then
  local l = redis.call('GET', tk)
  if l then
    local lock = cjson.decode(l)
    if lock.key ~= key then
      if lock.lease_until_ms > now then return 0 end
    elseif lock.token > token then
      return 0
    end
  end
  redis.call('SET', tk, lock_value(key, token, now + lease), 'PX', lease)
end
rec.lease_until = fmt_ms(now + lease)
rec.updated_at = fmt_ms(now)
redis.call('SET', KEYS[1], cjson.encode(rec), 'PX', ttl)
return 1
`)

// completeScript: KEYS[1] record, KEYS[2] transaction lock (only with a
// transaction). ARGV: key, token, transaction or "", ttl ms, outcome JSON,
// outcome event id. Returns 1, 0 when fenced, or luaWrongTxn.
var completeScript = redis.NewScript(luaLib + `
local key, token, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec.token ~= token then return 0 end
if locked_txn(rec) ~= ARGV[3] then return {` + strconv.Itoa(luaWrongTxn) + `, locked_txn(rec)} end
if rec.state == 'completed' and type(rec.outcome) == 'table' and rec.outcome.event_id == ARGV[6] then
  return 1
end
if rec.state ~= 'in_progress' then return 0 end
local now = now_ms()
free_lock(rec, KEYS[2], key)
rec.state = 'completed'
rec.holder = nil
rec.lease_until = nil
rec.outcome = nil
rec.updated_at = fmt_ms(now)
local out = cjson.encode(rec)
out = string.sub(out, 1, -2) .. ',"outcome":' .. ARGV[5] .. '}'
redis.call('SET', KEYS[1], out, 'PX', ttl)
return 1
`)

// releaseScript: KEYS[1] record, KEYS[2] transaction lock (only with a
// transaction). ARGV: key, token, transaction or "", ttl ms, uncertain ("1"
// or "0"). Returns 1, 0 when fenced, or luaWrongTxn.
var releaseScript = redis.NewScript(luaLib + `
local key, token, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec.token ~= token or (rec.state ~= 'in_progress' and rec.state ~= 'released') then return 0 end
if locked_txn(rec) ~= ARGV[3] then return {` + strconv.Itoa(luaWrongTxn) + `, locked_txn(rec)} end
local now = now_ms()
free_lock(rec, KEYS[2], key)
rec.state = 'released'
rec.holder = nil
rec.lease_until = nil
if ARGV[5] == '1' or rec.uncertain == true then rec.uncertain = true else rec.uncertain = nil end
rec.updated_at = fmt_ms(now)
redis.call('SET', KEYS[1], cjson.encode(rec), 'PX', ttl)
return 1
`)

// Claim takes the key as the Store contract says, in one script run (and,
// with WaitReplicas, a WAIT in the same round trip). The first claim of a
// scope without an epoch marker also consults the scope registry and writes
// the marker, then claims again.
//
// While the scope is in doubt (its records may have been lost), an
// Acquired or Resumed claim comes back with Record.Uncertain set: the
// caller must learn from the gateway's status what became of the key before
// sending anything. Claim.Settle says the previous holder may still have a
// call in flight.
func (s *RedisStore) Claim(ctx context.Context, req ClaimRequest) (Claim, error) {
	if err := checkClaim(req); err != nil {
		return Claim{}, err
	}
	if err := checkScope(req.Scope); err != nil {
		return Claim{}, err
	}
	keys := []string{s.recordKey(req.Scope, req.Key), s.epochKey(req.Scope)}
	if req.TxnLock != "" {
		keys = append(keys, s.txnPrefix(req.Scope)+req.TxnLock)
	}
	args := []any{req.Key, req.Fingerprint, req.CommandID, req.Holder,
		req.Lease.Milliseconds(), s.ttl.Milliseconds(), req.TxnLock, s.doubt.Milliseconds()}
	// A known scope without a marker may be one another worker registered
	// a moment ago and is about to mark: wait a little for its marker
	// before concluding that Redis lost the scope's records.
	patience := time.Now().Add(registeringGrace)
	for {
		res, acked, err := s.evalClaim(ctx, keys, args)
		if err != nil {
			return Claim{}, fmt.Errorf("idempotency: redis claim: %w", err)
		}
		if len(res) != 5 {
			return Claim{}, fmt.Errorf("idempotency: redis claim: %d values in reply, want 5", len(res))
		}
		code, _ := res[0].(int64)
		if code == luaNoEpoch {
			if err := s.initEpoch(ctx, req.Scope, time.Now().Before(patience)); err != nil {
				return Claim{}, err
			}
			continue
		}
		if started, _ := res[4].(string); started != "" {
			s.onDoubt(req.Scope, started, time.Now().Add(s.doubt))
		}
		c, err := claimOf(code, res)
		if err != nil {
			return Claim{}, err
		}
		if (c.Status == Acquired || c.Status == Resumed) && acked < int64(s.waitReplicas) {
			// Not durable: a failover could forget it while we call the
			// gateway. Give it back (best effort) and call nothing.
			rctx, cancel := detached(ctx)
			_ = s.Release(rctx, req.Scope, req.Key, req.TxnLock, c.Record.Token, c.Record.Uncertain)
			cancel()
			return Claim{}, fmt.Errorf("%w: %d of %d within %v", ErrNotDurable, acked, s.waitReplicas, s.waitTimeout)
		}
		return c, nil
	}
}

// claimOf reads a claim script reply whose status is not luaNoEpoch.
func claimOf(code int64, res []any) (Claim, error) {
	raw, _ := res[1].(string)
	retry, _ := res[2].(int64)
	settle, _ := res[3].(int64)
	var c Claim
	switch code {
	case luaAcquired:
		c.Status = Acquired
	case luaResumed:
		c.Status = Resumed
	case luaCompleted:
		c.Status = Completed
	case luaConflict:
		c.Status = Conflict
	case luaBusy:
		c.Status = Busy
		c.RetryAfter = time.Duration(retry) * time.Millisecond
	default:
		return Claim{}, fmt.Errorf("idempotency: redis claim: unknown status %v", res[0])
	}
	c.Settle = settle == 1
	if raw != "" {
		var err error
		if c.Record, err = unmarshalRecord([]byte(raw)); err != nil {
			return Claim{}, err
		}
	}
	return c, nil
}

// evalClaim runs the claim script in the store's pipeline and, with
// waitReplicas, a WAIT after it on the same connection in the same round
// trip. It returns how many replicas acknowledged the claim (0 without
// waitReplicas).
func (s *RedisStore) evalClaim(ctx context.Context, keys []string, args []any) ([]any, int64, error) {
	r := s.pipe.run(&scriptCall{ctx: ctx, script: claimScript, keys: keys, args: args, wait: s.waitReplicas > 0})
	if r.err != nil {
		return nil, 0, r.err
	}
	res, ok := r.res.([]any)
	if !ok {
		return nil, 0, fmt.Errorf("reply %T, want an array", r.res)
	}
	return res, r.acked, nil
}

// initEpoch writes the epoch marker of a scope that has none: a new scope
// (the registry did not know it), or one whose records Redis lost (the
// registry knew it), which starts a doubt window. While patient, a known
// scope is given a moment for the worker that registered it to write its
// marker instead. It fails (closed) when the registry cannot be reached.
func (s *RedisStore) initEpoch(ctx context.Context, scope string, patient bool) error {
	lost := true
	reason := "the merchant has no epoch marker and no scope registry is configured: taken as lost records"
	if s.registry != nil {
		known, err := s.registry.Register(ctx, scope)
		if err != nil {
			return err
		}
		if known && patient {
			t := time.NewTimer(registeringPoll)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return fmt.Errorf("idempotency: redis claim: %w", ctx.Err())
			case <-t.C:
				return nil
			}
		}
		lost = known
		reason = "the merchant's epoch marker is gone though the merchant had records: Redis lost them (restart without persistence, FLUSHALL, eviction)"
	}
	flag := "0"
	if lost {
		flag = "1"
	}
	wrote, err := epochScript.Run(ctx, s.rdb, []string{s.epochKey(scope)}, flag, s.doubt.Milliseconds()).Int64()
	if err != nil {
		return fmt.Errorf("idempotency: redis epoch: %w", err)
	}
	if lost && wrote == 1 {
		s.onDoubt(scope, reason, time.Now().Add(s.doubt))
	}
	return nil
}

// Renew extends the lease of token's holder, and its transaction lock, to
// lease from now (server time). It returns ErrFenced when the record is
// missing, not in progress, or claimed by another token, and also when
// another key has taken the transaction lock after this lease expired: the
// holder no longer runs alone on the transaction and must stop.
func (s *RedisStore) Renew(ctx context.Context, scope, key, txn string, token int64, lease time.Duration) error {
	if err := s.check(scope, key); err != nil {
		return err
	}
	if err := checkLease(lease); err != nil {
		return err
	}
	return s.run(ctx, "renew", renewScript, scope, key, txn, token,
		lease.Milliseconds(), s.ttl.Milliseconds())
}

// Complete stores the outcome under token and frees the transaction lock if
// this key and token still hold it. The record is then kept for the TTL
// from now. Repeating a Complete that succeeded (its reply lost) with the same
// token and outcome EventID returns nil; any other Complete of a completed,
// released, missing or re-claimed record returns ErrFenced.
func (s *RedisStore) Complete(ctx context.Context, scope, key, txn string, token int64, out Outcome) error {
	if err := s.check(scope, key); err != nil {
		return err
	}
	o, err := marshalOutcome(out)
	if err != nil {
		return err
	}
	return s.run(ctx, "complete", completeScript, scope, key, txn, token,
		s.ttl.Milliseconds(), o, out.EventID)
}

// Release gives the key back under token: the record becomes released, its
// Uncertain flag is set if uncertain or already set, and the transaction
// lock is freed if this key and token still hold it. Repeating it with the
// same token is harmless. It returns ErrFenced when the record is missing,
// completed or claimed by another token.
func (s *RedisStore) Release(ctx context.Context, scope, key, txn string, token int64, uncertain bool) error {
	if err := s.check(scope, key); err != nil {
		return err
	}
	u := "0"
	if uncertain {
		u = "1"
	}
	return s.run(ctx, "release", releaseScript, scope, key, txn, token,
		s.ttl.Milliseconds(), u)
}

// Get reads the record of key, ErrNotFound if there is none.
func (s *RedisStore) Get(ctx context.Context, scope, key string) (Record, error) {
	if err := s.check(scope, key); err != nil {
		return Record{}, err
	}
	raw, err := s.rdb.Get(ctx, s.recordKey(scope, key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("idempotency: redis get: %w", err)
	}
	return unmarshalRecord(raw)
}

// Ping sends PING.
func (s *RedisStore) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("idempotency: redis ping: %w", err)
	}
	return nil
}

func (s *RedisStore) check(scope, key string) error {
	if err := checkKey(scope, key); err != nil {
		return err
	}
	return checkScope(scope)
}

// run runs a fencing script on the record of key and the lock of txn (if
// any), in the store's pipeline: 1 is success, 0 ErrFenced, {luaWrongTxn,
// locked} a txn that is not the claim's.
func (s *RedisStore) run(ctx context.Context, op string, script *redis.Script, scope, key, txn string, token int64, args ...any) error {
	keys := []string{s.recordKey(scope, key)}
	if txn != "" {
		keys = append(keys, s.txnPrefix(scope)+txn)
	}
	r := s.pipe.run(&scriptCall{ctx: ctx, script: script, keys: keys, args: append([]any{key, token, txn}, args...)})
	n, ok := r.res.(int64)
	switch {
	case r.err != nil:
		return fmt.Errorf("idempotency: redis %s: %w", op, r.err)
	case !ok && isWrongTxn(r.res):
		locked, _ := r.res.([]any)[1].(string)
		return wrongTxn(txn, locked)
	case !ok:
		return fmt.Errorf("idempotency: redis %s: reply %T, want an integer", op, r.res)
	case n == 0:
		return ErrFenced
	}
	return nil
}

// isWrongTxn reports whether a fencing script's reply is {luaWrongTxn, locked}.
func isWrongTxn(res any) bool {
	a, ok := res.([]any)
	if !ok || len(a) != 2 {
		return false
	}
	code, _ := a[0].(int64)
	return code == luaWrongTxn
}
