package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	clientpkg "github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/publish"
	"github.com/payworker/payworker/internal/tracing"
)

var batchHelp = help{
	synopsis: "batch --file FILE [--wait[=10m]] [--out results.csv] [flags]",
	desc: `Publishes a file of capture and void commands: CSV with a header row, or JSON
Lines (one object per line); the format comes from the extension (.csv,
.jsonl) or --format. The columns (CSV) or fields (JSONL) are those of a
command: command_id, type, idempotency_key, merchant_id, transaction_id,
amount (integer minor units), currency, gateway, notes; metadata is one
metadata.<key> column per key in CSV, an object of strings in JSONL. An empty
CSV cell is an absent field. --type gives the type of rows without one.

The file is read twice, never held in memory. First every row is checked
against the command schema, and every bad row is reported on stderr as
FILE:LINE: field: problem; then nothing is published (exit status 2), unless
--skip-invalid publishes the good rows. Then the rows are published
asynchronously, at most --window of them awaiting JetStream's acknowledgement.

A row without an idempotency_key gets a stable one derived from its merchant,
transaction, type and amount ("batch-" and 32 hex digits), or the value of
--key-column; a row without a command_id gets one derived from its key and its
content, which is also its Nats-Msg-Id. So publishing the same file again never
captures twice: within the stream's duplicate window the copies are dropped
(counted as already in the stream), later the worker answers them as
duplicates. Ctrl-C stops publishing, waits for the outstanding
acknowledgements and says how far it got (exit status 1); run the same command
again to publish the rest.

With --wait it then waits for the outcome of every row (at most the duration
given, after the last row is published) and prints a summary on stdout; --out
writes one CSV line per row (line,idempotency_key,outcome,gateway_code,message,
event_id), in the order outcomes arrive. An outcome is succeeded, failed,
rejected, dead_lettered, duplicate (a repeat whose original outcome is not
known here), pending (no outcome in time), invalid (skipped) or unpublished; a
repeat of a command done before reports the original outcome. Exit status 1
when a row failed, was rejected or dead-lettered, is still pending, or could
not be published. Without --wait, --out lists the rows as published.
--dry-run only checks the file.`,
	example: `# orders.csv:
#   merchant_id,transaction_id,amount,currency,metadata.order
#   M001,ab8444e7-fec0-40dd-994d-0ad813785f74,1000,JPY,42
publisher batch --file orders.csv --type capture --wait --out results.csv
publisher batch --file commands.jsonl --key-column order_id --skip-invalid --quiet`,
}

// defaultBatchWait is how long --wait alone waits for the outcomes.
const defaultBatchWait = 10 * time.Minute

// progressEvery is the interval of the plain progress lines (stderr not a
// terminal).
const progressEvery = 2 * time.Second

// batchWaitFlag is --wait[=duration] with the batch's default.
type batchWaitFlag struct{ d time.Duration }

func (w *batchWaitFlag) String() string {
	if w == nil || w.d == 0 {
		return ""
	}
	return w.d.String()
}

func (w *batchWaitFlag) Set(s string) error {
	if b, err := strconv.ParseBool(s); err == nil {
		w.d = 0
		if b {
			w.d = defaultBatchWait
		}
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 10m, or true/false")
	}
	if d <= 0 {
		return errors.New("the wait must be positive")
	}
	w.d = d
	return nil
}

// IsBoolFlag lets --wait stand alone.
func (w *batchWaitFlag) IsBoolFlag() bool { return true }

// batchConfig is the parsed command line of batch.
type batchConfig struct {
	conn        connFlags
	file        string
	format      string
	typ         string
	keyColumn   string
	skipInvalid bool
	window      int
	wait        batchWaitFlag
	out         string
	quiet       bool
	dryRun      bool
	opts        publish.BatchOptions
}

// runBatch is `publisher batch`: it checks a file of commands, publishes
// it, and with --wait collects the outcome of every row.
func runBatch(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("batch")
	var c batchConfig
	c.conn.register(fs, e.getenv)
	fs.StringVar(&c.file, "file", "", "the batch `file` (required)")
	fs.StringVar(&c.format, "format", "", "file `format`: csv or jsonl (default: from the extension)")
	fs.StringVar(&c.typ, "type", "", "command `type` of rows without one: capture or void")
	fs.StringVar(&c.keyColumn, "key-column", "", "`column` (or JSONL field) holding the idempotency key (default: derived from the row)")
	fs.BoolVar(&c.skipInvalid, "skip-invalid", false, "publish the valid rows even when some are bad")
	fs.IntVar(&c.window, "window", publish.DefaultBatchWindow, "at most `n` publications awaiting JetStream's acknowledgement")
	fs.Var(&c.wait, "wait", "wait for every row's outcome, at most `duration` after the last is published (--wait alone: 10m)")
	fs.StringVar(&c.out, "out", "", "write one CSV line per row to `file`: line,idempotency_key,outcome,gateway_code,message,event_id")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress on stderr")
	fs.BoolVar(&c.dryRun, "dry-run", false, "check the file and publish nothing")
	if done, err := parseFlags(fs, batchHelp, args, e); done || err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if e.getenv("GOGC") == "" && c.wait.d == 0 {
		// Without --wait the live heap of a batch is small and bounded
		// (a few MiB), while it makes garbage at every row: collecting
		// less often saves about a third of the CPU time. With --wait the
		// heap grows with the file, and the default stays. GOGC in the
		// environment overrides it.
		defer debug.SetGCPercent(debug.SetGCPercent(batchGCPercent))
	}
	return c.run(ctx, e)
}

// batchGCPercent is the garbage collector's target percentage during a
// batch (the runtime's default is 100).
const batchGCPercent = 400

// check validates the flags and fills c.opts.
func (c *batchConfig) check() error {
	if c.file == "" {
		return usageErrorf("batch: --file is required (see `publisher batch --help`)")
	}
	if c.file == "-" {
		return usageErrorf("batch: --file must name a file: it is read twice (check, then publish)")
	}
	var err error
	if c.format != "" {
		c.opts.Format, err = publish.ParseFormat(c.format)
	} else {
		c.opts.Format, err = publish.FormatOf(c.file)
	}
	if err != nil {
		return usageErrorf("batch: --format: %v", err)
	}
	switch command.Type(c.typ) {
	case "", command.Capture, command.Void:
		c.opts.Type = command.Type(c.typ)
	default:
		return usageErrorf("batch: --type must be capture or void, got %q", c.typ)
	}
	if c.window < 1 || c.window > 65536 {
		return usageErrorf("batch: --window must be between 1 and 65536, got %d", c.window)
	}
	c.opts.KeyColumn = strings.TrimSpace(c.keyColumn)
	if c.out != "" && sameFile(c.out, c.file) {
		return usageErrorf("batch: --out %s is the batch file itself", c.out)
	}
	return nil
}

// sameFile reports whether the paths name one file.
func sameFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// batchRun is the state of one batch run.
type batchRun struct {
	*batchConfig
	e        *env
	progress progressOut

	// Counts of the first pass; written by CheckBatch's callback and read
	// by the progress goroutine.
	rows, valid, invalid atomic.Int64
	size                 int64
	modTime              time.Time

	digest  *publish.BatchDigest  // of the first pass
	tracker *publish.BatchTracker // with --wait
	results *resultsFile          // with --out
	sum     summary
}

func (c *batchConfig) run(ctx context.Context, e *env) error {
	r := &batchRun{batchConfig: c, e: e, progress: progressOut{w: e.stderr, tty: isTerminal(e.stderr), quiet: c.quiet}}
	f, err := os.Open(c.file)
	if err != nil {
		return usageErrorf("batch: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	if !st.Mode().IsRegular() {
		return usageErrorf("batch: %s is not a regular file: it is read twice (check, then publish)", c.file)
	}
	r.size, r.modTime = st.Size(), st.ModTime()

	var client *publish.Client
	if !c.dryRun {
		var closeConn func()
		client, closeConn, err = c.conn.connect(ctx, true)
		if err != nil {
			return err
		}
		defer closeConn()
		if c.wait.d > 0 {
			r.tracker = publish.NewBatchTracker(r.outcome)
		}
	}

	// Pass 1: check every row; publish nothing.
	if err := r.check(ctx, f); err != nil {
		return err
	}
	rows, valid, invalid := r.rows.Load(), r.valid.Load(), r.invalid.Load()
	switch {
	case invalid > 0 && valid == 0:
		return usageErrorf("batch: %s: none of the %d rows is valid; nothing was published", c.file, rows)
	case invalid > 0 && !c.skipInvalid:
		return usageErrorf("batch: %s: %d of %d rows are bad; nothing was published (fix them, or publish the %d good rows with --skip-invalid)",
			c.file, invalid, rows, valid)
	case valid == 0:
		return usageErrorf("batch: %s: no valid row to publish (%d rows)", c.file, rows)
	case c.dryRun:
		fmt.Fprintf(e.stdout, "batch %s: %d rows, %d valid, %d bad: nothing published (--dry-run)\n", c.file, rows, valid, invalid)
		return nil
	}

	// Pass 2: publish.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != r.size || !st.ModTime().Equal(r.modTime) {
		return fmt.Errorf("batch: %s changed while it was being checked; nothing was published: run again", c.file)
	}
	if c.out != "" {
		if r.results, err = createResults(c.out); err != nil {
			return fmt.Errorf("batch: %w", err)
		}
		defer r.results.close()
	}
	return r.publish(ctx, client, f)
}

// check is the first pass: it reports every bad row and counts the rows.
// With --wait, it registers every valid row with the tracker.
func (r *batchRun) check(ctx context.Context, f io.Reader) error {
	var read atomic.Int64
	stop := r.progress.start("checking", r.size, true, read.Load, func(cur int64, _ time.Duration) string {
		return fmt.Sprintf("batch: checking %s: %d%% read, %d rows, %d bad", r.file, percent(cur, r.size), r.rows.Load(), r.invalid.Load())
	})
	digest, err := publish.CheckBatch(ctx, &countingReader{r: f, n: &read}, r.opts, func(row *publish.Row) error {
		r.rows.Add(1)
		if row.Err != nil {
			r.invalid.Add(1)
			for _, p := range row.Err.Problems {
				fmt.Fprintf(r.e.stderr, "%s:%d: %s\n", r.file, row.Line, p.Message)
			}
			return nil
		}
		r.valid.Add(1)
		if r.tracker != nil {
			r.tracker.Add(row.Line, row.Cmd.MerchantID, row.Cmd.Key(), row.Cmd.CommandID)
		}
		return nil
	})
	stop(err == nil)
	var he *publish.HeaderError
	switch {
	case errors.As(err, &he):
		for _, p := range he.Problems {
			fmt.Fprintf(r.e.stderr, "%s:%d: %s\n", r.file, he.Line, p.Message)
		}
		return usageErrorf("batch: %s: the header cannot be used; nothing was published", r.file)
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("batch: interrupted while checking %s (%d rows checked); nothing was published", r.file, r.rows.Load())
	case err != nil:
		return fmt.Errorf("batch: %s: %w", r.file, err)
	}
	r.digest = digest
	return nil
}

// ackTimeout bounds the wait for the outstanding acknowledgements after
// publishing stopped.
const ackTimeout = 30 * time.Second

// publish is the second pass: it publishes the valid rows, then with --wait
// waits for their outcomes, and prints the summary.
func (r *batchRun) publish(ctx context.Context, client *publish.Client, f io.Reader) error {
	// One new trace for the batch: every command's events carry its id.
	ctx = clientpkg.ContextWithTraceparent(ctx, tracing.NewTraceparent(), "")
	stopFollow := func() {}
	if r.tracker != nil {
		// Follow the events before the first publication, so that no
		// outcome is missed.
		var err error
		stopFollow, err = client.FollowBatch(ctx, r.tracker)
		if err != nil {
			return fmt.Errorf("batch: %w", err)
		}
		defer stopFollow()
	}
	p, err := client.NewBatchPublisher(publish.BatchPublishOptions{Window: r.window, OnAck: r.acked})
	if err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	valid := r.valid.Load()
	done := func() int64 { s := p.Stats(); return s.Acked + s.Failed }
	stop := r.progress.start("publishing", valid, false, done, func(cur int64, elapsed time.Duration) string {
		s := p.Stats()
		return fmt.Sprintf("batch: published %d/%d rows, %d acknowledged (%d already in the stream), %d failed, %.0f rows/s",
			s.Published, valid, s.Acked, s.Duplicates, s.Failed, rate(cur, elapsed))
	})
	start := time.Now()
	scanErr := publish.ReadBatch(ctx, f, r.opts, r.digest, func(row *publish.Row) error {
		if row.Err != nil {
			if r.results != nil {
				msgs := make([]string, len(row.Err.Problems))
				for i, p := range row.Err.Problems {
					msgs[i] = p.Message
				}
				r.results.write(row.Line, row.Cmd.Key(), "invalid", "", strings.Join(msgs, "; "), "")
			}
			return nil
		}
		return p.Publish(ctx, row)
	})
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	closeErr := p.Close(actx)
	cancel()
	elapsed := time.Since(start)
	stop(scanErr == nil && closeErr == nil)
	st := p.Stats()

	interrupted := ctx.Err() != nil
	var failure []string
	switch {
	case interrupted:
		failure = append(failure, fmt.Sprintf("interrupted: %d of %d rows published, %d acknowledged (%d already in the stream), %d failed; run the same command again to publish the rest: the rows already published are dropped as duplicates or answered from their idempotency keys",
			st.Published, valid, st.Acked, st.Duplicates, st.Failed))
	case scanErr != nil:
		failure = append(failure, fmt.Sprintf("stopped at %d of %d rows: %v", st.Published, valid, scanErr))
	}
	if closeErr != nil {
		failure = append(failure, fmt.Sprintf("%d acknowledgements did not arrive: %v", st.Published-st.Acked-st.Failed, closeErr))
	}

	waited := false
	if r.tracker != nil && !interrupted {
		waited = true
		wctx, cancel := context.WithTimeout(ctx, r.wait.d)
		decided := func() int64 { d, _ := r.tracker.Counts(); return int64(d) }
		stop := r.progress.start("outcomes", int64(r.tracker.Len()), false, decided, func(cur int64, elapsed time.Duration) string {
			_, waiting := r.tracker.Counts()
			return fmt.Sprintf("batch: %d/%d outcomes, %d published rows waiting, %.0f outcomes/s", cur, r.tracker.Len(), waiting, rate(cur, elapsed))
		})
		err := r.tracker.Wait(wctx)
		stop(err == nil)
		cancel()
		if err != nil && ctx.Err() != nil {
			failure = append(failure, "interrupted while waiting for the outcomes")
		}
	}
	if r.tracker != nil {
		// No outcome may arrive while the undecided rows are written.
		stopFollow()
		r.tracker.Undecided(r.outcome)
	}

	r.printSummary(st, elapsed, waited)
	if r.results != nil {
		if err := r.results.close(); err != nil {
			failure = append(failure, fmt.Sprintf("results file: %v", err))
		} else {
			fmt.Fprintf(r.e.stdout, "results in %s\n", r.out)
		}
	}
	if st.Failed > 0 {
		failure = append(failure, fmt.Sprintf("%d rows could not be published", st.Failed))
	}
	if waited {
		var bad []string
		for _, k := range []string{publish.ResultFailed, publish.ResultRejected, publish.ResultDeadLettered, publish.ResultPending} {
			if n := r.sum.get(k); n > 0 {
				bad = append(bad, fmt.Sprintf("%d %s", n, k))
			}
		}
		if len(bad) > 0 {
			failure = append(failure, strings.Join(bad, ", "))
		}
	}
	if len(failure) > 0 {
		return fmt.Errorf("batch %s: %s", r.file, strings.Join(failure, "; "))
	}
	return nil
}

// acked receives the end of each row's publication.
func (r *batchRun) acked(a publish.BatchAck) {
	if r.tracker != nil {
		r.tracker.Acked(a)
		return
	}
	switch {
	case a.Err != nil:
		r.outcome(publish.BatchOutcome{Line: a.Line, Key: a.Key, PublishErr: a.Err})
	case r.results == nil:
	case a.Duplicate:
		r.results.write(a.Line, a.Key, "published", "", fmt.Sprintf("already in the stream at sequence %d (published before)", a.Sequence), "")
	default:
		r.results.write(a.Line, a.Key, "published", "", fmt.Sprintf("stored at stream sequence %d", a.Sequence), "")
	}
}

// outcome records the outcome of a row.
func (r *batchRun) outcome(o publish.BatchOutcome) {
	r.sum.add(o.Result(), o.Repeat)
	r.results.write(o.Line, o.Key, o.Result(), o.Event.Data.GatewayCode, o.Message(), o.Event.ID)
}

// printSummary prints the counts to stdout.
func (r *batchRun) printSummary(st publish.BatchStats, elapsed time.Duration, waited bool) {
	w := r.e.stdout
	fmt.Fprintf(w, "batch %s: %d rows, %d published in %s (%.0f rows/s), %d already in the stream, %d bad rows skipped\n",
		r.file, r.rows.Load(), st.Acked, elapsed.Round(time.Millisecond), rate(st.Acked+st.Failed, elapsed), st.Duplicates, r.invalid.Load())
	if !waited {
		if st.Failed > 0 {
			fmt.Fprintf(w, "  %d rows could not be published\n", st.Failed)
		}
		return
	}
	for _, k := range []struct{ label, result string }{
		{"succeeded", publish.ResultSucceeded},
		{"failed", publish.ResultFailed},
		{"rejected", publish.ResultRejected},
		{"duplicate", publish.ResultDuplicate},
		{"dead-lettered", publish.ResultDeadLettered},
		{"still pending", publish.ResultPending},
		{"unpublished", publish.ResultUnpublished},
	} {
		fmt.Fprintf(w, "  %-14s %8d\n", k.label, r.sum.get(k.result))
	}
	fmt.Fprintf(w, "  %-14s %8d  (of the rows above: done before, no new gateway call)\n", "repeats", r.sum.repeatCount())
}

// summary counts the results of the rows.
type summary struct {
	mu      sync.Mutex
	results map[string]int
	repeats int
}

func (s *summary) add(result string, repeat bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.results == nil {
		s.results = map[string]int{}
	}
	s.results[result]++
	if repeat {
		s.repeats++
	}
}

func (s *summary) get(result string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.results[result]
}

func (s *summary) repeatCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repeats
}

// resultsFile is the --out file: one CSV line per row. Safe for concurrent
// use; a nil *resultsFile writes nothing.
type resultsFile struct {
	mu     sync.Mutex
	f      *os.File
	w      *csv.Writer
	err    error
	closed bool
}

// resultsHeader is the first line of the results file.
var resultsHeader = []string{"line", "idempotency_key", "outcome", "gateway_code", "message", "event_id"}

func createResults(path string) (*resultsFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	r := &resultsFile{f: f, w: csv.NewWriter(f)}
	r.err = r.w.Write(resultsHeader)
	return r, nil
}

func (r *resultsFile) write(line int, key, outcome, code, msg, eventID string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.closed {
		return
	}
	r.err = r.w.Write([]string{strconv.Itoa(line), key, outcome, code, msg, eventID})
}

// close flushes and closes the file; safe to call twice.
func (r *resultsFile) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.err
	}
	r.closed = true
	r.w.Flush()
	if err := r.w.Error(); err != nil && r.err == nil {
		r.err = err
	}
	if err := r.f.Close(); err != nil && r.err == nil {
		r.err = err
	}
	return r.err
}

// progressOut shows the progress of a phase on stderr: a bar when stderr is
// a terminal, a plain line every progressEvery otherwise, nothing when
// quiet.
type progressOut struct {
	w     io.Writer
	tty   bool
	quiet bool
}

// start shows the progress of a phase until stop is called (finished: the
// phase completed). cur is the progress so far out of total (a byte count
// when bytes is set); line makes the plain line.
func (p progressOut) start(desc string, total int64, bytes bool, cur func() int64, line func(cur int64, elapsed time.Duration) string) (stop func(finished bool)) {
	if p.quiet {
		return func(bool) {}
	}
	started := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var bar *progressbar.ProgressBar
	every := progressEvery
	if p.tty {
		every = 200 * time.Millisecond
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetRenderBlankState(true),
		}
		if bytes {
			opts = append(opts, progressbar.OptionShowBytes(true))
		} else {
			opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("rows"))
		}
		bar = progressbar.NewOptions64(total, opts...)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if bar != nil {
					_ = bar.Set64(cur())
				} else {
					fmt.Fprintln(p.w, line(cur(), time.Since(started)))
				}
			}
		}
	}()
	return func(finished bool) {
		close(done)
		wg.Wait()
		if bar != nil {
			_ = bar.Set64(cur())
			if finished {
				_ = bar.Finish()
			}
			fmt.Fprintln(p.w)
		}
	}
}

// countingReader counts the bytes read.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func percent(n, total int64) int64 {
	if total <= 0 {
		return 100
	}
	return n * 100 / total
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
