package schemas_test

import (
	"bytes"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/schemas"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// example returns a fresh decoded copy of examples/<name>.json.
func example(t *testing.T, name string) any {
	t.Helper()
	raw, err := schemas.FS.ReadFile("examples/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("examples/%s.json: %v", name, err)
	}
	return doc
}

// validate validates doc against the schema named like its example:
// command.<type> or event.<kind>.
func validate(name string, doc any) error {
	if typ, ok := strings.CutPrefix(name, "command."); ok {
		return schemas.ValidateCommand(typ, doc)
	}
	return schemas.ValidateEvent(strings.TrimPrefix(name, "event."), doc)
}

func TestEverySchemaHasAnExample(t *testing.T) {
	names, err := fs.Glob(schemas.FS, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if name == "event.defs.json" {
			continue
		}
		if _, err := fs.Stat(schemas.FS, "examples/"+name); err != nil {
			t.Errorf("schema %s has no example: %v", name, err)
		}
	}
}

func TestExamplesValidate(t *testing.T) {
	names, err := fs.Glob(schemas.FS, "examples/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no examples embedded")
	}
	for _, path := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(path, "examples/"), ".json")
		t.Run(name, func(t *testing.T) {
			if err := validate(name, example(t, name)); err != nil {
				t.Errorf("validate(%s) = %v, want nil", name, err)
			}
			if strings.HasPrefix(name, "event.") {
				raw, _ := schemas.FS.ReadFile(path)
				if err := schemas.ValidateEventJSON(raw); err != nil {
					t.Errorf("ValidateEventJSON(%s) = %v, want nil", name, err)
				}
			}
		})
	}
}

func TestKinds(t *testing.T) {
	var want []string
	for _, k := range events.Kinds {
		want = append(want, string(k))
	}
	slices.Sort(want)
	if got := schemas.EventKinds(); !slices.Equal(got, want) {
		t.Errorf("EventKinds() = %v, want %v (events.Kinds)", got, want)
	}
	if got, want := schemas.CommandTypes(), []string{"capture", "void"}; !slices.Equal(got, want) {
		t.Errorf("CommandTypes() = %v, want %v", got, want)
	}
}

func TestUnknownSchema(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"ValidateCommand(refund)", schemas.ValidateCommand("refund", map[string]any{})},
		{"ValidateEvent(refund.succeeded)", schemas.ValidateEvent("refund.succeeded", map[string]any{})},
		{"ValidateEventJSON(foreign type)", schemas.ValidateEventJSON([]byte(`{"type":"com.example.thing"}`))},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, schemas.ErrNoSchema) {
			t.Errorf("%s = %v, want ErrNoSchema", tt.name, tt.err)
		}
	}
}

func TestValidateEventJSONMalformed(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{}`, `{"type":1}`, `{"type":"payments.capture.succeeded"}`} {
		if err := schemas.ValidateEventJSON([]byte(in)); err == nil {
			t.Errorf("ValidateEventJSON(%q) = nil, want an error", in)
		}
	}
}

// mutation changes one field of an example; path is dotted, e.g. data.error.code.
type mutation struct {
	name  string
	path  string
	value any // the new value; nil deletes
	valid bool
}

func apply(t *testing.T, doc any, m mutation) {
	t.Helper()
	segs := strings.Split(m.path, ".")
	obj := doc.(map[string]any)
	for _, s := range segs[:len(segs)-1] {
		next, ok := obj[s].(map[string]any)
		if !ok {
			t.Fatalf("mutation %q: %s is not an object", m.name, s)
		}
		obj = next
	}
	last := segs[len(segs)-1]
	if m.value == nil {
		if _, ok := obj[last]; !ok {
			t.Fatalf("mutation %q: nothing to delete at %s", m.name, m.path)
		}
		delete(obj, last)
		return
	}
	obj[last] = m.value
}

func del(path string) mutation { return mutation{name: "missing " + path, path: path} }

func set(name, path string, v any) mutation { return mutation{name: name, path: path, value: v} }

func ok(name, path string, v any) mutation {
	return mutation{name: name, path: path, value: v, valid: true}
}

var commandMutations = []mutation{
	del("command_id"),
	del("type"),
	del("merchant_id"),
	del("transaction_id"),
	del("currency"),
	set("unknown field", "colour", "blue"),
	set("empty command_id", "command_id", ""),
	set("long command_id", "command_id", strings.Repeat("c", 65)),
	set("other type", "type", "refund"),
	set("empty idempotency_key", "idempotency_key", ""),
	set("long merchant_id", "merchant_id", "12345678901"),
	set("long transaction_id", "transaction_id", strings.Repeat("t", 37)),
	set("amount as string", "amount", "100"),
	set("zero amount", "amount", 0),
	set("negative amount", "amount", -5),
	set("fractional amount", "amount", 1.5),
	set("amount beyond 2^53-1", "amount", 9007199254740992),
	set("lower-case currency", "currency", "eur"),
	set("unknown gateway", "gateway", "adyen"),
	set("long notes", "notes", strings.Repeat("n", 129)),
	set("metadata value not a string", "metadata.order_id", 88412),
	set("metadata not an object", "metadata", "order=1"),
	set("bad original_transaction_time", "original_transaction_time", "14/01/2026 09:30"),
	ok("amount 1.0 is an integer", "amount", 1.0),
	ok("largest amount", "amount", 9007199254740991),
	ok("notes of 128", "notes", strings.Repeat("n", 128)),
}

var eventMutations = []mutation{
	del("id"),
	del("source"),
	del("time"),
	del("data"),
	del("specversion"),
	set("unknown envelope field", "colour", "blue"),
	set("unknown data field", "data.colour", "blue"),
	set("other specversion", "specversion", "0.3"),
	set("other datacontenttype", "datacontenttype", "text/plain"),
	set("other kind's type", "type", "payments.command.unknown"),
	set("time not date-time", "time", "yesterday"),
	set("attempts as string", "data.attempts", "1"),
	set("negative attempts", "data.attempts", -1),
	set("fractional amount", "data.amount", 1.5),
	set("unmasked card number", "data.masked_card_number", "5200000000001005"),
	set("card number with 7 leading digits", "data.masked_card_number", "5200000*****1005"),
	set("card number with 5 trailing digits", "data.masked_card_number", "520000*****01005"),
	set("metadata value not a string", "data.metadata", map[string]any{"order_id": 1}),
	set("error without retryable", "data.error", map[string]any{"code": "x", "message": "y"}),
	ok("card number first 6 last 4", "data.masked_card_number", "411111******1111"),
	ok("card number last 4", "data.masked_card_number", "************1111"),
}

var terminalMutations = []mutation{
	del("subject"),
	del("data.command_id"),
	del("data.idempotency_key"),
	del("data.merchant_id"),
	del("data.transaction_id"),
	del("data.gateway"),
	del("data.attempts"),
	set("long merchant_id", "data.merchant_id", "12345678901"),
	set("unknown gateway", "data.gateway", "adyen"),
	set("lower-case currency", "data.currency", "eur"),
	set("zero amount", "data.amount", 0),
}

func TestMutationsOfExamples(t *testing.T) {
	tests := []struct {
		name      string
		mutations [][]mutation
	}{
		{"command.capture", [][]mutation{commandMutations, {
			del("amount"),
		}}},
		{"command.void", [][]mutation{commandMutations, {
			ok("no notes", "notes", nil),
		}}},
		{"event.capture.succeeded", [][]mutation{eventMutations, terminalMutations, {
			del("data.gateway_code"),
			del("data.amount"),
			set("error on success", "data.error", map[string]any{"code": "x", "message": "y", "retryable": false}),
			set("void command_type", "data.command_type", "void"),
		}}},
		{"event.capture.failed", [][]mutation{eventMutations, terminalMutations, {
			del("data.error"),
			del("data.amount"),
			set("error without code", "data.error", map[string]any{"message": "y", "retryable": false}),
			set("empty error code", "data.error", map[string]any{"code": "", "message": "y", "retryable": false}),
		}}},
		{"event.void.succeeded", [][]mutation{eventMutations, terminalMutations, {
			del("data.gateway_code"),
			set("capture command_type", "data.command_type", "capture"),
		}}},
		{"event.void.failed", [][]mutation{eventMutations, {
			del("data.error"),
			del("data.command_id"),
			del("data.attempts"),
			set("capture command_type", "data.command_type", "capture"),
		}}},
		{"event.command.rejected", [][]mutation{eventMutations, {
			del("data.error"),
			ok("no subject", "subject", nil),
			ok("no command_id", "data.command_id", nil),
			ok("no merchant_id", "data.merchant_id", nil),
			ok("garbage command_type", "data.command_type", "refund"),
		}}},
		{"event.command.duplicate", [][]mutation{eventMutations, {
			del("data.original_event_id"),
			del("data.idempotency_key"),
			ok("no original_command_id", "data.original_command_id", nil),
		}}},
		{"event.command.dead_lettered", [][]mutation{eventMutations, {
			del("data.error"),
			del("data.dlq_subject"),
			set("zero dlq_sequence", "data.dlq_sequence", 0),
		}}},
	}
	for _, tt := range tests {
		for _, group := range tt.mutations {
			for _, m := range group {
				t.Run(tt.name+"/"+m.name, func(t *testing.T) {
					doc := example(t, tt.name)
					apply(t, doc, m)
					err := validate(tt.name, doc)
					if m.valid && err != nil {
						t.Errorf("validate(%s with %s) = %v, want nil", tt.name, m.name, err)
					}
					if !m.valid && err == nil {
						t.Errorf("validate(%s with %s) = nil, want an error", tt.name, m.name)
					}
				})
			}
		}
	}
}

func TestRejectedGarbage(t *testing.T) {
	doc := map[string]any{
		"specversion":     "1.0",
		"id":              "6a8c0e2f-4b6d-5f8a-9c1e-3d5f7b9d1f3a",
		"source":          "payworker/worker-1",
		"type":            "payments.command.rejected",
		"time":            "2026-01-14T09:33:20Z",
		"datacontenttype": "application/json",
		"data": map[string]any{
			"attempts": 0,
			"error":    map[string]any{"code": "invalid_json", "message": "message is empty", "retryable": false},
		},
	}
	if err := schemas.ValidateEvent("command.rejected", doc); err != nil {
		t.Errorf("ValidateEvent(rejected without command fields) = %v, want nil", err)
	}
}

func TestVoidWithoutAmount(t *testing.T) {
	doc := example(t, "command.void").(map[string]any)
	delete(doc, "amount")
	delete(doc, "currency")
	if err := schemas.ValidateCommand("void", doc); err != nil {
		t.Errorf("ValidateCommand(void without amount) = %v, want nil", err)
	}
}
