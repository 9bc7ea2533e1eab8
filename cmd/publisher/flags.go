package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/natsconn"
	"github.com/payworker/payworker/internal/publish"
	"github.com/payworker/payworker/internal/streams"
)

// defaultNATSURL is the worker's embedded server (fixed port).
const defaultNATSURL = "nats://127.0.0.1:4333"

// help describes one subcommand for its --help.
type help struct {
	synopsis string
	desc     string
	example  string
}

// newFlagSet returns a flag set that reports errors only through Parse's
// return value: run decides what to print.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args. With --help it prints the help to stdout and
// returns done. Any other error, and any positional argument, is a usage
// error.
func parseFlags(fs *flag.FlagSet, h help, args []string, e *env) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(e.stdout, fs, h)
			return true, nil
		}
		return false, usageErrorf("%s: %v (see `publisher %s --help`)", fs.Name(), err, fs.Name())
	}
	if fs.NArg() > 0 {
		return false, usageErrorf("%s: unexpected argument %q (flags take values as --flag=value; see `publisher %s --help`)", fs.Name(), fs.Arg(0), fs.Name())
	}
	return false, nil
}

func printHelp(w io.Writer, fs *flag.FlagSet, h help) {
	fmt.Fprintf(w, "Usage:\n  publisher %s\n\n%s\n\nExample:\n%s\n\nFlags:\n", h.synopsis, strings.TrimSpace(h.desc), indent(h.example))
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		arg := "--" + f.Name
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			if name != "" {
				arg += "[=" + name + "]"
			}
		} else if name != "" {
			arg += " " + name
		}
		fmt.Fprintf(w, "  %s\n    \t%s", arg, usage)
		if f.DefValue != "" && !isZeroDefault(f) {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

func isZeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "0", "false", "0s":
		return true
	}
	return false
}

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

// envOr returns getenv(name), or def when it is empty.
func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// defaultInboxPrefix is the operator role's own reply subjects
// (deploy/nats/roles.conf).
const defaultInboxPrefix = "_INBOX_operator"

// connFlags are the connection and stream flags every subcommand has.
type connFlags struct {
	conn natsconn.Settings
	// passwordFile is --password-file (NATS_PASSWORD_FILE), read at connect;
	// password is NATS_PASSWORD, as the worker reads it. A password is never
	// a flag, which any user could read in ps.
	passwordFile string
	password     string
	streams      streams.Config
}

func (c *connFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	def := streams.Default()
	c.streams = def
	fs.StringVar(&c.conn.URL, "nats-url", envOr(getenv, "NATS_URL", defaultNATSURL), "NATS server `URL` (env NATS_URL); the default is the worker's embedded server")
	fs.StringVar(&c.conn.Creds, "creds", getenv("NATS_CREDS"), "NATS credentials `file` (env NATS_CREDS)")
	fs.StringVar(&c.conn.TLSCA, "tls-ca", getenv("NATS_TLS_CA"), "PEM `file` of CAs to trust for NATS TLS (env NATS_TLS_CA)")
	fs.StringVar(&c.conn.TLSCert, "tls-cert", getenv("NATS_TLS_CERT"), "client certificate PEM `file` (env NATS_TLS_CERT)")
	fs.StringVar(&c.conn.TLSKey, "tls-key", getenv("NATS_TLS_KEY"), "client key PEM `file` (env NATS_TLS_KEY)")
	fs.StringVar(&c.conn.User, "user", getenv("NATS_USER"), "NATS `user`, with --password-file (env NATS_USER); operator in deploy/nats/permissions.conf")
	fs.StringVar(&c.passwordFile, "password-file", getenv("NATS_PASSWORD_FILE"), "`file` holding the password of --user (env NATS_PASSWORD_FILE, or the password in NATS_PASSWORD)")
	c.password = getenv("NATS_PASSWORD")
	fs.StringVar(&c.conn.NKeySeedFile, "nkey-seed-file", getenv("NATS_NKEY_SEED_FILE"), "`file` holding a NATS NKEY user seed (env NATS_NKEY_SEED_FILE)")
	fs.StringVar(&c.conn.InboxPrefix, "inbox-prefix", envOr(getenv, "NATS_INBOX_PREFIX", defaultInboxPrefix), "first `token` of reply subjects, which the role may subscribe to (env NATS_INBOX_PREFIX)")
	fs.StringVar(&c.streams.Prefix, "stream-prefix", envOr(getenv, "STREAM_PREFIX", def.Prefix), "first subject `token` (env STREAM_PREFIX)")
	fs.StringVar(&c.streams.Commands, "stream-commands", envOr(getenv, "STREAM_COMMANDS", def.Commands), "commands stream `name` (env STREAM_COMMANDS)")
	fs.StringVar(&c.streams.Events, "stream-events", envOr(getenv, "STREAM_EVENTS", def.Events), "events stream `name` (env STREAM_EVENTS)")
	fs.StringVar(&c.streams.DLQ, "stream-dlq", envOr(getenv, "STREAM_DLQ", def.DLQ), "dead-letter stream `name` (env STREAM_DLQ)")
}

// connect opens the connection and, unless provisioning, checks that the
// streams exist. close drains the connection.
func (c *connFlags) connect(ctx context.Context, checkStreams bool) (client *publish.Client, closeFn func(), err error) {
	c.conn.Name = "payworker-publisher"
	c.conn.Timeout = 5 * time.Second
	c.conn.Password = c.password
	if c.passwordFile != "" {
		if c.password != "" {
			return nil, nil, usageErrorf("NATS_PASSWORD_FILE (--password-file): set either it or NATS_PASSWORD, not both")
		}
		b, err := os.ReadFile(c.passwordFile)
		if err != nil {
			return nil, nil, usageErrorf("NATS_PASSWORD_FILE (--password-file): %v", err)
		}
		c.conn.Password = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if c.conn.Password == "" {
			return nil, nil, usageErrorf("NATS_PASSWORD_FILE (--password-file): file %s is empty", c.passwordFile)
		}
	}
	nc, err := natsconn.Connect(c.conn)
	if err != nil {
		var se *natsconn.SettingError
		if errors.As(err, &se) {
			return nil, nil, usageErrorf("%s", settingErrors(err))
		}
		var ce *natsconn.ConnectError
		if errors.As(err, &ce) && ce.Unreachable() {
			return nil, nil, fmt.Errorf("%w\nno NATS server answers at %s: the worker's embedded server runs only while `go run ./cmd/worker` runs; start it, or point --nats-url (NATS_URL) at your NATS server", err, ce.URL)
		}
		return nil, nil, err
	}
	closeFn = func() { _ = nc.Drain() }
	js, err := jetstream.New(nc)
	if err != nil {
		closeFn()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	client = publish.NewClient(js, c.streams)
	if checkStreams {
		if err := client.Check(ctx); err != nil {
			closeFn()
			return nil, nil, err
		}
	}
	return client, closeFn, nil
}

// connFlagOf is the flag of each NATS connection variable.
var connFlagOf = map[string]string{
	natsconn.VarURL: "nats-url", natsconn.VarCreds: "creds", natsconn.VarUser: "user", natsconn.VarPasswordFile: "password-file",
	natsconn.VarNKeySeed: "nkey-seed-file", natsconn.VarTLSCA: "tls-ca", natsconn.VarTLSCert: "tls-cert", natsconn.VarTLSKey: "tls-key",
	natsconn.VarInboxPrefix: "inbox-prefix",
}

// settingErrors renders natsconn's setting errors one a line, each naming
// its variable and its flag: "NATS_TLS_KEY (--tls-key): ...".
func settingErrors(err error) string {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	lines := make([]string, 0, len(errs))
	for _, e := range errs {
		var se *natsconn.SettingError
		if errors.As(e, &se) && connFlagOf[se.Var] != "" {
			lines = append(lines, fmt.Sprintf("%s (--%s): %v", se.Var, connFlagOf[se.Var], se.Err))
			continue
		}
		lines = append(lines, e.Error())
	}
	return strings.Join(lines, "\n")
}

// waitFlag is --wait[=duration]: off by default; --wait alone waits
// defaultWait; --wait=45s waits 45s; --wait=false turns it off.
type waitFlag struct {
	d time.Duration
}

const defaultWait = 30 * time.Second

func (w *waitFlag) String() string {
	if w == nil || w.d == 0 {
		return ""
	}
	return w.d.String()
}

func (w *waitFlag) Set(s string) error {
	if b, err := strconv.ParseBool(s); err == nil {
		w.d = 0
		if b {
			w.d = defaultWait
		}
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 30s, or true/false")
	}
	if d <= 0 {
		return errors.New("the wait must be positive")
	}
	w.d = d
	return nil
}

// IsBoolFlag lets --wait stand alone.
func (w *waitFlag) IsBoolFlag() bool { return true }

// metadataFlag is a repeatable --metadata key=value.
type metadataFlag map[string]string

func (m metadataFlag) String() string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		keys = append(keys, k+"="+v)
	}
	return strings.Join(keys, ",")
}

func (m metadataFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	if _, dup := m[k]; dup {
		return fmt.Errorf("key %q given twice", k)
	}
	m[k] = v
	return nil
}

// int64Flag is an optional integer: set reports whether it was given.
type int64Flag struct {
	v   int64
	set bool
}

func (f *int64Flag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatInt(f.v, 10)
}

func (f *int64Flag) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("want an integer in minor units (1000 for 1000 JPY or 10.00 EUR)")
	}
	f.v, f.set = v, true
	return nil
}

// ptr returns the value, or nil when the flag was not given.
func (f *int64Flag) ptr() *int64 {
	if !f.set {
		return nil
	}
	v := f.v
	return &v
}
