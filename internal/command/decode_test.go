package command_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/schemas"
)

// drop removes a field in with.
type drop struct{}

// with returns a valid capture command with fields overridden or dropped.
func with(overrides map[string]any) []byte {
	m := map[string]any{
		"command_id":     "cmd-1",
		"type":           "capture",
		"merchant_id":    "10004512",
		"transaction_id": "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
		"amount":         12990,
		"currency":       "EUR",
	}
	for k, v := range overrides {
		if _, ok := v.(drop); ok {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func example(t *testing.T, name string) []byte {
	t.Helper()
	b, err := schemas.FS.ReadFile("examples/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ptr[T any](v T) *T { return &v }

func asJSON(c *command.Command) string {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Sprintf("unmarshalable %+v: %v", c, err)
	}
	return string(b)
}

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		data    []byte
		want    *command.Command
	}{
		{
			name:    "capture example",
			subject: "capture",
			data:    example(t, "command.capture"),
			want: &command.Command{
				CommandID:      "cmd-01J9Z3K7Q8R2M4N6P0S5T7V9WX",
				Type:           command.Capture,
				IdempotencyKey: "order-88412-capture",
				MerchantID:     "10004512",
				TransactionID:  "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
				Amount:         ptr[int64](12990),
				Currency:       "EUR",
				Gateway:        "paymentoptions",
				Notes:          "order 88412, 3 items",
				Metadata:       map[string]string{"order_id": "88412", "channel": "web"},
			},
		},
		{
			name:    "partial void example",
			subject: "void",
			data:    example(t, "command.void"),
			want: &command.Command{
				CommandID:               "cmd-01J9Z4B2C6D8E0F2G4H6J8K0LM",
				Type:                    command.Void,
				IdempotencyKey:          "order-88413-void",
				MerchantID:              "20001",
				TransactionID:           "TX20260114093012845",
				Amount:                  ptr[int64](5000),
				Currency:                "PLN",
				Gateway:                 "sibs",
				Notes:                   "customer cancelled one item",
				Metadata:                map[string]string{"order_id": "88413"},
				OriginalTransactionTime: ptr(time.Date(2026, 1, 14, 9, 30, 12, 845e6, time.UTC)),
			},
		},
		{
			name:    "full void without amount",
			subject: "void",
			data:    with(map[string]any{"type": "void", "amount": drop{}, "currency": drop{}}),
			want: &command.Command{
				CommandID:     "cmd-1",
				Type:          command.Void,
				MerchantID:    "10004512",
				TransactionID: "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
			},
		},
		{
			name:    "amount written 1e2",
			subject: "capture",
			data:    with(map[string]any{"amount": json.RawMessage("1e2")}),
			want: &command.Command{
				CommandID:     "cmd-1",
				Type:          command.Capture,
				MerchantID:    "10004512",
				TransactionID: "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
				Amount:        ptr[int64](100),
				Currency:      "EUR",
			},
		},
		{
			name:    "largest amount, offset time",
			subject: "capture",
			data: with(map[string]any{
				"amount":                    json.RawMessage("9007199254740991"),
				"original_transaction_time": "2026-01-14T10:30:12+01:00",
			}),
			want: &command.Command{
				CommandID:               "cmd-1",
				Type:                    command.Capture,
				MerchantID:              "10004512",
				TransactionID:           "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
				Amount:                  ptr[int64](9007199254740991),
				Currency:                "EUR",
				OriginalTransactionTime: ptr(time.Date(2026, 1, 14, 10, 30, 12, 0, time.FixedZone("", 3600))),
			},
		},
		{
			name:    "any subject",
			subject: "",
			data:    with(map[string]any{"type": "void", "amount": drop{}, "currency": drop{}}),
			want: &command.Command{
				CommandID:     "cmd-1",
				Type:          command.Void,
				MerchantID:    "10004512",
				TransactionID: "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
			},
		},
		{
			name:    "exactly MaxSize bytes",
			subject: "capture",
			data:    pad(with(nil), command.MaxSize),
			want: &command.Command{
				CommandID:     "cmd-1",
				Type:          command.Capture,
				MerchantID:    "10004512",
				TransactionID: "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
				Amount:        ptr[int64](12990),
				Currency:      "EUR",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := command.Decode(tt.subject, tt.data)
			if err != nil {
				t.Fatalf("Decode(%q, %s) error = %v, want nil", tt.subject, tt.data, err)
			}
			if g, w := asJSON(got), asJSON(tt.want); g != w {
				t.Errorf("Decode(%q, ...) = %s, want %s", tt.subject, g, w)
			}
			if tt.want.OriginalTransactionTime != nil && !got.OriginalTransactionTime.Equal(*tt.want.OriginalTransactionTime) {
				t.Errorf("OriginalTransactionTime = %v, want %v", got.OriginalTransactionTime, tt.want.OriginalTransactionTime)
			}
			if err := command.Validate(tt.subject, tt.data); err != nil {
				t.Errorf("Validate(%q, ...) = %v, want nil", tt.subject, err)
			}
		})
	}
}

// pad appends spaces to b up to n bytes.
func pad(b []byte, n int) []byte {
	return append(b, strings.Repeat(" ", n-len(b))...)
}

func nested(depth int) []byte {
	return with(map[string]any{"metadata": json.RawMessage(
		`{"a":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`)})
}

func TestDecodeInvalid(t *testing.T) {
	manyUnknown := map[string]any{}
	for i := range 15 {
		manyUnknown[fmt.Sprintf("x%02d", i)] = i
	}
	tests := []struct {
		name      string
		subject   string
		data      []byte
		wantCode  string
		wantField string
		wantRule  string
		wantMsg   string
	}{
		// Size and syntax.
		{"oversize", "capture", pad(with(nil), command.MaxSize+1),
			"oversize", "", "oversize", "message is 65537 bytes, at most 65536 allowed"},
		{"empty", "capture", []byte(""),
			"invalid_json", "", "json", "message is empty"},
		{"blank", "capture", []byte(" \n"),
			"invalid_json", "", "json", "message is empty"},
		{"truncated", "capture", []byte(`{"command_id":`),
			"invalid_json", "", "json", "message is not valid JSON: unexpected end of input at offset 14"},
		{"missing colon", "capture", []byte(`{"command_id" "x"}`),
			"invalid_json", "", "json", "message is not valid JSON: invalid character '\"' after object key at offset 14"},
		{"trailing value", "capture", []byte(`{} {}`),
			"invalid_json", "", "json", "message is not valid JSON: invalid character '{' after top-level value at offset 3"},
		{"trailing garbage", "capture", []byte(`{}x`),
			"invalid_json", "", "json", "message is not valid JSON: invalid character 'x' after top-level value at offset 2"},
		{"duplicate key", "capture", []byte(`{"merchant_id":"a","merchant_id":"b"}`),
			"invalid_json", "merchant_id", "duplicate_key", "merchant_id: duplicate key (a field may appear once)"},
		{"duplicate nested key", "capture", with(map[string]any{"metadata": json.RawMessage(`{"k":"a","k":"b"}`)}),
			"invalid_json", "metadata.k", "duplicate_key", "metadata.k: duplicate key (a field may appear once)"},
		{"too deep", "capture", nested(40),
			"invalid_json", "", "depth", "message is nested deeper than 32 levels"},
		{"huge exponent", "capture", with(map[string]any{"amount": json.RawMessage("1e999999999")}),
			"invalid_json", "amount", "range", "amount: number out of range, got 1e999999999"},

		// Schema.
		{"array", "capture", []byte(`[]`),
			"schema_violation", "", "type", "message: must be an object, got an array"},
		{"null", "void", []byte(`null`),
			"schema_violation", "", "type", "message: must be an object, got null"},
		{"missing command_id", "capture", with(map[string]any{"command_id": drop{}}),
			"schema_violation", "command_id", "required", "command_id: is required"},
		{"missing type", "capture", with(map[string]any{"type": drop{}}),
			"schema_violation", "type", "required", "type: is required"},
		{"missing amount on capture", "capture", with(map[string]any{"amount": drop{}, "currency": drop{}}),
			"schema_violation", "amount", "required", "amount: is required for capture"},
		{"missing currency", "capture", with(map[string]any{"currency": drop{}}),
			"schema_violation", "currency", "dependentRequired", "currency: is required when amount is present"},
		{"empty command_id", "capture", with(map[string]any{"command_id": ""}),
			"schema_violation", "command_id", "minLength", "command_id: must not be empty"},
		{"long command_id", "capture", with(map[string]any{"command_id": strings.Repeat("c", 65)}),
			"schema_violation", "command_id", "maxLength", "command_id: must be at most 64 characters, got 65"},
		{"long idempotency_key", "capture", with(map[string]any{"idempotency_key": strings.Repeat("k", 256)}),
			"schema_violation", "idempotency_key", "maxLength", "idempotency_key: must be at most 255 characters, got 256"},
		{"long merchant_id", "capture", with(map[string]any{"merchant_id": "12345678901"}),
			"schema_violation", "merchant_id", "maxLength", "merchant_id: must be at most 10 characters, got 11"},
		{"merchant_id counts characters", "capture", with(map[string]any{"merchant_id": "ąąąąąąąąąąą"}),
			"schema_violation", "merchant_id", "maxLength", "merchant_id: must be at most 10 characters, got 11"},
		{"long transaction_id", "capture", with(map[string]any{"transaction_id": strings.Repeat("t", 37)}),
			"schema_violation", "transaction_id", "maxLength", "transaction_id: must be at most 36 characters, got 37"},
		{"zero amount", "capture", with(map[string]any{"amount": 0}),
			"schema_violation", "amount", "minimum", "amount: must be at least 1, got 0"},
		{"negative void amount", "void", with(map[string]any{"type": "void", "amount": -5}),
			"schema_violation", "amount", "minimum", "amount: must be at least 1, got -5"},
		{"fractional amount", "capture", with(map[string]any{"amount": 1.5}),
			"schema_violation", "amount", "type", "amount: must be an integer, got 1.5"},
		{"amount as string", "capture", with(map[string]any{"amount": "100"}),
			"schema_violation", "amount", "type", `amount: must be an integer, got "100"`},
		{"amount null", "capture", with(map[string]any{"amount": nil}),
			"schema_violation", "amount", "type", `amount: must be an integer, got null`},
		{"lower-case currency", "capture", with(map[string]any{"currency": "eur"}),
			"schema_violation", "currency", "pattern", `currency: must match ^[A-Z]{3}$ (ISO 4217 alpha-3), got "eur"`},
		{"unknown gateway", "capture", with(map[string]any{"gateway": "adyen"}),
			"schema_violation", "gateway", "enum", `gateway: must be one of "paymentoptions", "sibs", got "adyen"`},
		{"long notes", "capture", with(map[string]any{"notes": strings.Repeat("n", 129)}),
			"schema_violation", "notes", "maxLength", "notes: must be at most 128 characters, got 129"},
		{"metadata value not a string", "capture", with(map[string]any{"metadata": map[string]any{"foo": 1}}),
			"schema_violation", "metadata.foo", "type", "metadata.foo: must be a string, got 1"},
		{"metadata key with a dot", "capture", with(map[string]any{"metadata": map[string]any{"a.b": true}}),
			"schema_violation", `metadata."a.b"`, "type", `metadata."a.b": must be a string, got true`},
		{"metadata not an object", "capture", with(map[string]any{"metadata": []string{"x"}}),
			"schema_violation", "metadata", "type", "metadata: must be an object, got an array"},
		{"bad original_transaction_time", "void", with(map[string]any{"type": "void", "original_transaction_time": "14/01/2026"}),
			"schema_violation", "original_transaction_time", "format",
			`original_transaction_time: must be an RFC 3339 date-time such as 2026-01-14T09:30:12Z, got "14/01/2026"`},
		{"leap second, which Go's time cannot hold", "void", with(map[string]any{"type": "void", "original_transaction_time": "2026-12-31T23:59:60Z"}),
			"schema_violation", "original_transaction_time", "format",
			`original_transaction_time: must be an RFC 3339 date-time such as 2026-01-14T09:30:12Z, got "2026-12-31T23:59:60Z"`},
		{"unknown field", "capture", with(map[string]any{"colour": "blue"}),
			"schema_violation", "colour", "additionalProperties", "colour: unknown field (not allowed by the command schema)"},
		{"field names are case-sensitive", "capture", with(map[string]any{"Command_ID": "x"}),
			"schema_violation", "Command_ID", "additionalProperties", "Command_ID: unknown field (not allowed by the command schema)"},
		{"unknown type on capture subject", "capture", with(map[string]any{"type": "refund"}),
			"schema_violation", "type", "const", `type: must be "capture", got "refund"`},
		{"unknown type, any subject", "", with(map[string]any{"type": "refund"}),
			"schema_violation", "type", "enum", `type: must be one of "capture", "void", got "refund"`},
		{"no type, any subject", "", with(map[string]any{"type": drop{}}),
			"schema_violation", "type", "required", "type: is required"},
		{"several problems, first field first", "capture",
			with(map[string]any{"colour": "blue", "merchant_id": "12345678901", "command_id": ""}),
			"schema_violation", "command_id", "minLength",
			"command_id: must not be empty; merchant_id: must be at most 10 characters, got 11; colour: unknown field (not allowed by the command schema)"},
		{"many problems are capped", "capture", with(manyUnknown),
			"schema_violation", "x00", "additionalProperties",
			"x00: unknown field (not allowed by the command schema); x01: unknown field (not allowed by the command schema); " +
				"x02: unknown field (not allowed by the command schema); x03: unknown field (not allowed by the command schema); " +
				"x04: unknown field (not allowed by the command schema); x05: unknown field (not allowed by the command schema); " +
				"x06: unknown field (not allowed by the command schema); x07: unknown field (not allowed by the command schema); " +
				"x08: unknown field (not allowed by the command schema); x09: unknown field (not allowed by the command schema); " +
				"and 5 more problems"},

		// Subject.
		{"void on capture subject", "capture", with(map[string]any{"type": "void"}),
			"subject_mismatch", "type", "subject", `type: must match the subject's command type "capture", got "void"`},
		{"capture on void subject", "void", with(nil),
			"subject_mismatch", "type", "subject", `type: must match the subject's command type "void", got "capture"`},
		{"schema checked before subject", "capture", with(map[string]any{"type": "void", "merchant_id": ""}),
			"schema_violation", "merchant_id", "minLength", "merchant_id: must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := command.Decode(tt.subject, tt.data)
			if err == nil {
				t.Fatalf("Decode(%q, %.80s) = %s, want an error", tt.subject, tt.data, asJSON(c))
			}
			if c != nil {
				t.Errorf("Decode(%q, ...) command = %s, want nil", tt.subject, asJSON(c))
			}
			if !errors.Is(err, command.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
			}
			var ie *command.InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("error %T is not an *InvalidError", err)
			}
			if got := ie.Code(); got != tt.wantCode {
				t.Errorf("Code() = %q, want %q", got, tt.wantCode)
			}
			if got := ie.Field(); got != tt.wantField {
				t.Errorf("Field() = %q, want %q", got, tt.wantField)
			}
			if got := ie.Problems[0].Rule; got != tt.wantRule {
				t.Errorf("Problems[0].Rule = %q, want %q", got, tt.wantRule)
			}
			if got := err.Error(); got != tt.wantMsg {
				t.Errorf("Error() = %q\nwant      %q", got, tt.wantMsg)
			}
			if verr := command.Validate(tt.subject, tt.data); verr == nil || verr.Error() != err.Error() {
				t.Errorf("Validate(%q, ...) = %v, want %v", tt.subject, verr, err)
			}
		})
	}
}

func TestMessagesMaskCardNumbers(t *testing.T) {
	const pan = "5200000000001005"
	tests := []struct {
		name    string
		data    []byte
		wantMsg string
	}{
		{"in a pattern value", with(map[string]any{"currency": pan}),
			`currency: must match ^[A-Z]{3}$ (ISO 4217 alpha-3), got "520000******1005"`},
		{"as an unknown field's name", with(map[string]any{pan: "x"}),
			"520000******1005: unknown field (not allowed by the command schema)"},
		{"grouped in an enum value", with(map[string]any{"gateway": "5200 0000 0000 1005"}),
			`gateway: must be one of "paymentoptions", "sibs", got "5200 00** **** 1005"`},
		{"as a number where a string belongs", with(map[string]any{"notes": json.RawMessage(pan)}),
			"notes: must be a string, got 520000******1005"},
		{"as a too-large amount", with(map[string]any{"amount": json.RawMessage(pan + "0")}),
			"amount: must be at most 9007199254740991, got 520000*******0050"},
		{"inside a long value", with(map[string]any{"gateway": "card " + pan + " " + strings.Repeat("z", 50)}),
			`gateway: must be one of "paymentoptions", "sibs", got "card 520000******1005 zzzzzzzzzzzzzzzzzz…"`},
		{"thirteen digits", with(map[string]any{"currency": "4222222222222"}),
			`currency: must match ^[A-Z]{3}$ (ISO 4217 alpha-3), got "422222***2222"`},
		{"twelve digits are not a card", with(map[string]any{"currency": "123456789012"}),
			`currency: must match ^[A-Z]{3}$ (ISO 4217 alpha-3), got "123456789012"`},
		{"long values are clipped", with(map[string]any{"gateway": strings.Repeat("g", 1000)}),
			`gateway: must be one of "paymentoptions", "sibs", got "` + strings.Repeat("g", 40) + `…"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := command.Decode("capture", tt.data)
			if err == nil {
				t.Fatalf("Decode(capture, %s) = nil error, want one", tt.data)
			}
			if got := err.Error(); got != tt.wantMsg {
				t.Errorf("Error() = %q\nwant      %q", got, tt.wantMsg)
			}
			if strings.Contains(err.Error(), pan) {
				t.Errorf("Error() = %q contains the card number", err.Error())
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, name := range []string{"command.capture", "command.void"} {
		t.Run(name, func(t *testing.T) {
			c, err := command.Decode("", example(t, name))
			if err != nil {
				t.Fatal(err)
			}
			data, err := c.Marshal()
			if err != nil {
				t.Fatalf("Marshal() error = %v", err)
			}
			again, err := command.Decode(string(c.Type), data)
			if err != nil {
				t.Fatalf("Decode(Marshal()) error = %v", err)
			}
			if got, want := asJSON(again), asJSON(c); got != want {
				t.Errorf("Decode(Marshal(c)) = %s, want %s", got, want)
			}
		})
	}
}

func TestMarshalInvalid(t *testing.T) {
	tests := []struct {
		name      string
		c         command.Command
		wantField string
	}{
		{"long merchant", command.Command{CommandID: "c", Type: command.Void, MerchantID: "12345678901", TransactionID: "t"}, "merchant_id"},
		{"capture without amount", command.Command{CommandID: "c", Type: command.Capture, MerchantID: "m", TransactionID: "t"}, "amount"},
		{"no type", command.Command{CommandID: "c", MerchantID: "m", TransactionID: "t"}, "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.Marshal()
			var ie *command.InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("Marshal() error = %v, want an *InvalidError", err)
			}
			if got := ie.Field(); got != tt.wantField {
				t.Errorf("Marshal() error field = %q, want %q (%v)", got, tt.wantField, err)
			}
		})
	}
}

func TestInvalidErrorMethods(t *testing.T) {
	e := &command.InvalidError{Problems: []command.Problem{
		{Field: "a", Rule: "required", Message: "a: is required"},
		{Field: "b", Rule: "required", Message: "b: is required"},
	}}
	if got, want := e.Error(), "a: is required; b: is required"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := e.Field(), "a"; got != want {
		t.Errorf("Field() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("handle: %w", e)
	if !errors.Is(wrapped, command.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", wrapped)
	}
	if got := (&command.InvalidError{}).Field(); got != "" {
		t.Errorf("Field() of no problems = %q, want \"\"", got)
	}
}
