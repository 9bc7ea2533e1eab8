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

	"github.com/payworker/payworker/client"
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
		filter client.Filter
		limit  int
		since  time.Duration
		format string
		asJSON bool
	)
	fs.BoolVar(&filter.All, "all", false, "start at the first stored event")
	fs.DurationVar(&since, "since", 0, "start with the events of the last `duration` (1h, 30m)")
	fs.StringVar(&filter.Type, "type", "", "event `kind` or subject pattern: capture.succeeded, command, *.failed")
	fs.StringVar(&filter.MerchantID, "merchant", "", "only events of this merchant `id`")
	fs.StringVar(&filter.TransactionID, "transaction", "", "only events of this transaction `id`")
	fs.StringVar(&filter.IdempotencyKey, "key", "", "only events of this idempotency `key`")
	fs.StringVar(&format, "format", "", "output `format`: text or json (default: text on a terminal, json otherwise)")
	fs.BoolVar(&asJSON, "json", false, "same as --format=json")
	fs.IntVar(&limit, "count", 0, "stop after `n` matching events (0: follow until Ctrl-C)")
	if done, err := parseFlags(fs, eventsHelp, args, e); done || err != nil {
		return err
	}
	switch {
	case filter.All && since != 0:
		return usageErrorf("events: --all and --since exclude each other")
	case since < 0:
		return usageErrorf("events: --since must be positive, got %s", since)
	case limit < 0:
		return usageErrorf("events: --count must not be negative, got %d", limit)
	}
	if since > 0 {
		filter.Since = time.Now().Add(-since)
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
	if _, err := filter.Subject(publish.PublicStreams(conn.streams)); err != nil {
		return usageErrorf("events: --%v", err)
	}

	pc, closeConn, err := conn.connect(ctx, true)
	if err != nil {
		return err
	}
	defer closeConn()
	// The public client's Events: an ordered consumer of its own, in
	// stream order, until Ctrl-C (not a failure) or --count events.
	n := 0
	for ev, err := range pc.Client().Events(ctx, filter) {
		var de *client.DecodeError
		switch {
		case errors.As(err, &de):
			fmt.Fprintf(e.stderr, "publisher: skipping a message on %s that is not an event: %v\n", de.Subject, err)
			continue
		case err != nil:
			return err
		}
		if format == "text" {
			le, err := publish.EventOf(ev)
			if err != nil {
				fmt.Fprintf(e.stderr, "publisher: skipping event %d: %v\n", ev.Sequence, err)
				continue
			}
			if _, err := fmt.Fprintln(e.stdout, publish.EventLine(le)); err != nil {
				return err
			}
		} else if err := writeJSONLine(e.stdout, ev.JSON()); err != nil {
			return err
		}
		if n++; limit > 0 && n >= limit {
			return nil
		}
	}
	return nil
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
