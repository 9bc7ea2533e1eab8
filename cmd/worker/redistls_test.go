package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/testenv"
)

// writeFile writes content to a new file under dir and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRedisSecurityConfigErrors: each Redis TLS or credential setting that
// cannot work is refused at start, naming its variable, and no message
// shows the password.
func TestRedisSecurityConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "config-ca")
	client := ca.Issue(t, "client")
	other := testenv.NewCA(t, "other").Issue(t, "other-client")
	garbage := writeFile(t, dir, "garbage.pem", "not a certificate\n")
	missing := filepath.Join(dir, "missing.pem")
	pwFile := writeFile(t, dir, "pw", "s3cret-pw\n")
	const tlsURL = "rediss://127.0.0.1:6390/0"
	for _, tc := range []struct {
		name    string
		e       env
		wantVar string
		want    string
	}{
		{"CA without REDIS_URL", env{"REDIS_TLS_CA": ca.CertFile}, "REDIS_TLS_CA", "REDIS_URL is not"},
		{"CA with redis://", env{"REDIS_URL": "redis://127.0.0.1:6390", "REDIS_TLS_CA": ca.CertFile}, "REDIS_TLS_CA", "use rediss://"},
		{"cert with unix://", env{"REDIS_URL": "unix:///run/redis.sock", "REDIS_TLS_CERT": client.CertFile, "REDIS_TLS_KEY": client.KeyFile}, "REDIS_TLS_CERT", "use rediss://"},
		{"password without REDIS_URL", env{"REDIS_PASSWORD_FILE": pwFile}, "REDIS_PASSWORD", "REDIS_URL is not"},
		{"CA file missing", env{"REDIS_URL": tlsURL, "REDIS_TLS_CA": missing}, "REDIS_TLS_CA", "no such file"},
		{"CA file not PEM", env{"REDIS_URL": tlsURL, "REDIS_TLS_CA": garbage}, "REDIS_TLS_CA", "holds no PEM certificate"},
		{"cert without key", env{"REDIS_URL": tlsURL, "REDIS_TLS_CERT": client.CertFile}, "REDIS_TLS_KEY", "required with REDIS_TLS_CERT"},
		{"key without cert", env{"REDIS_URL": tlsURL, "REDIS_TLS_KEY": client.KeyFile}, "REDIS_TLS_CERT", "required with REDIS_TLS_KEY"},
		{"key file missing", env{"REDIS_URL": tlsURL, "REDIS_TLS_CERT": client.CertFile, "REDIS_TLS_KEY": missing}, "REDIS_TLS_KEY", "no such file"},
		{"key of another cert", env{"REDIS_URL": tlsURL, "REDIS_TLS_CERT": client.CertFile, "REDIS_TLS_KEY": other.KeyFile}, "REDIS_TLS_CERT", "private key does not match"},
		{"password file missing", env{"REDIS_URL": tlsURL, "REDIS_PASSWORD_FILE": missing}, "REDIS_PASSWORD_FILE", "no such file"},
		{"password in the URL too", env{"REDIS_URL": "rediss://u:s3cret-pw@127.0.0.1:6390", "REDIS_PASSWORD_FILE": pwFile}, "REDIS_PASSWORD", "in one place"},
		{"user in the URL too", env{"REDIS_URL": "redis://u@127.0.0.1:6390", "REDIS_USERNAME": "payworker"}, "REDIS_USERNAME", "in one place"},
		{"sentinel password= too", env{"REDIS_MODE": "sentinel", "REDIS_URL": "redis://s1:26379?master_name=m&password=s3cret-pw",
			"REDIS_PASSWORD_FILE": pwFile}, "REDIS_PASSWORD", "in one place"},
		{"cluster CA with redis://", env{"REDIS_MODE": "cluster", "REDIS_URL": "redis://n1:6379?addr=n2:6379", "REDIS_TLS_CA": ca.CertFile}, "REDIS_TLS_CA", "use rediss://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(nil, tc.e.get, os.ReadFile)
			if err == nil {
				t.Fatalf("parseConfig(%v) = nil error, want one naming %s", tc.e, tc.wantVar)
			}
			var ve *VarError
			if !errors.As(err, &ve) || ve.Var != tc.wantVar {
				t.Errorf("parseConfig(%v) = %v, want a *VarError for %s", tc.e, err, tc.wantVar)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseConfig(%v) = %q, want it to say %q", tc.e, err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("parseConfig error %q shows the password", err)
			}
		})
	}
}

// TestRedisSecurityOptions: in every REDIS_MODE the TLS files and
// credentials reach go-redis's options: the CA alone as the roots, the
// client certificate, no fixed ServerName (each server is checked against
// its own address), TLS 1.2 at least; the sentinels get the data nodes'
// credentials unless REDIS_URL's user info names theirs. The password
// never shows in the config's log or in where.
func TestRedisSecurityOptions(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "options-ca")
	client := ca.Issue(t, "client")
	pwFile := writeFile(t, dir, "pw", "s3cret-pw\n")
	sec := env{"REDIS_TLS_CA": ca.CertFile, "REDIS_TLS_CERT": client.CertFile, "REDIS_TLS_KEY": client.KeyFile,
		"REDIS_USERNAME": "payworker", "REDIS_PASSWORD_FILE": pwFile}
	type creds struct{ user, password, sentinelUser, sentinelPassword string }
	for _, tc := range []struct {
		name, mode, url string
		want            creds
		tls             bool
	}{
		{"standalone", "standalone", "rediss://r1:6380/0", creds{"payworker", "s3cret-pw", "", ""}, true},
		{"standalone redis:// has no TLS", "standalone", "redis://r1:6379/0", creds{"payworker", "s3cret-pw", "", ""}, false},
		{"sentinel, same credentials", "sentinel", "rediss://s1:26380?master_name=m&addr=s2:26380",
			creds{"payworker", "s3cret-pw", "payworker", "s3cret-pw"}, true},
		{"sentinel, their own", "sentinel", "rediss://sent:sent-pw@s1:26380?master_name=m",
			creds{"payworker", "s3cret-pw", "sent", "sent-pw"}, true},
		{"sentinel, none for them", "sentinel", "rediss://@s1:26380?master_name=m", creds{"payworker", "s3cret-pw", "", ""}, true},
		{"cluster", "cluster", "rediss://n1:6380?addr=n2:6380", creds{"payworker", "s3cret-pw", "", ""}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := with(sec, "REDIS_MODE", tc.mode, "REDIS_URL", tc.url)
			if !tc.tls {
				e = env{"REDIS_MODE": tc.mode, "REDIS_URL": tc.url, "REDIS_USERNAME": "payworker", "REDIS_PASSWORD_FILE": pwFile}
			}
			cfg, err := parseConfig(nil, e.get, os.ReadFile)
			if err != nil {
				t.Fatal(err)
			}
			opts, where, err := redisOptions(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var got creds
			var tc2 *tls.Config
			switch o := opts.(type) {
			case *redis.Options:
				got, tc2 = creds{o.Username, o.Password, "", ""}, o.TLSConfig
			case *redis.FailoverOptions:
				got, tc2 = creds{o.Username, o.Password, o.SentinelUsername, o.SentinelPassword}, o.TLSConfig
			case *redis.ClusterOptions:
				got, tc2 = creds{o.Username, o.Password, "", ""}, o.TLSConfig
			}
			if got != tc.want {
				t.Errorf("credentials = %+v, want %+v", got, tc.want)
			}
			switch {
			case !tc.tls && tc2 != nil:
				t.Errorf("TLSConfig = %+v for %s, want nil", tc2, tc.url)
			case tc.tls && tc2 == nil:
				t.Fatalf("TLSConfig = nil for %s", tc.url)
			case tc.tls:
				if !tc2.RootCAs.Equal(ca.Pool) {
					t.Errorf("RootCAs are not REDIS_TLS_CA's alone")
				}
				if len(tc2.Certificates) != 1 || !bytes.Equal(tc2.Certificates[0].Certificate[0], client.TLS.Certificate[0]) {
					t.Errorf("Certificates = %d, want REDIS_TLS_CERT's", len(tc2.Certificates))
				}
				if tc2.ServerName != "" || tc2.MinVersion < tls.VersionTLS12 || tc2.InsecureSkipVerify {
					t.Errorf("ServerName %q, MinVersion %x, InsecureSkipVerify %v; want \"\", ≥ TLS 1.2, false",
						tc2.ServerName, tc2.MinVersion, tc2.InsecureSkipVerify)
				}
			}
			if out := fmt.Sprint(cfg, where); strings.Contains(out, "s3cret-pw") || strings.Contains(out, "sent-pw") {
				t.Errorf("config or where shows a password: %s", out)
			}
		})
	}
}

// redisTLSEnv is the environment of a worker on the TLS Redis r, with every
// Redis TLS and ACL setting, on the NATS of natsURL and the in-process
// sandbox.
func redisTLSEnv(t testing.TB, r *testenv.RedisTLS, ca *testenv.CA, user, pwFile, natsURL string) env {
	return env{
		"NATS_URL":            natsURL,
		"REDIS_URL":           r.URL,
		"REDIS_TLS_CA":        ca.CertFile,
		"REDIS_TLS_CERT":      r.ClientCert.CertFile,
		"REDIS_TLS_KEY":       r.ClientCert.KeyFile,
		"REDIS_USERNAME":      user,
		"REDIS_PASSWORD_FILE": pwFile,
		"SANDBOX_ADDR":        freeAddr(t),
		"HTTP_ADDR":           freeAddr(t),
		"LOG_FORMAT":          "json",
		"WORKER_ID":           "tls",
	}
}

// TestRunRedisTLS runs the worker on a redis-server that speaks TLS only,
// requires a client certificate from its CA and an ACL user (the default
// user disabled): a capture succeeds exactly once, the same command again
// is answered from the Redis record, and the keys are in that server.
func TestRunRedisTLS(t *testing.T) {
	n := testenv.StartNATS(t)
	ca := testenv.NewCA(t, "redis-ca")
	const password = "tls-acl-pw-7f3a"
	r := testenv.StartRedisTLS(t, testenv.RedisTLSOptions{CA: ca, ClientCerts: true, User: "payworker", Password: password})
	pwFile := writeFile(t, t.TempDir(), "redis-password", password+"\n")
	e := redisTLSEnv(t, r, ca, "payworker", pwFile, n.URL)
	w := startRun(t, e)
	w.waitReady(t)
	if log := w.stderr.String(); !strings.Contains(log, "idempotency keys in Redis") || strings.Contains(log, password) {
		t.Fatalf("log does not say Redis, or shows the password:\n%s", log)
	}

	const merchant = "MTLS1"
	auth := authoriseOverHTTP(t, e["SANDBOX_ADDR"], merchant, 1200, "EUR")
	js := connect(t, n.URL)
	cmd := map[string]any{"command_id": "tls-1", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1200, "currency": "EUR", "idempotency_key": "tls-key-1"}
	publishCommand(t, js, "capture", cmd)
	poll(t, 30*time.Second, "capture.succeeded", func() (bool, string) {
		got := byKey(readEvents(t, js))
		return len(got["tls-key-1"]) == 1, fmt.Sprint(got)
	})
	cmd["command_id"] = "tls-2" // the same key again, by another command
	publishCommand(t, js, "capture", cmd)
	poll(t, 30*time.Second, "the duplicate's event", func() (bool, string) {
		got := byKey(readEvents(t, js))
		return len(got["tls-key-1"]) == 2, fmt.Sprint(got)
	})
	got := byKey(readEvents(t, js))["tls-key-1"]
	if want := []string{events.CaptureSucceeded.Type(), events.Duplicate.Type()}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events of tls-key-1 = %v, want %v", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := r.Client(t).Keys(ctx, "*tls-key-1*").Result()
	if err != nil || len(keys) == 0 {
		t.Errorf("keys of tls-key-1 in the TLS Redis = %v, %v; want its record", keys, err)
	}
	if _, err := w.stop(); err != nil {
		t.Errorf("run after SIGTERM = %v, want nil", err)
	}
	if log := w.stderr.String(); strings.Contains(log, password) {
		t.Errorf("log shows the Redis password:\n%s", log)
	}
}

// TestRunRedisTLSRefused: a worker whose Redis settings cannot work stops at
// start with an error naming the setting to fix, and shows no password:
// the server's CA not trusted (another CA, or the system's), no client
// certificate where the server requires one, a wrong password, a user that
// does not exist.
func TestRunRedisTLSRefused(t *testing.T) {
	n := testenv.StartNATS(t)
	ca := testenv.NewCA(t, "redis-ca")
	const password = "right-pw-51c0"
	r := testenv.StartRedisTLS(t, testenv.RedisTLSOptions{CA: ca, ClientCerts: true, User: "payworker", Password: password})
	dir := t.TempDir()
	rightPW := writeFile(t, dir, "right", password)
	wrongPW := writeFile(t, dir, "wrong", "wrong-pw-93d2")
	otherCA := testenv.NewCA(t, "other-ca")
	for _, tc := range []struct {
		name     string
		change   func(e env)
		want     []string
		password string
	}{
		{"another CA", func(e env) { e["REDIS_TLS_CA"] = otherCA.CertFile }, []string{"REDIS_TLS_CA", otherCA.CertFile, "not signed by"}, password},
		{"system CAs", func(e env) { delete(e, "REDIS_TLS_CA") }, []string{"REDIS_TLS_CA", "system's authorities"}, password},
		{"no client certificate", func(e env) { delete(e, "REDIS_TLS_CERT"); delete(e, "REDIS_TLS_KEY") },
			[]string{"REDIS_TLS_CERT", "client certificate"}, password},
		{"wrong password", func(e env) { e["REDIS_PASSWORD_FILE"] = wrongPW }, []string{"REDIS_PASSWORD", `user "payworker"`, "WRONGPASS"}, "wrong-pw-93d2"},
		{"unknown user", func(e env) { e["REDIS_USERNAME"] = "nobody" }, []string{"REDIS_PASSWORD", `user "nobody"`, "WRONGPASS"}, password},
		{"no credentials", func(e env) { delete(e, "REDIS_USERNAME"); delete(e, "REDIS_PASSWORD_FILE") },
			[]string{"REDIS_PASSWORD", `user "default"`, "NOAUTH"}, password},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := redisTLSEnv(t, r, ca, "payworker", rightPW, n.URL)
			e["HTTP_ADDR"] = "off"
			tc.change(e)
			stderr := &testenv.LogBuffer{}
			done := make(chan error, 1)
			go func() { done <- run(context.Background(), []string{"worker"}, e.get, io.Discard, stderr) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("run did not stop at start")
			}
			if err == nil {
				t.Fatal("run = nil, want an error at start")
			}
			t.Logf("run = %v", err)
			if ve := (*VarError)(nil); !errors.As(err, &ve) || ve.Var != tc.want[0] {
				t.Errorf("run = %v, want a *VarError for %s", err, tc.want[0])
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("run = %q, want it to say %q", err, want)
				}
			}
			if out := err.Error() + stderr.String(); strings.Contains(out, tc.password) {
				t.Errorf("error or log shows the password %q:\n%s\n%s", tc.password, err, stderr)
			}
		})
	}
}

// TestRunRedisTLSSentinel runs the worker with REDIS_MODE=sentinel on a
// TLS-only master and sentinel that both require a client certificate and
// the ACL user: with REDIS_USERNAME and REDIS_PASSWORD_FILE alone the
// sentinel is asked with the same credentials, and a capture succeeds
// once. With an empty user info in REDIS_URL (sentinels without
// authentication) this sentinel refuses, and the worker stops at start
// naming REDIS_URL's user info as the sentinels' credentials.
func TestRunRedisTLSSentinel(t *testing.T) {
	n := testenv.StartNATS(t)
	ca := testenv.NewCA(t, "sentinel-ca")
	const password = "sentinel-acl-pw-2b7d"
	s := testenv.StartSentinelTLS(t, testenv.RedisTLSOptions{CA: ca, ClientCerts: true, User: "payworker", Password: password})
	pwFile := writeFile(t, t.TempDir(), "redis-password", password)
	e := redisTLSEnv(t, s.RedisTLS, ca, "payworker", pwFile, n.URL)
	e["REDIS_MODE"], e["REDIS_URL"] = "sentinel", s.FailoverURL()

	t.Run("same credentials", func(t *testing.T) {
		w := startRun(t, e)
		w.waitReady(t)
		const merchant = "MSENT"
		auth := authoriseOverHTTP(t, e["SANDBOX_ADDR"], merchant, 640, "EUR")
		js := connect(t, n.URL)
		publishCommand(t, js, "capture", map[string]any{"command_id": "sent-1", "type": "capture", "merchant_id": merchant,
			"transaction_id": auth, "amount": 640, "currency": "EUR", "idempotency_key": "sent-key-1"})
		poll(t, 30*time.Second, "capture.succeeded", func() (bool, string) {
			got := byKey(readEvents(t, js))["sent-key-1"]
			return len(got) == 1 && got[0] == events.CaptureSucceeded.Type(), fmt.Sprint(got)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if keys, err := s.Client(t).Keys(ctx, "*sent-key-1*").Result(); err != nil || len(keys) == 0 {
			t.Errorf("keys of sent-key-1 on the master = %v, %v; want its record", keys, err)
		}
		if log := w.stderr.String(); !strings.Contains(log, `"mode":"sentinel"`) || strings.Contains(log, password) {
			t.Errorf("log does not say sentinel, or shows the password:\n%s", log)
		}
		if _, err := w.stop(); err != nil {
			t.Errorf("run after SIGTERM = %v", err)
		}
	})

	t.Run("no credentials for the sentinels", func(t *testing.T) {
		e := with(e, "REDIS_URL", strings.Replace(s.FailoverURL(), "rediss://", "rediss://@", 1), "HTTP_ADDR", "off")
		done := make(chan error, 1)
		go func() { done <- run(context.Background(), []string{"worker"}, e.get, io.Discard, io.Discard) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("run did not stop at start")
		}
		t.Logf("run = %v", err)
		if err == nil || !strings.HasPrefix(err.Error(), "REDIS_URL: the sentinels refused") || strings.Contains(err.Error(), password) {
			t.Errorf("run = %v, want an error at start naming REDIS_URL and the sentinels, without the password", err)
		}
	})
}

// TestRunRedisTLSCluster runs the worker with REDIS_MODE=cluster on three
// TLS-only masters (the cluster bus in TLS too) that require a client
// certificate and the ACL user: the nodes the cluster announces are
// verified against their own addresses, and a capture succeeds once.
func TestRunRedisTLSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("three redis-server processes (-short)")
	}
	n := testenv.StartNATS(t)
	ca := testenv.NewCA(t, "cluster-ca")
	const password = "cluster-acl-pw-8e1f"
	c := testenv.StartRedisClusterTLS(t, testenv.RedisTLSOptions{CA: ca, ClientCerts: true, User: "payworker", Password: password}, 3)
	pwFile := writeFile(t, t.TempDir(), "redis-password", password)
	e := env{
		"NATS_URL":            n.URL,
		"REDIS_MODE":          "cluster",
		"REDIS_URL":           c.ClusterURL(),
		"REDIS_TLS_CA":        ca.CertFile,
		"REDIS_TLS_CERT":      c.ClientCert.CertFile,
		"REDIS_TLS_KEY":       c.ClientCert.KeyFile,
		"REDIS_USERNAME":      "payworker",
		"REDIS_PASSWORD_FILE": pwFile,
		"SANDBOX_ADDR":        freeAddr(t),
		"HTTP_ADDR":           freeAddr(t),
		"LOG_FORMAT":          "json",
		"WORKER_ID":           "tls-cluster",
	}
	w := startRun(t, e)
	w.waitReady(t)
	const merchant = "MCLU"
	auth := authoriseOverHTTP(t, e["SANDBOX_ADDR"], merchant, 880, "EUR")
	js := connect(t, n.URL)
	for _, id := range []string{"clu-1", "clu-2"} { // the second is a duplicate
		publishCommand(t, js, "capture", map[string]any{"command_id": id, "type": "capture", "merchant_id": merchant,
			"transaction_id": auth, "amount": 880, "currency": "EUR", "idempotency_key": "clu-key-1"})
	}
	want := []string{events.CaptureSucceeded.Type(), events.Duplicate.Type()}
	poll(t, 30*time.Second, "capture.succeeded, then the duplicate", func() (bool, string) {
		got := byKey(readEvents(t, js))["clu-key-1"]
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprint(got)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	found := 0
	for _, addr := range c.Addrs {
		keys, err := c.NodeClient(t, addr).Keys(ctx, "*clu-key-1*").Result()
		if err != nil {
			t.Fatalf("keys on %s: %v", addr, err)
		}
		found += len(keys)
	}
	if found == 0 {
		t.Errorf("no record of clu-key-1 on any node")
	}
	if log := w.stderr.String(); !strings.Contains(log, `"mode":"cluster"`) || strings.Contains(log, password) {
		t.Errorf("log does not say cluster, or shows the password:\n%s", log)
	}
	if _, err := w.stop(); err != nil {
		t.Errorf("run after SIGTERM = %v", err)
	}
}
