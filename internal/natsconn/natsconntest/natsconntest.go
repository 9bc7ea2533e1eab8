// Package natsconntest runs the nats-server configuration that ships in
// deploy/nats (the roles' users and permissions), in process, with optional
// TLS from a certificate authority made for the test, so that tests prove
// the permissions with the programs themselves.
package natsconntest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Roles are the users of deploy/nats/permissions.conf.
var Roles = []string{"payworker", "orderservice", "operator"}

// envPrefix is the role's prefix of the server's variables:
// PAYWORKER_NATS_PASSWORD.
func envPrefix(role string) string { return strings.ToUpper(role) + "_NATS_" }

// DeployDir is the repository's deploy/nats directory.
func DeployDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "nats")
}

// Options choose how the server is run.
type Options struct {
	// NKeys includes permissions-nkey.conf instead of permissions.conf.
	NKeys bool
	// TLS, when set, makes the server require TLS with its certificate.
	TLS *ServerTLS
	// Extra is appended to the server's configuration.
	Extra string
}

// ServerTLS is the server's side of TLS.
type ServerTLS struct {
	CA   *CA
	Cert Pair
	// Verify asks every client for a certificate signed by CA.
	Verify bool
}

// Server is a nats-server started from deploy/nats with JetStream.
type Server struct {
	*server.Server
	// URL is the client URL (tls:// with TLS).
	URL string
	// Dir holds the configuration, the store and the credentials' files.
	Dir string
	log *violationLog
	// secrets: role → password, or role → seed with NKeys.
	secrets map[string]string
}

// Start writes a configuration that includes the deploy/nats files (copied
// to a temporary directory, as a deployment would place them), sets the
// server's variables with t.Setenv (a password, or an NKEY's public key, per
// role), and runs the server on a free loopback port until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"roles.conf", "permissions.conf", "permissions-nkey.conf"} {
		b, err := os.ReadFile(filepath.Join(DeployDir(t), f))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, f), b)
	}
	s := &Server{Dir: dir, secrets: map[string]string{}, log: &violationLog{}}
	for _, role := range Roles {
		if o.NKeys {
			kp, err := nkeys.CreateUser()
			if err != nil {
				t.Fatal(err)
			}
			pub, _ := kp.PublicKey()
			seed, _ := kp.Seed()
			t.Setenv(envPrefix(role)+"NKEY", pub)
			s.secrets[role] = string(seed)
		} else {
			pw := "pw" + randomHex(t, 16)
			t.Setenv(envPrefix(role)+"PASSWORD", pw)
			s.secrets[role] = pw
		}
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "listen: \"127.0.0.1:-1\"\nserver_name: secure\njetstream { store_dir: %q }\n", filepath.Join(dir, "js"))
	if o.TLS != nil {
		fmt.Fprintf(&conf, "tls { cert_file: %q, key_file: %q, ca_file: %q, verify: %v, timeout: 5 }\n",
			o.TLS.Cert.Cert, o.TLS.Cert.Key, o.TLS.CA.File, o.TLS.Verify)
	}
	if o.NKeys {
		conf.WriteString("include ./permissions-nkey.conf\n")
	} else {
		conf.WriteString("include ./permissions.conf\n")
	}
	conf.WriteString(o.Extra)
	path := filepath.Join(dir, "nats.conf")
	write(t, path, []byte(conf.String()))
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server configuration %s: %v", path, err)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	ns.SetLoggerV2(s.log, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats-server not ready after 10s")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	s.Server = ns
	s.URL = ns.ClientURL()
	if o.TLS != nil {
		s.URL = strings.Replace(s.URL, "nats://", "tls://", 1)
	}
	return s
}

// Password is role's password.
func (s *Server) Password(role string) string { return s.secrets[role] }

// PasswordFile writes role's password to a file (with a trailing newline,
// as an editor or a secret mount leaves it) and returns its path.
func (s *Server) PasswordFile(t testing.TB, role string) string {
	t.Helper()
	p := filepath.Join(s.Dir, role+".password")
	write(t, p, []byte(s.secrets[role]+"\n"))
	return p
}

// SeedFile writes role's NKEY seed to a file and returns its path (servers
// started with Options.NKeys only).
func (s *Server) SeedFile(t testing.TB, role string) string {
	t.Helper()
	p := filepath.Join(s.Dir, role+".nk")
	write(t, p, []byte(s.secrets[role]+"\n"))
	return p
}

// NewSeedFile writes the seed of a new NKEY user, which no server knows, to a
// file and returns its path.
func NewSeedFile(t testing.TB) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "unknown.nk")
	write(t, p, append(seed, '\n'))
	return p
}

// Violations returns the permission violations the server has logged so
// far: each names the user and the subject it was refused.
func (s *Server) Violations() []string { return s.log.violations() }

// Log returns every line the server has logged so far (notices, warnings,
// errors).
func (s *Server) Log() string { return s.log.String() }

// violationLog is the server's logger: it keeps every line, and the
// permission violations apart.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) add(level, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+" "+fmt.Sprintf(format, v...))
}

func (l *violationLog) violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, "Violation") {
			out = append(out, line)
		}
	}
	return out
}

func (l *violationLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *violationLog) Noticef(format string, v ...any) { l.add("[INF]", format, v...) }
func (l *violationLog) Warnf(format string, v ...any)   { l.add("[WRN]", format, v...) }
func (l *violationLog) Fatalf(format string, v ...any)  { l.add("[FTL]", format, v...) }
func (l *violationLog) Errorf(format string, v ...any)  { l.add("[ERR]", format, v...) }
func (l *violationLog) Debugf(format string, v ...any)  {}
func (l *violationLog) Tracef(format string, v ...any)  {}

// CA is a certificate authority made for one test.
type CA struct {
	// File is the CA certificate, PEM.
	File string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
	n    int64
}

// Pair is a certificate and its key, PEM files.
type Pair struct {
	Cert, Key string
}

// NewCA makes a self-signed CA named name, valid for a day, in a temporary
// directory.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{cert: cert, key: key, dir: t.TempDir(), n: 1}
	ca.File = filepath.Join(ca.dir, "ca.pem")
	write(t, ca.File, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

// Server issues a server certificate for 127.0.0.1 and localhost.
func (ca *CA) Server(t testing.TB, name string) Pair {
	t.Helper()
	return ca.issue(t, name, x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
}

// Client issues a client certificate with common name name.
func (ca *CA) Client(t testing.TB, name string) Pair {
	t.Helper()
	return ca.issue(t, name, x509.ExtKeyUsageClientAuth, nil, nil)
}

func (ca *CA) issue(t testing.TB, name string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) Pair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.n++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.n),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := Pair{Cert: filepath.Join(ca.dir, name+".pem"), Key: filepath.Join(ca.dir, name+"-key.pem")}
	write(t, p.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(t, p.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return p
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
