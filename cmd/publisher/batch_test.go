package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/systemtest"
	"github.com/payworker/payworker/schemas"
)

// batchRow is one capture of a test batch file.
type batchRow struct {
	merchant, txn string
	amount        int64
	currency      string
	order         string // metadata.order
	// wantFail marks a row the gateway refuses (unknown transaction).
	wantFail bool
}

// writeBatchFile writes rows as CSV or JSON Lines and returns the path and the
// line of each row.
func writeBatchFile(t testing.TB, dir, name string, rows []batchRow) (path string, lines []int) {
	t.Helper()
	path = filepath.Join(dir, name)
	var buf bytes.Buffer
	lines = make([]int, len(rows))
	switch filepath.Ext(name) {
	case ".csv":
		buf.WriteString("type,merchant_id,transaction_id,amount,currency,metadata.order\n")
		for i, r := range rows {
			fmt.Fprintf(&buf, "capture,%s,%s,%d,%s,%s\n", r.merchant, r.txn, r.amount, r.currency, r.order)
			lines[i] = i + 2
		}
	case ".jsonl":
		for i, r := range rows {
			b, err := json.Marshal(map[string]any{
				"type": "capture", "merchant_id": r.merchant, "transaction_id": r.txn,
				"amount": r.amount, "currency": r.currency, "metadata": map[string]string{"order": r.order},
			})
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(b)
			buf.WriteByte('\n')
			lines[i] = i + 1
		}
	default:
		t.Fatalf("writeBatch: unknown extension of %s", name)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, lines
}

// batchSandboxRows authorises n payments on the sandbox and returns a capture row
// for each, followed by failing rows for unknown transactions.
func batchSandboxRows(sb *sandbox.Sandbox, n, failing int) []batchRow {
	rows := make([]batchRow, 0, n+failing)
	for i := range n {
		amount := int64(100 + i%900)
		rows = append(rows, batchRow{merchant: "M001", txn: sb.Authorise("M001", amount, "JPY"), amount: amount, currency: "JPY", order: strconv.Itoa(i)})
	}
	for i := range failing {
		rows = append(rows, batchRow{merchant: "M001", txn: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), amount: 500, currency: "JPY", order: "unknown-" + strconv.Itoa(i), wantFail: true})
	}
	return rows
}

// batchResult is one line of a results file.
type batchResult struct {
	key, outcome, code, message, eventID string
}

// readBatchResults reads a --out file into line → result, failing on a line
// given twice.
func readBatchResults(t *testing.T, path string) map[int]batchResult {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("results %s: %v", path, err)
	}
	if len(recs) == 0 || strings.Join(recs[0], ",") != "line,idempotency_key,outcome,gateway_code,message,event_id" {
		t.Fatalf("results header = %v, want line,idempotency_key,outcome,gateway_code,message,event_id", recs)
	}
	out := map[int]batchResult{}
	for _, rec := range recs[1:] {
		line, err := strconv.Atoi(rec[0])
		if err != nil {
			t.Fatalf("results line %q: %v", rec, err)
		}
		if _, dup := out[line]; dup {
			t.Errorf("results: line %d reported twice", line)
		}
		out[line] = batchResult{key: rec[1], outcome: rec[2], code: rec[3], message: rec[4], eventID: rec[5]}
	}
	return out
}

// runBatchCLI runs the program against the system's NATS.
func runBatchCLI(ctx context.Context, t testing.TB, natsURL string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if k == "NATS_URL" {
			return natsURL
		}
		return ""
	}
	err = run(ctx, append([]string{"publisher"}, args...), getenv, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

// batchCommandsStored returns the number of messages in the commands stream.
func batchCommandsStored(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.Default().Commands)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// checkBatchLedger checks every row's outcome in the results against the sandbox
// ledger: one capture of the row's amount for a succeeded row, none for a
// failed one.
func checkBatchLedger(t *testing.T, sb *sandbox.Sandbox, rows []batchRow, lines []int, results map[int]batchResult) {
	t.Helper()
	captures := map[string][]sandbox.Operation{}
	for _, op := range sb.Ledger() {
		captures[op.AuthorisationID] = append(captures[op.AuthorisationID], op)
	}
	if len(results) != len(rows) {
		t.Errorf("results has %d lines, want %d (one per row)", len(results), len(rows))
	}
	bad := 0
	for i, r := range rows {
		got, ok := results[lines[i]]
		ops := captures[r.txn]
		wantOutcome, wantOps := "succeeded", 1
		if r.wantFail {
			wantOutcome, wantOps = "failed", 0
		}
		switch {
		case !ok:
			t.Errorf("line %d: no result", lines[i])
		case got.outcome != wantOutcome || len(ops) != wantOps:
			t.Errorf("line %d (%s): outcome %q with %d ledger operations, want %q with %d", lines[i], r.txn, got.outcome, len(ops), wantOutcome, wantOps)
		case wantOps == 1 && (ops[0].Amount != r.amount || ops[0].Operation != "capture"):
			t.Errorf("line %d: ledger %s %d, want capture %d", lines[i], ops[0].Operation, ops[0].Amount, r.amount)
		case got.eventID == "" || (!r.wantFail && got.code != "INFO0001"):
			t.Errorf("line %d: result %+v, want an event id and gateway code INFO0001 for a success", lines[i], got)
		default:
			continue
		}
		if bad++; bad > 10 {
			t.Fatalf("too many wrong rows")
		}
	}
}

// batchSummaryCount reads "  <label>  <n>" from the summary on stdout.
func batchSummaryCount(t *testing.T, stdout, label string) int {
	t.Helper()
	for _, l := range strings.Split(stdout, "\n") {
		fields := strings.Fields(l)
		if len(fields) >= 2 && strings.Join(fields[:len(fields)-1], " ") == label {
			n, err := strconv.Atoi(fields[len(fields)-1])
			if err == nil {
				return n
			}
		}
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), label+" "); ok {
			if n, err := strconv.Atoi(strings.Fields(rest)[0]); err == nil {
				return n
			}
		}
	}
	t.Fatalf("summary has no %q line:\n%s", label, stdout)
	return 0
}

func batchSystem(t *testing.T) *systemtest.System {
	t.Helper()
	o := systemtest.DefaultOptions()
	o.Concurrency = 64
	return systemtest.Start(t, o)
}

// TestBatchWait runs a CSV and a JSON Lines batch of 5,000 captures through a
// real worker and the sandbox gateway, then runs the same file again.
func TestBatchWait(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 captures through a real worker; skipped with -short")
	}
	const n, failing = 4990, 10
	for _, name := range []string{"orders.csv", "orders.jsonl"} {
		t.Run(name, func(t *testing.T) {
			s := batchSystem(t)
			ctx := testContext(t)
			rows := batchSandboxRows(s.Sandbox, n, failing)
			dir := t.TempDir()
			path, lines := writeBatchFile(t, dir, name, rows)
			out := filepath.Join(dir, "results.csv")

			start := time.Now()
			stdout, stderr, err := runBatchCLI(ctx, t, s.NATS.URL, "batch", "--file", path, "--wait=2m", "--out", out)
			t.Logf("first run: %s\n%s", time.Since(start), stdout)
			if err == nil || exitCode(err) != exitFailed || !strings.Contains(err.Error(), fmt.Sprintf("%d failed", failing)) {
				t.Errorf("batch with %d failing rows = %v (exit %d), want exit 1 naming %d failed", failing, err, exitCode(err), failing)
			}
			if !strings.Contains(stderr, "batch: published") && !strings.Contains(stderr, "batch: checking") && !strings.Contains(stderr, "outcomes") && time.Since(start) > 3*time.Second {
				t.Errorf("stderr has no progress line after %s:\n%s", time.Since(start), stderr)
			}
			results := readBatchResults(t, out)
			checkBatchLedger(t, s.Sandbox, rows, lines, results)
			for label, want := range map[string]int{"succeeded": n, "failed": failing, "rejected": 0, "duplicate": 0, "dead-lettered": 0, "still pending": 0, "repeats": 0} {
				if got := batchSummaryCount(t, stdout, label); got != want {
					t.Errorf("first run summary %s = %d, want %d", label, got, want)
				}
			}
			ledger := len(s.Sandbox.Ledger())
			stored := batchCommandsStored(t, s.JS)

			// The same file again: nothing new is captured or stored, every
			// row is reported as a repeat with the original outcome.
			stdout, _, err = runBatchCLI(ctx, t, s.NATS.URL, "batch", "--file", path, "--wait=1m", "--out", out, "--quiet")
			t.Logf("second run:\n%s", stdout)
			if err == nil || exitCode(err) != exitFailed {
				t.Errorf("second run = %v, want exit 1 (the failed rows are still failed)", err)
			}
			if got := len(s.Sandbox.Ledger()); got != ledger {
				t.Errorf("ledger after the second run has %d operations, want %d (unchanged)", got, ledger)
			}
			if got := batchCommandsStored(t, s.JS); got != stored {
				t.Errorf("commands stored after the second run = %d, want %d (dropped by Nats-Msg-Id)", got, stored)
			}
			if !strings.Contains(stdout, fmt.Sprintf("%d already in the stream", n+failing)) {
				t.Errorf("second run summary does not say %d already in the stream:\n%s", n+failing, stdout)
			}
			if got := batchSummaryCount(t, stdout, "repeats"); got != n+failing {
				t.Errorf("second run repeats = %d, want %d", got, n+failing)
			}
			again := readBatchResults(t, out)
			checkBatchLedger(t, s.Sandbox, rows, lines, again)
			for line, r := range results {
				if a := again[line]; a.key != r.key || a.outcome != r.outcome || a.eventID != r.eventID {
					t.Errorf("line %d: second run %+v, want the first run's %+v", line, a, r)
					break
				}
			}
		})
	}
}

// TestBatchInvalidRows checks that every bad row is reported with its line
// and that nothing is published without --skip-invalid.
func TestBatchInvalidRows(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	dir := t.TempDir()
	const txn = "ab8444e7-fec0-40dd-994d-0ad813785f74"
	csvFile := filepath.Join(dir, "bad.csv")
	csvText := "type,merchant_id,transaction_id,amount,currency,notes,metadata.order\n" +
		"capture,M001," + txn + ",1000,JPY,,1\n" + // 2 good
		"capture,M0000000001," + txn + ",1000,JPY,,2\n" + // 3 merchant too long
		"capture,M001," + txn + ",10.50,EUR,,3\n" + // 4 amount not an integer
		"capture,M001," + txn + ",1000,,,4\n" + // 5 currency missing
		"refund,M001," + txn + ",1000,JPY,,5\n" + // 6 type
		"void,M001," + txn + ",,,,6\n" + // 7 good
		"capture,M001,,1000,jpy,,7\n" + // 8 transaction missing, currency pattern
		"capture,M001," + txn + ",0,JPY,,8\n" + // 9 amount 0
		"capture,M001," + txn + ",1000,JPY\n" + // 10 field count
		"capture,M001," + txn + ",2000,JPY,\"" + strings.Repeat("n", 129) + "\",10\n" // 11 notes too long
	if err := os.WriteFile(csvFile, []byte(csvText), 0o600); err != nil {
		t.Fatal(err)
	}
	jsonlFile := filepath.Join(dir, "bad.jsonl")
	jsonlText := `{"type":"capture","merchant_id":"M001","transaction_id":"` + txn + `","amount":1000,"currency":"JPY"}
{"type":"capture","merchant_id":"M001","transaction_id":"` + txn + `","amount":"1000","currency":"JPY"}
not json

{"type":"capture","merchant_id":"M001","transaction_id":"` + txn + `","amount":1000,"currency":"JPY","colour":"red"}
{"type":"void","merchant_id":"M001","transaction_id":"` + txn + `","metadata":{"order":7}}
{"type":"void","merchant_id":"M001","transaction_id":"` + txn + `","gateway":"stripe"}
{"type":"capture","merchant_id":"M001","transaction_id":"` + txn + `","amount":1500,"currency":"JPY","metadata":{"order":"8"}}
`
	if err := os.WriteFile(jsonlFile, []byte(jsonlText), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		file string
		want []string // line: field prefixes, one per bad row
		good int
	}{
		{"csv", csvFile, []string{
			"3: merchant_id: must be at most 10 characters",
			"4: amount: must be an integer",
			"5: currency: is required",
			"6: type: must be one of",
			"8: transaction_id: is required",
			"8: currency: must match",
			"9: amount: must be at least 1",
			"10: row: has 5 fields, the header has 7 columns",
			"11: notes: must be at most 128 characters",
		}, 2},
		{"jsonl", jsonlFile, []string{
			"2: amount: must be an integer",
			"3: row: not valid JSON",
			"5: colour: unknown field",
			"6: metadata.order: must be a string",
			"7: gateway: must be one of",
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := batchCommandsStored(t, h.js)
			_, stderr, err := h.run(ctx, "batch", "--file", tt.file, "--quiet")
			if exitCode(err) != exitUsage {
				t.Errorf("batch with bad rows = %v (exit %d), want exit 2", err, exitCode(err))
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, tt.file+":"+w) {
					t.Errorf("stderr does not report %q:\n%s", tt.file+":"+w, stderr)
				}
			}
			if got := batchCommandsStored(t, h.js); got != before {
				t.Errorf("commands stored after a refused batch = %d, want %d (nothing published)", got, before)
			}

			out := filepath.Join(t.TempDir(), "results.csv")
			stdout, _, err := h.run(ctx, "batch", "--file", tt.file, "--skip-invalid", "--quiet", "--out", out)
			if err != nil {
				t.Errorf("batch --skip-invalid = %v, want nil", err)
			}
			if got, want := batchCommandsStored(t, h.js), before+uint64(tt.good); got != want {
				t.Errorf("commands stored after --skip-invalid = %d, want %d (the good rows)\n%s", got, want, stdout)
			}
			res := readBatchResults(t, out)
			invalid := 0
			for _, r := range res {
				if r.outcome == "invalid" {
					invalid++
				}
			}
			if wantBad := len(res) - tt.good; invalid != wantBad || wantBad == 0 {
				t.Errorf("results: %d invalid of %d lines, want %d", invalid, len(res), len(res)-tt.good)
			}
		})
	}
}

// TestBatchHeaderAndFlags checks the errors found before any row is read.
func TestBatchHeaderAndFlags(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noType := write("notype.csv", "merchant_id,transaction_id,amount,currency\nM001,T1,100,JPY\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no file", []string{"batch"}, "--file is required"},
		{"unknown extension", []string{"batch", "--file", write("x.txt", "")}, "want .csv or .jsonl"},
		{"bad format", []string{"batch", "--file", noType, "--format", "xml"}, "want csv or jsonl"},
		{"bad window", []string{"batch", "--file", noType, "--window", "0"}, "--window"},
		{"bad type", []string{"batch", "--file", noType, "--type", "refund"}, "--type must be capture or void"},
		{"missing", []string{"batch", "--file", filepath.Join(dir, "none.csv")}, "no such file"},
		{"unknown column", []string{"batch", "--file", write("col.csv", "type,merchant_id,transaction_id,colour\n")}, "header cannot be used"},
		{"no type column", []string{"batch", "--file", noType}, "header cannot be used"},
		{"empty", []string{"batch", "--file", write("empty.csv", "")}, "header cannot be used"},
		{"no rows", []string{"batch", "--file", write("header.csv", "type,merchant_id,transaction_id\n")}, "no valid row"},
		{"out is the file", []string{"batch", "--file", noType, "--out", noType}, "is the batch file itself"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := h.run(ctx, tt.args...)
			if exitCode(err) != exitUsage || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%q = %v (exit %d), want exit 2 with %q", tt.args, err, exitCode(err), tt.want)
			}
		})
	}
	t.Run("header problems on stderr", func(t *testing.T) {
		f := write("cols.csv", "type,merchant_id,colour,merchant_id\n")
		_, stderr, _ := h.run(ctx, "batch", "--file", f)
		for _, w := range []string{f + ":1: colour: unknown column", f + ":1: merchant_id: column given twice", f + ":1: transaction_id: required column missing"} {
			if !strings.Contains(stderr, w) {
				t.Errorf("stderr does not report %q:\n%s", w, stderr)
			}
		}
	})
	t.Run("type flag and dry run", func(t *testing.T) {
		stdout, _, err := h.run(ctx, "batch", "--file", noType, "--type", "capture", "--dry-run")
		if err != nil || !strings.Contains(stdout, "1 valid") {
			t.Errorf("batch --type capture --dry-run = %v, %q; want nil and 1 valid", err, stdout)
		}
		if got := batchCommandsStored(t, h.js); got != 0 {
			t.Errorf("commands stored after --dry-run = %d, want 0", got)
		}
	})
	t.Run("help", func(t *testing.T) {
		stdout, _, err := h.run(ctx, "batch", "--help")
		if err != nil || !strings.Contains(stdout, "Example:") || !strings.Contains(stdout, "--skip-invalid") {
			t.Errorf("batch --help = %v, %q; want the help with an example", err, stdout)
		}
	})
}

// TestBatchInterrupted cancels a batch after some rows are acknowledged, then
// runs it again: every row is captured exactly once.
func TestBatchInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 captures through a real worker; skipped with -short")
	}
	s := batchSystem(t)
	ctx := testContext(t)
	rows := batchSandboxRows(s.Sandbox, 5000, 0)
	dir := t.TempDir()
	path, lines := writeBatchFile(t, dir, "orders.csv", rows)

	// Cancel once 1,500 commands are stored; --window 1 publishes one row at
	// a time, so the cancellation lands halfway.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for cctx.Err() == nil {
			if batchCommandsStored(t, s.JS) >= 1500 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	stdout, _, err := runBatchCLI(cctx, t, s.NATS.URL, "batch", "--file", path, "--window", "1", "--quiet")
	cancel()
	if err == nil || exitCode(err) != exitFailed || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("interrupted batch = %v (exit %d), want exit 1 saying interrupted\n%s", err, exitCode(err), stdout)
	}
	t.Logf("interrupted: %v", err)
	first := batchCommandsStored(t, s.JS)
	if first < 1500 || first >= 5000 {
		t.Fatalf("commands stored by the interrupted run = %d, want between 1500 and 5000", first)
	}

	out := filepath.Join(dir, "results.csv")
	stdout, _, err = runBatchCLI(ctx, t, s.NATS.URL, "batch", "--file", path, "--wait=2m", "--out", out, "--quiet")
	if err != nil {
		t.Errorf("rerun = %v, want nil\n%s", err, stdout)
	}
	if got := batchCommandsStored(t, s.JS); got != 5000 {
		t.Errorf("commands stored after the rerun = %d, want 5000 (the first run's %d dropped as duplicates)", got, first)
	}
	if got := batchSummaryCount(t, stdout, "repeats"); uint64(got) < first {
		t.Errorf("rerun repeats = %d, want at least the %d rows of the first run", got, first)
	}
	s.Settle(t)
	checkBatchLedger(t, s.Sandbox, rows, lines, readBatchResults(t, out))
	if got := len(s.Sandbox.Ledger()); got != len(rows) {
		t.Errorf("ledger has %d operations, want %d: exactly one capture per row", got, len(rows))
	}
}

// TestEventsJSONSchema checks that `events --json` prints events a real
// worker produced, each valid against its JSON Schema.
func TestEventsJSONSchema(t *testing.T) {
	s := batchSystem(t)
	ctx := testContext(t)
	rows := batchSandboxRows(s.Sandbox, 3, 1)
	path, _ := writeBatchFile(t, t.TempDir(), "few.jsonl", rows)
	if _, _, err := runBatchCLI(ctx, t, s.NATS.URL, "batch", "--file", path, "--wait=1m", "--quiet"); err == nil {
		t.Fatalf("batch with a failing row = nil, want exit 1")
	}
	stdout, _, err := runBatchCLI(ctx, t, s.NATS.URL, "events", "--all", "--json", "--count", "4")
	if err != nil {
		t.Fatalf("events --json = %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("events --json printed %d lines, want 4:\n%s", len(lines), stdout)
	}
	kinds := map[string]int{}
	for _, l := range lines {
		if err := schemas.ValidateEventJSON([]byte(l)); err != nil {
			t.Errorf("events --json line does not validate: %v\n%s", err, l)
		}
		var e struct{ Type string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		kinds[e.Type]++
	}
	if kinds["payments.capture.succeeded"] != 3 || kinds["payments.capture.failed"] != 1 {
		t.Errorf("event types = %v, want 3 capture.succeeded and 1 capture.failed", kinds)
	}
}
