package publish

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/command"
)

// Row is one row of a batch file, as CheckBatch and ReadBatch hand it over.
type Row struct {
	// Line is the row's line in the file (where a CSV record starts).
	Line int
	// Cmd is the command of the row, with its derived idempotency key and
	// command id; partly filled when Err is set.
	Cmd command.Command
	// Data is the command's JSON when the row is valid. It is the caller's
	// to keep (it is not reused).
	Data []byte
	// Enc is the command as the public client publishes it (its JSON is
	// Data), for the rows ReadBatch hands over; nil from CheckBatch.
	Enc *client.Encoded
	// Err lists the row's problems; nil for a valid row.
	Err *RowError
}

// rawRow is a row as read, before conversion: a CSV record or a JSON line.
type rawRow struct {
	line int
	rec  []string
	json []byte
	err  *RowError // a problem found while reading (CSV syntax)
}

// chunk is a run of consecutive rows converted by one worker.
type chunk struct {
	seq  int // index of the chunk in the file
	raw  []rawRow
	rows []Row
	sum  [sha256.Size]byte // digest of the rows (see BatchDigest)
	bad  []int             // lines of the bad rows
	done chan struct{}
}

// chunkSize is the number of rows a worker converts at a time.
const chunkSize = 256

// maxLine bounds a JSON Lines line: a command is at most command.MaxSize
// bytes, and a row carries little more.
const maxLine = command.MaxSize + 4096

// ErrFileChanged is returned by ReadBatch when the file is not the one
// CheckBatch read: a run of rows differs, or the file is longer or shorter.
// The rows before the change were handed over; none after.
var ErrFileChanged = errors.New("the file changed since it was checked")

// BatchDigest is what CheckBatch learnt about a file, so that ReadBatch
// hands over exactly the rows that were checked without checking them
// against the command schema again: the SHA-256 of each run of 256 rows
// (their lines and command JSON) and the lines of the bad rows. It takes 32
// bytes per 256 rows, and 8 per bad row.
type BatchDigest struct {
	chunks []chunkSum
}

type chunkSum struct {
	sum [sha256.Size]byte
	bad []int
}

// CheckBatch reads a batch file from r, row by row, and calls fn for each
// row in file order: a valid row with its command and JSON, a bad row with
// every problem found. Rows are converted and checked against the command
// schema by o.Workers goroutines, a few hundred rows ahead of fn, so memory
// does not grow with the file. fn must not keep the *Row (its Data may be
// kept). CheckBatch stops at the end of r, when fn returns an error (which
// it returns), or when ctx ends. A CSV header that cannot be used gives a
// *HeaderError before any row. The digest it returns lets ReadBatch read
// the same file again.
func CheckBatch(ctx context.Context, r io.Reader, o BatchOptions, fn func(*Row) error) (*BatchDigest, error) {
	d := &BatchDigest{}
	if err := scanBatch(ctx, r, o, d, false, fn); err != nil {
		return nil, err
	}
	return d, nil
}

// ReadBatch reads a file that CheckBatch read before, and calls fn for each
// row in file order, like CheckBatch. It does not check the rows against
// the command schema again: it checks instead that each run of rows is the
// one CheckBatch checked (its digest), before handing any of its rows to
// fn, and stops with ErrFileChanged when it is not. Bad rows come with their
// problems again.
func ReadBatch(ctx context.Context, r io.Reader, o BatchOptions, d *BatchDigest, fn func(*Row) error) error {
	return scanBatch(ctx, r, o, d, true, fn)
}

// scanBatch is CheckBatch (verify false: record d) and ReadBatch (verify:
// compare with d).
func scanBatch(ctx context.Context, r io.Reader, o BatchOptions, d *BatchDigest, verify bool, fn func(*Row) error) error {
	var (
		next func() (rawRow, bool, error)
		conv func(*fields, *rawRow) []RowProblem
	)
	switch o.Format {
	case FormatCSV:
		h, cr, err := o.readHeader(r)
		if err != nil {
			return err
		}
		next = func() (rawRow, bool, error) { return readCSV(cr) }
		conv = func(f *fields, raw *rawRow) []RowProblem { return h.fields(raw.rec, f) }
	case FormatJSONL:
		lr := &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
		next = lr.next
		conv = func(f *fields, raw *rawRow) []RowProblem { return o.parseJSONLine(raw.json, f) }
	default:
		return fmt.Errorf("format %q: %w", o.Format, ErrFormat)
	}

	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan *chunk)
	order := make(chan *chunk, 2*workers)
	free := make(chan *chunk, 2*workers+2)

	// The reader: cuts the file into chunks, queues each in file order and
	// hands it to a worker.
	g.Go(func() error {
		defer close(order)
		defer close(jobs)
		for seq := 0; ; seq++ {
			var c *chunk
			select {
			case c = <-free:
				c.raw = c.raw[:0]
			default:
				c = &chunk{raw: make([]rawRow, 0, chunkSize), rows: make([]Row, chunkSize)}
			}
			c.seq = seq
			c.done = make(chan struct{})
			eof := false
			for len(c.raw) < chunkSize {
				raw, ok, err := next()
				if err != nil {
					return err
				}
				if !ok {
					eof = true
					break
				}
				c.raw = append(c.raw, raw)
			}
			if len(c.raw) > 0 {
				select {
				case order <- c:
				case <-gctx.Done():
					return gctx.Err()
				}
				select {
				case jobs <- c:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			if eof {
				return nil
			}
		}
	})
	for range workers {
		g.Go(func() error {
			var f fields
			b := newBuilder(&o)
			h := sha256.New()
			var num [20]byte
			for c := range jobs {
				var recorded []int
				if verify && c.seq < len(d.chunks) {
					recorded = d.chunks[c.seq].bad
				}
				h.Reset()
				c.bad = c.bad[:0]
				for i := range c.raw {
					raw := &c.raw[i]
					row := &c.rows[i]
					*row = Row{Line: raw.line}
					switch {
					case raw.err != nil:
						row.Err = raw.err
					default:
						f.reset()
						problems := conv(&f, raw)
						if wholeRow(problems) {
							row.Err = &RowError{Line: raw.line, Problems: problems}
							break
						}
						_, wasBad := slices.BinarySearch(recorded, raw.line)
						data, enc, problems := b.encode(&f, &row.Cmd, problems, !verify || wasBad)
						if len(problems) > 0 {
							row.Err = &RowError{Line: raw.line, Problems: problems}
							break
						}
						row.Data, row.Enc = data, enc
					}
					h.Write(strconv.AppendInt(num[:0], int64(raw.line), 10))
					if row.Err != nil {
						c.bad = append(c.bad, raw.line)
						h.Write([]byte{'!'})
						continue
					}
					h.Write([]byte{':'})
					h.Write(strconv.AppendInt(num[:0], int64(len(row.Data)), 10))
					h.Write([]byte{':'})
					h.Write(row.Data)
				}
				h.Sum(c.sum[:0])
				close(c.done)
			}
			return nil
		})
	}
	// The rows are handed over in file order, a chunk once it is converted
	// (and, for ReadBatch, found unchanged).
	g.Go(func() error {
		chunks := 0
		for c := range order {
			select {
			case <-c.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			chunks++
			if verify {
				if c.seq >= len(d.chunks) || d.chunks[c.seq].sum != c.sum {
					return fmt.Errorf("rows from line %d on: %w", c.raw[0].line, ErrFileChanged)
				}
			} else {
				d.chunks = append(d.chunks, chunkSum{sum: c.sum, bad: slices.Clone(c.bad)})
			}
			for i := range c.raw {
				if err := fn(&c.rows[i]); err != nil {
					return err
				}
				c.rows[i] = Row{}
			}
			select {
			case free <- c:
			default:
			}
		}
		if verify && gctx.Err() == nil && chunks != len(d.chunks) {
			return fmt.Errorf("%d runs of rows read, %d checked: %w", chunks, len(d.chunks), ErrFileChanged)
		}
		return nil
	})
	err := g.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return ctx.Err()
	}
	return err
}

// wholeRow reports whether a problem concerns the row as a whole (its
// syntax), so that its fields are not worth checking.
func wholeRow(problems []RowProblem) bool {
	for _, p := range problems {
		if p.Field == "" {
			return true
		}
	}
	return false
}

// csvHeader maps the columns of a CSV file to command fields.
type csvHeader struct {
	cols    []int    // field index, or -1 for metadata, -2 for the key column only
	meta    []string // metadata key of each column ("" for others)
	keyCol  int      // column of BatchOptions.KeyColumn, -1 when unset
	columns int
}

// bom is the UTF-8 byte order mark some spreadsheets write first.
const bom = "\uFEFF"

func (o *BatchOptions) readHeader(r io.Reader) (*csvHeader, *csv.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if b, err := br.Peek(len(bom)); err == nil && string(b) == bom {
		_, _ = br.Discard(len(bom))
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = false
	names, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, &HeaderError{RowError{Line: 1, Problems: []RowProblem{headerProblem("the file is empty; a CSV batch starts with a header row naming the columns")}}}
		}
		return nil, nil, &HeaderError{RowError{Line: 1, Problems: []RowProblem{headerProblem(csvMessage(err))}}}
	}
	h := &csvHeader{cols: make([]int, len(names)), meta: make([]string, len(names)), keyCol: -1, columns: len(names)}
	var problems []RowProblem
	seen := map[string]bool{}
	for i, name := range names {
		name = strings.TrimSpace(name)
		if seen[name] {
			problems = append(problems, problemf(name, "column given twice in the header"))
			continue
		}
		seen[name] = true
		if o.KeyColumn != "" && name == o.KeyColumn {
			h.keyCol = i
		}
		switch idx := fieldIndex(name); {
		case idx >= 0:
			h.cols[i] = idx
		case strings.HasPrefix(name, metadataPrefix) && len(name) > len(metadataPrefix):
			h.cols[i] = -1
			h.meta[i] = strings.TrimPrefix(name, metadataPrefix)
		case name == o.KeyColumn && name != "":
			h.cols[i] = -2
		case name == "":
			problems = append(problems, headerProblem(fmt.Sprintf("column %d has no name", i+1)))
		default:
			problems = append(problems, problemf(name, "unknown column (want %s, or metadata.<key>)", strings.Join(fieldNames[:], ", ")))
		}
	}
	for _, req := range []string{"merchant_id", "transaction_id"} {
		if !seen[req] {
			problems = append(problems, problemf(req, "required column missing from the header"))
		}
	}
	if !seen["type"] && o.Type == "" {
		problems = append(problems, problemf("type", "required column missing from the header (or give the type of every row with --type capture|void)"))
	}
	if o.KeyColumn != "" && h.keyCol < 0 {
		problems = append(problems, problemf(o.KeyColumn, "the key column (--key-column) is not in the header"))
	}
	if len(problems) > 0 {
		return nil, nil, &HeaderError{RowError{Line: 1, Problems: problems}}
	}
	return h, cr, nil
}

// headerProblem is a problem of the header as a whole.
func headerProblem(msg string) RowProblem {
	return RowProblem{Message: "header: " + msg}
}

// fields fills f from a record.
func (h *csvHeader) fields(rec []string, f *fields) []RowProblem {
	if len(rec) != h.columns {
		return []RowProblem{problemf("", "has %d fields, the header has %d columns", len(rec), h.columns)}
	}
	for i, v := range rec {
		if i == h.keyCol {
			f.key, f.hasKey = v, v != ""
		}
		if v == "" {
			continue // an empty cell is an absent field
		}
		switch c := h.cols[i]; {
		case c >= 0:
			f.vals[c], f.present[c] = v, true
		case c == -1:
			f.meta = append(f.meta, [2]string{h.meta[i], v})
		}
	}
	return nil
}

// readCSV reads the next record. A syntax error is a bad row, not the end.
func readCSV(cr *csv.Reader) (rawRow, bool, error) {
	rec, err := cr.Read()
	switch {
	case err == nil:
		line, _ := cr.FieldPos(0)
		return rawRow{line: line, rec: rec}, true, nil
	case errors.Is(err, io.EOF):
		return rawRow{}, false, nil
	}
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return rawRow{}, false, err
	}
	if errors.Is(err, csv.ErrFieldCount) {
		// The record is complete; the field count is checked against the
		// header by csvHeader.fields.
		return rawRow{line: pe.StartLine, rec: rec}, true, nil
	}
	return rawRow{line: pe.StartLine, err: &RowError{Line: pe.StartLine, Problems: []RowProblem{problemf("", "%s", csvMessage(err))}}}, true, nil
}

// csvMessage describes a CSV syntax error without its position, which the
// caller prints as the line.
func csvMessage(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("CSV syntax: %v (column %d)", pe.Err, pe.Column)
	}
	return err.Error()
}

// lineReader reads JSON Lines, skipping blank lines and cutting overlong
// ones.
type lineReader struct {
	r    *bufio.Reader
	line int
	buf  []byte
}

func (l *lineReader) next() (rawRow, bool, error) {
	for {
		l.buf = l.buf[:0]
		long := false
		var err error
		for {
			var frag []byte
			frag, err = l.r.ReadSlice('\n')
			if !long {
				if len(l.buf)+len(frag) > maxLine {
					long = true
				} else {
					l.buf = append(l.buf, frag...)
				}
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return rawRow{}, false, err
		}
		if errors.Is(err, io.EOF) && len(l.buf) == 0 && !long {
			return rawRow{}, false, nil
		}
		l.line++
		if l.line == 1 {
			l.buf = bytes.TrimPrefix(l.buf, []byte(bom))
		}
		if long {
			return rawRow{line: l.line, err: &RowError{Line: l.line, Problems: []RowProblem{problemf("", "the line is longer than %d bytes", maxLine)}}}, true, nil
		}
		if len(bytes.TrimSpace(l.buf)) == 0 {
			if errors.Is(err, io.EOF) {
				return rawRow{}, false, nil
			}
			continue
		}
		return rawRow{line: l.line, json: bytes.Clone(l.buf)}, true, nil
	}
}
