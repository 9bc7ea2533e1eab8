// Package publish is the operator's side of the payment worker: it connects
// to NATS, publishes capture and void commands (SPEC §3.2) with their
// Nats-Msg-Id, waits for the result event of an idempotency key, and follows
// the result events (SPEC §3.3) with filters. cmd/publisher is built on it;
// its batch and replay subcommands reuse the same pieces.
package publish

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnOptions says how to reach NATS. Only URL is required.
type ConnOptions struct {
	// URL is the server URL (or a comma-separated list of them).
	URL string
	// Creds is a NATS credentials file (JWT and seed), optional.
	Creds string
	// TLSCA is a PEM file of root CAs to trust, optional.
	TLSCA string
	// TLSCert and TLSKey are a client certificate and its key, both or neither.
	TLSCert string
	TLSKey  string
	// Name is the connection name shown by the server's monitoring.
	Name string
	// Timeout bounds the initial connection; 5s when zero.
	Timeout time.Duration
}

// ErrTLSPair is returned when only one of TLSCert and TLSKey is set.
var ErrTLSPair = errors.New("a client certificate needs both --tls-cert and --tls-key")

// ConnectError is returned by Connect when no server could be reached. It
// names the URL (with any password redacted).
type ConnectError struct {
	URL string
	Err error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("connect to NATS at %s: %v", e.URL, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Unreachable reports whether no server answered at all (connection refused,
// no route, timeout), as opposed to a refusal by a server that answered
// (authorisation, TLS).
func (e *ConnectError) Unreachable() bool { return errors.Is(e.Err, nats.ErrNoServers) }

// Options returns the nats.go options for o. It fails with ErrTLSPair when
// only one half of a client certificate is given.
func (o ConnOptions) Options() ([]nats.Option, error) {
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, ErrTLSPair
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	opts := []nats.Option{nats.Timeout(timeout)}
	if o.Name != "" {
		opts = append(opts, nats.Name(o.Name))
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// Connect opens a connection to NATS. A server that cannot be reached, or
// that refuses the connection, gives a *ConnectError.
func Connect(o ConnOptions) (*nats.Conn, error) {
	opts, err := o.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, &ConnectError{URL: RedactURL(o.URL), Err: err}
	}
	return nc, nil
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
