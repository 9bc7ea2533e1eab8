package command

// The decoder as it was before valid messages were parsed once: the syntax
// pass first, then the token pass, then a struct decode. The fuzz target
// FuzzDecodeMatchesCareful holds Decode to it: the same verdict, the same
// command, the same error, for every input.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/payworker/payworker/schemas"
)

// decodeCareful is the former Decode.
func decodeCareful(subjectType string, data []byte) (*Command, error) {
	if len(data) > MaxSize {
		return nil, invalid(CodeOversize, Problem{
			Rule:    "oversize",
			Message: fmt.Sprintf("message is %d bytes, at most %d allowed", len(data), MaxSize),
		})
	}
	doc, p := parseCareful(data)
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
	return decodeValidCareful(data)
}

// parseCareful is the former parse.
func parseCareful(data []byte) (any, *Problem) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Problem{Rule: "json", Message: "message is empty"}
	}
	// Unmarshal checks the syntax of the whole input first, and reports
	// accurate offsets, unlike Decoder.Token.
	if err := json.Unmarshal(data, new(json.RawMessage)); err != nil {
		return nil, &Problem{Rule: "json", Message: "message is not valid JSON: " + syntaxMessage(err)}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parser{dec: dec}.value(nil)
	if err != nil {
		var pe *parseError
		if errors.As(err, &pe) {
			return nil, &Problem{Field: pe.field, Rule: pe.rule, Message: pe.msg}
		}
		return nil, &Problem{Rule: "json", Message: "message is not valid JSON: " + clip(err.Error())}
	}
	return v, nil
}

// wire is the JSON form of a command whose conversion to Command could fail
// on an input that the schema accepts.
type wireCareful struct {
	CommandID               string            `json:"command_id"`
	Type                    Type              `json:"type"`
	IdempotencyKey          string            `json:"idempotency_key"`
	MerchantID              string            `json:"merchant_id"`
	TransactionID           string            `json:"transaction_id"`
	Amount                  json.Number       `json:"amount"`
	Currency                string            `json:"currency"`
	Gateway                 string            `json:"gateway"`
	Notes                   string            `json:"notes"`
	Metadata                map[string]string `json:"metadata"`
	OriginalTransactionTime string            `json:"original_transaction_time"`
}

// decodeValid decodes a message that passed the schema.
func decodeValidCareful(data []byte) (*Command, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w wireCareful
	if err := dec.Decode(&w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, invalid(CodeSchemaViolation, Problem{
				Field: te.Field, Rule: "type",
				Message: fmt.Sprintf("%s: must be %s, got %s", te.Field, te.Type, te.Value),
			})
		}
		return nil, invalid(CodeSchemaViolation, Problem{Rule: "json", Message: "message: " + clip(err.Error())})
	}
	c := &Command{
		CommandID:      w.CommandID,
		Type:           w.Type,
		IdempotencyKey: w.IdempotencyKey,
		MerchantID:     w.MerchantID,
		TransactionID:  w.TransactionID,
		Currency:       w.Currency,
		Gateway:        w.Gateway,
		Notes:          w.Notes,
		Metadata:       w.Metadata,
	}
	if w.Amount != "" {
		n, ok := integer(w.Amount)
		if !ok {
			return nil, invalid(CodeSchemaViolation, Problem{Field: "amount", Rule: "type",
				Message: "amount: must be an integer, got " + show(w.Amount)})
		}
		c.Amount = &n
	}
	if w.OriginalTransactionTime != "" {
		t, err := time.Parse(time.RFC3339Nano, w.OriginalTransactionTime)
		if err != nil {
			return nil, invalid(CodeSchemaViolation, Problem{Field: "original_transaction_time", Rule: "format",
				Message: "original_transaction_time: " + dateTimeRule + ", got " + show(w.OriginalTransactionTime)})
		}
		c.OriginalTransactionTime = &t
	}
	return c, nil
}

func FuzzDecodeMatchesCareful(f *testing.F) {
	for _, s := range []string{
		``, ` `, `null`, `{}`, `{} `, `{} {}`, `{}x`, `{"a":1}]`, `[1,2]`, `"x"`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t"}`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t"} `,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t"}{}`,
		`{"command_id":"c","type":"capture","merchant_id":"m","transaction_id":"t","amount":1.0e3,"currency":"EUR"}`,
		`{"command_id":"c","type":"capture","merchant_id":"m","transaction_id":"t","amount":"5","currency":"EUR"}`,
		`{"command_id":"c","type":"capture","merchant_id":"m","merchant_id":"m"}`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t","metadata":{"a":"b","a":"c"}}`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t","metadata":{"a":null}}`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t","notes":null}`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t","original_transaction_time":"2026-01-02T03:04:05.123+01:00"}`,
		`{"amount":1e400}`, "{\"command_id\":\"\xff\xfe\"}", `{"a":"\ud800"}`, `{"a":1,}`, `{"a" 1}`,
		`{"command_id":"c\u0026","type":"v\u006fid","merchant_id":"\ud83d\ude42","transaction_id":"\ud800\n",` +
			`"notes":"\"\\\/\b\f\r\t\u0000\u003c\u003e\u2028\u2029","metadata":{"\u00e9":"é","é\u0026":"\udc00"}}`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t","metadata":{"a&":"b","a\u0026":"c"}}`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t","notes":"\x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, subject := range []string{"capture", "void", ""} {
			got, gotErr := Decode(subject, data)
			want, wantErr := decodeCareful(subject, data)
			if (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("Decode(%q, %q) error = %v, the careful decoder's = %v", subject, data, gotErr, wantErr)
			}
			if gotErr != nil {
				if gotErr.Error() != wantErr.Error() {
					t.Fatalf("Decode(%q, %q) error = %q, the careful decoder's = %q", subject, data, gotErr, wantErr)
				}
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Decode(%q, %q) = %+v, the careful decoder's = %+v", subject, data, got, want)
			}
		}
	})
}
