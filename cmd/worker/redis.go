package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// newRedisClient builds the client of REDIS_URL as REDIS_MODE reads it: a
// plain client (standalone), a failover client that finds the master through
// the sentinels and follows it across a failover (sentinel), or a cluster
// client that sends each script to the master of its keys' slot (cluster).
// Every mode gets the same fail-fast timeouts and a pool sized to
// WORKER_CONCURRENCY (per node, in a cluster); what the URL sets wins. A
// rediss:// URL gets REDIS_TLS_CA and the client certificate (see
// TLSFiles.apply); REDIS_USERNAME and REDIS_PASSWORD are the credentials of
// every server, the sentinels' too unless the URL has user info, which is
// then theirs (an empty one, redis://@s1:26379, for sentinels without
// authentication). where names the servers, for logs; it never holds a
// password.
func newRedisClient(cfg Config) (rdb redis.UniversalClient, where []any, err error) {
	opts, where, err := redisOptions(cfg)
	if err != nil {
		return nil, nil, err
	}
	switch o := opts.(type) {
	case *redis.FailoverOptions:
		return redis.NewFailoverClient(o), where, nil
	case *redis.ClusterOptions:
		return redis.NewClusterClient(o), where, nil
	default:
		return redis.NewClient(o.(*redis.Options)), where, nil
	}
}

// redisOptions are the options of newRedisClient's client: a
// *redis.FailoverOptions (sentinel), *redis.ClusterOptions (cluster) or
// *redis.Options (standalone).
func redisOptions(cfg Config) (opts any, where []any, err error) {
	pool := redisPoolSize(cfg.WorkerConcurrency)
	switch cfg.RedisMode {
	case RedisSentinel:
		o, err := redis.ParseFailoverURL(cfg.RedisURL.String())
		if err != nil {
			return nil, nil, err
		}
		failFast(&o.MaxRetries, &o.DialerRetries, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolSize, pool)
		o.TLSConfig = cfg.RedisTLS.apply(o.TLSConfig)
		credentials(cfg, &o.Username, &o.Password)
		if cfg.RedisURL.User == nil {
			// No user info in the URL: the sentinels take the same
			// credentials as the data nodes.
			credentials(cfg, &o.SentinelUsername, &o.SentinelPassword)
		}
		where = []any{slog.String("mode", RedisSentinel), slog.String("master_name", o.MasterName),
			slog.String("sentinels", strings.Join(o.SentinelAddrs, ","))}
		return o, where, nil
	case RedisCluster:
		o, err := redis.ParseClusterURL(cfg.RedisURL.String())
		if err != nil {
			return nil, nil, err
		}
		failFast(&o.MaxRetries, &o.DialerRetries, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolSize, pool)
		o.TLSConfig = cfg.RedisTLS.apply(o.TLSConfig)
		credentials(cfg, &o.Username, &o.Password)
		where = []any{slog.String("mode", RedisCluster), slog.String("nodes", strings.Join(o.Addrs, ","))}
		return o, where, nil
	case RedisStandalone:
		o, err := redis.ParseURL(cfg.RedisURL.String())
		if err != nil {
			return nil, nil, err
		}
		failFast(&o.MaxRetries, &o.DialerRetries, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolSize, pool)
		o.TLSConfig = cfg.RedisTLS.apply(o.TLSConfig)
		credentials(cfg, &o.Username, &o.Password)
		where = []any{slog.String("mode", RedisStandalone), slog.String("addr", o.Addr)}
		return o, where, nil
	}
	return nil, nil, fmt.Errorf("unknown mode %q", cfg.RedisMode)
}

// failFast makes a down Redis turn into a requeued command in about a
// second, not after go-redis's default dial and command retries (the
// handler does its own retrying), and sizes the pool; each setting is
// changed only where the URL left it unset (?max_retries=…,
// ?dial_timeout=…, ?pool_size=… win).
func failFast(maxRetries, dialerRetries *int, dial, read, write *time.Duration, poolSize *int, pool int) {
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setDuration := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setInt(maxRetries, 1)
	setInt(dialerRetries, 1)
	setDuration(dial, time.Second)
	setDuration(read, 2*time.Second)
	setDuration(write, 2*time.Second)
	setInt(poolSize, pool)
}

// redisPoolSize is one connection per command in flight (claim, complete),
// a quarter more for the lease renewals running beside them, and a few
// spare; go-redis's default, 10 per CPU, makes commands queue for a
// connection.
func redisPoolSize(concurrency int) int {
	return concurrency + concurrency/4 + 4
}

// credentials sets a client's username and password to REDIS_USERNAME and
// REDIS_PASSWORD, each only when it is set.
func credentials(cfg Config, username, password *string) {
	if cfg.RedisUsername != "" {
		*username = cfg.RedisUsername
	}
	if cfg.RedisPassword != "" {
		*password = cfg.RedisPassword.Reveal()
	}
}

// TLSFiles is what the PEM files of a TLS connection's settings hold.
type TLSFiles struct {
	// Roots are the authorities trusted to sign the servers' certificates,
	// instead of the system's; nil trusts the system's.
	Roots *x509.CertPool
	// Cert is the client certificate with its key; nil sends none.
	Cert *tls.Certificate
}

// apply returns a copy of the TLS configuration go-redis made for a
// rediss:// URL (nil for redis:// and unix://, which stays nil) with f's
// authorities and client certificate, TLS 1.2 at least, and no ServerName:
// each server, a sentinel, a master it names or a cluster node, is then
// verified against the host it is dialled at (go-redis would check every
// one against the URL's first host).
func (f TLSFiles) apply(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	c = c.Clone()
	c.ServerName = ""
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	if f.Roots != nil {
		c.RootCAs = f.Roots
	}
	if f.Cert != nil {
		c.Certificates = []tls.Certificate{*f.Cert}
	}
	return c
}

// checkRedisSecurity checks the Redis TLS and credential settings against
// REDIS_URL and REDIS_MODE, and reads the TLS files into c.RedisTLS. It
// returns *VarError values, none when every setting is sound.
func checkRedisSecurity(c *Config, readFile func(string) ([]byte, error), valid func(...string) bool) []error {
	var errs []error
	bad := func(name string, err error) { errs = append(errs, &VarError{Var: name, Err: err}) }
	if !valid("REDIS_URL", "REDIS_MODE", "REDIS_PASSWORD") {
		return nil
	}
	u := c.RedisURL
	for _, s := range []struct{ name, value string }{
		{"REDIS_TLS_CA", c.RedisTLSCA}, {"REDIS_TLS_CERT", c.RedisTLSCert}, {"REDIS_TLS_KEY", c.RedisTLSKey},
		{"REDIS_USERNAME", c.RedisUsername}, {"REDIS_PASSWORD", string(c.RedisPassword)},
	} {
		switch {
		case s.value == "":
		case u == nil:
			bad(s.name, errors.New("set, but REDIS_URL is not (idempotency keys are in a JetStream key-value bucket)"))
		case strings.HasPrefix(s.name, "REDIS_TLS_") && u.Scheme != "rediss":
			bad(s.name, fmt.Errorf("set, but REDIS_URL is %s://, which does not use TLS: use rediss://", u.Scheme))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if c.RedisTLSCA != "" {
		roots, err := readCA(readFile, c.RedisTLSCA)
		if err != nil {
			bad("REDIS_TLS_CA", err)
		}
		c.RedisTLS.Roots = roots
	}
	switch {
	case c.RedisTLSCert != "" && c.RedisTLSKey == "":
		bad("REDIS_TLS_KEY", errors.New("required with REDIS_TLS_CERT"))
	case c.RedisTLSKey != "" && c.RedisTLSCert == "":
		bad("REDIS_TLS_CERT", errors.New("required with REDIS_TLS_KEY"))
	case c.RedisTLSCert != "":
		cert, err := readKeyPair(readFile, "REDIS_TLS_CERT", c.RedisTLSCert, "REDIS_TLS_KEY", c.RedisTLSKey)
		if err != nil {
			errs = append(errs, err)
		}
		c.RedisTLS.Cert = cert
	}
	if u != nil && (c.RedisUsername != "" || c.RedisPassword != "") {
		// The URL's own credentials: in sentinel mode its user info is the
		// sentinels', and username= and password= are the data nodes'.
		q := u.Query()
		inURL := q.Has("username") || q.Has("password")
		if c.RedisMode != RedisSentinel {
			inURL = inURL || u.User != nil
		}
		if inURL {
			name := "REDIS_PASSWORD"
			if c.RedisPassword == "" {
				name = "REDIS_USERNAME"
			}
			bad(name, errors.New("REDIS_URL carries credentials too: give them in one place (REDIS_USERNAME and REDIS_PASSWORD_FILE keep the password out of the URL)"))
		}
	}
	return errs
}

// redisAccessError tells apart, in the error of the first PING at start, a
// setting the worker cannot run with from a server that is only not there
// yet: a certificate the worker does not trust, a TLS handshake the server
// refused, a server that does not speak TLS, refused credentials. It
// returns that error, naming the variable to fix, or nil for anything else
// (a refused or timed-out connection: the worker runs and its commands
// wait for Redis). The error is a *VarError wrapping err. No password is
// in any of them: Redis's NOAUTH and WRONGPASS answers do not repeat it.
func redisAccessError(cfg Config, err error) error {
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		verify     *tls.CertificateVerificationError
		notTLS     tls.RecordHeaderError
		opErr      *net.OpError
		ca         = "the system's authorities (set REDIS_TLS_CA to the PEM file of its CA)"
		caVariable = "REDIS_TLS_CA"
	)
	if cfg.RedisTLSCA != "" {
		ca = "the authorities of REDIS_TLS_CA (" + cfg.RedisTLSCA + ")"
	}
	user := cfg.RedisUsername
	if user == "" && cfg.RedisURL.User != nil && cfg.RedisMode != RedisSentinel {
		user = cfg.RedisURL.User.Username()
	}
	if user == "" {
		user = "default"
	}
	fatal := func(variable, format string, a ...any) error {
		return &VarError{Var: variable, Err: fmt.Errorf(format, a...)}
	}
	switch {
	case errors.As(err, &unknownCA):
		return fatal(caVariable, "the Redis server's certificate is not signed by %s: %w", ca, err)
	case errors.As(err, &hostname):
		return fatal("REDIS_URL", "the Redis server's certificate is not valid for the address dialled: %w", err)
	case errors.As(err, &invalid), errors.As(err, &verify):
		return fatal(caVariable, "the Redis server's certificate does not verify against %s: %w", ca, err)
	case errors.As(err, &notTLS):
		return fatal("REDIS_URL", "rediss://, but the Redis server does not answer in TLS: %w", err)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// A TLS alert from the server: most often it wants a client
		// certificate it can verify.
		return fatal("REDIS_TLS_CERT", "the Redis server refused the TLS handshake (does it require a client certificate from its CA? set REDIS_TLS_CERT and REDIS_TLS_KEY): %w", err)
	case (redis.IsAuthError(err) || strings.Contains(err.Error(), "called without any password configured")) &&
		cfg.RedisMode == RedisSentinel && strings.Contains(err.Error(), "sentinels"):
		if cfg.RedisURL.User != nil {
			return fatal("REDIS_URL", "the sentinels refused the credentials of REDIS_URL's user info, which are theirs: %w", err)
		}
		return fatal("REDIS_PASSWORD", "the sentinels refused the credentials of user %q, which they share with the data nodes (REDIS_USERNAME, REDIS_PASSWORD or REDIS_PASSWORD_FILE; give the sentinels their own as REDIS_URL's user info): %w", user, err)
	case redis.IsAuthError(err), strings.Contains(err.Error(), "called without any password configured"):
		return fatal("REDIS_PASSWORD", "Redis refused the credentials of user %q (REDIS_USERNAME, REDIS_PASSWORD or REDIS_PASSWORD_FILE): %w", user, err)
	case redis.IsPermissionError(err):
		return fatal("REDIS_USERNAME", "the Redis ACL of user %q refuses a command the worker sends (it runs Lua scripts on its keys, PING, INFO and WAIT): %w", user, err)
	}
	return nil
}

// clearTextPassword reports whether the worker would send a Redis password
// without TLS beyond this machine: REDIS_URL is redis:// with a password
// (REDIS_PASSWORD or the URL's own) and names a server, the URL's host or an
// addr= of a sentinel or cluster URL, that is not a loopback address.
func clearTextPassword(cfg Config) bool {
	u := cfg.RedisURL
	if u == nil || u.Scheme != "redis" {
		return false
	}
	if pw, _ := u.User.Password(); pw == "" && cfg.RedisPassword == "" {
		return false
	}
	for _, h := range append([]string{u.Host}, u.Query()["addr"]...) {
		host := h
		if hh, _, err := net.SplitHostPort(h); err == nil {
			host = hh
		}
		if !isLoopback(host) {
			return true
		}
	}
	return false
}
