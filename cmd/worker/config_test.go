package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/streams"
)

// env is a fake environment for parseConfig.
type env map[string]string

func (e env) get(name string) string { return e[name] }

// files is a fake file system for parseConfig's readFile.
type files map[string]string

func (f files) read(name string) ([]byte, error) {
	s, ok := f[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return []byte(s), nil
}

// parse runs parseConfig with no files.
func parse(args []string, e env) (Config, error) {
	return parseConfig(args, e.get, files{}.read)
}

// poEnv is the least environment that configures a real PaymentOptions gateway.
func poEnv() env {
	return env{
		"PAYMENTOPTIONS_BASE_URL":  "https://api.example.com/v1",
		"PAYMENTOPTIONS_API_KEY":   "po-key-123",
		"PAYMENTOPTIONS_X_API_KEY": "po-xkey-456",
	}
}

// sibsEnv is the least environment that configures SIBS with a static token.
func sibsEnv() env {
	return env{
		"SIBS_BASE_URL":    "https://sibs.example.com",
		"SIBS_CLIENT_ID":   "client-1",
		"SIBS_TOKEN":       "sibs-token-789",
		"SIBS_TERMINAL_ID": "12345",
	}
}

func with(base env, kv ...string) env {
	e := maps.Clone(base)
	if e == nil {
		e = env{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		e[kv[i]] = kv[i+1]
	}
	return e
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parse(nil, env{})
	if err != nil {
		t.Fatalf("parseConfig(empty) error = %v, want nil", err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"NATSURL", c.NATSURL, ""},
		{"EmbeddedNATS()", c.EmbeddedNATS(), true},
		{"EmbeddedNATSAddr", c.EmbeddedNATSAddr, "127.0.0.1:4333"},
		{"DataDir", c.DataDir, "./payworker-data"},
		{"KVStore()", c.KVStore(), true},
		{"RedisMode", c.RedisMode, "standalone"},
		{"Sandbox()", c.Sandbox(), true},
		{"SIBSConfigured()", c.SIBSConfigured(), false},
		{"DefaultGateway", c.DefaultGateway, "paymentoptions"},
		{"len(GatewayRoutes)", len(c.GatewayRoutes), 0},
		{"GatewayRoutes != nil", c.GatewayRoutes != nil, true},
		{"WorkerConcurrency", c.WorkerConcurrency, 128},
		{"RetryMaxElapsed", c.RetryMaxElapsed, 2 * time.Minute},
		{"RetryMaxAttempts", c.RetryMaxAttempts, 10},
		{"RetryInitialInterval", c.RetryInitialInterval, 200 * time.Millisecond},
		{"RetryMaxInterval", c.RetryMaxInterval, 10 * time.Second},
		{"GatewayTimeout", c.GatewayTimeout, 15 * time.Second},
		{"ShutdownTimeout", c.ShutdownTimeout, 30 * time.Second},
		{"IdempotencyTTL", c.IdempotencyTTL, 168 * time.Hour},
		{"LeaseDuration", c.LeaseDuration, 30 * time.Second},
		{"AckWait", c.AckWait, 30 * time.Second},
		{"MaxDeliver", c.MaxDeliver, -1},
		{"Streams.Prefix", c.Streams.Prefix, "payments"},
		{"Streams.Commands", c.Streams.Commands, "PAYMENT_COMMANDS"},
		{"Streams.Events", c.Streams.Events, "PAYMENT_EVENTS"},
		{"Streams.DLQ", c.Streams.DLQ, "PAYMENT_DLQ"},
		{"Streams.Replicas", c.Streams.Replicas, 1},
		{"Streams.CommandsMaxAge", c.Streams.CommandsMaxAge, 168 * time.Hour},
		{"Streams.EventsMaxAge", c.Streams.EventsMaxAge, 720 * time.Hour},
		{"Streams.EventsMaxBytes", c.Streams.EventsMaxBytes, int64(10 << 30)},
		{"Streams.DLQMaxAge", c.Streams.DLQMaxAge, 720 * time.Hour},
		{"Streams.DLQMaxBytes", c.Streams.DLQMaxBytes, int64(1 << 30)},
		{"Streams.DuplicateWindow", c.Streams.DuplicateWindow, 10 * time.Minute},
		{"Streams.Consumer", c.Streams.Consumer, "payworker"},
		{"SandboxAddr", c.SandboxAddr, "127.0.0.1:8099"},
		{"HTTPAddr", c.HTTPAddr, "127.0.0.1:8080"},
		{"LogFormat", c.LogFormat, "auto"},
		{"LogLevel", c.LogLevel, "info"},
		{"WorkerID", c.WorkerID, ""},
		// The publisher provisions from streams.Default(): the worker's
		// defaults must be the same streams.
		{"Streams", c.Streams, streams.Default()},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestParseConfigValid(t *testing.T) {
	tests := []struct {
		name  string
		env   env
		check func(t *testing.T, c Config)
	}{
		{"payment options", poEnv(), func(t *testing.T, c Config) {
			if got, want := c.PaymentOptionsBaseURL.String(), "https://api.example.com/v1"; got != want {
				t.Errorf("PaymentOptionsBaseURL = %q, want %q", got, want)
			}
			if got, want := c.PaymentOptionsAPIKey.Reveal(), "po-key-123"; got != want {
				t.Errorf("PaymentOptionsAPIKey.Reveal() = %q, want %q", got, want)
			}
		}},
		{"http loopback", with(poEnv(), "PAYMENTOPTIONS_BASE_URL", "http://127.0.0.2:9000"), nil},
		{"http localhost", with(poEnv(), "PAYMENTOPTIONS_BASE_URL", "http://LOCALHOST:9000"), nil},
		{"http ipv6 loopback", with(poEnv(), "PAYMENTOPTIONS_BASE_URL", "http://[::1]:9000"), nil},
		{"sibs token", with(sibsEnv(), "DEFAULT_GATEWAY", "SIBS"), func(t *testing.T, c Config) {
			if !c.SIBSConfigured() || c.DefaultGateway != "sibs" {
				t.Errorf("SIBSConfigured() = %v, DefaultGateway = %q, want true, sibs", c.SIBSConfigured(), c.DefaultGateway)
			}
		}},
		{"sibs oauth", with(sibsEnv(), "SIBS_TOKEN", "", "SIBS_TOKEN_URL", "https://auth.example.com/token", "SIBS_CLIENT_SECRET", "cs"), nil},
		{"routes", with(sibsEnv(), "GATEWAY_ROUTES", " merchantA=sibs, merchantB = paymentoptions "), func(t *testing.T, c Config) {
			want := map[string]string{"merchantA": "sibs", "merchantB": "paymentoptions"}
			if !maps.Equal(c.GatewayRoutes, want) {
				t.Errorf("GatewayRoutes = %v, want %v", c.GatewayRoutes, want)
			}
		}},
		{"nats list", env{"NATS_URL": "nats://a:4222, tls://user:pw@b:4222,c:4222"}, func(t *testing.T, c Config) {
			if c.EmbeddedNATS() {
				t.Errorf("EmbeddedNATS() = true, want false")
			}
		}},
		{"redis", env{"REDIS_URL": "rediss://:pw@redis:6380/2"}, func(t *testing.T, c Config) {
			if c.KVStore() || c.RedisURL.Host != "redis:6380" {
				t.Errorf("KVStore() = %v, RedisURL.Host = %q, want false, redis:6380", c.KVStore(), c.RedisURL.Host)
			}
		}},
		{"redis unix", env{"REDIS_URL": "unix:///run/redis.sock"}, func(t *testing.T, c Config) {
			if c.RedisMode != RedisStandalone {
				t.Errorf("RedisMode = %q, want %q (the default)", c.RedisMode, RedisStandalone)
			}
		}},
		{"redis standalone explicit", env{"REDIS_URL": "redis://redis:6379/0?dial_timeout=3s", "REDIS_MODE": "Standalone", "REDIS_WAIT_REPLICAS": "1"}, func(t *testing.T, c Config) {
			if c.RedisMode != RedisStandalone || c.RedisWaitReplicas != 1 {
				t.Errorf("RedisMode, RedisWaitReplicas = %q, %d; want standalone, 1", c.RedisMode, c.RedisWaitReplicas)
			}
		}},
		{"redis sentinel", env{"REDIS_MODE": "sentinel", "REDIS_WAIT_REPLICAS": "1",
			"REDIS_URL": "redis://s1:26379?master_name=mymaster&addr=s2:26379&addr=s3:26379"}, func(t *testing.T, c Config) {
			if c.RedisMode != RedisSentinel || c.RedisURL.Host != "s1:26379" {
				t.Errorf("RedisMode, RedisURL.Host = %q, %q; want sentinel, s1:26379", c.RedisMode, c.RedisURL.Host)
			}
		}},
		{"redis sentinel tls with passwords", env{"REDIS_MODE": "sentinel",
			"REDIS_URL": "rediss://:sentinel-pw@s1:26379/2?master_name=m&password=master-pw&dial_timeout=500ms"}, nil},
		{"redis cluster", env{"REDIS_MODE": "cluster", "REDIS_URL": "redis://n1:6379?addr=n2:6379&addr=n3:6379"}, func(t *testing.T, c Config) {
			if c.RedisMode != RedisCluster || c.RedisWaitReplicas != 0 {
				t.Errorf("RedisMode, RedisWaitReplicas = %q, %d; want cluster, 0", c.RedisMode, c.RedisWaitReplicas)
			}
		}},
		{"redis cluster one seed", env{"REDIS_MODE": "CLUSTER", "REDIS_URL": "rediss://user:pw@n1:6379?pool_size=50"}, nil},
		{"http off", env{"HTTP_ADDR": "off"}, func(t *testing.T, c Config) {
			if c.HTTPAddr != "" {
				t.Errorf("HTTPAddr = %q, want empty", c.HTTPAddr)
			}
		}},
		{"ttl above max age", env{"IDEMPOTENCY_TTL": "200h", "COMMANDS_MAX_AGE": "24h"}, nil},
		{"stream bounds", env{"EVENTS_MAX_AGE": "10m", "EVENTS_MAX_BYTES": "512MiB", "DLQ_MAX_AGE": "169h", "DLQ_MAX_BYTES": "2147483648"},
			func(t *testing.T, c Config) {
				s := c.Streams
				if s.EventsMaxAge != 10*time.Minute || s.EventsMaxBytes != 512<<20 || s.DLQMaxAge != 169*time.Hour || s.DLQMaxBytes != 2<<30 {
					t.Errorf("events %v %d, dlq %v %d; want 10m %d, 169h %d", s.EventsMaxAge, s.EventsMaxBytes,
						s.DLQMaxAge, s.DLQMaxBytes, 512<<20, 2<<30)
				}
			}},
		{"dlq follows a longer ttl", env{"IDEMPOTENCY_TTL": "800h", "DLQ_MAX_AGE": "2160h"}, nil},
		{"max deliver", env{"MAX_DELIVER": "5"}, func(t *testing.T, c Config) {
			if c.MaxDeliver != 5 {
				t.Errorf("MaxDeliver = %d, want 5", c.MaxDeliver)
			}
		}},
		{"log level case", env{"LOG_LEVEL": "DEBUG", "LOG_FORMAT": "Json"}, func(t *testing.T, c Config) {
			if c.LogLevel != "debug" || c.LogFormat != "json" {
				t.Errorf("LogLevel, LogFormat = %q, %q, want debug, json", c.LogLevel, c.LogFormat)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(nil, tt.env)
			if err != nil {
				t.Fatalf("parseConfig(%v) error = %v, want nil", tt.env, err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  env
		want string // the whole message of the only problem
	}{
		{"concurrency word", env{"WORKER_CONCURRENCY": "abc"}, `WORKER_CONCURRENCY: "abc" is not a whole number`},
		{"concurrency zero", env{"WORKER_CONCURRENCY": "0"}, `WORKER_CONCURRENCY: must be between 1 and 4096, got 0`},
		{"concurrency big", env{"WORKER_CONCURRENCY": "4097"}, `WORKER_CONCURRENCY: must be between 1 and 4096, got 4097`},
		{"redis scheme", env{"REDIS_URL": "redis//x"}, `REDIS_URL: parse "redis//x": missing scheme`},
		{"redis wrong scheme", env{"REDIS_URL": "http://x"}, `REDIS_URL: scheme "http" is not one of redis, rediss, unix`},
		{"redis no host", env{"REDIS_URL": "redis://"}, `REDIS_URL: parse "redis:": missing host`},
		{"redis bad", env{"REDIS_URL": "redis://:pw@x:port"}, `REDIS_URL: parse "redis://:xxxxx@x:port": invalid port ":port" after host`},
		{"redis mode unknown", env{"REDIS_URL": "redis://x:6379", "REDIS_MODE": "replicated"}, `REDIS_MODE: "replicated" is not one of standalone, sentinel, cluster`},
		{"redis mode without url", env{"REDIS_MODE": "sentinel"}, `REDIS_MODE: sentinel needs REDIS_URL (without it, idempotency keys live in a JetStream key-value bucket)`},
		{"redis cluster without url", env{"REDIS_MODE": "cluster"}, `REDIS_MODE: cluster needs REDIS_URL (without it, idempotency keys live in a JetStream key-value bucket)`},
		{"redis master name standalone", env{"REDIS_URL": "redis://s1:26379?master_name=mymaster&addr=s2:26379"},
			`REDIS_MODE: standalone, but REDIS_URL names a Sentinel master (master_name=): set REDIS_MODE=sentinel`},
		{"redis addrs standalone", env{"REDIS_URL": "redis://n1:6379?addr=n2:6379"},
			`REDIS_MODE: standalone, but REDIS_URL lists more servers (addr=): set REDIS_MODE=sentinel or cluster`},
		{"redis standalone bad option", env{"REDIS_URL": "redis://x:6379?pool=5"}, `REDIS_URL: redis: unexpected option: pool`},
		{"redis sentinel without master name", env{"REDIS_MODE": "sentinel", "REDIS_URL": "redis://s1:26379?addr=s2:26379"},
			`REDIS_URL: REDIS_MODE=sentinel needs master_name=<the name the sentinels monitor> in the URL`},
		{"redis sentinel unix", env{"REDIS_MODE": "sentinel", "REDIS_URL": "unix:///run/redis.sock"},
			`REDIS_URL: REDIS_MODE=sentinel needs redis:// or rediss:// (the sentinels' addresses), not unix://`},
		{"redis sentinel bad addr", env{"REDIS_MODE": "sentinel", "REDIS_URL": "redis://s1:26379?master_name=m&addr=s2"},
			`REDIS_URL: redis: unable to parse addr param: s2`},
		{"redis sentinel replica only", env{"REDIS_MODE": "sentinel", "REDIS_URL": "redis://s1:26379?master_name=m&replica_only=true"},
			`REDIS_URL: route_by_latency, route_randomly and replica_only send commands to replicas; the idempotency store must use the master`},
		{"redis master name cluster", env{"REDIS_MODE": "cluster", "REDIS_URL": "redis://n1:6379?master_name=m"},
			`REDIS_MODE: cluster, but REDIS_URL names a Sentinel master (master_name=): set REDIS_MODE=sentinel`},
		{"redis cluster unix", env{"REDIS_MODE": "cluster", "REDIS_URL": "unix:///run/redis.sock"},
			`REDIS_URL: REDIS_MODE=cluster needs redis:// or rediss:// (the nodes' addresses), not unix://`},
		{"redis cluster bad option", env{"REDIS_MODE": "cluster", "REDIS_URL": "redis://n1:6379?db=2"}, `REDIS_URL: redis: unexpected option: db`},
		{"redis cluster read only", env{"REDIS_MODE": "cluster", "REDIS_URL": "redis://n1:6379?read_only=true"},
			`REDIS_URL: read_only, route_by_latency and route_randomly send reads to replicas; the idempotency store must use the masters`},
		{"redis cluster wait replicas", env{"REDIS_MODE": "cluster", "REDIS_URL": "redis://n1:6379?addr=n2:6379", "REDIS_WAIT_REPLICAS": "1"},
			`REDIS_WAIT_REPLICAS: must be 0 with REDIS_MODE=cluster: WAIT counts the replicas of one connection's server, and a cluster client spreads claims over the masters (set min-replicas-to-write on the masters instead)`},
		{"elapsed zero", env{"RETRY_MAX_ELAPSED": "0s"}, `RETRY_MAX_ELAPSED: must be > 0, got 0s`},
		{"elapsed word", env{"RETRY_MAX_ELAPSED": "soon"}, `RETRY_MAX_ELAPSED: "soon" is not a duration such as 500ms, 30s, 2m or 168h`},
		{"attempts", env{"RETRY_MAX_ATTEMPTS": "0"}, `RETRY_MAX_ATTEMPTS: must be ≥ 1, got 0`},
		{"intervals", env{"RETRY_INITIAL_INTERVAL": "5s", "RETRY_MAX_INTERVAL": "1s"}, `RETRY_MAX_INTERVAL: 1s is shorter than RETRY_INITIAL_INTERVAL 5s`},
		{"gateway timeout", env{"GATEWAY_TIMEOUT": "-1s"}, `GATEWAY_TIMEOUT: must be > 0, got -1s`},
		{"shutdown", env{"SHUTDOWN_TIMEOUT": "0"}, `SHUTDOWN_TIMEOUT: must be > 0, got 0`},
		{"lease", env{"LEASE_DURATION": "0s"}, `LEASE_DURATION: must be > 0, got 0s`},
		{"ack wait", env{"ACK_WAIT": "x"}, `ACK_WAIT: "x" is not a duration such as 500ms, 30s, 2m or 168h`},
		{"ttl", env{"IDEMPOTENCY_TTL": "1h"}, `IDEMPOTENCY_TTL: 1h is shorter than the commands stream's max age 168h0m0s (SPEC §4.6)`},
		{"duplicate window", env{"DUPLICATE_WINDOW": "200h"}, `DUPLICATE_WINDOW: 200h is longer than COMMANDS_MAX_AGE 168h0m0s; JetStream needs the window within the max age`},
		{"max deliver", env{"MAX_DELIVER": "0"}, `MAX_DELIVER: must be -1 (unlimited) or ≥ 1, got 0`},
		{"prefix", env{"STREAM_PREFIX": "pay.ments"}, `STREAM_PREFIX: "pay.ments" must be letters, digits, '_' or '-' only`},
		{"stream", env{"STREAM_COMMANDS": "A B"}, `STREAM_COMMANDS: "A B" must be letters, digits, '_' or '-' only`},
		{"events", env{"STREAM_EVENTS": "E*"}, `STREAM_EVENTS: "E*" must be letters, digits, '_' or '-' only`},
		{"dlq", env{"STREAM_DLQ": "D>"}, `STREAM_DLQ: "D>" must be letters, digits, '_' or '-' only`},
		{"consumer", env{"CONSUMER_NAME": "a/b"}, `CONSUMER_NAME: "a/b" must be letters, digits, '_' or '-' only`},
		{"replicas", env{"STREAM_REPLICAS": "7"}, `STREAM_REPLICAS: must be between 1 and 5, got 7`},
		{"max age", env{"COMMANDS_MAX_AGE": "0s"}, `COMMANDS_MAX_AGE: must be > 0, got 0s`},
		{"events max age zero", env{"EVENTS_MAX_AGE": "0s"}, `EVENTS_MAX_AGE: must be > 0, got 0s`},
		{"events max age below window", env{"EVENTS_MAX_AGE": "5m"}, `EVENTS_MAX_AGE: 5m is shorter than DUPLICATE_WINDOW 10m0s; JetStream needs the window within the max age`},
		{"dlq max age zero", env{"DLQ_MAX_AGE": "0"}, `DLQ_MAX_AGE: must be > 0, got 0`},
		{"dlq max age equals ttl", env{"DLQ_MAX_AGE": "168h"}, `DLQ_MAX_AGE: 168h is not longer than IDEMPOTENCY_TTL 168h0m0s; dead letters must outlive their keys so that an uncertain one can still be replayed and reconciled`},
		{"dlq max age below a raised ttl", env{"IDEMPOTENCY_TTL": "800h"}, `DLQ_MAX_AGE: 720h is not longer than IDEMPOTENCY_TTL 800h0m0s; dead letters must outlive their keys so that an uncertain one can still be replayed and reconciled`},
		{"events max bytes unlimited", env{"EVENTS_MAX_BYTES": "-1"}, `EVENTS_MAX_BYTES: must be at least 1MiB (streams are always bounded), got -1`},
		{"events max bytes zero", env{"EVENTS_MAX_BYTES": "0"}, `EVENTS_MAX_BYTES: must be at least 1MiB (streams are always bounded), got 0`},
		{"events max bytes decimal unit", env{"EVENTS_MAX_BYTES": "10GB"}, `EVENTS_MAX_BYTES: "10GB" is not a size such as 1073741824, 512MiB or 10GiB`},
		{"dlq max bytes fraction", env{"DLQ_MAX_BYTES": "1.5GiB"}, `DLQ_MAX_BYTES: "1.5GiB" is not a size such as 1073741824, 512MiB or 10GiB`},
		{"dlq max bytes small", env{"DLQ_MAX_BYTES": "1023KiB"}, `DLQ_MAX_BYTES: must be at least 1MiB (streams are always bounded), got 1023KiB`},
		{"dlq max bytes overflow", env{"DLQ_MAX_BYTES": "9000000TiB"}, `DLQ_MAX_BYTES: "9000000TiB" is out of range`},
		{"dlq max bytes huge", env{"DLQ_MAX_BYTES": "99999999999999999999"}, `DLQ_MAX_BYTES: "99999999999999999999" is out of range`},
		{"log format", env{"LOG_FORMAT": "xml"}, `LOG_FORMAT: "xml" is not one of auto, json, text`},
		{"log level", env{"LOG_LEVEL": "verbose"}, `LOG_LEVEL: "verbose" is not one of debug, info, warn, error`},
		{"http addr", env{"HTTP_ADDR": "8080"}, `HTTP_ADDR: "8080" is not host:port: address 8080: missing port in address`},
		{"sandbox addr", env{"SANDBOX_ADDR": "h:99999"}, `SANDBOX_ADDR: "h:99999": port "99999" is not a number from 0 to 65535`},
		{"embedded addr", env{"EMBEDDED_NATS_ADDR": "nohost"}, `EMBEDDED_NATS_ADDR: "nohost" is not host:port: address nohost: missing port in address`},
		{"data dir", with(nil, "DATA_DIR", ""), ""}, // empty env counts as unset: no error
		{"nats scheme", env{"NATS_URL": "http://a:4222"}, `NATS_URL: scheme "http" is not one of nats, tls, ws, wss`},
		{"nats empty entry", env{"NATS_URL": "nats://a:4222,,"}, `NATS_URL: empty entry in the comma-separated list`},
		{"po http", with(poEnv(), "PAYMENTOPTIONS_BASE_URL", "http://example.com"), `PAYMENTOPTIONS_BASE_URL: http:// is allowed for loopback hosts only, got host "example.com"`},
		{"po scheme", with(poEnv(), "PAYMENTOPTIONS_BASE_URL", "ftp://example.com"), `PAYMENTOPTIONS_BASE_URL: scheme "ftp" is not one of https, http`},
		{"po no host", with(poEnv(), "PAYMENTOPTIONS_BASE_URL", "https:///v1"), `PAYMENTOPTIONS_BASE_URL: parse "https:///v1": missing host`},
		{"po key", with(poEnv(), "PAYMENTOPTIONS_API_KEY", ""), `PAYMENTOPTIONS_API_KEY: required when PAYMENTOPTIONS_BASE_URL is set (or set PAYMENTOPTIONS_API_KEY_FILE)`},
		{"po xkey", with(poEnv(), "PAYMENTOPTIONS_X_API_KEY", ""), `PAYMENTOPTIONS_X_API_KEY: required when PAYMENTOPTIONS_BASE_URL is set (or set PAYMENTOPTIONS_X_API_KEY_FILE)`},
		{"sibs http", with(sibsEnv(), "SIBS_BASE_URL", "http://10.0.0.1"), `SIBS_BASE_URL: http:// is allowed for loopback hosts only, got host "10.0.0.1"`},
		{"sibs client", with(sibsEnv(), "SIBS_CLIENT_ID", ""), `SIBS_CLIENT_ID: required when SIBS_BASE_URL is set`},
		{"sibs terminal", with(sibsEnv(), "SIBS_TERMINAL_ID", ""), `SIBS_TERMINAL_ID: required when SIBS_BASE_URL is set`},
		{"sibs terminal digits", with(sibsEnv(), "SIBS_TERMINAL_ID", "12a"), `SIBS_TERMINAL_ID: "12a" is not 1 to 10 digits`},
		{"sibs terminal long", with(sibsEnv(), "SIBS_TERMINAL_ID", "12345678901"), `SIBS_TERMINAL_ID: "12345678901" is not 1 to 10 digits`},
		{"sibs no token", with(sibsEnv(), "SIBS_TOKEN", ""), `SIBS_TOKEN: required when SIBS_BASE_URL is set (or SIBS_TOKEN_URL with SIBS_CLIENT_SECRET)`},
		{"sibs both", with(sibsEnv(), "SIBS_TOKEN_URL", "https://auth.example.com"), `SIBS_TOKEN: set either SIBS_TOKEN or SIBS_TOKEN_URL with SIBS_CLIENT_SECRET, not both`},
		{"sibs no secret", with(sibsEnv(), "SIBS_TOKEN", "", "SIBS_TOKEN_URL", "https://auth.example.com"), `SIBS_CLIENT_SECRET: required with SIBS_TOKEN_URL`},
		{"sibs no token url", with(sibsEnv(), "SIBS_TOKEN", "", "SIBS_CLIENT_SECRET", "cs"), `SIBS_TOKEN_URL: required with SIBS_CLIENT_SECRET`},
		{"sibs without base", env{"SIBS_CLIENT_ID": "c"}, `SIBS_CLIENT_ID: set, but SIBS_BASE_URL is not; SIBS is configured only when SIBS_BASE_URL is set`},
		{"default gateway", env{"DEFAULT_GATEWAY": "stripe"}, `DEFAULT_GATEWAY: "stripe" is not one of paymentoptions, sibs`},
		{"default sibs", with(poEnv(), "DEFAULT_GATEWAY", "sibs"), `DEFAULT_GATEWAY: "sibs" needs SIBS_BASE_URL to be set`},
		{"routes shape", env{"GATEWAY_ROUTES": "merchantA"}, `GATEWAY_ROUTES: "merchantA" is not merchant=gateway`},
		{"routes gateway", env{"GATEWAY_ROUTES": "m=stripe"}, `GATEWAY_ROUTES: merchant "m": "stripe" is not one of paymentoptions, sibs`},
		{"routes twice", env{"GATEWAY_ROUTES": "m=paymentoptions,m=paymentoptions"}, `GATEWAY_ROUTES: merchant "m" is listed twice`},
		{"routes sibs", with(poEnv(), "GATEWAY_ROUTES", "m=sibs"), `GATEWAY_ROUTES: merchant "m" routes to sibs, which needs SIBS_BASE_URL to be set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(nil, tt.env)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("parseConfig(%v) error = %v, want nil", tt.env, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("parseConfig(%v) error = nil, want %q", tt.env, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("parseConfig(%v) error = %q, want %q", tt.env, got, tt.want)
			}
			var ve *VarError
			if !errors.As(err, &ve) || !strings.HasPrefix(tt.want, ve.Var+":") {
				t.Errorf("errors.As(%v, *VarError) = %v, want a VarError naming the variable", err, ve)
			}
		})
	}
}

func TestParseConfigAllProblems(t *testing.T) {
	e := env{
		"WORKER_CONCURRENCY":      "abc",
		"REDIS_URL":               "redis//x",
		"RETRY_MAX_ELAPSED":       "0s",
		"IDEMPOTENCY_TTL":         "1h",
		"PAYMENTOPTIONS_BASE_URL": "http://example.com",
		"LOG_LEVEL":               "loud",
	}
	_, err := parse(nil, e)
	if err == nil {
		t.Fatal("parseConfig error = nil, want six problems")
	}
	var got []string
	for _, line := range strings.Split(err.Error(), "\n") {
		name, _, _ := strings.Cut(line, ":")
		got = append(got, name)
	}
	want := []string{"REDIS_URL", "PAYMENTOPTIONS_BASE_URL", "WORKER_CONCURRENCY", "RETRY_MAX_ELAPSED", "LOG_LEVEL", "IDEMPOTENCY_TTL"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("parseConfig error names %v, want %v\nerror:\n%v", got, want, err)
	}
}

func TestParseConfigFlags(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   env
		check func(c Config) (got, want any)
	}{
		{"flag beats env", []string{"-worker-concurrency", "8"}, env{"WORKER_CONCURRENCY": "16"},
			func(c Config) (any, any) { return c.WorkerConcurrency, 8 }},
		{"env beats default", nil, env{"WORKER_CONCURRENCY": "16"},
			func(c Config) (any, any) { return c.WorkerConcurrency, 16 }},
		{"flag with equals", []string{"--retry-max-elapsed=90s"}, env{"RETRY_MAX_ELAPSED": "1m"},
			func(c Config) (any, any) { return c.RetryMaxElapsed, 90 * time.Second }},
		{"flag empty disables http", []string{"-http-addr="}, env{"HTTP_ADDR": "127.0.0.1:9"},
			func(c Config) (any, any) { return c.HTTPAddr, "" }},
		{"flag empty redis uses kv", []string{"-redis-url", ""}, env{"REDIS_URL": "redis://r:6379"},
			func(c Config) (any, any) { return c.KVStore(), true }},
		{"secret flag beats env file", []string{"-paymentoptions-api-key", "from-flag"},
			with(poEnv(), "PAYMENTOPTIONS_API_KEY", "", "PAYMENTOPTIONS_API_KEY_FILE", "/nonexistent"),
			func(c Config) (any, any) { return c.PaymentOptionsAPIKey.Reveal(), "from-flag" }},
		{"secret file flag", []string{"-paymentoptions-api-key-file", "/run/secrets/po"}, with(poEnv(), "PAYMENTOPTIONS_API_KEY", ""),
			func(c Config) (any, any) { return c.PaymentOptionsAPIKey.Reveal(), "from-file" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, tt.env.get, files{"/run/secrets/po": "from-file\n"}.read)
			if err != nil {
				t.Fatalf("parseConfig(%q) error = %v, want nil", tt.args, err)
			}
			if got, want := tt.check(c); got != want {
				t.Errorf("parseConfig(%q) = %v, want %v", tt.args, got, want)
			}
		})
	}
}

func TestParseConfigArgs(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-nope"}, "flag provided but not defined: -nope"},
		{[]string{"extra"}, `unexpected argument "extra" (settings are flags such as -nats-url or environment variables)`},
		{[]string{"-worker-concurrency", "x"}, `WORKER_CONCURRENCY: "x" is not a whole number`},
	}
	for _, tt := range tests {
		_, err := parse(tt.args, env{})
		if err == nil || err.Error() != tt.want {
			t.Errorf("parseConfig(%q) error = %v, want %q", tt.args, err, tt.want)
		}
	}
	for _, args := range [][]string{{"-h"}, {"--help"}} {
		if _, err := parse(args, env{}); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("parseConfig(%q) error = %v, want flag.ErrHelp", args, err)
		}
	}
}

func TestParseConfigSecretFiles(t *testing.T) {
	fsys := files{
		"/s/key":    "k-from-file\n",
		"/s/xkey":   "x-from-file\r\n",
		"/s/token":  "t-from-file",
		"/s/secret": "cs-from-file\n",
		"/s/empty":  "\n",
	}
	tests := []struct {
		name    string
		env     env
		check   func(c Config) (got, want string)
		wantErr string
	}{
		{name: "api keys from files",
			env: env{"PAYMENTOPTIONS_BASE_URL": "https://po.example.com", "PAYMENTOPTIONS_API_KEY_FILE": "/s/key", "PAYMENTOPTIONS_X_API_KEY_FILE": "/s/xkey"},
			check: func(c Config) (string, string) {
				return c.PaymentOptionsAPIKey.Reveal() + "," + c.PaymentOptionsXAPIKey.Reveal(), "k-from-file,x-from-file"
			}},
		{name: "sibs token from file",
			env:   with(sibsEnv(), "SIBS_TOKEN", "", "SIBS_TOKEN_FILE", "/s/token"),
			check: func(c Config) (string, string) { return c.SIBSToken.Reveal(), "t-from-file" }},
		{name: "sibs client secret from file",
			env:   with(sibsEnv(), "SIBS_TOKEN", "", "SIBS_TOKEN_URL", "https://auth.example.com", "SIBS_CLIENT_SECRET_FILE", "/s/secret"),
			check: func(c Config) (string, string) { return c.SIBSClientSecret.Reveal(), "cs-from-file" }},
		{name: "both set",
			env:     with(poEnv(), "PAYMENTOPTIONS_API_KEY_FILE", "/s/key"),
			wantErr: "PAYMENTOPTIONS_API_KEY: set either PAYMENTOPTIONS_API_KEY or PAYMENTOPTIONS_API_KEY_FILE, not both"},
		{name: "missing file",
			env:     with(sibsEnv(), "SIBS_TOKEN", "", "SIBS_TOKEN_FILE", "/s/nope"),
			wantErr: "SIBS_TOKEN_FILE: open /s/nope: file does not exist"},
		{name: "empty file",
			env:     with(poEnv(), "PAYMENTOPTIONS_X_API_KEY", "", "PAYMENTOPTIONS_X_API_KEY_FILE", "/s/empty"),
			wantErr: "PAYMENTOPTIONS_X_API_KEY_FILE: file /s/empty is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(nil, tt.env.get, fsys.read)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parseConfig(%v) error = %v, want %q", tt.env, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig(%v) error = %v, want nil", tt.env, err)
			}
			if got, want := tt.check(c); got != want {
				t.Errorf("secret = %q, want %q", got, want)
			}
		})
	}
}

func TestConfigRedaction(t *testing.T) {
	secrets := []string{"po-key-123", "po-xkey-456", "sibs-token-789", "redis-pw-000", "nats-pw-111", "oauth-cs-222"}
	e := with(poEnv(), "REDIS_URL", "redis://user:redis-pw-000@redis:6379/0", "NATS_URL", "nats://u:nats-pw-111@n1:4222,n2:4222")
	maps.Copy(e, sibsEnv())
	c, err := parseConfig(nil, e.get, files{}.read)
	if err != nil {
		t.Fatalf("parseConfig error = %v, want nil", err)
	}
	c.SIBSClientSecret = "oauth-cs-222" // not valid with a token, but must still be hidden

	var js bytes.Buffer
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", "config", c, "key", c.PaymentOptionsAPIKey)
	var text bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "config", c, "token", c.SIBSToken)
	marshalled, err := json.Marshal(struct{ K, T Secret }{c.PaymentOptionsAPIKey, c.SIBSToken})
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v %+v %#v":  fmt.Sprintf("%v %+v %#v", c, c, c),
		"%s %d %x %q": fmt.Sprintf("%s %d %x %q", c.SIBSToken, c.SIBSToken, c.SIBSToken, c.SIBSToken),
		"pointer":     fmt.Sprintf("%v %+v", &c, &c),
		"slog json":   js.String(),
		"slog text":   text.String(),
		"json":        string(marshalled),
	}
	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s output contains secret %q:\n%s", name, s, out)
			}
		}
		if !strings.Contains(out, "[REDACTED]") && name != "pointer" {
			t.Errorf("%s output lacks [REDACTED]:\n%s", name, out)
		}
	}
	if got := fmt.Sprint(Secret("")); got != "" {
		t.Errorf("Secret(\"\") prints %q, want \"\"", got)
	}
}

func TestUsage(t *testing.T) {
	var b bytes.Buffer
	usage(&b)
	out := b.String()
	for _, s := range settings() {
		if !strings.Contains(out, s.name) {
			t.Errorf("usage lacks %s", s.name)
		}
	}
	for _, want := range []string{"-nats-url", "PAYMENTOPTIONS_API_KEY_FILE", "127.0.0.1:4333"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}
