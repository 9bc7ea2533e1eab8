package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/streams"
)

// Gateway names accepted by DEFAULT_GATEWAY and GATEWAY_ROUTES.
const (
	GatewayPaymentOptions = "paymentoptions"
	GatewaySIBS           = "sibs"
)

// Redis modes accepted by REDIS_MODE.
const (
	RedisStandalone = "standalone"
	RedisSentinel   = "sentinel"
	RedisCluster    = "cluster"
)

// Config is the worker's configuration, parsed once by parseConfig from flags
// and environment variables (SPEC §6). Every field is valid once parseConfig
// returns it without error.
type Config struct {
	// NATSURL is NATS_URL: one or more comma-separated server URLs. Empty runs
	// an embedded NATS server with JetStream (see EmbeddedNATS).
	NATSURL string
	// NATSCreds is NATS_CREDS, the path of a NATS credentials file; optional.
	NATSCreds string
	// NATSUser and NATSPassword are NATS_USER and NATS_PASSWORD (or
	// NATS_PASSWORD_FILE): a user of deploy/nats/permissions.conf.
	NATSUser     string
	NATSPassword Secret
	// NATSNKeySeedFile is NATS_NKEY_SEED_FILE, a file holding an NKEY user
	// seed (SU...) to sign the server's challenge with.
	NATSNKeySeedFile string
	// NATSTLSCA, NATSTLSCert and NATSTLSKey are NATS_TLS_CA, NATS_TLS_CERT
	// and NATS_TLS_KEY: the PEM files of the CAs trusted to sign the NATS
	// servers' certificates (set, NATS is always TLS), and of a client
	// certificate and its key, both or neither.
	NATSTLSCA, NATSTLSCert, NATSTLSKey string
	// NATSInboxPrefix is NATS_INBOX_PREFIX, the first token of the
	// connection's reply subjects, which the payworker role may subscribe
	// to.
	NATSInboxPrefix string
	// EmbeddedNATSAddr is EMBEDDED_NATS_ADDR, the host:port of the embedded
	// server. Its fixed loopback port lets the publisher find it with no flags.
	EmbeddedNATSAddr string
	// DataDir is DATA_DIR, where the embedded server keeps its JetStream store.
	DataDir string

	// RedisURL is REDIS_URL (schemes redis, rediss, unix). Nil keeps
	// idempotency keys in a JetStream key-value bucket (see KVStore).
	RedisURL *url.URL
	// RedisMode is REDIS_MODE, how RedisURL is read: RedisStandalone (one
	// server, redis.ParseURL), RedisSentinel (the sentinels of a master,
	// redis.ParseFailoverURL) or RedisCluster (nodes of a Redis Cluster,
	// redis.ParseClusterURL). RedisURL parses in that mode.
	RedisMode string
	// RedisUsername and RedisPassword are REDIS_USERNAME and REDIS_PASSWORD
	// (or REDIS_PASSWORD_FILE): the ACL user the worker authenticates as on
	// every server of RedisMode, the sentinels included unless RedisURL's
	// user info names theirs. Empty, RedisURL's credentials (if any) apply.
	RedisUsername string
	RedisPassword Secret
	// RedisTLSCA, RedisTLSCert and RedisTLSKey are REDIS_TLS_CA,
	// REDIS_TLS_CERT and REDIS_TLS_KEY: the PEM files of the authorities
	// trusted, instead of the system's, to sign the Redis servers'
	// certificates, and of a client certificate and its key. They need a
	// rediss:// RedisURL. RedisTLS holds what they hold, read by
	// parseConfig.
	RedisTLSCA, RedisTLSCert, RedisTLSKey string
	RedisTLS                              TLSFiles

	// PaymentOptionsBaseURL is PAYMENTOPTIONS_BASE_URL. Nil starts the sandbox
	// gateway in-process (see Sandbox).
	PaymentOptionsBaseURL *url.URL
	// PaymentOptionsAPIKey and PaymentOptionsXAPIKey are
	// PAYMENTOPTIONS_API_KEY and PAYMENTOPTIONS_X_API_KEY; both are required
	// when PaymentOptionsBaseURL is set.
	PaymentOptionsAPIKey  Secret
	PaymentOptionsXAPIKey Secret
	// PaymentOptionsTLSCA is PAYMENTOPTIONS_TLS_CA, the PEM file of the
	// authorities trusted, instead of the system's, to sign the gateway's
	// certificate (a private CA in a test setup); PaymentOptionsRoots holds
	// them, nil without it.
	PaymentOptionsTLSCA string
	PaymentOptionsRoots *x509.CertPool

	// SIBSBaseURL is SIBS_BASE_URL; SIBS is configured iff it is set (see
	// SIBSConfigured). Then SIBSClientID, SIBSTerminalID and either SIBSToken
	// or SIBSTokenURL with SIBSClientSecret are set too.
	SIBSBaseURL      *url.URL
	SIBSClientID     string
	SIBSToken        Secret
	SIBSTerminalID   string
	SIBSTokenURL     *url.URL
	SIBSClientSecret Secret
	// SIBSTLSCA is SIBS_TLS_CA, as PaymentOptionsTLSCA for SIBS and its
	// token endpoint; SIBSRoots holds its authorities.
	SIBSTLSCA string
	SIBSRoots *x509.CertPool

	// GatewayAllowHTTP is GATEWAY_ALLOW_HTTP: http:// gateway URLs
	// (PAYMENTOPTIONS_BASE_URL, SIBS_BASE_URL, SIBS_TOKEN_URL) are accepted
	// for any host, not for loopback hosts only. It is for a sandbox on
	// another host of a demo network; run warns at start about each such
	// URL (see PlainHTTPGateways).
	GatewayAllowHTTP bool

	// DefaultGateway is DEFAULT_GATEWAY: GatewayPaymentOptions or GatewaySIBS.
	DefaultGateway string
	// GatewayRoutes is GATEWAY_ROUTES: merchant id → gateway name, for the
	// merchants that do not use DefaultGateway. Never nil.
	GatewayRoutes map[string]string

	// WorkerConcurrency is WORKER_CONCURRENCY, the number of commands handled
	// at once by this process (1..4096).
	WorkerConcurrency int
	// RetryMaxElapsed is RETRY_MAX_ELAPSED, the retry budget of one command.
	RetryMaxElapsed time.Duration
	// RetryMaxAttempts is RETRY_MAX_ATTEMPTS, the most gateway calls for one
	// command (≥ 1).
	RetryMaxAttempts int
	// RetryInitialInterval and RetryMaxInterval are RETRY_INITIAL_INTERVAL and
	// RETRY_MAX_INTERVAL, the bounds of the exponential backoff.
	RetryInitialInterval time.Duration
	RetryMaxInterval     time.Duration
	// GatewayTimeout is GATEWAY_TIMEOUT, the deadline of one HTTP request.
	GatewayTimeout time.Duration
	// PaymentOptionsSettle and SIBSSettle are PAYMENTOPTIONS_SETTLE_DELAY
	// and SIBS_SETTLE_DELAY: how long after an attempt with an unknown
	// outcome that gateway's status is first asked (0 = at once).
	PaymentOptionsSettle time.Duration
	SIBSSettle           time.Duration
	// GatewayOutageWait is GATEWAY_OUTAGE_WAIT: for how long after a
	// gateway's circuit opened its commands wait in JetStream without
	// spending their retry budget (0: not at all).
	GatewayOutageWait time.Duration
	// BreakerFailures, BreakerCoolDown and BreakerMaxCoolDown are
	// GATEWAY_BREAKER_FAILURES, GATEWAY_BREAKER_COOLDOWN and
	// GATEWAY_BREAKER_MAX_COOLDOWN: a gateway's circuit opens after that many
	// failed calls in a row (or 80 % of at least 20 calls in 10 s), stays open
	// the cool-down, doubled after each failed probe up to the maximum.
	BreakerFailures    int
	BreakerCoolDown    time.Duration
	BreakerMaxCoolDown time.Duration
	// PaymentOptionsRateLimit and SIBSRateLimit are
	// PAYMENTOPTIONS_RATE_LIMIT and SIBS_RATE_LIMIT: requests per second to
	// that gateway for the whole fleet, status calls included (0: no limit).
	PaymentOptionsRateLimit int
	SIBSRateLimit           int
	// RedisWaitReplicas and RedisWaitTimeout are REDIS_WAIT_REPLICAS and
	// REDIS_WAIT_TIMEOUT: a claim counts only once that many replicas hold
	// it (WAIT); 0 waits for none.
	RedisWaitReplicas int
	RedisWaitTimeout  time.Duration
	// ShutdownTimeout is SHUTDOWN_TIMEOUT, how long shutdown waits for
	// in-flight commands.
	ShutdownTimeout time.Duration
	// IdempotencyTTL is IDEMPOTENCY_TTL, how long idempotency keys are kept;
	// never shorter than Streams.CommandsMaxAge (SPEC §4.6).
	IdempotencyTTL time.Duration
	// LeaseDuration is LEASE_DURATION, how long an idempotency claim is held
	// before another worker may take it over. It should comfortably exceed
	// GatewayTimeout unless the holder renews it while a call is in flight.
	LeaseDuration time.Duration
	// AckWait is ACK_WAIT, the consumer's ack wait.
	AckWait time.Duration
	// MaxDeliver is MAX_DELIVER, the consumer's delivery limit; -1 is
	// unlimited (the worker dead-letters by itself).
	MaxDeliver int

	// Streams holds STREAM_PREFIX, STREAM_COMMANDS, STREAM_EVENTS,
	// STREAM_DLQ, STREAM_REPLICAS, COMMANDS_MAX_AGE, EVENTS_MAX_AGE,
	// EVENTS_MAX_BYTES, DLQ_MAX_AGE, DLQ_MAX_BYTES, DUPLICATE_WINDOW and
	// CONSUMER_NAME. Their defaults are streams.Default's values.
	Streams streams.Config

	// SandboxAddr is SANDBOX_ADDR, where the in-process sandbox gateway
	// listens when PaymentOptionsBaseURL is nil.
	SandboxAddr string
	// HTTPAddr is HTTP_ADDR, where /metrics, /healthz and /readyz are served;
	// empty disables them (HTTP_ADDR=off).
	HTTPAddr string
	// LogFormat is LOG_FORMAT: "auto", "json" or "text".
	LogFormat string
	// LogLevel is LOG_LEVEL: "debug", "info", "warn" or "error".
	LogLevel string
	// WorkerID is WORKER_ID; empty lets the caller use hostname-pid.
	WorkerID string
}

// EmbeddedNATS reports whether the worker runs its own NATS server (NATS_URL
// is empty).
func (c Config) EmbeddedNATS() bool { return c.NATSURL == "" }

// KVStore reports whether idempotency keys live in a JetStream key-value
// bucket (REDIS_URL is not set).
func (c Config) KVStore() bool { return c.RedisURL == nil }

// Sandbox reports whether the PaymentOptions gateway is the in-process
// sandbox (PAYMENTOPTIONS_BASE_URL is not set).
func (c Config) Sandbox() bool { return c.PaymentOptionsBaseURL == nil }

// SIBSConfigured reports whether SIBS_BASE_URL is set.
func (c Config) SIBSConfigured() bool { return c.SIBSBaseURL != nil }

// SIBSSandbox reports whether SIBS is served by the in-process sandbox
// gateway: neither PAYMENTOPTIONS_BASE_URL nor SIBS_BASE_URL is set, so the
// sandbox started for PaymentOptions serves the SIBS endpoints too.
func (c Config) SIBSSandbox() bool { return c.Sandbox() && !c.SIBSConfigured() }

// LogValue implements slog.LogValuer: the settings that shape the process,
// with secrets and URL passwords redacted.
func (c Config) LogValue() slog.Value {
	routes := make([]string, 0, len(c.GatewayRoutes))
	for m, g := range c.GatewayRoutes {
		routes = append(routes, m+"="+g)
	}
	sort.Strings(routes)
	return slog.GroupValue(
		slog.String("nats_url", redactURLList(c.NATSURL)),
		slog.String("nats_creds", c.NATSCreds),
		slog.String("nats_user", c.NATSUser),
		slog.Any("nats_password", c.NATSPassword),
		slog.String("nats_nkey_seed_file", c.NATSNKeySeedFile),
		slog.String("nats_tls_ca", c.NATSTLSCA),
		slog.String("nats_tls_cert", c.NATSTLSCert),
		slog.String("nats_tls_key", c.NATSTLSKey),
		slog.String("nats_inbox_prefix", c.NATSInboxPrefix),
		slog.String("embedded_nats_addr", c.EmbeddedNATSAddr),
		slog.String("data_dir", c.DataDir),
		slog.String("redis_url", redactRedisURL(c.RedisURL)),
		slog.String("redis_mode", c.RedisMode),
		slog.String("redis_username", c.RedisUsername),
		slog.Any("redis_password", c.RedisPassword),
		slog.String("redis_tls_ca", c.RedisTLSCA),
		slog.String("redis_tls_cert", c.RedisTLSCert),
		slog.String("redis_tls_key", c.RedisTLSKey),
		slog.String("paymentoptions_base_url", redactURL(c.PaymentOptionsBaseURL)),
		slog.Any("paymentoptions_api_key", c.PaymentOptionsAPIKey),
		slog.Any("paymentoptions_x_api_key", c.PaymentOptionsXAPIKey),
		slog.String("paymentoptions_tls_ca", c.PaymentOptionsTLSCA),
		slog.String("sibs_base_url", redactURL(c.SIBSBaseURL)),
		slog.String("sibs_client_id", c.SIBSClientID),
		slog.Any("sibs_token", c.SIBSToken),
		slog.String("sibs_terminal_id", c.SIBSTerminalID),
		slog.String("sibs_oauth_url", redactURL(c.SIBSTokenURL)), // not "token": logging.Redact would hide it
		slog.Any("sibs_client_secret", c.SIBSClientSecret),
		slog.String("sibs_tls_ca", c.SIBSTLSCA),
		slog.Bool("gateway_allow_http", c.GatewayAllowHTTP),
		slog.String("default_gateway", c.DefaultGateway),
		slog.String("gateway_routes", strings.Join(routes, ",")),
		slog.Int("worker_concurrency", c.WorkerConcurrency),
		slog.Duration("retry_max_elapsed", c.RetryMaxElapsed),
		slog.Int("retry_max_attempts", c.RetryMaxAttempts),
		slog.Duration("retry_initial_interval", c.RetryInitialInterval),
		slog.Duration("retry_max_interval", c.RetryMaxInterval),
		slog.Duration("gateway_timeout", c.GatewayTimeout),
		slog.Duration("gateway_outage_wait", c.GatewayOutageWait),
		slog.Int("gateway_breaker_failures", c.BreakerFailures),
		slog.Duration("gateway_breaker_cooldown", c.BreakerCoolDown),
		slog.Duration("gateway_breaker_max_cooldown", c.BreakerMaxCoolDown),
		slog.Int("paymentoptions_rate_limit", c.PaymentOptionsRateLimit),
		slog.Int("sibs_rate_limit", c.SIBSRateLimit),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Duration("idempotency_ttl", c.IdempotencyTTL),
		slog.Duration("lease_duration", c.LeaseDuration),
		slog.Duration("ack_wait", c.AckWait),
		slog.Int("max_deliver", c.MaxDeliver),
		slog.String("stream_prefix", c.Streams.Prefix),
		slog.String("stream_commands", c.Streams.Commands),
		slog.String("stream_events", c.Streams.Events),
		slog.String("stream_dlq", c.Streams.DLQ),
		slog.Int("stream_replicas", c.Streams.Replicas),
		slog.Duration("commands_max_age", c.Streams.CommandsMaxAge),
		slog.Duration("events_max_age", c.Streams.EventsMaxAge),
		slog.Int64("events_max_bytes", c.Streams.EventsMaxBytes),
		slog.Duration("dlq_max_age", c.Streams.DLQMaxAge),
		slog.Int64("dlq_max_bytes", c.Streams.DLQMaxBytes),
		slog.Duration("duplicate_window", c.Streams.DuplicateWindow),
		slog.String("consumer_name", c.Streams.Consumer),
		slog.String("sandbox_addr", c.SandboxAddr),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel),
		slog.String("worker_id", c.WorkerID),
	)
}

// String renders the configuration as key=value pairs with secrets and URL
// passwords redacted, so that %v and %+v never print a credential.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("{")
	for i, a := range c.LogValue().Group() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", a.Key, a.Value)
	}
	b.WriteString("}")
	return b.String()
}

// GoString is String prefixed with the type name, so that %#v never prints a
// credential either.
func (c Config) GoString() string { return "main.Config" + c.String() }

// redactURL is u with any password masked, or "" for nil.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Redacted()
}

// redactURLList masks the passwords of a comma-separated list of URLs.
func redactURLList(s string) string {
	if s == "" {
		return ""
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = maskUserinfo(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// maskUserinfo masks the password (or a lone user, which is often a token)
// in a URL's userinfo as url.URL.Redacted does, without needing s to parse.
func maskUserinfo(s string) string {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + 3
	}
	authority := s[start:]
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	masked := "xxxxx"
	if hasPassword {
		masked = user + ":xxxxx"
	}
	return s[:start] + masked + s[start+at:]
}

// Secret is a credential. It prints, logs and marshals as "[REDACTED]" (an
// empty Secret as ""); only Reveal gives its value.
type Secret string

const redacted = "[REDACTED]"

// Reveal returns the secret's value. Call it only where the value is sent to
// the party it belongs to.
func (s Secret) Reveal() string { return string(s) }

// String returns "[REDACTED]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns String quoted, for %#v.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// Format implements fmt.Formatter so that no verb (%d, %x, ...) prints the
// value.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'), verb == 'q':
		io.WriteString(f, s.GoString())
	default:
		io.WriteString(f, s.String())
	}
}

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText implements encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// VarError is a problem with one configuration variable.
type VarError struct {
	// Var is the environment variable's name, e.g. "REDIS_URL".
	Var string
	Err error
}

// Error returns "VAR: problem".
func (e *VarError) Error() string { return e.Var + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *VarError) Unwrap() error { return e.Err }

// setting is one configuration variable: its name, default, description and
// how it is stored in a Config.
type setting struct {
	name string
	def  string
	desc string
	// secret settings may also be given in a file named by <name>_FILE.
	secret bool
	// set parses v (the flag's, the environment's or the default value) into
	// c. It returns an error without the variable's name.
	set func(c *Config, v string) error
}

// settings lists every variable in the order usage prints them.
func settings() []setting {
	all := []setting{
		{name: "NATS_URL", def: "", desc: "NATS server URLs, comma-separated; empty runs an embedded NATS server",
			set: func(c *Config, v string) (err error) { c.NATSURL, err = natsURLs(v); return err }},
		{name: "NATS_CREDS", def: "", desc: "NATS credentials file",
			set: func(c *Config, v string) error { c.NATSCreds = v; return nil }},
		{name: "NATS_USER", def: "", desc: "NATS user (payworker in deploy/nats/permissions.conf), with NATS_PASSWORD",
			set: func(c *Config, v string) error { c.NATSUser = v; return nil }},
		{name: "NATS_PASSWORD", secret: true, desc: "password of NATS_USER",
			set: func(c *Config, v string) error { c.NATSPassword = Secret(v); return nil }},
		{name: "NATS_NKEY_SEED_FILE", def: "", desc: "file holding the NATS NKEY user seed (SU...), instead of NATS_USER or NATS_CREDS",
			set: func(c *Config, v string) error { c.NATSNKeySeedFile = v; return nil }},
		{name: "NATS_TLS_CA", def: "", desc: "PEM file of the CAs that sign the NATS servers' certificates, trusted instead of the system's; set, NATS is always TLS",
			set: func(c *Config, v string) error { c.NATSTLSCA = v; return nil }},
		{name: "NATS_TLS_CERT", def: "", desc: "PEM client certificate for NATS servers that verify clients, with NATS_TLS_KEY",
			set: func(c *Config, v string) error { c.NATSTLSCert = v; return nil }},
		{name: "NATS_TLS_KEY", def: "", desc: "PEM private key of NATS_TLS_CERT",
			set: func(c *Config, v string) error { c.NATSTLSKey = v; return nil }},
		{name: "NATS_INBOX_PREFIX", def: "_INBOX_payworker", desc: "first token of the worker's NATS reply subjects: the payworker role may subscribe to <prefix>.> and no other role may",
			set: func(c *Config, v string) error { c.NATSInboxPrefix = v; return nil }},
		{name: "EMBEDDED_NATS_ADDR", def: "127.0.0.1:4333", desc: "host:port of the embedded NATS server",
			set: func(c *Config, v string) (err error) { c.EmbeddedNATSAddr, err = hostPort(v); return err }},
		{name: "DATA_DIR", def: "./payworker-data", desc: "directory of the embedded NATS server's JetStream store",
			set: func(c *Config, v string) error {
				if v == "" {
					return errors.New("must not be empty")
				}
				c.DataDir = v
				return nil
			}},
		{name: "REDIS_URL", def: "", desc: "Redis for idempotency keys (redis://, rediss://, unix://); with REDIS_MODE=sentinel the sentinels' failover URL, with cluster the cluster nodes' URL; empty uses a JetStream key-value bucket",
			set: func(c *Config, v string) (err error) { c.RedisURL, err = redisURL(v); return err }},
		{name: "REDIS_MODE", def: RedisStandalone, desc: "how REDIS_URL is read: standalone (one server), sentinel (go-redis failover URL: redis://s1:26379?master_name=M&addr=s2:26379) or cluster (redis://n1:6379?addr=n2:6379)",
			set: func(c *Config, v string) (err error) {
				c.RedisMode, err = oneOf(v, RedisStandalone, RedisSentinel, RedisCluster)
				return err
			}},
		{name: "REDIS_USERNAME", def: "", desc: "Redis ACL user of the worker, on every server of REDIS_MODE (the sentinels too unless REDIS_URL's user info names theirs)",
			set: func(c *Config, v string) error { c.RedisUsername = v; return nil }},
		{name: "REDIS_PASSWORD", secret: true, desc: "password of REDIS_USERNAME (or of the default user), kept out of REDIS_URL",
			set: func(c *Config, v string) error { c.RedisPassword = Secret(v); return nil }},
		{name: "REDIS_TLS_CA", def: "", desc: "PEM file of the CAs that sign the Redis servers' certificates, trusted instead of the system's; needs rediss://",
			set: func(c *Config, v string) error { c.RedisTLSCA = v; return nil }},
		{name: "REDIS_TLS_CERT", def: "", desc: "PEM client certificate for Redis servers that require one, with REDIS_TLS_KEY; needs rediss://",
			set: func(c *Config, v string) error { c.RedisTLSCert = v; return nil }},
		{name: "REDIS_TLS_KEY", def: "", desc: "PEM private key of REDIS_TLS_CERT",
			set: func(c *Config, v string) error { c.RedisTLSKey = v; return nil }},
		// GATEWAY_ALLOW_HTTP comes before the gateway URLs: their set
		// functions read it.
		{name: "GATEWAY_ALLOW_HTTP", def: "false", desc: "true accepts http:// gateway URLs for any host, not only loopback ones, and warns at start; for a sandbox in a demo network only (keys and card data cross it unencrypted)",
			set: func(c *Config, v string) error {
				b, err := oneOf(v, "true", "false")
				c.GatewayAllowHTTP = b == "true"
				return err
			}},
		{name: "PAYMENTOPTIONS_BASE_URL", def: "", desc: "PaymentOptions API base URL; empty starts the sandbox gateway in-process",
			set: func(c *Config, v string) (err error) {
				c.PaymentOptionsBaseURL, err = gatewayURL(v, c.GatewayAllowHTTP)
				return err
			}},
		{name: "PAYMENTOPTIONS_API_KEY", secret: true, desc: "PaymentOptions API key; required with PAYMENTOPTIONS_BASE_URL",
			set: func(c *Config, v string) error { c.PaymentOptionsAPIKey = Secret(v); return nil }},
		{name: "PAYMENTOPTIONS_X_API_KEY", secret: true, desc: "PaymentOptions X-Api-Key; required with PAYMENTOPTIONS_BASE_URL",
			set: func(c *Config, v string) error { c.PaymentOptionsXAPIKey = Secret(v); return nil }},
		{name: "PAYMENTOPTIONS_TLS_CA", def: "", desc: "PEM file of a private CA (test setups) trusted instead of the system's for PaymentOptions",
			set: func(c *Config, v string) error { c.PaymentOptionsTLSCA = v; return nil }},
		{name: "SIBS_BASE_URL", def: "", desc: "SIBS API base URL; SIBS is configured only when it is set",
			set: func(c *Config, v string) (err error) {
				c.SIBSBaseURL, err = gatewayURL(v, c.GatewayAllowHTTP)
				return err
			}},
		{name: "SIBS_CLIENT_ID", desc: "SIBS client id",
			set: func(c *Config, v string) error { c.SIBSClientID = v; return nil }},
		{name: "SIBS_TOKEN", secret: true, desc: "SIBS bearer token (or SIBS_TOKEN_URL with SIBS_CLIENT_SECRET)",
			set: func(c *Config, v string) error { c.SIBSToken = Secret(v); return nil }},
		{name: "SIBS_TERMINAL_ID", desc: "SIBS terminal id, up to 10 digits",
			set: func(c *Config, v string) error {
				if v != "" && !terminalID.MatchString(v) {
					return fmt.Errorf("%q is not 1 to 10 digits", v)
				}
				c.SIBSTerminalID = v
				return nil
			}},
		{name: "SIBS_TOKEN_URL", desc: "SIBS OAuth token endpoint",
			set: func(c *Config, v string) (err error) {
				c.SIBSTokenURL, err = gatewayURL(v, c.GatewayAllowHTTP)
				return err
			}},
		{name: "SIBS_CLIENT_SECRET", secret: true, desc: "SIBS OAuth client secret, with SIBS_TOKEN_URL",
			set: func(c *Config, v string) error { c.SIBSClientSecret = Secret(v); return nil }},
		{name: "SIBS_TLS_CA", def: "", desc: "PEM file of a private CA (test setups) trusted instead of the system's for SIBS and SIBS_TOKEN_URL",
			set: func(c *Config, v string) error { c.SIBSTLSCA = v; return nil }},
		{name: "DEFAULT_GATEWAY", def: GatewayPaymentOptions, desc: "gateway of merchants not in GATEWAY_ROUTES: paymentoptions or sibs",
			set: func(c *Config, v string) (err error) { c.DefaultGateway, err = gatewayName(v); return err }},
		{name: "GATEWAY_ROUTES", def: "", desc: "per-merchant gateways: merchantA=sibs,merchantB=paymentoptions",
			set: func(c *Config, v string) (err error) { c.GatewayRoutes, err = routes(v); return err }},
		{name: "WORKER_CONCURRENCY", def: "128", desc: "commands handled at once (1..4096); size it to the target rate × the gateway latency",
			set: func(c *Config, v string) (err error) { c.WorkerConcurrency, err = intIn(v, 1, 4096); return err }},
		{name: "RETRY_MAX_ELAPSED", def: "2m", desc: "retry budget of one command",
			set: func(c *Config, v string) (err error) { c.RetryMaxElapsed, err = positiveDuration(v); return err }},
		{name: "RETRY_MAX_ATTEMPTS", def: "10", desc: "most gateway calls for one command (≥ 1)",
			set: func(c *Config, v string) (err error) { c.RetryMaxAttempts, err = intAtLeast(v, 1); return err }},
		{name: "RETRY_INITIAL_INTERVAL", def: "200ms", desc: "first retry backoff",
			set: func(c *Config, v string) (err error) { c.RetryInitialInterval, err = positiveDuration(v); return err }},
		{name: "RETRY_MAX_INTERVAL", def: "10s", desc: "longest retry backoff",
			set: func(c *Config, v string) (err error) { c.RetryMaxInterval, err = positiveDuration(v); return err }},
		{name: "GATEWAY_TIMEOUT", def: "15s", desc: "deadline of one gateway HTTP request",
			set: func(c *Config, v string) (err error) { c.GatewayTimeout, err = positiveDuration(v); return err }},
		{name: "PAYMENTOPTIONS_SETTLE_DELAY", def: "2s", desc: "after a PaymentOptions call with an unknown outcome, wait this long before asking its status (0 = at once)",
			set: func(c *Config, v string) (err error) {
				c.PaymentOptionsSettle, err = nonNegativeDuration(v)
				return err
			}},
		{name: "SIBS_SETTLE_DELAY", def: "2s", desc: "after a SIBS call with an unknown outcome, wait this long before asking its status (0 = at once)",
			set: func(c *Config, v string) (err error) { c.SIBSSettle, err = nonNegativeDuration(v); return err }},
		{name: "GATEWAY_OUTAGE_WAIT", def: "30m", desc: "while a gateway's circuit is open, its commands wait in JetStream without spending their retry budget, for up to this long after it opened; then they may be dead-lettered as gateway_unavailable (0 = no pause)",
			set: func(c *Config, v string) (err error) { c.GatewayOutageWait, err = nonNegativeDuration(v); return err }},
		{name: "GATEWAY_BREAKER_FAILURES", def: "10", desc: "a gateway's circuit opens after this many calls in a row fail (transport errors, timeouts, 5xx), or 80 % of at least 20 calls in 10 s",
			set: func(c *Config, v string) (err error) { c.BreakerFailures, err = intIn(v, 1, 10_000); return err }},
		{name: "GATEWAY_BREAKER_COOLDOWN", def: "5s", desc: "how long an opened circuit waits before a probe call; doubled after each failed probe",
			set: func(c *Config, v string) (err error) { c.BreakerCoolDown, err = positiveDuration(v); return err }},
		{name: "GATEWAY_BREAKER_MAX_COOLDOWN", def: "60s", desc: "the longest cool-down, at least GATEWAY_BREAKER_COOLDOWN",
			set: func(c *Config, v string) (err error) { c.BreakerMaxCoolDown, err = positiveDuration(v); return err }},
		{name: "PAYMENTOPTIONS_RATE_LIMIT", def: "0", desc: "requests per second to PaymentOptions for the whole fleet, status calls included (0 = unlimited)",
			set: func(c *Config, v string) (err error) {
				c.PaymentOptionsRateLimit, err = intIn(v, 0, 1_000_000)
				return err
			}},
		{name: "SIBS_RATE_LIMIT", def: "0", desc: "requests per second to SIBS for the whole fleet, status calls included (0 = unlimited)",
			set: func(c *Config, v string) (err error) { c.SIBSRateLimit, err = intIn(v, 0, 1_000_000); return err }},
		{name: "REDIS_WAIT_REPLICAS", def: "0", desc: "replicas that must acknowledge a claim (Redis WAIT) before the gateway is called; 0 waits for none",
			set: func(c *Config, v string) (err error) { c.RedisWaitReplicas, err = intIn(v, 0, 16); return err }},
		{name: "REDIS_WAIT_TIMEOUT", def: "500ms", desc: "how long a claim waits for REDIS_WAIT_REPLICAS; past it the command waits (fail closed)",
			set: func(c *Config, v string) (err error) { c.RedisWaitTimeout, err = positiveDuration(v); return err }},
		{name: "SHUTDOWN_TIMEOUT", def: "30s", desc: "how long shutdown waits for in-flight commands",
			set: func(c *Config, v string) (err error) { c.ShutdownTimeout, err = positiveDuration(v); return err }},
		{name: "IDEMPOTENCY_TTL", def: "168h", desc: "retention of idempotency keys, not shorter than COMMANDS_MAX_AGE",
			set: func(c *Config, v string) (err error) { c.IdempotencyTTL, err = positiveDuration(v); return err }},
		{name: "LEASE_DURATION", def: "30s", desc: "how long an idempotency claim is held; keep it above GATEWAY_TIMEOUT",
			set: func(c *Config, v string) (err error) { c.LeaseDuration, err = positiveDuration(v); return err }},
		{name: "ACK_WAIT", def: "30s", desc: "JetStream consumer ack wait",
			set: func(c *Config, v string) (err error) { c.AckWait, err = positiveDuration(v); return err }},
		{name: "MAX_DELIVER", def: "-1", desc: "JetStream consumer delivery limit; -1 is unlimited",
			set: func(c *Config, v string) error {
				n, err := wholeNumber(v)
				if err != nil {
					return err
				}
				if n != -1 && n < 1 {
					return fmt.Errorf("must be -1 (unlimited) or ≥ 1, got %d", n)
				}
				c.MaxDeliver = n
				return nil
			}},
	}
	all = append(all, streamSettings()...)
	return append(all, []setting{
		{name: "SANDBOX_ADDR", def: "127.0.0.1:8099", desc: "listen address of the in-process sandbox gateway",
			set: func(c *Config, v string) (err error) { c.SandboxAddr, err = hostPort(v); return err }},
		{name: "HTTP_ADDR", def: "127.0.0.1:8080", desc: "listen address of /metrics, /healthz and /readyz; off disables",
			set: func(c *Config, v string) (err error) {
				if v == "" || v == "off" {
					c.HTTPAddr = ""
					return nil
				}
				c.HTTPAddr, err = hostPort(v)
				return err
			}},
		{name: "LOG_FORMAT", def: "auto", desc: "auto (text on a terminal, JSON otherwise), json or text",
			set: func(c *Config, v string) (err error) { c.LogFormat, err = oneOf(v, "auto", "json", "text"); return err }},
		{name: "LOG_LEVEL", def: "info", desc: "debug, info, warn or error",
			set: func(c *Config, v string) (err error) {
				c.LogLevel, err = oneOf(v, "debug", "info", "warn", "error")
				return err
			}},
		{name: "WORKER_ID", def: "", desc: "this worker's name in logs and events; empty uses hostname-pid",
			set: func(c *Config, v string) error { c.WorkerID = v; return nil }},
	}...)
}

// streamSettings are streams.Settings as the worker's settings, read into
// Config.Streams: `publisher provision` reads the same names with the same
// rules, so both provision the same streams from the same environment. The
// worker's descriptions say what only it checks or does.
func streamSettings() []setting {
	desc := map[string]string{
		"DLQ_MAX_AGE":   "retention of the dead-letter stream, longer than IDEMPOTENCY_TTL",
		"DLQ_MAX_BYTES": "size bound of the dead-letter stream; when full it refuses dead letters and the worker keeps the command",
	}
	var out []setting
	for _, ss := range streams.Settings() {
		d, ok := desc[ss.Name]
		if !ok {
			d = ss.Desc
		}
		out = append(out, setting{name: ss.Name, def: ss.Default, desc: d,
			set: func(c *Config, v string) error { return ss.Set(&c.Streams, v) }})
	}
	return out
}

// flagName is the flag mirroring an environment variable: NATS_URL → nats-url.
func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(env), "_", "-")
}

// parseConfig parses args (the command line without the program name) and
// the environment into a Config. A flag beats its environment variable, which
// beats the default; an empty environment variable counts as unset. Secrets
// may be given as <NAME>_FILE, read with readFile and trimmed of a trailing
// newline. It returns flag.ErrHelp for -h, and otherwise every problem found,
// joined, each a *VarError naming its variable.
func parseConfig(args []string, getenv func(string) string, readFile func(string) ([]byte, error)) (Config, error) {
	all := settings()
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, s := range all {
		fs.String(flagName(s.name), "", s.desc)
		if s.secret {
			fs.String(flagName(s.name+"_FILE"), "", "file holding "+s.name)
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (settings are flags such as -nats-url or environment variables)", fs.Arg(0))
	}
	flags := make(map[string]string)
	fs.Visit(func(f *flag.Flag) { flags[f.Name] = f.Value.String() })

	// layer returns a variable's value from the flags or, failing that, the
	// environment.
	fromFlag := func(name string) (string, bool) {
		v, ok := flags[flagName(name)]
		return v, ok
	}
	fromEnv := func(name string) (string, bool) {
		v := getenv(name)
		return v, v != ""
	}

	c := Config{Streams: streams.Default()}
	var errs []error
	fail := func(name string, err error) { errs = append(errs, &VarError{Var: name, Err: err}) }
	raw := make(map[string]string) // as given, for messages
	bad := make(map[string]bool)   // variables already reported
	valid := func(names ...string) bool {
		for _, n := range names {
			if bad[n] {
				return false
			}
		}
		return true
	}

	for _, s := range all {
		v, err := resolve(s, fromFlag, fromEnv, readFile)
		if err != nil {
			errs = append(errs, err)
			bad[s.name] = true
			continue
		}
		raw[s.name] = v
		if err := s.set(&c, v); err != nil {
			fail(s.name, err)
			bad[s.name] = true
		}
	}

	errs = append(errs, checkNATS(c, readFile, valid)...)

	// Relations between variables, checked only between valid ones so that
	// no problem is reported twice in other words.
	if valid("IDEMPOTENCY_TTL", "COMMANDS_MAX_AGE") && c.IdempotencyTTL < c.Streams.CommandsMaxAge {
		fail("IDEMPOTENCY_TTL", fmt.Errorf("%s is shorter than the commands stream's max age %s (SPEC §4.6)",
			raw["IDEMPOTENCY_TTL"], c.Streams.CommandsMaxAge))
	}
	if valid("DUPLICATE_WINDOW", "COMMANDS_MAX_AGE") && c.Streams.DuplicateWindow > c.Streams.CommandsMaxAge {
		fail("DUPLICATE_WINDOW", fmt.Errorf("%s is longer than COMMANDS_MAX_AGE %s; JetStream needs the window within the max age",
			raw["DUPLICATE_WINDOW"], c.Streams.CommandsMaxAge))
	}
	if valid("EVENTS_MAX_AGE", "DUPLICATE_WINDOW") && c.Streams.EventsMaxAge < c.Streams.DuplicateWindow {
		fail("EVENTS_MAX_AGE", fmt.Errorf("%s is shorter than DUPLICATE_WINDOW %s; JetStream needs the window within the max age",
			raw["EVENTS_MAX_AGE"], c.Streams.DuplicateWindow))
	}
	if valid("GATEWAY_BREAKER_COOLDOWN", "GATEWAY_BREAKER_MAX_COOLDOWN") && c.BreakerMaxCoolDown < c.BreakerCoolDown {
		fail("GATEWAY_BREAKER_MAX_COOLDOWN", fmt.Errorf("%s is shorter than GATEWAY_BREAKER_COOLDOWN %s; the cool-down only grows",
			raw["GATEWAY_BREAKER_MAX_COOLDOWN"], c.BreakerCoolDown))
	}
	if valid("DLQ_MAX_AGE", "IDEMPOTENCY_TTL") && c.Streams.DLQMaxAge <= c.IdempotencyTTL {
		fail("DLQ_MAX_AGE", fmt.Errorf("%s is not longer than IDEMPOTENCY_TTL %s; dead letters must outlive their keys so that an uncertain one can still be replayed and reconciled",
			raw["DLQ_MAX_AGE"], c.IdempotencyTTL))
	}
	if valid("REDIS_URL", "REDIS_MODE") {
		if err := checkRedisMode(c.RedisMode, c.RedisURL); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, checkRedisSecurity(&c, readFile, valid)...)
	errs = append(errs, checkGatewayCAs(&c, readFile, valid)...)
	if valid("REDIS_MODE", "REDIS_WAIT_REPLICAS") && c.RedisMode == RedisCluster && c.RedisWaitReplicas > 0 {
		fail("REDIS_WAIT_REPLICAS", errors.New("must be 0 with REDIS_MODE=cluster: WAIT counts the replicas of one connection's server, and a cluster client spreads claims over the masters (set min-replicas-to-write on the masters instead)"))
	}
	if valid("RETRY_MAX_INTERVAL", "RETRY_INITIAL_INTERVAL") && c.RetryMaxInterval < c.RetryInitialInterval {
		fail("RETRY_MAX_INTERVAL", fmt.Errorf("%s is shorter than RETRY_INITIAL_INTERVAL %s",
			raw["RETRY_MAX_INTERVAL"], c.RetryInitialInterval))
	}
	if !c.Sandbox() {
		if c.PaymentOptionsAPIKey == "" && valid("PAYMENTOPTIONS_API_KEY") {
			fail("PAYMENTOPTIONS_API_KEY", errors.New("required when PAYMENTOPTIONS_BASE_URL is set (or set PAYMENTOPTIONS_API_KEY_FILE)"))
		}
		if c.PaymentOptionsXAPIKey == "" && valid("PAYMENTOPTIONS_X_API_KEY") {
			fail("PAYMENTOPTIONS_X_API_KEY", errors.New("required when PAYMENTOPTIONS_BASE_URL is set (or set PAYMENTOPTIONS_X_API_KEY_FILE)"))
		}
	}
	switch {
	case !valid("SIBS_BASE_URL"):
		// Whether SIBS is configured is unknown: check nothing more.
	case c.SIBSConfigured():
		if c.SIBSClientID == "" {
			fail("SIBS_CLIENT_ID", errors.New("required when SIBS_BASE_URL is set"))
		}
		if c.SIBSTerminalID == "" && valid("SIBS_TERMINAL_ID") {
			fail("SIBS_TERMINAL_ID", errors.New("required when SIBS_BASE_URL is set"))
		}
		if !valid("SIBS_TOKEN", "SIBS_TOKEN_URL", "SIBS_CLIENT_SECRET") {
			break
		}
		oauth := c.SIBSTokenURL != nil || c.SIBSClientSecret != ""
		switch {
		case c.SIBSToken != "" && oauth:
			fail("SIBS_TOKEN", errors.New("set either SIBS_TOKEN or SIBS_TOKEN_URL with SIBS_CLIENT_SECRET, not both"))
		case c.SIBSToken == "" && !oauth:
			fail("SIBS_TOKEN", errors.New("required when SIBS_BASE_URL is set (or SIBS_TOKEN_URL with SIBS_CLIENT_SECRET)"))
		case c.SIBSTokenURL == nil && c.SIBSClientSecret != "":
			fail("SIBS_TOKEN_URL", errors.New("required with SIBS_CLIENT_SECRET"))
		case c.SIBSTokenURL != nil && c.SIBSClientSecret == "":
			fail("SIBS_CLIENT_SECRET", errors.New("required with SIBS_TOKEN_URL"))
		}
	default:
		for _, name := range []string{"SIBS_CLIENT_ID", "SIBS_TOKEN", "SIBS_TERMINAL_ID", "SIBS_TOKEN_URL", "SIBS_CLIENT_SECRET"} {
			if raw[name] != "" && valid(name) {
				fail(name, errors.New("set, but SIBS_BASE_URL is not; SIBS is configured only when SIBS_BASE_URL is set"))
			}
		}
		if c.SIBSSandbox() || !valid("PAYMENTOPTIONS_BASE_URL") {
			// The in-process sandbox serves SIBS, so sibs routes are fine
			// (an invalid PAYMENTOPTIONS_BASE_URL is reported already).
			break
		}
		if valid("DEFAULT_GATEWAY") && c.DefaultGateway == GatewaySIBS {
			fail("DEFAULT_GATEWAY", errors.New(`"sibs" needs SIBS_BASE_URL to be set`))
		}
		merchants := make([]string, 0, len(c.GatewayRoutes))
		for m, g := range c.GatewayRoutes {
			if g == GatewaySIBS {
				merchants = append(merchants, m)
			}
		}
		sort.Strings(merchants)
		for _, m := range merchants {
			fail("GATEWAY_ROUTES", fmt.Errorf("merchant %q routes to sibs, which needs SIBS_BASE_URL to be set", m))
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// resolve finds a setting's value: from the flags, else from the
// environment, else its default. A secret may come from <NAME>_FILE instead;
// giving both in the same layer is an error.
func resolve(s setting, fromFlag, fromEnv func(string) (string, bool), readFile func(string) ([]byte, error)) (string, error) {
	if !s.secret {
		if v, ok := fromFlag(s.name); ok {
			return v, nil
		}
		if v, ok := fromEnv(s.name); ok {
			return v, nil
		}
		return s.def, nil
	}
	fileVar := s.name + "_FILE"
	for _, layer := range []func(string) (string, bool){fromFlag, fromEnv} {
		v, vok := layer(s.name)
		path, fok := layer(fileVar)
		switch {
		case vok && fok:
			return "", &VarError{Var: s.name, Err: fmt.Errorf("set either %s or %s, not both", s.name, fileVar)}
		case vok:
			return v, nil
		case fok:
			if path == "" {
				return "", &VarError{Var: fileVar, Err: errors.New("must name a file")}
			}
			b, err := readFile(path)
			if err != nil {
				return "", &VarError{Var: fileVar, Err: err}
			}
			v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
			if v == "" {
				return "", &VarError{Var: fileVar, Err: fmt.Errorf("file %s is empty", path)}
			}
			return v, nil
		}
	}
	return s.def, nil
}

// usage prints every variable with its flag, default and description.
func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: worker [flags]

The payment worker takes capture and void commands from NATS JetStream, calls the
payment gateway once per idempotency key and publishes the outcome.

Every setting is an environment variable; the flag of the same name overrides it
(NATS_URL -> -nats-url). A secret may instead be read from the file named by
<NAME>_FILE (-<name>-file). With no settings at all, the worker runs an embedded
NATS server, keeps idempotency keys in JetStream and calls an in-process sandbox
gateway.

`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tDESCRIPTION")
	for _, s := range settings() {
		def := s.def
		if def == "" {
			def = `""`
		}
		desc := s.desc
		if s.secret {
			desc += "; also " + s.name + "_FILE"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.name, def, desc)
	}
	tw.Flush()
}

var (
	terminalID = regexp.MustCompile(`^[0-9]{1,10}$`)
)

func wholeNumber(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", v)
	}
	return n, nil
}

func intIn(v string, lo, hi int) (int, error) {
	n, err := wholeNumber(v)
	if err != nil {
		return 0, err
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("must be between %d and %d, got %d", lo, hi, n)
	}
	return n, nil
}

func intAtLeast(v string, lo int) (int, error) {
	n, err := wholeNumber(v)
	if err != nil {
		return 0, err
	}
	if n < lo {
		return 0, fmt.Errorf("must be ≥ %d, got %d", lo, n)
	}
	return n, nil
}

func positiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 500ms, 30s, 2m or 168h", v)
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be > 0, got %s", v)
	}
	return d, nil
}

func nonNegativeDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 0, 500ms, 2s or 1m", v)
	}
	if d < 0 {
		return 0, fmt.Errorf("must be ≥ 0, got %s", v)
	}
	return d, nil
}

func oneOf(v string, allowed ...string) (string, error) {
	lv := strings.ToLower(strings.TrimSpace(v))
	for _, a := range allowed {
		if lv == a {
			return a, nil
		}
	}
	return "", fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
}

func gatewayName(v string) (string, error) {
	return oneOf(v, GatewayPaymentOptions, GatewaySIBS)
}

// token accepts a NATS subject token or stream name: [A-Za-z0-9_-]+.
func hostPort(v string) (string, error) {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port: %w", v, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("%q: port %q is not a number from 0 to 65535", v, port)
	}
	return v, nil
}

// parseURL parses an absolute URL with one of the given schemes and a host.
// An empty v gives nil.
func parseURL(v string, schemes ...string) (*url.URL, error) {
	if v == "" {
		return nil, nil
	}
	u, err := url.Parse(v)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = maskUserinfo(ue.URL)
		}
		return nil, err
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("parse %q: missing scheme", maskUserinfo(v))
	}
	ok := false
	for _, s := range schemes {
		ok = ok || u.Scheme == s
	}
	if !ok {
		return nil, fmt.Errorf("scheme %q is not one of %s", u.Scheme, strings.Join(schemes, ", "))
	}
	return u, nil
}

func redisURL(v string) (*url.URL, error) {
	u, err := parseURL(v, "redis", "rediss", "unix")
	if err != nil || u == nil {
		return nil, err
	}
	if u.Scheme == "unix" && u.Path == "" {
		return nil, fmt.Errorf("parse %q: missing socket path", u.Redacted())
	}
	if u.Scheme != "unix" && u.Host == "" {
		return nil, fmt.Errorf("parse %q: missing host", u.Redacted())
	}
	return u, nil
}

// checkRedisMode checks that REDIS_URL is a URL of REDIS_MODE, by parsing it
// as run will (redis.ParseURL, ParseFailoverURL or ParseClusterURL), and that
// it sends every command to a master: the idempotency store must never read
// a replica's stale record. It returns a *VarError or nil.
func checkRedisMode(mode string, u *url.URL) error {
	bad := func(name, format string, a ...any) error {
		return &VarError{Var: name, Err: fmt.Errorf(format, a...)}
	}
	if u == nil {
		if mode != RedisStandalone {
			return bad("REDIS_MODE", "%s needs REDIS_URL (without it, idempotency keys live in a JetStream key-value bucket)", mode)
		}
		return nil
	}
	q := u.Query()
	switch mode {
	case RedisStandalone:
		switch {
		case q.Has("master_name"):
			return bad("REDIS_MODE", "standalone, but REDIS_URL names a Sentinel master (master_name=): set REDIS_MODE=sentinel")
		case q.Has("addr"):
			return bad("REDIS_MODE", "standalone, but REDIS_URL lists more servers (addr=): set REDIS_MODE=sentinel or cluster")
		}
		if _, err := redis.ParseURL(u.String()); err != nil {
			return bad("REDIS_URL", "%w", err)
		}
	case RedisSentinel:
		if u.Scheme == "unix" {
			return bad("REDIS_URL", "REDIS_MODE=sentinel needs redis:// or rediss:// (the sentinels' addresses), not unix://")
		}
		o, err := redis.ParseFailoverURL(u.String())
		switch {
		case err != nil:
			return bad("REDIS_URL", "%w", err)
		case o.MasterName == "":
			return bad("REDIS_URL", "REDIS_MODE=sentinel needs master_name=<the name the sentinels monitor> in the URL")
		case o.RouteByLatency || o.RouteRandomly || o.ReplicaOnly:
			return bad("REDIS_URL", "route_by_latency, route_randomly and replica_only send commands to replicas; the idempotency store must use the master")
		}
	case RedisCluster:
		if q.Has("master_name") {
			return bad("REDIS_MODE", "cluster, but REDIS_URL names a Sentinel master (master_name=): set REDIS_MODE=sentinel")
		}
		if u.Scheme == "unix" {
			return bad("REDIS_URL", "REDIS_MODE=cluster needs redis:// or rediss:// (the nodes' addresses), not unix://")
		}
		o, err := redis.ParseClusterURL(u.String())
		switch {
		case err != nil:
			return bad("REDIS_URL", "%w", err)
		case o.ReadOnly || o.RouteByLatency || o.RouteRandomly:
			return bad("REDIS_URL", "read_only, route_by_latency and route_randomly send reads to replicas; the idempotency store must use the masters")
		}
	}
	return nil
}

// redactRedisURL is u with its passwords masked, in the userinfo and in the
// password= parameter (a failover URL's master password), or "" for nil.
func redactRedisURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	r := *u
	q := r.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		r.RawQuery = q.Encode()
	}
	return r.Redacted()
}

// gatewayURL parses a gateway URL: https, or http for a loopback host (for
// any host with allowHTTP, GATEWAY_ALLOW_HTTP).
func gatewayURL(v string, allowHTTP bool) (*url.URL, error) {
	u, err := parseURL(v, "https", "http")
	if err != nil || u == nil {
		return nil, err
	}
	if u.Host == "" {
		return nil, fmt.Errorf("parse %q: missing host", u.Redacted())
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) && !allowHTTP {
		return nil, fmt.Errorf("http:// is allowed for loopback hosts only, got host %q", u.Hostname())
	}
	return u, nil
}

// PlainHTTPGateway is a gateway URL that GATEWAY_ALLOW_HTTP let through.
type PlainHTTPGateway struct {
	// Gateway is GatewayPaymentOptions or GatewaySIBS; Var the variable
	// that holds URL.
	Gateway, Var string
	URL          *url.URL
}

// PlainHTTPGateways lists the configured gateway URLs that are http:// with
// a host that is not loopback (only GATEWAY_ALLOW_HTTP admits them), in the
// order of the settings. run logs a WARN for each at start.
func (c Config) PlainHTTPGateways() []PlainHTTPGateway {
	var out []PlainHTTPGateway
	for _, g := range []PlainHTTPGateway{
		{GatewayPaymentOptions, "PAYMENTOPTIONS_BASE_URL", c.PaymentOptionsBaseURL},
		{GatewaySIBS, "SIBS_BASE_URL", c.SIBSBaseURL},
		{GatewaySIBS, "SIBS_TOKEN_URL", c.SIBSTokenURL},
	} {
		if g.URL != nil && g.URL.Scheme == "http" && !isLoopback(g.URL.Hostname()) {
			out = append(out, g)
		}
	}
	return out
}

// isLoopback reports whether host is localhost, in 127.0.0.0/8 or ::1.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// natsURLs checks a comma-separated list of NATS server URLs. An entry
// without a scheme is a host:port, as nats.go accepts.
func natsURLs(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			return "", errors.New("empty entry in the comma-separated list")
		}
		if !strings.Contains(p, "://") {
			p = "nats://" + p
		}
		u, err := url.Parse(p)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				ue.URL = maskUserinfo(ue.URL)
			}
			return "", err
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return "", fmt.Errorf("scheme %q is not one of nats, tls, ws, wss", u.Scheme)
		}
		if u.Host == "" {
			return "", fmt.Errorf("parse %q: missing host", u.Redacted())
		}
	}
	return v, nil
}

// routes parses GATEWAY_ROUTES: merchant=gateway pairs, comma-separated.
func routes(v string) (map[string]string, error) {
	m := make(map[string]string)
	if strings.TrimSpace(v) == "" {
		return m, nil
	}
	for _, p := range strings.Split(v, ",") {
		merchant, gw, ok := strings.Cut(strings.TrimSpace(p), "=")
		merchant = strings.TrimSpace(merchant)
		if !ok || merchant == "" {
			return nil, fmt.Errorf("%q is not merchant=gateway", p)
		}
		g, err := gatewayName(gw)
		if err != nil {
			return nil, fmt.Errorf("merchant %q: %w", merchant, err)
		}
		if _, dup := m[merchant]; dup {
			return nil, fmt.Errorf("merchant %q is listed twice", merchant)
		}
		m[merchant] = g
	}
	return m, nil
}
