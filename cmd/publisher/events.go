package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/payworker/payworker/internal/publish"
)

var eventsHelp = help{
	synopsis: "events [--all | --since 1h] [--type KIND] [--merchant ID] [--transaction ID] [--key KEY] [flags]",
	desc: `Follows the result events (stream PAYMENT_EVENTS) in stream order until
Ctrl-C (exit status 0) or until --count events matched. It starts with the
events published from now on, or from --since ago, or with --all from the
first stored one. Output is one line per event when stdout is a terminal (or
with --format=text), otherwise the raw CloudEvents JSON, one per line (or
with --json).

--type is an event kind (capture.succeeded, command.rejected, ...), a first
token (capture, void, command) or a subject pattern under payments.evt
(*.failed, capture.>).`,
	example: `publisher events --merchant M001 --type '*.failed'
publisher events --all --key order-1234 --json --count 1`,
}

func runEvents(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("events")
	var conn connFlags
	conn.register(fs, e.getenv)
	var (
		opts   publish.FollowOptions
		since  time.Duration
		format string
		asJSON bool
	)
	fs.BoolVar(&opts.All, "all", false, "start at the first stored event")
	fs.DurationVar(&since, "since", 0, "start with the events of the last `duration` (1h, 30m)")
	fs.StringVar(&opts.Filter.Type, "type", "", "event `kind` or subject pattern: capture.succeeded, command, *.failed")
	fs.StringVar(&opts.Filter.MerchantID, "merchant", "", "only events of this merchant `id`")
	fs.StringVar(&opts.Filter.TransactionID, "transaction", "", "only events of this transaction `id`")
	fs.StringVar(&opts.Filter.IdempotencyKey, "key", "", "only events of this idempotency `key`")
	fs.StringVar(&format, "format", "", "output `format`: text or json (default: text on a terminal, json otherwise)")
	fs.BoolVar(&asJSON, "json", false, "same as --format=json")
	fs.IntVar(&opts.Limit, "count", 0, "stop after `n` matching events (0: follow until Ctrl-C)")
	if done, err := parseFlags(fs, eventsHelp, args, e); done || err != nil {
		return err
	}
	switch {
	case opts.All && since != 0:
		return usageErrorf("events: --all and --since exclude each other")
	case since < 0:
		return usageErrorf("events: --since must be positive, got %s", since)
	case opts.Limit < 0:
		return usageErrorf("events: --count must not be negative, got %d", opts.Limit)
	}
	if since > 0 {
		opts.Since = time.Now().Add(-since)
	}
	switch {
	case asJSON && format != "" && format != "json":
		return usageErrorf("events: --json and --format=%s exclude each other", format)
	case asJSON:
		format = "json"
	case format == "":
		format = "json"
		if isTerminal(e.stdout) {
			format = "text"
		}
	case format != "text" && format != "json":
		return usageErrorf("events: --format must be text or json, got %q", format)
	}
	if _, err := opts.Filter.Subject(conn.streams); err != nil {
		return usageErrorf("events: --%v", err)
	}

	client, closeConn, err := conn.connect(ctx, true)
	if err != nil {
		return err
	}
	defer closeConn()
	err = client.Follow(ctx, opts, func(r publish.Received) error {
		if r.Err != nil {
			fmt.Fprintf(e.stderr, "publisher: skipping a message on %s that is not an event: %v\n", r.Subject, r.Err)
			return nil
		}
		if format == "text" {
			_, err := fmt.Fprintln(e.stdout, publish.EventLine(r.Event))
			return err
		}
		return writeJSONLine(e.stdout, r.Raw)
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil // stopped by Ctrl-C: not a failure
	}
	return err
}

// writeJSONLine writes raw JSON on one line.
func writeJSONLine(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		buf.Reset()
		buf.Write(bytes.TrimSpace(raw))
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
