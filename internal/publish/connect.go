// Package publish is the operator's side of the payment worker: it connects
// to NATS, publishes capture and void commands (SPEC §3.2) with their
// Nats-Msg-Id, waits for the result event of an idempotency key, and follows
// the result events (SPEC §3.3) with filters. cmd/publisher is built on it;
// its batch and replay subcommands reuse the same pieces.
package publish

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/payworker/payworker/internal/natsconn"
)

// ConnOptions says how to reach NATS. Only URL is required. It is a subset
// of natsconn.Settings, which cmd/publisher uses directly.
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
var ErrTLSPair = natsconn.ErrTLSPair

// ConnectError is returned by Connect when no server could be reached, or
// one refused the connection. It names the URL (with any password
// redacted) and the setting to look at.
type ConnectError = natsconn.ConnectError

// settings converts o.
func (o ConnOptions) settings() natsconn.Settings {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	return natsconn.Settings{URL: o.URL, Creds: o.Creds, TLSCA: o.TLSCA, TLSCert: o.TLSCert, TLSKey: o.TLSKey,
		Name: o.Name, Timeout: timeout}
}

// Options returns the nats.go options for o, as natsconn.Settings.Options.
// It fails with ErrTLSPair when only one half of a client certificate is
// given.
func (o ConnOptions) Options() ([]nats.Option, error) { return o.settings().Options() }

// Connect opens a connection to NATS as natsconn.Connect does. A server that
// cannot be reached, or that refuses the connection, gives a *ConnectError.
func Connect(o ConnOptions) (*nats.Conn, error) { return natsconn.Connect(o.settings()) }

// RedactURL hides the credentials of a server URL (or of each URL of a
// comma-separated list) so that it can be printed: a password, or a user
// name alone, which NATS reads as a token. A part that does not parse is
// returned as is.
func RedactURL(raw string) string { return natsconn.RedactURL(raw) }
