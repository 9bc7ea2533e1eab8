// Package natsconn turns the NATS connection settings that the worker and the
// publisher share (NATS_URL, NATS_CREDS, NATS_USER with NATS_PASSWORD_FILE,
// NATS_NKEY_SEED_FILE, NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY) into nats.go
// options, and explains a failed connection in terms of those settings: a
// certificate that does not verify names NATS_TLS_CA, a refused login names
// the credential that was sent (never its value).
//
// Files are read once, when the options are built: a rotated certificate,
// password or seed takes effect at the next start of the program.
package natsconn

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// The variables each setting is read from, as errors name them.
const (
	VarURL          = "NATS_URL"
	VarCreds        = "NATS_CREDS"
	VarUser         = "NATS_USER"
	VarPassword     = "NATS_PASSWORD"
	VarPasswordFile = "NATS_PASSWORD_FILE"
	VarNKeySeed     = "NATS_NKEY_SEED_FILE"
	VarTLSCA        = "NATS_TLS_CA"
	VarTLSCert      = "NATS_TLS_CERT"
	VarTLSKey       = "NATS_TLS_KEY"
	VarInboxPrefix  = "NATS_INBOX_PREFIX"
)

// Settings says how to reach NATS and who to be there. Only URL is required;
// at most one of Creds, NKeySeedFile and User is set.
type Settings struct {
	// URL is the server URL, or a comma-separated list of them.
	URL string
	// Creds is a NATS credentials file (JWT and seed).
	Creds string
	// User and Password log in with a user name and password; Password is
	// the value, not a file (the caller reads NATS_PASSWORD_FILE).
	User     string
	Password string
	// NKeySeedFile is a file holding an NKEY user seed (SU...): the
	// connection signs the server's nonce with it; the seed never leaves
	// the process.
	NKeySeedFile string
	// TLSCA is a PEM file of the CAs that sign the servers' certificates.
	// Set, the connection always uses TLS and trusts these CAs only.
	TLSCA string
	// TLSCert and TLSKey are a client certificate and its key (PEM), both
	// or neither, for servers that verify clients.
	TLSCert string
	TLSKey  string
	// InboxPrefix replaces _INBOX as the first token of this connection's
	// reply subjects, so that a role's permissions can allow its own
	// replies and no one else's (deploy/nats/permissions.conf).
	InboxPrefix string
	// Name is the connection name shown by the server's monitoring.
	Name string
	// Timeout bounds the initial connection; nats.go's 2s when zero.
	Timeout time.Duration
}

// LogValue implements slog.LogValuer: the settings without the password.
func (s Settings) LogValue() slog.Value {
	pw := ""
	if s.Password != "" {
		pw = "[REDACTED]"
	}
	return slog.GroupValue(
		slog.String("url", RedactURL(s.URL)),
		slog.String("creds", s.Creds),
		slog.String("user", s.User),
		slog.String("password", pw),
		slog.String("nkey_seed_file", s.NKeySeedFile),
		slog.String("tls_ca", s.TLSCA),
		slog.String("tls_cert", s.TLSCert),
		slog.String("tls_key", s.TLSKey),
		slog.String("inbox_prefix", s.InboxPrefix),
	)
}

// String renders LogValue, so that %v never prints the password.
func (s Settings) String() string { return s.LogValue().String() }

// GoString is String, for %#v.
func (s Settings) GoString() string { return "natsconn.Settings" + s.String() }

// SettingError is a problem with one setting, named by its variable.
type SettingError struct {
	// Var is the environment variable, e.g. "NATS_TLS_CA".
	Var string
	Err error
}

// Error returns "VAR: problem".
func (e *SettingError) Error() string { return e.Var + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *SettingError) Unwrap() error { return e.Err }

// ErrTLSPair is the problem of a client certificate without its key, or a
// key without its certificate.
var ErrTLSPair = errors.New("a client certificate needs both NATS_TLS_CERT and NATS_TLS_KEY")

// Check reports every problem with s that can be found without a server,
// reading its files with readFile: a client certificate without its key, more
// than one way to log in, a user without a password, and files that cannot be
// read or do not hold what they should. The result joins *SettingError
// values, or is nil. No message quotes a file's content.
func (s Settings) Check(readFile func(string) ([]byte, error)) error {
	_, err := s.load(readFile)
	return err
}

// loaded is what load read from the files.
type loaded struct {
	tls *tls.Config // nil when no TLS setting is given
}

func (s Settings) load(readFile func(string) ([]byte, error)) (loaded, error) {
	var errs []error
	fail := func(v string, err error) { errs = append(errs, &SettingError{Var: v, Err: err}) }
	var l loaded

	var logins []string
	if s.Creds != "" {
		logins = append(logins, VarCreds)
	}
	if s.NKeySeedFile != "" {
		logins = append(logins, VarNKeySeed)
	}
	if s.User != "" {
		logins = append(logins, VarUser)
	}
	if len(logins) > 1 {
		fail(logins[0], fmt.Errorf("set only one of %s", strings.Join(logins, ", ")))
	}
	switch {
	case s.User != "" && s.Password == "":
		fail(VarPasswordFile, fmt.Errorf("required with %s=%s", VarUser, s.User))
	case s.User == "" && s.Password != "":
		fail(VarUser, errors.New("required with a password (NATS_PASSWORD_FILE)"))
	}
	if s.Creds != "" {
		if _, err := readFile(s.Creds); err != nil {
			fail(VarCreds, err)
		}
	}
	if s.NKeySeedFile != "" {
		if b, err := readFile(s.NKeySeedFile); err != nil {
			fail(VarNKeySeed, err)
		} else if !hasUserSeed(b) {
			fail(VarNKeySeed, fmt.Errorf("file %s holds no NKEY user seed (a line starting with SU)", s.NKeySeedFile))
		}
	}
	if strings.ContainsAny(s.InboxPrefix, "*> \t") || strings.HasSuffix(s.InboxPrefix, ".") || strings.HasPrefix(s.InboxPrefix, ".") {
		fail(VarInboxPrefix, fmt.Errorf("%q is not a subject prefix: no wildcards, spaces or leading or trailing dot", s.InboxPrefix))
	}

	if s.TLSCA != "" || s.TLSCert != "" || s.TLSKey != "" {
		l.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if s.TLSCA != "" {
		b, err := readFile(s.TLSCA)
		if err != nil {
			fail(VarTLSCA, err)
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b) {
				fail(VarTLSCA, fmt.Errorf("file %s holds no PEM certificate", s.TLSCA))
			}
			l.tls.RootCAs = pool
		}
	}
	switch {
	case s.TLSCert != "" && s.TLSKey == "":
		fail(VarTLSKey, fmt.Errorf("required with %s: %w", VarTLSCert, ErrTLSPair))
	case s.TLSCert == "" && s.TLSKey != "":
		fail(VarTLSCert, fmt.Errorf("required with %s: %w", VarTLSKey, ErrTLSPair))
	case s.TLSCert != "":
		cert, cerr := readFile(s.TLSCert)
		if cerr != nil {
			fail(VarTLSCert, cerr)
		}
		key, kerr := readFile(s.TLSKey)
		if kerr != nil {
			fail(VarTLSKey, kerr)
		}
		if cerr == nil && kerr == nil {
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				// The error names the PEM block's type at most, never the key.
				fail(VarTLSCert, fmt.Errorf("%s with NATS_TLS_KEY %s: %w", s.TLSCert, s.TLSKey, err))
			}
			l.tls.Certificates = []tls.Certificate{pair}
		}
	}
	return l, errors.Join(errs...)
}

// hasUserSeed reports whether b has a line starting with an NKEY user seed's
// prefix, as nats.go looks for it.
func hasUserSeed(b []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if bytes.HasPrefix(bytes.TrimSpace(sc.Bytes()), []byte("SU")) {
			return true
		}
	}
	return false
}

// Options returns the nats.go options for s, reading its files now with
// os.ReadFile. Its error is Check's.
func (s Settings) Options() ([]nats.Option, error) {
	l, err := s.load(os.ReadFile)
	if err != nil {
		return nil, err
	}
	var opts []nats.Option
	if s.Timeout > 0 {
		opts = append(opts, nats.Timeout(s.Timeout))
	}
	if s.Name != "" {
		opts = append(opts, nats.Name(s.Name))
	}
	if s.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(s.InboxPrefix))
	}
	switch {
	case s.Creds != "":
		opts = append(opts, nats.UserCredentials(s.Creds))
	case s.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(s.NKeySeedFile)
		if err != nil {
			return nil, &SettingError{Var: VarNKeySeed, Err: fmt.Errorf("file %s: %w", s.NKeySeedFile, err)}
		}
		opts = append(opts, o)
	case s.User != "":
		opts = append(opts, nats.UserInfo(s.User, s.Password))
	}
	if l.tls != nil {
		opts = append(opts, nats.Secure(l.tls))
	}
	return opts, nil
}

// ConnectError is returned by Connect when no connection was made. It names
// the URL (without passwords) and, when the cause is a setting, that
// setting's variable.
type ConnectError struct {
	// URL is the server URL with its credentials masked.
	URL string
	// Var is the variable to look at: NATS_TLS_CA for a server certificate
	// that does not verify, NATS_TLS_CERT for a client certificate the
	// server refused, the login's variable for a refused login; "" when
	// the cause is not known to be a setting; NATS_URL when no server
	// answers.
	Var string
	// Hint says in words what Var has to do with Err.
	Hint string
	Err  error
}

// Error returns "connect to NATS at URL: VAR: hint: cause".
func (e *ConnectError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "connect to NATS at %s: ", e.URL)
	if e.Var != "" {
		b.WriteString(e.Var + ": ")
	}
	if e.Hint != "" {
		b.WriteString(e.Hint + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the cause.
func (e *ConnectError) Unwrap() error { return e.Err }

// Unreachable reports whether no server answered at all (connection refused,
// no route, timeout), as opposed to a refusal by a server that answered
// (authorisation, TLS).
func (e *ConnectError) Unreachable() bool { return errors.Is(e.Err, nats.ErrNoServers) }

// Connect connects to s.URL with s's options followed by extra. A problem with
// the settings is a *SettingError (see Check); a failed connection is a
// *ConnectError that names the setting to look at.
func Connect(s Settings, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := s.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(s.URL, append(opts, extra...)...)
	if err != nil {
		return nil, s.Explain(err)
	}
	return nc, nil
}

// Explain wraps err, an error of a connection made with s (from
// nats.Connect, or given to an error handler later), in a *ConnectError that
// names the setting behind it; Var is "" when no setting is.
func (s Settings) Explain(err error) *ConnectError {
	ce := &ConnectError{URL: RedactURL(s.URL), Err: err}
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		invalid   x509.CertificateInvalidError
		op        *net.OpError
	)
	switch {
	case errors.As(err, &unknownCA):
		ce.Var = VarTLSCA
		if s.TLSCA != "" {
			ce.Hint = fmt.Sprintf("the server's certificate is not signed by a CA in %s", s.TLSCA)
		} else {
			ce.Hint = "the server's certificate is not signed by a CA this system trusts; set NATS_TLS_CA to the CA's PEM file"
		}
	case errors.As(err, &badHost):
		ce.Var = VarURL
		ce.Hint = "the server's certificate is not valid for the host name in NATS_URL"
	case errors.As(err, &invalid):
		ce.Var = VarTLSCA
		ce.Hint = "the server's certificate is not valid (expired, or not for a server)"
	case errors.As(err, &op) && op.Op == "remote error",
		errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "connection closed by remote after TLS handshake"):
		// A TLS alert from the server (crypto/tls has no exported type
		// for it): after a handshake that verified the server, the
		// server refused this client's certificate, or its absence
		// (certificate required, bad certificate, unknown CA). With TLS
		// 1.3 the client's handshake ends before the server checks its
		// certificate, so the client may meet the server's close (a
		// broken pipe, EOF) before it reads the alert: nats.go says so.
		ce.Var = VarTLSCert
		if s.TLSCert == "" {
			ce.Hint = "the server wants a client certificate; set NATS_TLS_CERT and NATS_TLS_KEY"
		} else {
			ce.Hint = fmt.Sprintf("the server refused the client certificate %s", s.TLSCert)
		}
	case errors.Is(err, nats.ErrNoServers):
		ce.Var = VarURL
		ce.Hint = "no server answers"
	case errors.Is(err, nats.ErrSecureConnWanted):
		ce.Var = VarTLSCA
		ce.Hint = "TLS settings are given but the server offers no TLS"
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		ce.Var, ce.Hint = s.login()
	}
	return ce
}

// login names the credential that was sent, for a refused login.
func (s Settings) login() (variable, hint string) {
	switch {
	case s.Creds != "":
		return VarCreds, fmt.Sprintf("the server refused the credentials in %s", s.Creds)
	case s.NKeySeedFile != "":
		return VarNKeySeed, fmt.Sprintf("the server refused the NKEY of the seed in %s", s.NKeySeedFile)
	case s.User != "":
		return VarUser, fmt.Sprintf("the server refused user %q with the password given (NATS_PASSWORD_FILE)", s.User)
	}
	return VarUser, "the server wants credentials: set NATS_USER with NATS_PASSWORD_FILE, NATS_NKEY_SEED_FILE or NATS_CREDS"
}

// RedactURL hides the credentials of a server URL (or of each URL of a
// comma-separated list) so that it can be printed: a password, or a user
// name alone, which NATS reads as a token. A part that does not parse is
// returned as is.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); !ok {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
