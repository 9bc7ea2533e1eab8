package command

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/schemas"
)

// subjects are the subject types Decode is called with: each command
// type's, and none.
var subjects = []string{"capture", "void", ""}

// commonCommands are commands as the publisher builds them, all valid.
func commonCommands() []*Command {
	return append(plainCommands(), escapedCommands()...)
}

// plainCommands are commands whose JSON has no escapes.
func plainCommands() []*Command {
	n := func(v int64) *int64 { return &v }
	at := time.Date(2026, 1, 14, 9, 30, 12, 845_000_000, time.UTC)
	plus := time.Date(2026, 2, 28, 23, 59, 59, 1, time.FixedZone("", 90*60))
	return []*Command{
		{CommandID: "cmd-01J9Z3K7Q8R2M4N6P0S5T7V9WX", Type: Capture, IdempotencyKey: "order-88412-capture",
			MerchantID: "10004512", TransactionID: "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
			Amount: n(12990), Currency: "EUR", Gateway: "paymentoptions", Notes: "order 88412, 3 items",
			Metadata: map[string]string{"order_id": "88412", "channel": "web"}},
		{CommandID: "c", Type: Capture, MerchantID: "m", TransactionID: "t", Amount: n(1), Currency: "PLN"},
		{CommandID: "c", Type: Capture, MerchantID: "m", TransactionID: "t", Amount: n(maxAmount), Currency: "USD",
			Gateway: "sibs", OriginalTransactionTime: &at},
		{CommandID: "c", Type: Void, MerchantID: "m", TransactionID: "t"},
		{CommandID: "cmd-2", Type: Void, IdempotencyKey: "k", MerchantID: "20001", TransactionID: "TX20260114093012845",
			Amount: n(5000), Currency: "PLN", Gateway: "sibs", Notes: "customer cancelled one item",
			Metadata: map[string]string{"order_id": "88413", "": ""}, OriginalTransactionTime: &plus},
		{CommandID: strings.Repeat("é", 64), Type: Void, IdempotencyKey: strings.Repeat("k", 255),
			MerchantID: "ÄÖÜäöü€𝄞日本", TransactionID: strings.Repeat("t", 36), Notes: strings.Repeat("ñ", 128),
			Metadata: map[string]string{"ключ": "значение", "emoji": "🙂"}},
	}
}

// escapedCommands are commands with what AppendJSON writes as escapes in
// their strings: <, >, &, quotes, backslashes, control characters, U+2028,
// U+2029 and invalid UTF-8, next to other non-ASCII text.
func escapedCommands() []*Command {
	n := func(v int64) *int64 { return &v }
	return []*Command{
		{CommandID: "cmd-01J9Z3K7Q8R2M4N6P0S5T7V9WX", Type: Capture, IdempotencyKey: "order-88412-capture",
			MerchantID: "10004512", TransactionID: "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
			Amount: n(12990), Currency: "EUR", Gateway: "paymentoptions",
			Notes:    "Tom & Jerry <\"gift\"> für Zoë\nline 2\ttab \\ 🙂",
			Metadata: map[string]string{"order_id": "88412", "channel": "web & app", "<k>": "a\r\nb"}},
		{CommandID: "c<1>&", Type: Void, IdempotencyKey: "k\"\\/", MerchantID: "m&<>", TransactionID: "t\u2028\u2029",
			Notes:    "\x00\x01\b\f\x1f\x7f é \xff\xfe" + strings.Repeat("&", 100),
			Metadata: map[string]string{"\xff": "\x01", "\u2028": "\u2029", "é&": "€<"}},
		{CommandID: strings.Repeat("&", 64), Type: Void, MerchantID: strings.Repeat("<", 10),
			TransactionID: strings.Repeat("\n", 36), Notes: strings.Repeat("\"", 128)},
	}
}

// TestDecodeFastTakesCommonCommands holds decodeFast to answering for the
// command examples and for what AppendJSON and Encode write, so the fast
// path cannot silently stop being taken.
func TestDecodeFastTakesCommonCommands(t *testing.T) {
	inputs := map[string][]byte{}
	examples, err := fs.Glob(schemas.FS, "examples/command.*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range examples {
		b, err := schemas.FS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		inputs[name] = b
	}
	for i, c := range commonCommands() {
		inputs["AppendJSON "+strconv.Itoa(i)] = c.AppendJSON(nil)
		b, err := c.Encode(nil)
		if err != nil {
			t.Fatalf("Encode(commonCommands()[%d]) error = %v", i, err)
		}
		inputs["Encode "+strconv.Itoa(i)] = b
	}
	for name, data := range inputs {
		want, err := decodeGeneral("", data)
		if err != nil {
			t.Fatalf("%s: decodeGeneral error = %v", name, err)
		}
		for _, subject := range []string{"", string(want.Type)} {
			got, ok := decodeFast(subject, data)
			if !ok || !validFast(subject, data) {
				t.Errorf("%s: decodeFast(%q) declined or validFast false, want them to accept", name, subject)
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: decodeFast(%q) = %+v, want %+v", name, subject, got, want)
			}
		}
	}
}

// TestDecodeFastDeclines lists messages, valid and not, that decodeFast
// leaves to decodeGeneral.
func TestDecodeFastDeclines(t *testing.T) {
	const head = `"command_id":"c","merchant_id":"m","transaction_id":"t"`
	for _, data := range []string{
		``, ` `, `{}`, `[]`, `null`,
		`{` + head + `}`,
		`{` + head + `,"type":"void"}{}`,
		`{` + head + `,"type":"void",}`,
		`{` + head + `,"type":"void","type":"void"}`,
		`{` + head + `,"type":"v\u006fie"}`,
		`{` + head + `,"type":"void","notes":"a` + "\n" + `b"}`,
		`{` + head + `,"type":"void","notes":"a` + "\t" + `b"}`,
		`{` + head + `,"type":"void","notes":"a\xb"}`,
		`{` + head + `,"type":"void","notes":"a\u12"}`,
		`{` + head + `,"type":"void","notes":"a\u12G4"}`,
		`{` + head + `,"type":"void","notes":"a\` + "\x01" + `"}`,
		`{` + head + `,"type":"void","notes":"a\` + "é" + `"}`,
		`{` + head + `,"type":"void","notes":"a\"}`,
		`{` + head + `,"type":"void","notes":"\u00e9` + "\xff" + `"}`,
		`{` + head + `,"type":"void","notes":"` + strings.Repeat(`\u00e9`, 129) + `"}`,
		`{` + head + `,"type":"void","notes":"` + strings.Repeat(`\ud83d\ude42`, 129) + `"}`,
		`{` + head + `,"type":"void","notes":"` + strings.Repeat(`\udc00`, 129) + `"}`,
		`{` + head + `,"type":"void","typ\u0065":"void"}`,
		`{` + head + `,"type":"void","\u0074ype":"capture"}`,
		`{` + head + `,"type":"void","currency":"\u0065UR"}`,
		`{` + head + `,"type":"void","metadata":{"a&":"b","a\u0026":"c"}}`,
		`{` + head + `,"type":"void","metadata":{"\ud800":"b","\udfff":"c"}}`,
		`{` + head + `,"type":"void","metadata":{"\u00e9":"b","\u0065\u0301":"c","é":"d"}}`,
		`{` + head + `,"type":"void","notes":"` + "\xff" + `"}`,
		`{` + head + `,"type":"void","notes":"` + "\x7f\x01" + `"}`,
		`{` + head + `,"type":"void","notes":null}`,
		`{` + head + `,"type":"void","extra":1}`,
		`{` + head + `,"type":"void","amount":1}`,
		`{` + head + `,"type":"void","amount":1.0,"currency":"EUR"}`,
		`{` + head + `,"type":"void","amount":1e2,"currency":"EUR"}`,
		`{` + head + `,"type":"void","amount":01,"currency":"EUR"}`,
		`{` + head + `,"type":"void","amount":-1,"currency":"EUR"}`,
		`{` + head + `,"type":"void","amount":0,"currency":"EUR"}`,
		`{` + head + `,"type":"void","amount":9007199254740992,"currency":"EUR"}`,
		`{` + head + `,"type":"void","currency":"eur"}`,
		`{` + head + `,"type":"void","gateway":"stripe"}`,
		`{` + head + `,"type":"void","metadata":{"a":"b","a":"c"}}`,
		`{` + head + `,"type":"void","metadata":{"a":1}}`,
		`{` + head + `,"type":"void","original_transaction_time":"2026-01-14t09:30:12Z"}`,
		`{` + head + `,"type":"void","original_transaction_time":"2026-02-29T09:30:12Z"}`,
		`{` + head + `,"type":"void","original_transaction_time":"2026-01-14T23:59:60Z"}`,
		`{` + head + `,"type":"void","original_transaction_time":"2026-01-14T09:30:12.1234567890Z"}`,
		`{` + head + `,"type":"capture","currency":"EUR"}`,
		"\v{" + head + `,"type":"void"}`,
	} {
		for _, subject := range subjects {
			if c, ok := decodeFast(subject, []byte(data)); ok {
				t.Errorf("decodeFast(%q, %q) = %+v, want it to decline", subject, data, c)
			}
		}
	}
}

// escapedStrings are JSON strings with escapes and the text encoding/json
// decodes them to, empty for an invalid string.
var escapedStrings = []struct{ json, text string }{
	{`"\"\\\/\b\f\n\r\t"`, "\"\\/\b\f\n\r\t"},
	{`"\u0000\u001f\u007f\u003c\u003e\u0026\u2028\u2029\ufffd"`, "\x00\x1f\x7f<>&\u2028\u2029\ufffd"},
	{`"\u00e9\u00E9\u20AC"`, "éé€"},
	{`"a\ud83d\ude42b"`, "a🙂b"},
	{`"\ud83d\uDE42\uDBFF\uDFFF"`, "🙂\U0010FFFF"},
	{`"\ud800"`, "\ufffd"},
	{`"\udc00\ud800x"`, "\ufffd\ufffdx"},
	{`"\ud800\ud800\udc00"`, "\ufffd𐀀"},
	{`"\ud800\u0041"`, "\ufffdA"},
	{`"\ud800\n"`, "\ufffd\n"},
	{`"\ud800\u00"`, ""},
	{`"é\"ü\\"`, "é\"ü\\"},
	{`"\x"`, ""},
	{`"\u"`, ""},
	{`"\u123"`, ""},
	{`"\u12g4"`, ""},
	{`"\` + "\n" + `"`, ""},
	{`"\\\"`, ""},
}

// TestDecodeFastEscapes holds decodeFast to decodeGeneral and to
// encoding/json on strings with escapes in every member, keys included.
func TestDecodeFastEscapes(t *testing.T) {
	for _, e := range escapedStrings {
		var want string
		if err := json.Unmarshal([]byte(e.json), &want); err != nil {
			want = ""
		}
		if want != e.text {
			t.Errorf("encoding/json decodes %s to %q, the test expects %q", e.json, want, e.text)
		}
		valid := want != ""
		for _, data := range []string{
			`{"command_id":` + e.json + `,"type":"void","merchant_id":"m","transaction_id":"t"}`,
			`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t","notes":` + e.json + `}`,
			`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t","metadata":{` + e.json + `:` + e.json + `,"k":"v"}}`,
		} {
			got, ok := decodeFast("void", []byte(data))
			if ok != valid || validFast("void", []byte(data)) != valid {
				t.Errorf("decodeFast(%s) ok = %v, want %v, and validFast the same", data, ok, valid)
			}
			careful, err := decodeCareful("void", []byte(data))
			if ok && (err != nil || !reflect.DeepEqual(got, careful)) {
				t.Errorf("decodeFast(%s) = %+v, decodeCareful's = %+v, %v", data, got, careful, err)
			}
		}
	}
	for _, data := range []string{
		`{"\u0063ommand_id":"c","typ\u0065":"v\u006fid","merchant_id":"m","transaction_id":"t"}`,
		`{"command_id":"c","type":"capture","merchant_id":"m","transaction_id":"t","amount":1,` +
			`"currency":"\u0045UR","gateway":"\u0073ibs","original_transaction_time":"2026-01-14T09:30:12\u002e5\u002B01:00"}`,
		`{"command_id":"c","type":"void","merchant_id":"` + strings.Repeat(`\ud83d\ude42`, 10) + `","transaction_id":"t",` +
			`"notes":"` + strings.Repeat(`\u00e9`, 128) + `","metadata":{"\u00e9":"b","\u0065\u0301":"c"}}`,
	} {
		want, err := decodeGeneral("", []byte(data))
		if err != nil {
			t.Fatalf("decodeGeneral(%s) error = %v", data, err)
		}
		if got, ok := decodeFast("", []byte(data)); !ok || !reflect.DeepEqual(got, want) || !validFast("", []byte(data)) {
			t.Errorf("decodeFast(%s) = %+v, %v, want %+v", data, got, ok, want)
		}
	}
}

// TestDecodeFastShares holds decodeFast to one copy of the message for its
// strings, and one more for the text of those with escapes.
func TestDecodeFastShares(t *testing.T) {
	for _, c := range []struct {
		cmd    *Command
		allocs float64
	}{{plainCommands()[0], 4}, {escapedCommands()[0], 5}} {
		data := c.cmd.AppendJSON(nil)
		if n := testing.AllocsPerRun(100, func() { _, _ = decodeFast("capture", data) }); n > c.allocs {
			t.Errorf("decodeFast: %v allocations, want at most %v: %s", n, c.allocs, data)
		}
		if n := testing.AllocsPerRun(100, func() { _ = validFast("capture", data) }); n > c.allocs-4 {
			t.Errorf("validFast: %v allocations, want at most %v: %s", n, c.allocs-4, data)
		}
		buf := make([]byte, 0, 4096)
		if n := testing.AllocsPerRun(100, func() { _, _ = c.cmd.Encode(buf) }); n > c.allocs-4 {
			t.Errorf("Encode: %v allocations, want at most %v: %s", n, c.allocs-4, data)
		}
	}
}

// TestDecodeFastDateTimes holds decodeFast to decodeGeneral on
// original_transaction_time around every boundary of its date and time.
func TestDecodeFastDateTimes(t *testing.T) {
	var times []string
	for _, year := range []string{"0000", "1900", "2000", "2023", "2024", "2100", "9999"} {
		for month := range 14 {
			for day := range 33 {
				times = append(times, fmt.Sprintf("%s-%02d-%02dT12:00:00Z", year, month, day))
			}
		}
	}
	for _, clock := range []string{"00:00:00", "23:59:59", "24:00:00", "23:60:00", "23:59:60", "00:00:60", "1:00:00"} {
		for _, frac := range []string{"", ".", ".1", ".123456789", ".1234567890", ",1"} {
			for _, zone := range []string{"Z", "z", "", "+00:00", "-00:00", "-23:59", "+24:00", "+12:60", "+0100", "+01:00:00"} {
				times = append(times, "2024-02-29T"+clock+frac+zone, "2024-02-29t"+clock+frac+zone)
			}
		}
	}
	accepted := 0
	for _, ts := range times {
		data := []byte(`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t",` +
			`"original_transaction_time":"` + ts + `"}`)
		want, wantErr := decodeGeneral("void", data)
		got, ok := decodeFast("void", data)
		switch {
		case validFast("void", data) != ok:
			t.Errorf("validFast(%s) = %v, decodeFast's ok = %v", ts, !ok, ok)
		case ok && wantErr != nil:
			t.Errorf("decodeFast(%s) = %+v, decodeGeneral's error = %v", ts, got, wantErr)
		case ok && !reflect.DeepEqual(got, want):
			t.Errorf("decodeFast(%s) = %+v, decodeGeneral's = %+v", ts, got, want)
		case ok:
			accepted++
		}
	}
	if accepted < 1000 {
		t.Errorf("decodeFast answered for %d of the times, want most valid ones", accepted)
	}
}

// FuzzDecodeFast holds decodeFast to decodeGeneral: whenever it answers,
// decodeGeneral accepts the message and returns the same command.
func FuzzDecodeFast(f *testing.F) {
	examples, err := fs.Glob(schemas.FS, "examples/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range examples {
		b, err := schemas.FS.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range corpus(f, "testdata/fuzz/FuzzDecodeCommand") {
		f.Add(b)
	}
	for _, c := range commonCommands() {
		f.Add(c.AppendJSON(nil))
	}
	const head = `{"command_id":"c","merchant_id":"m","transaction_id":"t",`
	for _, s := range []string{
		head + `"type":"void","original_transaction_time":"2024-02-29T00:00:00.5-23:59"}`,
		head + `"type":"void","original_transaction_time":"0000-01-01T00:00:00+00:00"}`,
		head + `"type":"void","original_transaction_time":"2026-12-31T23:59:59.123456789Z"}`,
		head + `"type":"capture","amount":9007199254740991,"currency":"EUR"}`,
		head + `"type":"capture","amount":9007199254740992,"currency":"EUR"}`,
		head + "\"type\":\"void\",\"notes\":\"\u2028\ufffd\x7f\"}",
		head + `"type":"void","metadata":{"a&":"b","a\u0026":"c","\u00e9":"\ud83d\ude42","\ud800":"\udc00\ud800"}}`,
		head + `"t\u0079pe":"v\u006Fid","notes":"\"\\\/\b\f\n\r\t\u0000\u003c\u003e\u0026\u2028\u2029"}`,
		" \t\r\n" + head + "\"type\" : \"void\" , \"metadata\" : { } } \n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, subject := range subjects {
			want, wantErr := decodeGeneral(subject, data)
			got, ok := decodeFast(subject, data)
			if validFast(subject, data) != ok {
				t.Fatalf("validFast(%q, %q) = %v, decodeFast's ok = %v", subject, data, !ok, ok)
			}
			if ok {
				if wantErr != nil {
					t.Fatalf("decodeFast(%q, %q) = %+v, decodeGeneral's error = %v", subject, data, got, wantErr)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("decodeFast(%q, %q) = %+v, decodeGeneral's = %+v", subject, data, got, want)
				}
			}
			got, gotErr := Decode(subject, data)
			if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
				t.Fatalf("Decode(%q, %q) error = %v, decodeGeneral's = %v", subject, data, gotErr, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Decode(%q, %q) = %+v, decodeGeneral's = %+v", subject, data, got, want)
			}
		}
	})
}

// corpus reads the inputs of a fuzz corpus directory, each a file of
// "go test fuzz v1" and one []byte literal.
func corpus(tb testing.TB, dir string) [][]byte {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		header, lit, _ := strings.Cut(strings.TrimSpace(string(raw)), "\n")
		lit, ok := strings.CutPrefix(lit, "[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")")
		s, err := strconv.Unquote(lit)
		if header != "go test fuzz v1" || !ok || !ok2 || err != nil {
			tb.Fatalf("%s: not a corpus file of one []byte", e.Name())
		}
		out = append(out, []byte(s))
	}
	return out
}

// BenchmarkDecode decodes the capture example and a capture as AppendJSON
// writes it, with decodeGeneral alone ("careful") and with Decode, which
// takes the fast path ("fast").
func BenchmarkDecode(b *testing.B) {
	example, err := schemas.FS.ReadFile("examples/command.capture.json")
	if err != nil {
		b.Fatal(err)
	}
	inputs := []struct {
		name string
		data []byte
	}{
		{"example", example},
		{"appendjson", commonCommands()[0].AppendJSON(nil)},
		{"escaped", escapedCommands()[0].AppendJSON(nil)},
	}
	for _, in := range inputs {
		for _, dec := range []struct {
			name   string
			decode func(string, []byte) (*Command, error)
		}{
			{"careful", decodeGeneral},
			{"fast", Decode},
		} {
			b.Run(in.name+"/"+dec.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := dec.decode("capture", in.data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
