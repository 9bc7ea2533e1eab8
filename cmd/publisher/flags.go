package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

// connFlags are the connection and stream flags every subcommand has.
type connFlags struct {
	conn    publish.ConnOptions
	streams streams.Config
}

func (c *connFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	def := streams.Default()
	c.streams = def
	fs.StringVar(&c.conn.URL, "nats-url", envOr(getenv, "NATS_URL", defaultNATSURL), "NATS server `URL` (env NATS_URL); the default is the worker's embedded server")
	fs.StringVar(&c.conn.Creds, "creds", getenv("NATS_CREDS"), "NATS credentials `file` (env NATS_CREDS)")
	fs.StringVar(&c.conn.TLSCA, "tls-ca", getenv("NATS_TLS_CA"), "PEM `file` of CAs to trust for NATS TLS (env NATS_TLS_CA)")
	fs.StringVar(&c.conn.TLSCert, "tls-cert", getenv("NATS_TLS_CERT"), "client certificate PEM `file` (env NATS_TLS_CERT)")
	fs.StringVar(&c.conn.TLSKey, "tls-key", getenv("NATS_TLS_KEY"), "client key PEM `file` (env NATS_TLS_KEY)")
	fs.StringVar(&c.streams.Prefix, "stream-prefix", envOr(getenv, "STREAM_PREFIX", def.Prefix), "first subject `token` (env STREAM_PREFIX)")
	fs.StringVar(&c.streams.Commands, "stream-commands", envOr(getenv, "STREAM_COMMANDS", def.Commands), "commands stream `name` (env STREAM_COMMANDS)")
	fs.StringVar(&c.streams.Events, "stream-events", envOr(getenv, "STREAM_EVENTS", def.Events), "events stream `name` (env STREAM_EVENTS)")
	fs.StringVar(&c.streams.DLQ, "stream-dlq", envOr(getenv, "STREAM_DLQ", def.DLQ), "dead-letter stream `name` (env STREAM_DLQ)")
}

// connect opens the connection and, unless provisioning, checks that the
// streams exist. close drains the connection.
func (c *connFlags) connect(ctx context.Context, checkStreams bool) (client *publish.Client, closeFn func(), err error) {
	c.conn.Name = "payworker-publisher"
	nc, err := publish.Connect(c.conn)
	if err != nil {
		if errors.Is(err, publish.ErrTLSPair) {
			return nil, nil, usageErrorf("%v", err)
		}
		var ce *publish.ConnectError
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
