package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/payworker/payworker/schemas"
)

// ErrInvalid matches, with errors.Is, every error Decode and Validate return
// for a message that is not a valid command. Such a message never becomes
// valid on redelivery.
var ErrInvalid = errors.New("invalid command")

// Codes of an InvalidError, for the error.code of a rejection event.
const (
	CodeOversize        = "oversize"
	CodeInvalidJSON     = "invalid_json"
	CodeSchemaViolation = "schema_violation"
	CodeSubjectMismatch = "subject_mismatch"
)

// Problem is one reason a message is not a valid command.
type Problem struct {
	// Field is the JSON path of the offending field without a leading slash
	// (merchant_id, metadata.foo), or "" for the message as a whole.
	Field string
	// Rule is what was broken: a JSON Schema keyword (required, maxLength,
	// pattern, additionalProperties, ...) or oversize, json, duplicate_key,
	// subject.
	Rule string
	// Message is a human sentence that names the field, e.g.
	// "merchant_id: must be at most 10 characters, got 11". It quotes at most
	// a clipped part of the offending value, with card-like numbers masked.
	Message string
}

// maxProblems bounds the problems kept, so a message with thousands of
// unknown fields does not make a huge error.
const maxProblems = 10

// InvalidError is the error for a message that is not a valid command. It
// matches ErrInvalid.
type InvalidError struct {
	// Problems are sorted by field, in the order of the command's fields, with
	// unknown fields last; there is at least one.
	Problems []Problem
	code     string
	omitted  int
}

// Error joins the problems' messages with "; ".
func (e *InvalidError) Error() string {
	msgs := make([]string, 0, len(e.Problems)+1)
	for _, p := range e.Problems {
		msgs = append(msgs, p.Message)
	}
	if e.omitted > 0 {
		msgs = append(msgs, fmt.Sprintf("and %d more problems", e.omitted))
	}
	return strings.Join(msgs, "; ")
}

// Is reports whether target is ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Field returns the field of the first problem, "" for the whole message.
func (e *InvalidError) Field() string {
	if len(e.Problems) == 0 {
		return ""
	}
	return e.Problems[0].Field
}

// Code returns CodeOversize, CodeInvalidJSON, CodeSchemaViolation or
// CodeSubjectMismatch.
func (e *InvalidError) Code() string { return e.code }

func invalid(code string, problems ...Problem) *InvalidError {
	e := &InvalidError{code: code, Problems: problems}
	if len(problems) > maxProblems {
		e.Problems, e.omitted = problems[:maxProblems], len(problems)-maxProblems
	}
	return e
}

// Decode parses and validates a message that arrived on the subject of
// command type subjectType ("capture" or "void"). The checks run in order,
// and the first stage that fails returns an *InvalidError: size (at most
// MaxSize bytes), JSON syntax (duplicate keys are rejected), the JSON Schema
// of the message's own type (of subjectType when that is neither capture nor
// void), then
// the message's type against subjectType. An empty subjectType accepts
// either type.
func Decode(subjectType string, data []byte) (*Command, error) {
	if c, ok := decodeFast(subjectType, data); ok {
		return c, nil
	}
	return decodeGeneral(subjectType, data)
}

// decodeGeneral is Decode for any message: it parses data into a document,
// validates that against the schema and explains every rejection.
// decodeFast, which Decode tries first, must return what it returns.
func decodeGeneral(subjectType string, data []byte) (*Command, error) {
	if len(data) > MaxSize {
		return nil, invalid(CodeOversize, Problem{
			Rule:    "oversize",
			Message: fmt.Sprintf("message is %d bytes, at most %d allowed", len(data), MaxSize),
		})
	}
	doc, p := parse(data)
	if p != nil {
		return nil, invalid(CodeInvalidJSON, *p)
	}
	msgType, _ := field(doc, "type").(string)
	schemaType := msgType
	if !known(schemaType) {
		schemaType = subjectType
	}
	if !known(schemaType) {
		return nil, invalid(CodeSchemaViolation, typeProblem(doc))
	}
	if err := schemas.ValidateCommand(schemaType, doc); err != nil {
		return nil, invalid(CodeSchemaViolation, translate(err, doc, schemaType)...)
	}
	if subjectType != "" && msgType != subjectType {
		return nil, invalid(CodeSubjectMismatch, Problem{
			Field: "type",
			Rule:  "subject",
			Message: fmt.Sprintf("type: must match the subject's command type %s, got %s",
				strconv.Quote(clip(subjectType)), show(msgType)),
		})
	}
	return fromDoc(doc.(map[string]any))
}

// Validate runs Decode's checks on a message meant for command type typ and
// discards the command; an empty typ accepts either type.
func Validate(typ string, data []byte) error {
	_, err := Decode(typ, data)
	return err
}

// Marshal encodes the command as JSON and checks the result as Decode would,
// so what it returns is accepted on the subject of c.Type; an invalid command
// yields an *InvalidError.
func (c *Command) Marshal() ([]byte, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	if err := Validate(string(c.Type), data); err != nil {
		return nil, err
	}
	return data, nil
}

func known(typ string) bool { return typ == string(Capture) || typ == string(Void) }

func field(doc any, name string) any {
	if m, ok := doc.(map[string]any); ok {
		return m[name]
	}
	return nil
}

// typeProblem explains a type that selects no schema.
func typeProblem(doc any) Problem {
	m, ok := doc.(map[string]any)
	if !ok {
		return Problem{Rule: "type", Message: "message: must be an object, got " + show(doc)}
	}
	v, present := m["type"]
	if !present {
		return Problem{Field: "type", Rule: "required", Message: "type: is required"}
	}
	return Problem{Field: "type", Rule: "enum",
		Message: `type: must be one of "capture", "void", got ` + show(v)}
}

// fromDoc builds the command from the parsed message, which passed the
// schema: every field has its schema's type, and there is no other.
func fromDoc(m map[string]any) (*Command, error) {
	str := func(k string) string { s, _ := m[k].(string); return s }
	c := &Command{
		CommandID:      str("command_id"),
		Type:           Type(str("type")),
		IdempotencyKey: str("idempotency_key"),
		MerchantID:     str("merchant_id"),
		TransactionID:  str("transaction_id"),
		Currency:       str("currency"),
		Gateway:        str("gateway"),
		Notes:          str("notes"),
	}
	if md, ok := m["metadata"].(map[string]any); ok {
		c.Metadata = make(map[string]string, len(md))
		for k, v := range md {
			s, ok := v.(string)
			if !ok {
				return nil, invalid(CodeSchemaViolation, Problem{Field: "metadata." + k, Rule: "type",
					Message: fmt.Sprintf("metadata.%s: must be a string, got %s", clip(k), show(v))})
			}
			c.Metadata[k] = s
		}
	}
	if a, present := m["amount"]; present {
		num, _ := a.(json.Number)
		n, ok := integer(num)
		if !ok {
			return nil, invalid(CodeSchemaViolation, Problem{Field: "amount", Rule: "type",
				Message: "amount: must be an integer, got " + show(a)})
		}
		c.Amount = &n
	}
	if ts := str("original_transaction_time"); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, invalid(CodeSchemaViolation, Problem{Field: "original_transaction_time", Rule: "format",
				Message: "original_transaction_time: " + dateTimeRule + ", got " + show(ts)})
		}
		c.OriginalTransactionTime = &t
	}
	return c, nil
}

// integer converts a JSON number that the schema found to be an integer in
// range; JSON Schema counts 1.0 and 1e2 as integers too.
func integer(n json.Number) (int64, bool) {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i, true
	}
	r, ok := new(big.Rat).SetString(string(n))
	if !ok || !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

// Limits of parse. A valid command nests two levels deep and its numbers are
// small; the limits keep hostile input from costing the schema validator,
// which parses numbers as big.Rat, much time.
const (
	maxDepth     = 32
	maxNumberLen = 100
	maxExponent  = 400
)

// parse decodes data like jsonschema.UnmarshalJSON (numbers as json.Number)
// and rejects duplicate object keys, deep nesting and huge numbers.
func parse(data []byte) (any, *Problem) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Problem{Rule: "json", Message: "message is empty"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parser{dec: dec}.value(nil)
	if err == nil {
		// One value and nothing after it; anything else is a syntax error,
		// described below.
		if _, end := dec.Token(); end != io.EOF {
			err = errTrailing
		}
	}
	if err != nil {
		// Only a message that failed pays for the syntax pass: Unmarshal
		// checks the whole input and reports accurate offsets, unlike
		// Decoder.Token. It runs before the parser's own findings, so a
		// syntax error anywhere is what the message is rejected for.
		if err := json.Unmarshal(data, new(json.RawMessage)); err != nil {
			return nil, &Problem{Rule: "json", Message: "message is not valid JSON: " + syntaxMessage(err)}
		}
		var pe *parseError
		if errors.As(err, &pe) {
			return nil, &Problem{Field: pe.field, Rule: pe.rule, Message: pe.msg}
		}
		return nil, &Problem{Rule: "json", Message: "message is not valid JSON: " + clip(err.Error())}
	}
	return v, nil
}

// errTrailing: the parser read a whole value and more followed.
var errTrailing = errors.New("data after the top-level value")

// syntaxMessage describes a syntax error with the offset of the offending
// byte, or of the end of the input when it ended early.
func syntaxMessage(err error) string {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return clip(err.Error())
	}
	if strings.HasPrefix(se.Error(), "unexpected end") {
		return fmt.Sprintf("unexpected end of input at offset %d", se.Offset)
	}
	return fmt.Sprintf("%s at offset %d", se.Error(), se.Offset-1)
}

type parseError struct{ field, rule, msg string }

func (e *parseError) Error() string { return e.msg }

type parser struct{ dec *json.Decoder }

func (p parser) value(path []string) (any, error) {
	if len(path) > maxDepth {
		return nil, &parseError{rule: "depth", msg: fmt.Sprintf("message is nested deeper than %d levels", maxDepth)}
	}
	tok, err := p.dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return p.object(path)
		case '[':
			return p.array(path)
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case json.Number:
		if !numberInRange(string(t)) {
			f := fieldPath(path)
			return nil, &parseError{field: f, rule: "range",
				msg: fmt.Sprintf("%s: number out of range, got %s", orMessage(f), clip(string(t)))}
		}
		return t, nil
	default:
		return t, nil
	}
}

func (p parser) object(path []string) (any, error) {
	m := make(map[string]any)
	for p.dec.More() {
		tok, err := p.dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected %v", tok)
		}
		sub := append(path[:len(path):len(path)], key)
		if _, dup := m[key]; dup {
			f := fieldPath(sub)
			return nil, &parseError{field: f, rule: "duplicate_key", msg: f + ": duplicate key (a field may appear once)"}
		}
		v, err := p.value(sub)
		if err != nil {
			return nil, err
		}
		m[key] = v
	}
	if _, err := p.dec.Token(); err != nil {
		return nil, err
	}
	return m, nil
}

func (p parser) array(path []string) (any, error) {
	a := []any{}
	for p.dec.More() {
		v, err := p.value(append(path[:len(path):len(path)], strconv.Itoa(len(a))))
		if err != nil {
			return nil, err
		}
		a = append(a, v)
	}
	if _, err := p.dec.Token(); err != nil {
		return nil, err
	}
	return a, nil
}

func numberInRange(s string) bool {
	if len(s) > maxNumberLen {
		return false
	}
	i := strings.IndexAny(s, "eE")
	if i < 0 {
		return true
	}
	e, err := strconv.Atoi(s[i+1:])
	return err == nil && e >= -maxExponent && e <= maxExponent
}
