package command

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/payworker/payworker/internal/jsontext"
	"github.com/payworker/payworker/schemas"
)

// AppendJSON appends the JSON of c to dst, byte for byte what json.Marshal
// writes for a Command (field order, omitempty rules, sorted metadata keys,
// HTML-safe string escaping), without reflection: it is on the hot path of
// a batch. FuzzEncodeAgreesWithValidate holds it to json.Marshal. It does
// not check c; see Check.
func (c *Command) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"command_id":`...)
	dst = jsontext.AppendString(dst, c.CommandID)
	dst = append(dst, `,"type":`...)
	dst = jsontext.AppendString(dst, string(c.Type))
	if c.IdempotencyKey != "" {
		dst = append(dst, `,"idempotency_key":`...)
		dst = jsontext.AppendString(dst, c.IdempotencyKey)
	}
	dst = append(dst, `,"merchant_id":`...)
	dst = jsontext.AppendString(dst, c.MerchantID)
	dst = append(dst, `,"transaction_id":`...)
	dst = jsontext.AppendString(dst, c.TransactionID)
	if c.Amount != nil {
		dst = append(dst, `,"amount":`...)
		dst = strconv.AppendInt(dst, *c.Amount, 10)
	}
	if c.Currency != "" {
		dst = append(dst, `,"currency":`...)
		dst = jsontext.AppendString(dst, c.Currency)
	}
	if c.Gateway != "" {
		dst = append(dst, `,"gateway":`...)
		dst = jsontext.AppendString(dst, c.Gateway)
	}
	if c.Notes != "" {
		dst = append(dst, `,"notes":`...)
		dst = jsontext.AppendString(dst, c.Notes)
	}
	if len(c.Metadata) > 0 {
		dst = append(dst, `,"metadata":`...)
		dst = jsontext.AppendStringMap(dst, c.Metadata)
	}
	if c.OriginalTransactionTime != nil {
		dst = append(dst, `,"original_transaction_time":"`...)
		dst = c.OriginalTransactionTime.AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// Encode appends the JSON of c to dst (AppendJSON) and checks it as Decode
// would on the subject of c.Type: its size first, then the schema (Check).
// An invalid command yields Decode's *InvalidError, with the same problems
// and texts, and dst unchanged.
func (c *Command) Encode(dst []byte) ([]byte, error) {
	out := c.AppendJSON(dst)
	if n := len(out) - len(dst); n > MaxSize {
		return dst, invalid(CodeOversize, Problem{
			Rule:    "oversize",
			Message: fmt.Sprintf("message is %d bytes, at most %d allowed", n, MaxSize),
		})
	}
	if !validFast(string(c.Type), out[len(dst):]) {
		if err := c.checkSchema(); err != nil {
			return dst, err
		}
	}
	return out, nil
}

// Check reports whether the JSON of c (json.Marshal, or AppendJSON) passes
// the command schema of c.Type: nil exactly when Validate would accept it,
// size aside (Encode checks that too), and otherwise Validate's
// *InvalidError, with the same problems and texts. The JSON of a command
// of the usual form is checked in one pass, as Decode's fast path reads
// it; any other goes to the schema validator.
func (c *Command) Check() error {
	buf := encodeBufs.Get().(*[]byte)
	*buf = c.AppendJSON((*buf)[:0])
	ok := validFast(string(c.Type), *buf)
	if cap(*buf) <= MaxSize {
		encodeBufs.Put(buf)
	}
	if ok {
		return nil
	}
	return c.checkSchema()
}

// encodeBufs holds Check's buffers for the JSON of a command.
var encodeBufs = sync.Pool{New: func() any { return new([]byte) }}

// checkSchema is Check by the schema validator, on a document built from
// c's fields; only a command that fails is encoded and decoded, for
// Decode's explanation. Metadata keys that are not valid UTF-8 are encoded
// and decoded too: json.Marshal writes their invalid bytes as U+FFFD, which
// can make two keys one, a duplicate.
func (c *Command) checkSchema() error {
	if (c.Type == Capture || c.Type == Void) && validKeys(c.Metadata) {
		d := docs.Get().(*doc)
		err := schemas.ValidateCommand(string(c.Type), c.fill(d))
		clear(d.top)
		clear(d.meta)
		docs.Put(d)
		if err == nil {
			return nil
		}
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return Validate(string(c.Type), data)
}

// validKeys reports whether the keys of m are valid UTF-8.
func validKeys(m map[string]string) bool {
	for k := range m {
		if !utf8.ValidString(k) {
			return false
		}
	}
	return true
}

// doc holds the maps of a decoded-JSON command, reused by checkSchema.
type doc struct{ top, meta map[string]any }

var docs = sync.Pool{New: func() any {
	return &doc{top: make(map[string]any, 12), meta: make(map[string]any, 4)}
}}

// fill makes d the decoded-JSON form of c: exactly the members json.Marshal
// writes (its omitempty rules), as the schema validator takes them.
func (c *Command) fill(d *doc) map[string]any {
	doc := d.top
	doc["command_id"] = c.CommandID
	doc["type"] = string(c.Type)
	doc["merchant_id"] = c.MerchantID
	doc["transaction_id"] = c.TransactionID
	if c.IdempotencyKey != "" {
		doc["idempotency_key"] = c.IdempotencyKey
	}
	if c.Amount != nil {
		doc["amount"] = *c.Amount
	}
	if c.Currency != "" {
		doc["currency"] = c.Currency
	}
	if c.Gateway != "" {
		doc["gateway"] = c.Gateway
	}
	if c.Notes != "" {
		doc["notes"] = c.Notes
	}
	if len(c.Metadata) > 0 {
		for k, v := range c.Metadata {
			d.meta[k] = v
		}
		doc["metadata"] = d.meta
	}
	if c.OriginalTransactionTime != nil {
		doc["original_transaction_time"] = c.OriginalTransactionTime.Format(time.RFC3339Nano)
	}
	return doc
}
