package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/payworker/payworker/internal/publish"
)

var replayHelp = help{
	synopsis: "replay [--type capture|void] [--merchant ID] [--reason R] [--since T] [--until T] [--limit N] [--dry-run] [--wait[=60s]] [flags]",
	desc: `Replays dead letters: the commands in the DLQ stream (PAYMENT_DLQ) that reached
no final outcome (reason retries_exhausted, outcome_unknown or
gateway_unavailable). Each selected
entry is republished on its command subject (payments.cmd.<type>) with a new
command_id, replay-<dlq stream>-<dlq seq>, and the same idempotency key (a
command that had no idempotency_key gets its original command_id as key), so
nothing already done is done again: a key that reached its outcome meanwhile
is answered "already done" by the worker, and an uncertain one is first
reconciled through the gateway's status call, never resent blind.

An entry is deleted from the DLQ only after JetStream has stored its
republication. A replay that is interrupted loses nothing and, run again,
executes nothing twice: the same command_id is dropped as a duplicate.

Entries are taken in DLQ order; only those present when the replay starts are
considered (a command dead-lettered again waits for the next replay).
--since and --until take a duration back from now (2h, 30m) or an RFC 3339
time and apply to the time the entry was dead-lettered. Rejected messages
(payments.dlq.invalid) are skipped unless --include-invalid: the worker would
reject them again unless they were fixed.

--dry-run lists what would be replayed and changes nothing. --wait waits for
each command's outcome (succeeded, failed, already done, dead-lettered again)
after the last publication. Exit status 1 when an entry could not be
republished or deleted, or, with --wait, when one failed, was dead-lettered or
rejected again, or timed out.`,
	example: `publisher replay --dry-run --reason retries_exhausted --since 2h
publisher replay --type capture --merchant M001 --limit 100 --wait=2m`,
}

// defaultReplayWait is the wait of a bare --wait.
const defaultReplayWait = 60 * time.Second

// replayWaitFlag is --wait[=duration] with a 60s default.
type replayWaitFlag struct{ d time.Duration }

func (w *replayWaitFlag) String() string {
	if w == nil || w.d == 0 {
		return ""
	}
	return w.d.String()
}

func (w *replayWaitFlag) Set(s string) error {
	if b, err := strconv.ParseBool(s); err == nil {
		w.d = 0
		if b {
			w.d = defaultReplayWait
		}
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 60s, or true/false")
	}
	if d <= 0 {
		return errors.New("the wait must be positive")
	}
	w.d = d
	return nil
}

// IsBoolFlag lets --wait stand alone.
func (w *replayWaitFlag) IsBoolFlag() bool { return true }

// parseWhen reads --since/--until: a positive duration back from now, or an
// RFC 3339 time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%q: a duration back from now must be positive", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want a duration (2h, 30m) or an RFC 3339 time (2025-01-02T15:04:05Z)", s)
	}
	return t, nil
}

func runReplay(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("replay")
	var conn connFlags
	conn.register(fs, e.getenv)
	var (
		o            publish.ReplayOptions
		since, until string
		wait         replayWaitFlag
	)
	fs.StringVar(&o.Filter.Type, "type", "", "only entries of this command `type`: capture or void (invalid, with --include-invalid)")
	fs.StringVar(&o.Filter.MerchantID, "merchant", "", "only entries of this merchant `id`")
	fs.StringVar(&o.Filter.Reason, "reason", "", "only entries dead-lettered for this `reason` (Payworker-Reason): retries_exhausted, outcome_unknown, gateway_unavailable")
	fs.StringVar(&since, "since", "", "only entries dead-lettered at or after `time` (2h ago, or RFC 3339)")
	fs.StringVar(&until, "until", "", "only entries dead-lettered at or before `time` (30m ago, or RFC 3339)")
	fs.IntVar(&o.Limit, "limit", 0, "replay at most `n` entries (0: all)")
	fs.BoolVar(&o.DryRun, "dry-run", false, "list what would be replayed; change nothing")
	fs.BoolVar(&o.IncludeInvalid, "include-invalid", false, "also replay rejected messages (payments.dlq.invalid); they are rejected again unless fixed")
	fs.Var(&wait, "wait", "wait for the outcomes, at most `duration` after the last publication (--wait alone: 60s)")
	if done, err := parseFlags(fs, replayHelp, args, e); done || err != nil {
		return err
	}
	now := time.Now()
	var err error
	if o.Filter.Since, err = parseWhen(since, now); err != nil {
		return usageErrorf("replay: --since %v", err)
	}
	if o.Filter.Until, err = parseWhen(until, now); err != nil {
		return usageErrorf("replay: --until %v", err)
	}
	switch {
	case !o.Filter.Since.IsZero() && !o.Filter.Until.IsZero() && o.Filter.Until.Before(o.Filter.Since):
		return usageErrorf("replay: --until is before --since")
	case o.Limit < 0:
		return usageErrorf("replay: --limit must not be negative, got %d", o.Limit)
	case o.DryRun && wait.d > 0:
		return usageErrorf("replay: --dry-run and --wait exclude each other")
	case o.Filter.Type == publish.KindInvalid && !o.IncludeInvalid:
		return usageErrorf("replay: --type invalid selects rejected messages: add --include-invalid to replay them")
	}
	if _, err := o.Filter.Subject(conn.streams); err != nil {
		return usageErrorf("replay: --%v", err)
	}
	o.Wait = wait.d

	client, closeConn, err := conn.connect(ctx, true)
	if err != nil {
		return err
	}
	defer closeConn()
	if !o.DryRun {
		o.Progress = func(r publish.ReplayResult) { fmt.Fprintln(e.stderr, progressLine(r)) }
	}
	results, sum, err := client.Replay(ctx, o)
	if o.DryRun {
		printPlan(e.stdout, results)
	} else {
		printResults(e.stdout, results)
	}
	if sum.Skipped > 0 {
		fmt.Fprintf(e.stdout, "\nskipped %d rejected message(s) (%s): the worker would reject them again unless they are fixed; --include-invalid replays them\n",
			sum.Skipped, conn.streams.DLQSubject(publish.KindInvalid))
	}
	fmt.Fprintln(e.stdout)
	printSummary(e.stdout, sum, o)
	if err != nil {
		return err
	}
	if sum.Errors > 0 {
		return fmt.Errorf("%d DLQ entr%s could not be replayed (see the table); %s", sum.Errors, plural(sum.Errors, "y", "ies"),
			"what was not deleted is still in the DLQ: run the replay again")
	}
	if !sum.OK() {
		return fmt.Errorf("replayed commands did not all succeed: %d failed, %d dead-lettered again, %d rejected again, %d timed out",
			sum.Failed, sum.DeadLettered, sum.Rejected, sum.TimedOut)
	}
	return nil
}

// progressLine is the line printed on stderr as each entry is handled.
func progressLine(r publish.ReplayResult) string {
	d := r.Entry
	switch r.Status {
	case publish.ReplaySkipped:
		return fmt.Sprintf("skipped %s#%d (%s): rejected message", d.Stream, d.Seq, d.Reason)
	case publish.ReplayError:
		return fmt.Sprintf("error %s#%d: %v", d.Stream, d.Seq, r.Err)
	}
	line := fmt.Sprintf("replayed %s#%d as %s#%d command_id=%s key=%s", d.Stream, d.Seq, r.Subject, r.CommandSeq, r.CommandID, r.Key)
	if r.Republished {
		line += " (already published by an interrupted replay; the copy was dropped)"
	}
	return line
}

func printPlan(w io.Writer, results []publish.ReplayResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DLQ SEQ\tTYPE\tMERCHANT\tTRANSACTION\tKEY\tREASON\tATTEMPTS\tDEAD-LETTERED AT")
	n := 0
	for _, r := range results {
		if r.Status == publish.ReplaySkipped {
			continue
		}
		d := r.Entry
		row := []string{strconv.FormatUint(d.Seq, 10), d.Kind, d.MerchantID, d.TransactionID, r.Key, d.Reason,
			strconv.Itoa(d.Attempts), d.DeadLetteredAt.UTC().Format(time.RFC3339)}
		if r.Status == publish.ReplayError {
			row[len(row)-1] += "  (cannot be replayed: " + r.Err.Error() + ")"
		}
		fmt.Fprintln(tw, cells(row...))
		n++
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\ndry run: %d entr%s would be replayed; nothing was changed\n", n, plural(n, "y", "ies"))
}

func printResults(w io.Writer, results []publish.ReplayResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DLQ SEQ\tTYPE\tMERCHANT\tTRANSACTION\tKEY\tREASON\tCOMMAND ID\tRESULT\tDETAIL")
	for _, r := range results {
		if r.Status == publish.ReplaySkipped {
			continue
		}
		d := r.Entry
		detail := r.Detail
		if r.Err != nil {
			detail = strings.TrimSpace(r.Err.Error() + "; " + detail)
		}
		fmt.Fprintln(tw, cells(strconv.FormatUint(d.Seq, 10), d.Kind, d.MerchantID, d.TransactionID, r.Key, d.Reason,
			r.CommandID, string(r.Status), strings.TrimSuffix(detail, "; ")))
	}
	_ = tw.Flush()
}

func printSummary(w io.Writer, s publish.ReplaySummary, o publish.ReplayOptions) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name string, n int) { fmt.Fprintf(tw, "%s\t%d\n", name, n) }
	if o.DryRun {
		row("would replay", s.Planned)
	} else {
		row("replayed", s.Replayed)
		if s.Republished > 0 {
			row("  of which already published", s.Republished)
		}
	}
	if o.Wait > 0 {
		row("already done", s.AlreadyDone)
		row("succeeded", s.Succeeded)
		row("failed", s.Failed)
		row("dead-lettered again", s.DeadLettered)
		if s.Rejected > 0 {
			row("rejected again", s.Rejected)
		}
		row("timed out", s.TimedOut)
	}
	row("skipped", s.Skipped)
	row("errors", s.Errors)
	_ = tw.Flush()
}

// cells joins table cells with tabs; an empty cell shows as "-", so that
// every row has its columns.
func cells(c ...string) string {
	for i, v := range c {
		if v == "" {
			c[i] = "-"
		}
	}
	return strings.Join(c, "\t")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
