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
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--loglevel", "warning",
		"--tls-cert-file", server.CertFile, "--tls-key-file", server.KeyFile,
		"--tls-ca-cert-file", o.CA.CertFile, "--tls-auth-clients", auth,
	}
	if o.User != "" {
		args = append(args,
			"--user", o.User, "on", ">"+o.Password, "~*", "&*", "+@all",
			"--user", "default", "off")
	}
	var lastErr error
	for range 3 { // a port free a moment ago may be taken meanwhile
		port := FreePort(t)
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command("redis-server", append(args, "--port", "0", "--tls-port", strconv.Itoa(port))...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-done
		}
		if lastErr = r.waitReady(done); lastErr == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("redis-server (TLS) log:\n%s", tail(filepath.Join(dir, "redis.log"), 20))
				}
				stop()
			})
			r.URL = "rediss://" + r.Addr + "/0"
			return r
		}
		stop()
	}
	t.Fatalf("redis-server with TLS: %v\n%s", lastErr, tail(filepath.Join(dir, "redis.log"), 20))
	return nil
}

// waitReady waits until the server answers a trusted client's PING, or
// exits.
func (r *RedisTLS) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return errors.New("redis-server exited (is it built with TLS? see its log)")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := r.Ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready: %w", r.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
