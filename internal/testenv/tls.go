//go:build unix

package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// CA is a certificate authority made for one test: a self-signed ECDSA
// P-256 root, valid for a day, whose PEM sits in CertFile under t.TempDir().
type CA struct {
	// Cert is the root certificate; CertFile holds it as PEM.
	Cert     *x509.Certificate
	CertFile string
	// Pool trusts Cert alone.
	Pool *x509.CertPool
	key  *ecdsa.PrivateKey
	dir  string
}

var serial atomic.Int64

// NewCA makes a certificate authority named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"payworker tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("CA certificate: %v", err)
	}
	ca := &CA{Cert: cert, Pool: x509.NewCertPool(), key: key, dir: t.TempDir()}
	ca.Pool.AddCert(cert)
	ca.CertFile = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Leaf is a certificate issued by a CA, with its key, in memory and as PEM
// files.
type Leaf struct {
	TLS      tls.Certificate
	CertFile string
	KeyFile  string
}

// Issue makes a certificate for name, valid for server and client
// authentication, for the hosts given (IP addresses or DNS names; none for
// a client certificate).
func (ca *CA) Issue(t testing.TB, name string, hosts ...string) Leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("key of %s: %v", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"payworker tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("certificate of %s: %v", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("key of %s: %v", name, err)
	}
	l := Leaf{
		TLS:      tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		CertFile: filepath.Join(ca.dir, name+".pem"),
		KeyFile:  filepath.Join(ca.dir, name+".key"),
	}
	writePEM(t, l.CertFile, "CERTIFICATE", der)
	writePEM(t, l.KeyFile, "PRIVATE KEY", keyDER)
	return l
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// RedisTLSOptions configures StartRedisTLS.
type RedisTLSOptions struct {
	// CA issues the server's certificate (for 127.0.0.1) and, with
	// ClientCerts, is the one the server checks client certificates against.
	CA *CA
	// ClientCerts makes the server require a client certificate issued by
	// CA (tls-auth-clients yes); without it clients need none.
	ClientCerts bool
	// User and Password, when User is set, define an ACL user allowed
	// every command and key; the default user is then disabled, so a
	// connection must authenticate as User.
	User, Password string
}

// RedisTLS is a redis-server that accepts TLS connections only, on a free
// loopback port, with no persistence; it is killed when the test ends.
type RedisTLS struct {
	// Addr is 127.0.0.1:port; URL is rediss://Addr/0, without credentials.
	Addr string
	URL  string
	// ClientCert is a certificate the server's CA issued for clients.
	ClientCert Leaf
	opts       RedisTLSOptions
}

// StartRedisTLS starts redis-server with TLS (--port 0 --tls-port P), the
// server certificate issued by o.CA, and the ACL user of o. It skips the
// test when redis-server is not on PATH and fails it when the build has no
// TLS.
func StartRedisTLS(t testing.TB, o RedisTLSOptions) *RedisTLS {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("redis-server not found on PATH (install it: apt-get install -y redis-server): %v", err)
	}
	r := &RedisTLS{opts: o}
	server := o.CA.Issue(t, "redis-server", "127.0.0.1", "localhost")
	r.ClientCert = o.CA.Issue(t, "redis-client")
	auth := "no"
	if o.ClientCerts {
		auth = "yes"
	}
	dir := t.TempDir()
	args := []string{
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", dir, "--loglevel", "warning",
		"--tls-cert-file", server.CertFile, "--tls-key-file", server.KeyFile,
		"--tls-ca-cert-file", o.CA.CertFile, "--tls-auth-clients", auth,
	}
	if o.User != "" {
		args = append(args,
			"--user", o.User, "on", ">"+o.Password, "~*", "&*", "+@all",
			"--user", "default", "off")
	}
	r.Addr = startTLSProc(t, "redis-server (TLS)", dir, func(port int) []string {
		return append(args, "--port", "0", "--tls-port", strconv.Itoa(port))
	}, func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c := redis.NewClient(r.probeOptions(addr))
		defer c.Close()
		return c.Ping(ctx).Err()
	})
	r.URL = "rediss://" + r.Addr + "/0"
	return r
}

// startTLSProc starts redis-server with the arguments args gives for a
// free port, its log in dir/redis.log, and waits until ready(addr) returns
// nil; it tries another port if the process exits first (the port was
// taken meanwhile). The process is killed when the test ends, its log
// printed if the test failed. It returns the process's address.
func startTLSProc(t testing.TB, name, dir string, args func(port int) []string, ready func(addr string) error) string {
	t.Helper()
	logPath := filepath.Join(dir, "redis.log")
	var lastErr error
	for range 3 {
		port := FreePort(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command("redis-server", append(args(port), "--logfile", logPath)...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-done
		}
		if lastErr = waitReady(addr, done, ready); lastErr == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%s log:\n%s", name, tail(logPath, 20))
				}
				stop()
			})
			return addr
		}
		stop()
	}
	t.Fatalf("%s: %v\n%s", name, lastErr, tail(logPath, 20))
	return ""
}

// waitReady waits until ready(addr) returns nil, or the process exits.
func waitReady(addr string, exited <-chan struct{}, ready func(addr string) error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return errors.New("redis-server exited (is it built with TLS? see its log)")
		default:
		}
		err := ready(addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SentinelTLS is a TLS-only Redis master (a RedisTLS) watched by one
// TLS-only sentinel, both with the same ACL user, CA and client
// certificate rule: the sentinel authenticates to the master as that user
// and requires it of its own clients.
type SentinelTLS struct {
	*RedisTLS
	// MasterName is the name the sentinel monitors the master under;
	// SentinelAddr is the sentinel's host:port.
	MasterName   string
	SentinelAddr string
}

// FailoverURL is the rediss:// failover URL of the sentinel, without
// credentials.
func (s *SentinelTLS) FailoverURL() string {
	return "rediss://" + s.SentinelAddr + "?master_name=" + s.MasterName
}

// StartSentinelTLS starts a RedisTLS master with o and a sentinel on it,
// and returns once the sentinel, asked by a trusted client, names the
// master.
func StartSentinelTLS(t testing.TB, o RedisTLSOptions) *SentinelTLS {
	t.Helper()
	s := &SentinelTLS{RedisTLS: StartRedisTLS(t, o), MasterName: "payworker"}
	cert := o.CA.Issue(t, "redis-sentinel", "127.0.0.1", "localhost")
	auth := "no"
	if o.ClientCerts {
		auth = "yes"
	}
	host, port, _ := net.SplitHostPort(s.Addr)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	lines := []string{
		"bind 127.0.0.1", "dir " + dir, "loglevel warning",
		"tls-cert-file " + cert.CertFile, "tls-key-file " + cert.KeyFile, "tls-ca-cert-file " + o.CA.CertFile,
		"tls-auth-clients " + auth, "tls-replication yes",
		"sentinel monitor " + s.MasterName + " " + host + " " + port + " 1",
	}
	if o.User != "" {
		lines = append(lines,
			"sentinel auth-user "+s.MasterName+" "+o.User, "sentinel auth-pass "+s.MasterName+" "+o.Password,
			"user "+o.User+" on >"+o.Password+" ~* &* +@all", "user default off")
	}
	content := ""
	for _, l := range lines {
		content += l + "\n"
	}
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	s.SentinelAddr = startTLSProc(t, "redis-sentinel (TLS)", dir, func(p int) []string {
		return []string{conf, "--sentinel", "--port", "0", "--tls-port", strconv.Itoa(p)}
	}, func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c := redis.NewSentinelClient(s.probeOptions(addr))
		defer c.Close()
		got, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
		if err != nil {
			return err
		}
		if len(got) != 2 || net.JoinHostPort(got[0], got[1]) != s.Addr {
			return fmt.Errorf("sentinel names master %v, want %s", got, s.Addr)
		}
		return nil
	})
	return s
}

// probeOptions connects to addr as a trusted client would: the CA, the
// client certificate and the ACL user.
func (r *RedisTLS) probeOptions(addr string) *redis.Options {
	o := &redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1}
	o.TLSConfig = &tls.Config{RootCAs: r.opts.CA.Pool, Certificates: []tls.Certificate{r.ClientCert.TLS}, MinVersion: tls.VersionTLS12}
	o.Username, o.Password = r.opts.User, r.opts.Password
	return o
}

// Client opens a trusted go-redis client, closed when the test ends.
func (r *RedisTLS) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(r.probeOptions(r.Addr))
	t.Cleanup(func() { c.Close() })
	return c
}

// Ping checks the server answers a trusted client.
func (r *RedisTLS) Ping(ctx context.Context) error {
	c := redis.NewClient(r.probeOptions(r.Addr))
	defer c.Close()
	return c.Ping(ctx).Err()
}

// RedisClusterTLS is a Redis Cluster of TLS-only masters (tls-cluster yes:
// the cluster bus is TLS too), each with the ACL user, CA and client
// certificate rule of its options.
type RedisClusterTLS struct {
	// Addrs are the masters' host:port addresses.
	Addrs []string
	// ClientCert is a certificate the CA issued for clients.
	ClientCert Leaf
	node       *RedisTLS // the options every node shares, for probes
}

// ClusterURL is the rediss:// cluster URL of the masters, without
// credentials: rediss://FIRST?addr=SECOND&addr=...
func (c *RedisClusterTLS) ClusterURL() string {
	u := "rediss://" + c.Addrs[0]
	for i, a := range c.Addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// NodeClient opens a trusted client of the node at addr, closed when the
// test ends.
func (c *RedisClusterTLS) NodeClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rc := redis.NewClient(c.node.probeOptions(addr))
	t.Cleanup(func() { rc.Close() })
	return rc
}

// StartRedisClusterTLS starts masters (at least 3) TLS-only redis-server
// processes with o, joins them with redis-cli --tls --cluster create, and
// returns once every node reports a healthy cluster. It skips the test
// when redis-server or redis-cli is not on PATH.
func StartRedisClusterTLS(t testing.TB, o RedisTLSOptions, masters int) *RedisClusterTLS {
	t.Helper()
	if masters < 3 {
		t.Fatalf("StartRedisClusterTLS(%d): a Redis Cluster needs at least 3 masters", masters)
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not found on PATH (install it: apt-get install -y redis-server redis-tools): %v", bin, err)
		}
	}
	server := o.CA.Issue(t, "redis-cluster", "127.0.0.1", "localhost")
	c := &RedisClusterTLS{ClientCert: o.CA.Issue(t, "redis-cluster-client")}
	c.node = &RedisTLS{ClientCert: c.ClientCert, opts: o}
	auth := "no"
	if o.ClientCerts {
		auth = "yes"
	}
	for i := range masters {
		dir := t.TempDir()
		args := []string{
			"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
			"--dir", dir, "--loglevel", "warning",
			"--tls-cert-file", server.CertFile, "--tls-key-file", server.KeyFile,
			"--tls-ca-cert-file", o.CA.CertFile, "--tls-auth-clients", auth,
			"--tls-cluster", "yes", "--tls-replication", "yes",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			"--cluster-port", strconv.Itoa(FreePort(t)),
		}
		if o.User != "" {
			args = append(args,
				"--user", o.User, "on", ">"+o.Password, "~*", "&*", "+@all",
				"--user", "default", "off")
		}
		addr := startTLSProc(t, "redis-cluster"+strconv.Itoa(i)+" (TLS)", dir, func(port int) []string {
			return append(args, "--port", "0", "--tls-port", strconv.Itoa(port))
		}, func(addr string) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			rc := redis.NewClient(c.node.probeOptions(addr))
			defer rc.Close()
			return rc.Ping(ctx).Err()
		})
		c.Addrs = append(c.Addrs, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{"--tls", "--cacert", o.CA.CertFile, "--cert", c.ClientCert.CertFile, "--key", c.ClientCert.KeyFile}
	if o.User != "" {
		args = append(args, "--user", o.User, "--pass", o.Password, "--no-auth-warning")
	}
	args = append(append(append(args, "--cluster", "create"), c.Addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range c.Addrs {
		waitFor(t, 30*time.Second, "cluster node "+addr+" ready", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			rc := redis.NewClient(c.node.probeOptions(addr))
			defer rc.Close()
			info, err := rc.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			for _, want := range []string{"cluster_state:ok", "cluster_slots_ok:16384", "cluster_known_nodes:" + strconv.Itoa(masters)} {
				if !strings.Contains(info, want) {
					return fmt.Errorf("%s: cluster info lacks %s", addr, want)
				}
			}
			return nil
		})
	}
	return c
}
