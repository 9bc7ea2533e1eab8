package publish

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/encoded"
)

// Format is the format of a batch file.
type Format string

// Batch file formats.
const (
	// FormatCSV is comma-separated values with a header row naming the
	// columns: the command fields of SPEC §3.2, and metadata.<key> for each
	// metadata entry.
	FormatCSV Format = "csv"
	// FormatJSONL is JSON Lines: one command object per line, with the
	// command fields of SPEC §3.2 (metadata is an object of strings).
	FormatJSONL Format = "jsonl"
)

// ErrFormat is returned by ParseFormat and FormatOf for an unknown format.
var ErrFormat = errors.New("unknown batch file format")

// ParseFormat parses a --format value: csv, jsonl (or ndjson, jsonlines).
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "csv":
		return FormatCSV, nil
	case "jsonl", "ndjson", "jsonlines":
		return FormatJSONL, nil
	}
	return "", fmt.Errorf("%q: want csv or jsonl: %w", s, ErrFormat)
}

// FormatOf returns the format named by a file's extension: .csv, or .jsonl
// (.ndjson, .jsonlines).
func FormatOf(path string) (Format, error) {
	ext := strings.TrimPrefix(filepath.Ext(path), ".")
	if ext == "" {
		return "", fmt.Errorf("%s: no extension to tell the format (give --format csv or jsonl): %w", path, ErrFormat)
	}
	f, err := ParseFormat(ext)
	if err != nil {
		return "", fmt.Errorf("%s: extension %q: want .csv or .jsonl (or give --format): %w", path, ext, ErrFormat)
	}
	return f, nil
}

// Batch field indexes: the command fields a row may carry.
const (
	fCommandID = iota
	fType
	fIdempotencyKey
	fMerchantID
	fTransactionID
	fAmount
	fCurrency
	fGateway
	fNotes
	fOriginalTime
	nFields
)

// fieldNames are the column (CSV) and field (JSONL) names of a batch row.
var fieldNames = [nFields]string{
	"command_id", "type", "idempotency_key", "merchant_id", "transaction_id",
	"amount", "currency", "gateway", "notes", "original_transaction_time",
}

// metadataPrefix starts the CSV columns of metadata entries.
const metadataPrefix = "metadata."

func fieldIndex(name string) int {
	for i, n := range fieldNames {
		if n == name {
			return i
		}
	}
	return -1
}

// RowProblem is one reason a row (or the header) of a batch file is bad.
type RowProblem struct {
	// Field is the column or field at fault (merchant_id, metadata.order),
	// or "" for the row as a whole.
	Field string
	// Message is a sentence that starts with the field: "merchant_id: must
	// be at most 10 characters, got 11".
	Message string
}

// RowError is the error of a bad row: its line in the file (the line a CSV
// record starts on; 1 for the header) and every problem found.
type RowError struct {
	Line     int
	Problems []RowProblem
}

// Error is "line N: " and the problems joined with "; ".
func (e *RowError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Message
	}
	return fmt.Sprintf("line %d: %s", e.Line, strings.Join(msgs, "; "))
}

// HeaderError is returned by CheckBatch and ReadBatch when the CSV header
// cannot be used (unknown or repeated column, a required column missing):
// no row is read.
type HeaderError struct{ RowError }

// problemf is the problem of a field, or of the row as a whole when field
// is "".
func problemf(field, format string, args ...any) RowProblem {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	} else {
		msg = "row: " + msg
	}
	return RowProblem{Field: field, Message: msg}
}

// BatchOptions say how the rows of a batch file become commands.
type BatchOptions struct {
	Format Format
	// Type is the command type of a row that gives none; "" requires every
	// row to give its type.
	Type command.Type
	// KeyColumn, when set, names the column (CSV) or field (JSONL) whose
	// value is the idempotency key. It may be a command field
	// (transaction_id) or an extra column (order_id), which is not
	// published.
	KeyColumn string
	// Workers validate rows in parallel; runtime.GOMAXPROCS(0) when zero.
	Workers int
}

// fields are the raw values of one row, before conversion.
type fields struct {
	vals    [nFields]string
	present [nFields]bool
	meta    [][2]string
	key     string // value of BatchOptions.KeyColumn
	hasKey  bool
}

func (f *fields) reset() {
	*f = fields{meta: f.meta[:0]}
}

// Default id prefixes: an idempotency key derived from the row, and a
// command id derived from the key and the row's content.
const (
	derivedKeyPrefix = "batch-"
	derivedIDPrefix  = "bcmd-"
	derivedHexLen    = 32 // 128 bits
)

// DerivedKey returns the idempotency key a batch row without one gets: a
// digest of merchant, transaction, type and amount, so that publishing the
// same file again (or a file with the same shipped orders) can never capture
// twice. Two rows of one file with these four equal share the key: the
// second is answered as a duplicate; give an idempotency_key (or
// --key-column) to capture the same amount twice.
func DerivedKey(c *command.Command) string {
	key, _ := derivedKey(nil, c)
	return key
}

// DerivedCommandID returns the command id a batch row without one gets: a
// digest of its idempotency key and of every field it publishes, so that a
// rerun of the same file publishes the same Nats-Msg-Id and the stream drops
// the copies within its duplicate window.
func DerivedCommandID(c *command.Command) string {
	id, _ := derivedCommandID(nil, c)
	return id
}

// derivedKey is DerivedKey with a scratch buffer, which it returns for
// reuse.
func derivedKey(scratch []byte, c *command.Command) (string, []byte) {
	b := appendPart(scratch[:0], c.MerchantID)
	b = appendPart(b, c.TransactionID)
	b = appendPart(b, string(c.Type))
	b = appendAmountPart(b, c.Amount)
	return digestID(derivedKeyPrefix, b), b
}

// derivedCommandID is DerivedCommandID with a scratch buffer.
func derivedCommandID(scratch []byte, c *command.Command) (string, []byte) {
	b := appendPart(scratch[:0], c.Key())
	for _, p := range []string{string(c.Type), c.MerchantID, c.TransactionID} {
		b = appendPart(b, p)
	}
	b = appendAmountPart(b, c.Amount)
	for _, p := range []string{c.Currency, c.Gateway, c.Notes} {
		b = appendPart(b, p)
	}
	if c.OriginalTransactionTime != nil {
		b = appendPart(b, c.OriginalTransactionTime.UTC().Format(time.RFC3339Nano))
	} else {
		b = appendPart(b, "-")
	}
	var small [8]string
	keys := small[:0]
	for k := range c.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = appendPart(b, k)
		b = appendPart(b, c.Metadata[k])
	}
	return digestID(derivedIDPrefix, b), b
}

// digestID is prefix and the first derivedHexLen hex digits of the SHA-256
// of b.
func digestID(prefix string, b []byte) string {
	sum := sha256.Sum256(b)
	var out [16 + derivedHexLen]byte
	n := copy(out[:], prefix)
	hex.Encode(out[n:n+derivedHexLen], sum[:derivedHexLen/2])
	return string(out[:n+derivedHexLen])
}

// appendPart appends a length-prefixed part, so that no two lists of parts
// hash alike.
func appendPart(b []byte, p string) []byte {
	b = strconv.AppendInt(b, int64(len(p)), 10)
	b = append(b, ':')
	return append(b, p...)
}

func appendAmountPart(b []byte, a *int64) []byte {
	if a == nil {
		return appendPart(b, "-")
	}
	var num [20]byte
	n := strconv.AppendInt(num[:0], *a, 10)
	b = strconv.AppendInt(b, int64(len(n)), 10)
	b = append(b, ':')
	return append(b, n...)
}

// builder turns rows into commands; each worker has its own, as it reuses
// its buffers.
type builder struct {
	o       *BatchOptions
	scratch []byte
}

func newBuilder(o *BatchOptions) *builder {
	return &builder{o: o, scratch: make([]byte, 0, 1024)}
}

// build converts the raw fields of a row into a command, fills in the
// derived idempotency key and command id, validates it against the command
// schema (unless schema is false: the row was checked before) and encodes
// it. It returns the problems of a bad row, after those found while reading
// it (prior), whose fields it does not report again.
func (b *builder) build(f *fields, cmd *command.Command, prior []RowProblem, schema bool) (data []byte, problems []RowProblem) {
	data, _, problems = b.encode(f, cmd, prior, schema)
	return data, problems
}

// encode is build, which also returns the command as the public client
// publishes it when schema is false (a row checked before, about to be
// published).
func (b *builder) encode(f *fields, cmd *command.Command, prior []RowProblem, schema bool) (data []byte, enc *client.Encoded, problems []RowProblem) {
	o := b.o
	*cmd = command.Command{
		CommandID:      f.vals[fCommandID],
		Type:           command.Type(f.vals[fType]),
		IdempotencyKey: f.vals[fIdempotencyKey],
		MerchantID:     f.vals[fMerchantID],
		TransactionID:  f.vals[fTransactionID],
		Currency:       f.vals[fCurrency],
		Gateway:        f.vals[fGateway],
		Notes:          f.vals[fNotes],
	}
	if !f.present[fType] && o.Type != "" {
		cmd.Type = o.Type
	}
	bad := map[string]bool(nil)
	fail := func(p RowProblem) {
		problems = append(problems, p)
		if bad == nil {
			bad = map[string]bool{}
		}
		bad[p.Field] = true
	}
	for _, p := range prior {
		fail(p)
	}
	for i, v := range f.vals {
		if f.present[i] && !utf8.ValidString(v) {
			fail(problemf(fieldNames[i], "is not valid UTF-8 text"))
		}
	}
	if f.present[fAmount] {
		s := strings.TrimSpace(f.vals[fAmount])
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fail(problemf("amount", "must be an integer number of minor units (1000 for 1000 JPY or 10.00 EUR), got %s", quoteClip(s)))
		} else {
			cmd.Amount = &n
		}
	}
	if f.present[fOriginalTime] {
		t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(f.vals[fOriginalTime]))
		if err != nil {
			fail(problemf("original_transaction_time", "must be an RFC 3339 date-time such as 2026-01-14T09:30:12Z, got %s", quoteClip(f.vals[fOriginalTime])))
		} else {
			cmd.OriginalTransactionTime = &t
		}
	}
	if len(f.meta) > 0 {
		cmd.Metadata = make(map[string]string, len(f.meta))
		for _, kv := range f.meta {
			if !utf8.ValidString(kv[0]) || !utf8.ValidString(kv[1]) {
				fail(problemf(metadataPrefix+kv[0], "is not valid UTF-8 text"))
				continue
			}
			cmd.Metadata[kv[0]] = kv[1]
		}
	}
	if o.KeyColumn != "" {
		switch {
		case !f.hasKey || f.key == "":
			fail(problemf(o.KeyColumn, "is empty, and --key-column names it as the idempotency key"))
		case f.present[fIdempotencyKey] && o.KeyColumn != fieldNames[fIdempotencyKey] && f.vals[fIdempotencyKey] != f.key:
			fail(problemf("idempotency_key", "differs from the key column %s", o.KeyColumn))
		case !utf8.ValidString(f.key):
			fail(problemf(o.KeyColumn, "is not valid UTF-8 text"))
		default:
			cmd.IdempotencyKey = f.key
		}
	}
	if cmd.IdempotencyKey == "" && !f.present[fIdempotencyKey] {
		cmd.IdempotencyKey, b.scratch = derivedKey(b.scratch, cmd)
	}
	if cmd.CommandID == "" && !f.present[fCommandID] {
		cmd.CommandID, b.scratch = derivedCommandID(b.scratch, cmd)
	}
	if schema || len(problems) > 0 {
		if err := b.validate(cmd); err != nil {
			for _, p := range schemaProblems(err) {
				if top, _, _ := strings.Cut(p.Field, "."); bad[p.Field] || bad[top] {
					continue // already explained by a conversion problem
				}
				if i := fieldIndex(p.Field); (i == fType && o.Type == "" || i == fMerchantID || i == fTransactionID) && !f.present[i] {
					// Absent, not empty: json.Marshal writes "" for these.
					p.Message = p.Field + ": is required"
					if i == fType {
						p.Message += " (or give --type capture|void)"
					}
				}
				problems = append(problems, p)
			}
			if len(problems) == 0 {
				problems = append(problems, problemf("", "%v", err))
			}
		}
	}
	if len(problems) > 0 {
		return nil, nil, problems
	}
	b.scratch = appendCommand(b.scratch[:0], cmd)
	if len(b.scratch) > command.MaxSize {
		return nil, nil, []RowProblem{problemf("", "the command is %d bytes of JSON, at most %d allowed", len(b.scratch), command.MaxSize)}
	}
	data = bytes.Clone(b.scratch)
	if !schema {
		// A row checked by the first pass, about to be published: handed
		// to the public client, which publishes it, without a second check
		// (ReadBatch proves the rows are the ones checked).
		c := *cmd
		return data, encoded.Checked(&c, data).(*client.Encoded), nil
	}
	return data, nil, nil
}

// validate checks cmd against the command schema of its type, as the
// worker would its JSON (command.Command.Check).
func (b *builder) validate(cmd *command.Command) error { return cmd.Check() }

// schemaProblems turns a command validation error into problems.
func schemaProblems(err error) []RowProblem {
	var ie *command.InvalidError
	if !errors.As(err, &ie) {
		return []RowProblem{problemf("", "%v", err)}
	}
	out := make([]RowProblem, 0, len(ie.Problems))
	for _, p := range ie.Problems {
		msg := p.Message
		if p.Field == "" && !strings.HasPrefix(msg, "message") {
			msg = "row: " + msg
		}
		out = append(out, RowProblem{Field: p.Field, Message: msg})
	}
	return out
}

// quoteClip quotes a user value for a message, cut to 40 characters.
func quoteClip(s string) string {
	const max = 40
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max]) + "…"
	}
	return strconv.Quote(s)
}

// jsonRow is a JSON Lines row with the command fields, for the fast path
// of parseJSONLine. A null member is absent, as in the slow path.
type jsonRow struct {
	CommandID               *string           `json:"command_id"`
	Type                    *string           `json:"type"`
	IdempotencyKey          *string           `json:"idempotency_key"`
	MerchantID              *string           `json:"merchant_id"`
	TransactionID           *string           `json:"transaction_id"`
	Amount                  json.RawMessage   `json:"amount"`
	Currency                *string           `json:"currency"`
	Gateway                 *string           `json:"gateway"`
	Notes                   *string           `json:"notes"`
	OriginalTransactionTime *string           `json:"original_transaction_time"`
	Metadata                map[string]string `json:"metadata"`
}

// parseJSONLineFast is parseJSONLine for a line that decodes as it is into
// jsonRow: no unknown member, no member of the wrong type, no repeated or
// escaped member name. It reports false for any other line, which
// parseJSONLine then reads member by member to explain what is wrong.
func (o *BatchOptions) parseJSONLineFast(line []byte, f *fields) bool {
	if o.KeyColumn != "" && fieldIndex(o.KeyColumn) < 0 {
		return false
	}
	var r jsonRow
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if dec.Decode(&r) != nil || len(bytes.Trim(line[dec.InputOffset():], " \t\r\n")) > 0 || !plainMembers(line, knownMember) {
		return false
	}
	for i, v := range [nFields]*string{r.CommandID, r.Type, r.IdempotencyKey, r.MerchantID, r.TransactionID,
		nil, r.Currency, r.Gateway, r.Notes, r.OriginalTransactionTime} {
		if v != nil {
			f.vals[i], f.present[i] = *v, true
		}
	}
	if len(r.Amount) > 0 {
		v, ok, p := jsonScalar("amount", r.Amount, true)
		if p != nil {
			return false
		}
		f.vals[fAmount], f.present[fAmount] = v, ok
	}
	for k, v := range r.Metadata {
		f.meta = append(f.meta, [2]string{k, v})
	}
	if o.KeyColumn != "" {
		i := fieldIndex(o.KeyColumn)
		f.key, f.hasKey = f.vals[i], f.present[i]
	}
	return true
}

// knownMember reports whether name is the exact name of a member of a JSON
// Lines row (encoding/json matches struct fields whatever their case).
func knownMember(name string) bool {
	return name == "metadata" || fieldIndex(name) >= 0
}

// plainMembers reports whether the members of each object of a line of
// valid JSON have distinct names without escapes, and the members of the
// outermost object names that top accepts, so that decoding it into a
// struct or a map, which keep the last of repeated members, loses nothing.
// It gives up (false) beyond a few levels or members.
func plainMembers(line []byte, top func(name string) bool) bool {
	const maxDepth, maxMembers = 4, 16
	var names [maxDepth][maxMembers]string
	var count [maxDepth]int
	var isObject [maxDepth + 1]bool
	depth := 0
	expectKey := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; c {
		case '{', '[':
			depth++
			if depth >= maxDepth {
				return false
			}
			isObject[depth] = c == '{'
			count[depth] = 0
			expectKey = c == '{'
		case '}', ']':
			depth--
			expectKey = false
		case ',':
			expectKey = isObject[depth]
		case '"':
			j := i + 1
			for j < len(line) && line[j] != '"' {
				if line[j] == '\\' {
					if expectKey {
						return false // an escaped name: let the slow path judge
					}
					j++
				}
				j++
			}
			if expectKey {
				name := string(line[i+1 : j])
				seen := names[depth][:count[depth]]
				for _, s := range seen {
					if s == name {
						return false
					}
				}
				if count[depth] == maxMembers || depth == 1 && !top(name) {
					return false
				}
				names[depth][count[depth]] = name
				count[depth]++
				expectKey = false
			}
			i = j
		}
	}
	return true
}

// parseJSONLine reads one JSON Lines row into f: a JSON object of command
// fields (and the key column, when it is not one). Unknown and repeated
// members are problems; so are members of the wrong JSON type.
func (o *BatchOptions) parseJSONLine(line []byte, f *fields) []RowProblem {
	if o.parseJSONLineFast(line, f) {
		return nil
	}
	f.reset()
	return o.parseJSONLineSlow(line, f)
}

// parseJSONLineSlow is parseJSONLine member by member.
func (o *BatchOptions) parseJSONLineSlow(line []byte, f *fields) []RowProblem {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return []RowProblem{problemf("", "not valid JSON: %v", err)}
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return []RowProblem{problemf("", "must be a JSON object, one per line")}
	}
	var problems []RowProblem
	var seen [nFields]bool
	metaSeen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return append(problems, problemf("", "not valid JSON: %v", err))
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return append(problems, problemf("", "not valid JSON: %v", err))
		}
		i := fieldIndex(name)
		isKey := o.KeyColumn != "" && name == o.KeyColumn
		switch {
		case name == "metadata":
			if metaSeen {
				problems = append(problems, problemf(name, "duplicate member (a field may appear once)"))
				continue
			}
			metaSeen = true
			problems = append(problems, f.readMetadata(raw)...)
			continue
		case i < 0 && !isKey:
			problems = append(problems, problemf(name, "unknown field (want %s)", strings.Join(fieldNames[:], ", ")+", metadata"))
			continue
		case i >= 0 && seen[i]:
			problems = append(problems, problemf(name, "duplicate member (a field may appear once)"))
			continue
		}
		v, ok, p := jsonScalar(name, raw, i == fAmount)
		if p != nil {
			problems = append(problems, *p)
			continue
		}
		if isKey {
			f.key, f.hasKey = v, ok
		}
		if i >= 0 {
			seen[i] = true
			if ok {
				f.vals[i], f.present[i] = v, true
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return append(problems, problemf("", "not valid JSON: %v", err))
	}
	if dec.More() {
		return append(problems, problemf("", "more than one JSON value on the line"))
	}
	return problems
}

// jsonScalar reads a member that must be a string (or, for the amount, a
// number): ok is false for null, which counts as absent.
func jsonScalar(name string, raw json.RawMessage, number bool) (v string, ok bool, p *RowProblem) {
	raw = bytes.TrimSpace(raw)
	switch {
	case string(raw) == "null":
		return "", false, nil
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			pr := problemf(name, "not a valid JSON string: %v", err)
			return "", false, &pr
		}
		if number {
			pr := problemf(name, "must be an integer number of minor units, got the string %s", quoteClip(s))
			return "", false, &pr
		}
		return s, true, nil
	case number && len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
		if _, err := strconv.ParseInt(string(raw), 10, 64); err != nil {
			if n, ok := jsonInteger(raw); ok {
				return strconv.FormatInt(n, 10), true, nil
			}
			pr := problemf(name, "must be an integer number of minor units (1000 for 1000 JPY or 10.00 EUR), got %s", clipRaw(raw))
			return "", false, &pr
		}
		return string(raw), true, nil
	}
	want := "a string"
	if number {
		want = "an integer"
	}
	pr := problemf(name, "must be %s, got %s", want, clipRaw(raw))
	return "", false, &pr
}

// jsonInteger accepts the integers JSON Schema counts as such (1.0, 1e3).
func jsonInteger(raw []byte) (int64, bool) {
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != float64(int64(f)) || f > 1<<53 || f < -(1<<53) {
		return 0, false
	}
	return int64(f), true
}

func clipRaw(raw []byte) string {
	s := string(raw)
	switch {
	case len(raw) > 0 && raw[0] == '{':
		return "an object"
	case len(raw) > 0 && raw[0] == '[':
		return "an array"
	}
	if utf8.RuneCountInString(s) > 40 {
		s = string([]rune(s)[:40]) + "…"
	}
	return s
}

// readMetadata reads a JSON Lines metadata object of strings.
func (f *fields) readMetadata(raw json.RawMessage) []RowProblem {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return nil
	}
	if len(raw) == 0 || raw[0] != '{' {
		return []RowProblem{problemf("metadata", "must be an object of strings, got %s", clipRaw(raw))}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return []RowProblem{problemf("metadata", "not valid JSON: %v", err)}
	}
	var problems []RowProblem
	seen := map[string]bool{}
	f.meta = f.meta[:0]
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return append(problems, problemf("metadata", "not valid JSON: %v", err))
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return append(problems, problemf("metadata", "not valid JSON: %v", err))
		}
		field := metadataPrefix + k
		if seen[k] {
			problems = append(problems, problemf(field, "duplicate member (a field may appear once)"))
			continue
		}
		seen[k] = true
		var s string
		if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
			problems = append(problems, problemf(field, "must be a string, got %s", clipRaw(v)))
			continue
		}
		f.meta = append(f.meta, [2]string{k, s})
	}
	return problems
}
