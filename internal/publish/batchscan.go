package publish

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/payworker/payworker/internal/command"
)

// Row is one row of a batch file, as ScanBatch hands it over.
type Row struct {
	// Line is the row's line in the file (where a CSV record starts).
	Line int
	// Cmd is the command of the row, with its derived idempotency key and
	// command id; partly filled when Err is set.
	Cmd command.Command
	// Data is the command's JSON when the row is valid. It is the caller's
	// to keep (it is not reused).
	Data []byte
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
	raw  []rawRow
	rows []Row
	done chan struct{}
}

// chunkSize is the number of rows a worker converts at a time.
const chunkSize = 256

// maxLine bounds a JSON Lines line: a command is at most command.MaxSize
// bytes, and a row carries little more.
const maxLine = command.MaxSize + 4096

// ScanBatch reads a batch file from r, row by row, and calls fn for each row
// in file order: a valid row with its command and JSON, a bad row with every
// problem found. Rows are converted and validated by o.Workers goroutines,
// a few hundred rows ahead of fn, so memory does not grow with the file. fn
// must not keep the *Row (its Data may be kept). ScanBatch stops at the end
// of r, when fn returns an error (which it returns), or when ctx ends. A CSV
// header that cannot be used gives a *HeaderError before any row.
func ScanBatch(ctx context.Context, r io.Reader, o BatchOptions, fn func(*Row) error) error {
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
		for {
			var c *chunk
			select {
			case c = <-free:
				c.raw = c.raw[:0]
			default:
				c = &chunk{raw: make([]rawRow, 0, chunkSize), rows: make([]Row, chunkSize)}
			}
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
			for c := range jobs {
				for i := range c.raw {
					raw := &c.raw[i]
					row := &c.rows[i]
					*row = Row{Line: raw.line}
					if raw.err != nil {
						row.Err = raw.err
						continue
					}
					f.reset()
					problems := conv(&f, raw)
					if wholeRow(problems) {
						row.Err = &RowError{Line: raw.line, Problems: problems}
						continue
					}
					data, problems := o.build(&f, &row.Cmd, problems)
					if len(problems) > 0 {
						row.Err = &RowError{Line: raw.line, Problems: problems}
						continue
					}
					row.Data = data
				}
				close(c.done)
			}
			return nil
		})
	}
	// The caller's goroutine hands the rows over in file order.
	g.Go(func() error {
		for c := range order {
			select {
			case <-c.done:
			case <-gctx.Done():
				return gctx.Err()
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
			return nil, nil, &HeaderError{RowError{Line: 1, Problems: []RowProblem{problemf("", "the file is empty; a CSV batch starts with a header row naming the columns")}}}
		}
		return nil, nil, &HeaderError{RowError{Line: 1, Problems: []RowProblem{problemf("", "header: %v", csvMessage(err))}}}
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
			problems = append(problems, problemf("", "column %d has no name in the header", i+1))
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
