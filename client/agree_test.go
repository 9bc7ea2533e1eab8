package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/schemas"
)

// The client and the worker agree: every command the client accepts, the
// worker accepts as published, and every command the client rejects, the
// worker rejects with the same field, rule and message. The commands are
// the schema's examples, the decoder's fuzz corpus (whatever of it a typed
// command can express) and edits of the examples at every rule's edge.

// corpus returns the inputs: the schema examples and the fuzz corpus.
func corpus(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	names, err := fs.Glob(schemas.FS, "examples/command.*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("schema examples: %v", err)
	}
	for _, n := range names {
		b, err := schemas.FS.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	dir := filepath.Join("..", "internal", "command", "testdata", "fuzz", "FuzzDecodeCommand")
	files, err := os.ReadDir(dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("fuzz corpus %s: %v", dir, err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(strings.TrimSpace(string(raw)), "\n", 2)
		if len(lines) != 2 || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a fuzz corpus file", f.Name())
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", f.Name(), err)
		}
		out["fuzz/"+f.Name()] = []byte(s)
	}
	return out
}

// typed expresses a raw message as a Capture or Void, and reports whether
// the client would publish the same document (faithful): every member is
// a command field with a value of its Go type, none that the encoding
// leaves out (an empty optional string, amount 0, empty metadata).
func typed(raw []byte) (cmd Command, faithful bool) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&m) != nil || m == nil {
		return nil, false
	}
	faithful = !duplicateKeys(raw)
	str := func(k string, omitEmpty bool) string {
		v, present := m[k]
		if !present {
			return ""
		}
		s, ok := v.(string)
		if !ok || omitEmpty && s == "" {
			faithful = false
		}
		return s
	}
	var (
		id, typ, key       = str("command_id", false), str("type", false), str("idempotency_key", true)
		merchant, txn      = str("merchant_id", false), str("transaction_id", false)
		currency, gw, note = str("currency", true), str("gateway", true), str("notes", true)
		amount             int64
		md                 map[string]string
		at                 time.Time
	)
	for _, k := range []string{"command_id", "type", "merchant_id", "transaction_id"} {
		if _, present := m[k]; !present {
			faithful = false
		}
	}
	if v, present := m["amount"]; present {
		n, ok := v.(json.Number)
		i, err := strconv.ParseInt(string(n), 10, 64)
		if !ok || err != nil || i == 0 {
			faithful = false
		}
		amount = i
	}
	if v, present := m["metadata"]; present {
		obj, ok := v.(map[string]any)
		if !ok || len(obj) == 0 {
			faithful = false
		}
		md = map[string]string{}
		for k, v := range obj {
			s, ok := v.(string)
			if !ok {
				faithful = false
			}
			md[k] = s
		}
	}
	if s := str("original_transaction_time", true); s != "" {
		var err error
		if at, err = time.Parse(time.RFC3339Nano, s); err != nil || at.Format(time.RFC3339Nano) != s {
			faithful = false
		}
	}
	for k := range m {
		switch k {
		case "command_id", "type", "idempotency_key", "merchant_id", "transaction_id", "amount", "currency",
			"gateway", "notes", "metadata", "original_transaction_time":
		default:
			faithful = false
		}
	}
	switch Type(typ) {
	case TypeCapture:
		return Capture{id, key, merchant, txn, amount, currency, gw, note, md, at}, faithful
	case TypeVoid:
		return Void{id, key, merchant, txn, amount, currency, gw, note, md, at}, faithful
	}
	return nil, false
}

// duplicateKeys reports whether a JSON object repeats a member at its top
// level, which a map (and a typed command) cannot express.
func duplicateKeys(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		k, _ := tok.(string)
		if seen[k] {
			return true
		}
		seen[k] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
	}
	return false
}

// published is what Publish would send for cmd, valid or not, with the
// placeholder id Validate uses for an empty one.
func published(cmd Command) []byte {
	w := cmd.wire()
	if w.CommandID == "" {
		w.CommandID = placeholderID
	}
	return w.AppendJSON(nil)
}

// checkAgree compares the client's verdict on cmd with the worker's on what
// the client would publish.
func checkAgree(t *testing.T, name string, cmd Command) (clientErr error) {
	t.Helper()
	clientErr = cmd.Validate()
	workerErr := command.Validate(string(cmd.Type()), published(cmd))
	if (clientErr == nil) != (workerErr == nil) {
		t.Errorf("%s: client Validate = %v, worker = %v; want them to agree", name, clientErr, workerErr)
		return clientErr
	}
	if clientErr == nil {
		return nil
	}
	var ve *ValidationError
	var ie *command.InvalidError
	if !errors.As(clientErr, &ve) || !errors.As(workerErr, &ie) {
		t.Fatalf("%s: errors %T, %T; want *ValidationError and *command.InvalidError", name, clientErr, workerErr)
	}
	if !errors.Is(clientErr, ErrInvalidCommand) {
		t.Errorf("%s: client error does not match ErrInvalidCommand", name)
	}
	var want []Problem
	for _, p := range ie.Problems {
		want = append(want, Problem(p))
	}
	if !reflect.DeepEqual(ve.Problems, want) || ve.Error() != workerErr.Error() {
		t.Errorf("%s: client problems %+v (%q), worker %+v (%q)", name, ve.Problems, ve, want, workerErr)
	}
	return clientErr
}

func TestClientAndWorkerAgreeOnCorpus(t *testing.T) {
	expressed, faithful := 0, 0
	for name, raw := range corpus(t) {
		cmd, same := typed(raw)
		if cmd == nil {
			continue
		}
		expressed++
		clientErr := checkAgree(t, name, cmd)
		if !same {
			continue
		}
		faithful++
		// The client's document is the raw message: the worker's verdict
		// on the raw message is the client's.
		var a, b map[string]any
		if json.Unmarshal(raw, &a) != nil || json.Unmarshal(published(cmd), &b) != nil || !maps.EqualFunc(a, b, reflect.DeepEqual) {
			t.Errorf("%s: faithful, but the client publishes %s for %s", name, published(cmd), raw)
			continue
		}
		workerErr := command.Validate(string(cmd.Type()), raw)
		if (clientErr == nil) != (workerErr == nil) {
			t.Errorf("%s: client %v, worker on the raw message %v", name, clientErr, workerErr)
		}
		var ve *ValidationError
		var ie *command.InvalidError
		if errors.As(clientErr, &ve) && errors.As(workerErr, &ie) && ve.Field() != ie.Field() {
			t.Errorf("%s: client field %q, worker field %q", name, ve.Field(), ie.Field())
		}
	}
	if expressed < 4 || faithful < 2 {
		t.Errorf("only %d corpus inputs expressed as commands (%d faithfully); the test checks too little", expressed, faithful)
	}
	t.Logf("%d corpus inputs expressed as typed commands, %d faithfully", expressed, faithful)
}

func TestClientAndWorkerAgreeOnEdges(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	at := time.Date(2026, 1, 14, 9, 30, 12, 845000000, time.UTC)
	capture := Capture{CommandID: "c1", IdempotencyKey: "order-1/ship-1", MerchantID: "M1", TransactionID: "T1", Amount: 1000, Currency: "JPY"}
	void := Void{CommandID: "c2", MerchantID: "M1", TransactionID: "T1"}
	c := func(f func(*Capture)) Command { x := capture; f(&x); return x }
	v := func(f func(*Void)) Command { x := void; f(&x); return x }
	bigMetadata := map[string]string{}
	for i := range 700 {
		bigMetadata["k"+strconv.Itoa(i)] = long(90)
	}
	tests := []struct {
		name  string
		cmd   Command
		field string // "" for valid
	}{
		{"capture", capture, ""},
		{"void", void, ""},
		{"pointer", &capture, ""},
		{"generated id", c(func(x *Capture) { x.CommandID = "" }), ""},
		{"max command id", c(func(x *Capture) { x.CommandID = long(64) }), ""},
		{"long command id", c(func(x *Capture) { x.CommandID = long(65) }), "command_id"},
		{"max key", c(func(x *Capture) { x.IdempotencyKey = long(255) }), ""},
		{"long key", c(func(x *Capture) { x.IdempotencyKey = long(256) }), "idempotency_key"},
		{"no merchant", c(func(x *Capture) { x.MerchantID = "" }), "merchant_id"},
		{"long merchant", c(func(x *Capture) { x.MerchantID = long(11) }), "merchant_id"},
		{"multibyte merchant", c(func(x *Capture) { x.MerchantID = strings.Repeat("é", 10) }), ""},
		{"invalid UTF-8 merchant", c(func(x *Capture) { x.MerchantID = "M\xff" }), ""},
		{"no transaction", c(func(x *Capture) { x.TransactionID = "" }), "transaction_id"},
		{"long transaction", c(func(x *Capture) { x.TransactionID = long(37) }), "transaction_id"},
		{"capture without amount", c(func(x *Capture) { x.Amount = 0 }), "amount"},
		{"negative amount", c(func(x *Capture) { x.Amount = -5 }), "amount"},
		{"largest amount", c(func(x *Capture) { x.Amount = 1<<53 - 1 }), ""},
		{"huge amount", c(func(x *Capture) { x.Amount = 1 << 53 }), "amount"},
		{"amount without currency", c(func(x *Capture) { x.Currency = "" }), "currency"},
		{"lower-case currency", c(func(x *Capture) { x.Currency = "jpy" }), "currency"},
		{"unknown gateway", c(func(x *Capture) { x.Gateway = "stripe" }), "gateway"},
		{"sibs", c(func(x *Capture) { x.Gateway = "sibs" }), ""},
		{"max notes", c(func(x *Capture) { x.Notes = long(128) }), ""},
		{"long notes", c(func(x *Capture) { x.Notes = long(129) }), "notes"},
		{"notes with a card number", c(func(x *Capture) { x.Notes = "card 5200000000001005 " + long(120) }), "notes"},
		{"metadata", c(func(x *Capture) { x.Metadata = map[string]string{"order": "42", "a.b c": "\"x\""} }), ""},
		{"oversize", c(func(x *Capture) { x.Metadata = bigMetadata }), ""},
		{"original time", c(func(x *Capture) { x.OriginalTransactionTime = at }), ""},
		{"partial void", v(func(x *Void) { x.Amount, x.Currency = 500, "EUR" }), ""},
		{"void amount without currency", v(func(x *Void) { x.Amount = 500 }), "currency"},
		{"void negative amount", v(func(x *Void) { x.Amount, x.Currency = -1, "EUR" }), "amount"},
		{"void with an original time", v(func(x *Void) { x.OriginalTransactionTime = at }), ""},
		{"void long merchant and transaction", v(func(x *Void) { x.MerchantID, x.TransactionID = long(11), long(37) }), "merchant_id"},
	}
	for _, tt := range tests {
		err := checkAgree(t, tt.name, tt.cmd)
		var ve *ValidationError
		switch {
		case tt.name == "oversize":
			if !errors.As(err, &ve) || ve.Problems[0].Rule != "oversize" {
				t.Errorf("%s: Validate = %v, want an oversize problem", tt.name, err)
			}
		case tt.field == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", tt.name, err)
		case tt.field != "" && (!errors.As(err, &ve) || ve.Field() != tt.field):
			t.Errorf("%s: Validate = %v, want a problem with %s", tt.name, err, tt.field)
		}
	}
}

// TestEncodeMatchesMarshal holds the encoding to encoding/json, which the
// worker's decoder reads.
func TestEncodeMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 1, 14, 9, 30, 12, 5, time.FixedZone("x", 3600))
	for _, cmd := range []Command{
		Capture{CommandID: "c", IdempotencyKey: "k<&>", MerchantID: "M", TransactionID: "T", Amount: 1, Currency: "EUR",
			Notes: "é\u2028\t", Metadata: map[string]string{"z": "1", "a": "2"}, OriginalTransactionTime: at},
		Void{CommandID: "v", MerchantID: "M", TransactionID: "T"},
	} {
		enc, err := Encode(cmd)
		if err != nil {
			t.Fatalf("Encode(%+v) = %v", cmd, err)
		}
		want, err := json.Marshal(cmd.wire())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc.JSON(), want) {
			t.Errorf("Encode(%+v)\n got %s\nwant %s", cmd, enc.JSON(), want)
		}
		again, err := Encode(enc)
		if err != nil || again != enc || enc.Validate() != nil {
			t.Errorf("Encode(*Encoded) = %v, %v; want the same, nil", again, err)
		}
	}
}
