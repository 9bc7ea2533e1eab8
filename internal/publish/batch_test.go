package publish

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

const txn = "ab8444e7-fec0-40dd-994d-0ad813785f74"

// checkRows runs CheckBatch over text and returns the rows, copied.
func checkRows(t *testing.T, text string, o BatchOptions) ([]Row, *BatchDigest, error) {
	t.Helper()
	var rows []Row
	d, err := CheckBatch(context.Background(), strings.NewReader(text), o, func(r *Row) error {
		rows = append(rows, *r)
		return nil
	})
	return rows, d, err
}

// problemFields lists "line:field" of every problem of the rows.
func problemFields(rows []Row) []string {
	var out []string
	for _, r := range rows {
		if r.Err == nil {
			continue
		}
		for _, p := range r.Err.Problems {
			out = append(out, fmt.Sprintf("%d:%s", r.Line, p.Field))
		}
	}
	return out
}

func TestCheckBatchRows(t *testing.T) {
	tests := []struct {
		name string
		o    BatchOptions
		text string
		// want is the JSON of each valid row's command (command_id and a
		// derived key left out), by line; wantBad the "line:field" of each
		// problem.
		want    map[int]string
		wantBad []string
	}{
		{
			name: "csv with metadata, empty cells and a BOM",
			o:    BatchOptions{Format: FormatCSV},
			text: "\uFEFFtype,merchant_id,transaction_id,amount,currency,notes,metadata.order,metadata.shop\n" +
				"capture,M1," + txn + ",1000,JPY,first,42,\n" +
				"void,M1," + txn + ",,,,,eu\n",
			want: map[int]string{
				2: `{"type":"capture","merchant_id":"M1","transaction_id":"` + txn + `","amount":1000,"currency":"JPY","notes":"first","metadata":{"order":"42"}}`,
				3: `{"type":"void","merchant_id":"M1","transaction_id":"` + txn + `","metadata":{"shop":"eu"}}`,
			},
		},
		{
			name: "csv quoted field over two lines keeps the line of the record",
			o:    BatchOptions{Format: FormatCSV, Type: command.Capture},
			text: "merchant_id,transaction_id,amount,currency,notes\n" +
				"M1,T1,100,JPY,\"two\nlines\"\n" +
				"M1,,100,JPY,x\n",
			want:    map[int]string{2: `{"type":"capture","merchant_id":"M1","transaction_id":"T1","amount":100,"currency":"JPY","notes":"two\nlines"}`},
			wantBad: []string{"4:transaction_id"},
		},
		{
			name: "csv bad rows",
			o:    BatchOptions{Format: FormatCSV},
			text: "type,merchant_id,transaction_id,amount,currency,original_transaction_time\n" +
				"capture,M1,T1,1e3,JPY,\n" +
				"capture,M1,T1,100,JPY,yesterday\n" +
				"refund,M1,T1,100,JPY,\n" +
				"capture,M1,T1,100\n",
			wantBad: []string{"2:amount", "3:original_transaction_time", "4:type", "5:"},
		},
		{
			name: "jsonl",
			o:    BatchOptions{Format: FormatJSONL},
			text: `{"type":"capture","merchant_id":"M1","transaction_id":"T1","amount":1000,"currency":"JPY","metadata":{"b":"2","a":"1"}}` + "\n\n" +
				`{"type":"void","merchant_id":"M1","transaction_id":"T2","amount":null,"notes":"<&>"}` + "\n" +
				`{"type":"capture","merchant_id":"M1","transaction_id":"T3","amount":2e2,"currency":"EUR"}` + "\n" +
				`{"type":"void","merchant_id":"M1","transaction_\u0069d":"T5"}`,
			want: map[int]string{
				1: `{"type":"capture","merchant_id":"M1","transaction_id":"T1","amount":1000,"currency":"JPY","metadata":{"a":"1","b":"2"}}`,
				5: `{"type":"void","merchant_id":"M1","transaction_id":"T5"}`,
				3: `{"type":"void","merchant_id":"M1","transaction_id":"T2","notes":"\u003c\u0026\u003e"}`,
				4: `{"type":"capture","merchant_id":"M1","transaction_id":"T3","amount":200,"currency":"EUR"}`,
			},
		},
		{
			name: "jsonl bad rows",
			o:    BatchOptions{Format: FormatJSONL},
			text: `{"type":"capture","merchant_id":"M1","transaction_id":"T1","amount":10.5,"currency":"JPY"}` + "\n" +
				`{"type":"capture","merchant_id":"M1","transaction_id":"T1","amount":100,"currency":"JPY","extra":1}` + "\n" +
				`{"type":"capture","merchant_id":7,"transaction_id":"T1","amount":100,"currency":"JPY"}` + "\n" +
				`{"type":"void","merchant_id":"M1","transaction_id":"T1","metadata":{"a":1}}` + "\n" +
				`{"type":"void","merchant_id":"M1","transaction_id":"T1","type":"void"}` + "\n" +
				`{"type":"void"` + "\n" +
				`[]` + "\n" +
				`{"type":"void","merchant_id":"M1"}` + "\n" +
				`{"type":"void","merchant_id":"M1","transaction_id":"T1","metadata":{"a":"1","a":"2"}}` + "\n" +
				`{"type":"void","merchant_id":"M1","transaction_id":"T1","amount":"100"}` + "\n",
			wantBad: []string{"1:amount", "2:extra", "3:merchant_id", "4:metadata.a", "5:type", "6:", "7:", "8:transaction_id", "9:metadata.a", "10:amount"},
		},
		{
			name: "key column",
			o:    BatchOptions{Format: FormatCSV, Type: command.Capture, KeyColumn: "order_id"},
			text: "order_id,merchant_id,transaction_id,amount,currency\n" +
				"order-1,M1,T1,100,JPY\n" +
				",M1,T2,100,JPY\n",
			want:    map[int]string{2: `{"type":"capture","idempotency_key":"order-1","merchant_id":"M1","transaction_id":"T1","amount":100,"currency":"JPY"}`},
			wantBad: []string{"3:order_id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, _, err := checkRows(t, tt.text, tt.o)
			if err != nil {
				t.Fatalf("CheckBatch = %v", err)
			}
			for _, r := range rows {
				if r.Err != nil {
					continue
				}
				want, ok := tt.want[r.Line]
				if !ok {
					t.Errorf("line %d valid, want it bad or absent", r.Line)
					continue
				}
				var got map[string]any
				if err := json.Unmarshal(r.Data, &got); err != nil {
					t.Fatalf("line %d: Data is not JSON: %v", r.Line, err)
				}
				if !strings.HasPrefix(got["command_id"].(string), derivedIDPrefix) {
					t.Errorf("line %d: command_id %v, want a derived one", r.Line, got["command_id"])
				}
				delete(got, "command_id")
				if k, _ := got["idempotency_key"].(string); strings.HasPrefix(k, derivedKeyPrefix) {
					delete(got, "idempotency_key")
				}
				var wantDoc map[string]any
				if err := json.Unmarshal([]byte(want), &wantDoc); err != nil {
					t.Fatal(err)
				}
				gotJSON, _ := json.Marshal(got)
				wantJSON, _ := json.Marshal(wantDoc)
				if !bytes.Equal(gotJSON, wantJSON) {
					t.Errorf("line %d = %s, want %s", r.Line, gotJSON, wantJSON)
				}
				if err := command.Validate(string(r.Cmd.Type), r.Data); err != nil {
					t.Errorf("line %d: published JSON does not validate: %v", r.Line, err)
				}
				delete(tt.want, r.Line)
			}
			for line := range tt.want {
				t.Errorf("line %d: not a valid row, want valid", line)
			}
			if got := strings.Join(problemFields(rows), ","); got != strings.Join(tt.wantBad, ",") {
				t.Errorf("problems = %s, want %s", got, strings.Join(tt.wantBad, ","))
			}
		})
	}
}

func TestCheckBatchHeader(t *testing.T) {
	tests := []struct {
		name string
		o    BatchOptions
		text string
		want []string // fields of the problems
	}{
		{"empty", BatchOptions{Format: FormatCSV}, "", []string{""}},
		{"unknown and twice", BatchOptions{Format: FormatCSV}, "type,merchant_id,transaction_id,colour,type\n", []string{"colour", "type"}},
		{"missing required", BatchOptions{Format: FormatCSV}, "amount,currency\n", []string{"merchant_id", "transaction_id", "type"}},
		{"type from flag", BatchOptions{Format: FormatCSV, Type: command.Void}, "merchant_id\n", []string{"transaction_id"}},
		{"key column missing", BatchOptions{Format: FormatCSV, KeyColumn: "order"}, "type,merchant_id,transaction_id\n", []string{"order"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := checkRows(t, tt.text, tt.o)
			var he *HeaderError
			if !errors.As(err, &he) {
				t.Fatalf("CheckBatch = %v, want a *HeaderError", err)
			}
			var got []string
			for _, p := range he.Problems {
				got = append(got, p.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") || he.Line != 1 {
				t.Errorf("header problems = line %d %q, want line 1 %q", he.Line, got, tt.want)
			}
		})
	}
}

func TestDerivedIDs(t *testing.T) {
	base := command.Command{Type: command.Capture, MerchantID: "M1", TransactionID: "T1", Amount: amount(100), Currency: "JPY"}
	with := func(f func(*command.Command)) command.Command {
		c := base
		f(&c)
		return c
	}
	tests := []struct {
		name            string
		c               command.Command
		sameKey, sameID bool
	}{
		{"same row", with(func(*command.Command) {}), true, true},
		{"other amount", with(func(c *command.Command) { c.Amount = amount(101) }), false, false},
		{"other transaction", with(func(c *command.Command) { c.TransactionID = "T2" }), false, false},
		{"other merchant", with(func(c *command.Command) { c.MerchantID = "M2" }), false, false},
		{"void", with(func(c *command.Command) { c.Type = command.Void }), false, false},
		{"other notes", with(func(c *command.Command) { c.Notes = "n" }), true, false},
		{"other metadata", with(func(c *command.Command) { c.Metadata = map[string]string{"a": "1"} }), true, false},
		{"other currency", with(func(c *command.Command) { c.Currency = "EUR" }), true, false},
	}
	key, id := DerivedKey(&base), DerivedCommandID(&base)
	if !strings.HasPrefix(key, "batch-") || len(key) != len("batch-")+32 || len(id) > 64 {
		t.Fatalf("DerivedKey = %q, DerivedCommandID = %q; want batch-<32 hex> and at most 64 characters", key, id)
	}
	for _, tt := range tests {
		c := tt.c
		k := DerivedKey(&c)
		c.IdempotencyKey = k
		b := base
		b.IdempotencyKey = key
		if gotKey, gotID := k == key, DerivedCommandID(&c) == DerivedCommandID(&b); gotKey != tt.sameKey || gotID != tt.sameID {
			t.Errorf("%s: same key %v, same command id %v; want %v, %v", tt.name, gotKey, gotID, tt.sameKey, tt.sameID)
		}
	}
	m1 := with(func(c *command.Command) { c.Metadata = map[string]string{"a": "1", "b": "2", "c": "3"} })
	for range 20 {
		m2 := with(func(c *command.Command) { c.Metadata = map[string]string{"c": "3", "b": "2", "a": "1"} })
		if DerivedCommandID(&m1) != DerivedCommandID(&m2) {
			t.Fatalf("DerivedCommandID depends on the order of the metadata map")
		}
	}
}

func TestAppendCommandMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 1, 14, 9, 30, 12, 123456000, time.FixedZone("x", 3600))
	cmds := []command.Command{
		{CommandID: "c", Type: command.Capture},
		{CommandID: "c1", Type: command.Capture, IdempotencyKey: "k", MerchantID: "M1", TransactionID: "T1", Amount: amount(-5), Currency: "JPY",
			Gateway: "sibs", Notes: "a \"quoted\" <b>&amp;</b> \\ \t\n\r\b\f \x01 \x7f é 😀 \u2028\u2029 \xff bad", Metadata: map[string]string{"z": "1", "a": "\x00", "é": "x"},
			OriginalTransactionTime: &at},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("aZ09\"\\<>&\t\n\x00\x1f é😀\u2028\u2029")
	str := func() string {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteRune(alphabet[rng.IntN(len(alphabet))])
		}
		if rng.IntN(10) == 0 {
			b.WriteByte(0xfe)
		}
		return b.String()
	}
	for range 500 {
		c := command.Command{CommandID: str(), Type: command.Type(str()), IdempotencyKey: str(), MerchantID: str(), TransactionID: str(),
			Currency: str(), Gateway: str(), Notes: str()}
		if rng.IntN(2) == 0 {
			c.Amount = amount(rng.Int64() - rng.Int64())
		}
		if n := rng.IntN(4); n > 0 {
			c.Metadata = map[string]string{}
			for range n {
				c.Metadata[str()] = str()
			}
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendCommand(nil, &c); !bytes.Equal(got, want) {
			t.Fatalf("appendCommand(%+v)\n got %s\nwant %s", c, got, want)
		}
	}
}

// TestValidateAgreesWithCommandValidate holds the schema check on a
// decoded document (builder.validate) to command.Validate on the JSON.
func TestValidateAgreesWithCommandValidate(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	at := time.Date(2026, 1, 14, 9, 30, 12, 0, time.UTC)
	valid := command.Command{CommandID: "c1", Type: command.Capture, MerchantID: "M1", TransactionID: "T1", Amount: amount(1), Currency: "JPY"}
	with := func(f func(*command.Command)) command.Command {
		c := valid
		f(&c)
		return c
	}
	tests := []struct {
		name string
		c    command.Command
	}{
		{"valid capture", valid},
		{"valid void", command.Command{CommandID: "c1", Type: command.Void, MerchantID: "M1", TransactionID: "T1"}},
		{"everything", with(func(c *command.Command) {
			c.IdempotencyKey, c.Gateway, c.Notes, c.Metadata, c.OriginalTransactionTime = "k", "sibs", "n", map[string]string{"a": "b"}, &at
		})},
		{"long command id", with(func(c *command.Command) { c.CommandID = long(65) })},
		{"max command id", with(func(c *command.Command) { c.CommandID = long(64) })},
		{"long key", with(func(c *command.Command) { c.IdempotencyKey = long(256) })},
		{"long merchant", with(func(c *command.Command) { c.MerchantID = long(11) })},
		{"multibyte merchant", with(func(c *command.Command) { c.MerchantID = strings.Repeat("é", 10) })},
		{"empty merchant", with(func(c *command.Command) { c.MerchantID = "" })},
		{"long transaction", with(func(c *command.Command) { c.TransactionID = long(37) })},
		{"zero amount", with(func(c *command.Command) { c.Amount = amount(0) })},
		{"huge amount", with(func(c *command.Command) { c.Amount = amount(1 << 53) })},
		{"no amount", with(func(c *command.Command) { c.Amount = nil })},
		{"no currency", with(func(c *command.Command) { c.Currency = "" })},
		{"lower currency", with(func(c *command.Command) { c.Currency = "jpy" })},
		{"bad gateway", with(func(c *command.Command) { c.Gateway = "stripe" })},
		{"long notes", with(func(c *command.Command) { c.Notes = long(129) })},
		{"empty metadata", with(func(c *command.Command) { c.Metadata = map[string]string{} })},
		{"bad type", with(func(c *command.Command) { c.Type = "refund" })},
		{"void with amount", command.Command{CommandID: "c1", Type: command.Void, MerchantID: "M1", TransactionID: "T1", Amount: amount(5)}},
	}
	b := newBuilder(&BatchOptions{})
	for _, tt := range tests {
		data, err := json.Marshal(&tt.c)
		if err != nil {
			t.Fatal(err)
		}
		want := command.Validate(string(tt.c.Type), data)
		c := tt.c
		got := b.validate(&c)
		if (got == nil) != (want == nil) {
			t.Errorf("%s: builder.validate = %v, command.Validate = %v; want them to agree", tt.name, got, want)
		}
	}
}

func TestPlainMembers(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{`{"a":"1","b":{"a":"x","b":"y"},"c":["a","a"]}`, true},
		{`{"a":"1","a":"2"}`, false},
		{`{"a":"1","m":{"k":"1","k":"2"}}`, false},
		{`{"a":"x\"a\":"}`, true},
		{`{"\u0061":"1"}`, false},
		{`{"a":[{"b":1},{"b":2}]}`, true},
		{`{"a":{"b":{"c":{"d":1}}}}`, false}, // too deep: the slow path reads it
	}
	for _, tt := range tests {
		if got := plainMembers([]byte(tt.line), func(string) bool { return true }); got != tt.want {
			t.Errorf("plainMembers(%s) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	tests := []struct {
		name string
		text string
		want []string // "line:text" or "line:!" for an error
	}{
		{"plain", "a\nb\n", []string{"1:a\n", "2:b\n"}},
		{"no final newline", "a\nb", []string{"1:a\n", "2:b"}},
		{"blank lines", "\n  \na\n\n", []string{"3:a\n"}},
		{"bom", "\uFEFFa\n", []string{"1:a\n"}},
		{"crlf", "a\r\nb\r\n", []string{"1:a\r\n", "2:b\r\n"}},
		{"too long", "a\n" + long + "\nb\n", []string{"1:a\n", "2:!", "3:b\n"}},
		{"too long at the end", "a\n" + long, []string{"1:a\n", "2:!"}},
	}
	for _, tt := range tests {
		l := &lineReader{r: bufioReader(tt.text)}
		var got []string
		for {
			raw, ok, err := l.next()
			if err != nil {
				t.Fatalf("%s: next = %v", tt.name, err)
			}
			if !ok {
				break
			}
			if raw.err != nil {
				got = append(got, fmt.Sprintf("%d:!", raw.line))
			} else {
				got = append(got, fmt.Sprintf("%d:%s", raw.line, raw.json))
			}
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%s: lines = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// bufioReader reads text through a small buffer, so that lines come in
// fragments.
func bufioReader(text string) *bufio.Reader {
	return bufio.NewReaderSize(strings.NewReader(text), 16)
}

// batchText is a CSV batch of n captures of one merchant.
func batchText(n int, change func(i int) string) string {
	var b strings.Builder
	b.WriteString("type,merchant_id,transaction_id,amount,currency\n")
	for i := range n {
		amt := fmt.Sprint(100 + i)
		if change != nil {
			amt = change(i)
		}
		fmt.Fprintf(&b, "capture,M1,T%d,%s,JPY\n", i, amt)
	}
	return b.String()
}

func TestReadBatch(t *testing.T) {
	const n = 1000
	o := BatchOptions{Format: FormatCSV}
	orig := batchText(n, func(i int) string {
		if i == 10 || i == 700 {
			return "x" // bad rows
		}
		return fmt.Sprint(100 + i)
	})
	var checked []string
	d, err := CheckBatch(context.Background(), strings.NewReader(orig), o, func(r *Row) error {
		checked = append(checked, string(r.Data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		text    string
		wantErr error
		// wantRows is how many rows are handed over.
		wantRows int
	}{
		{"same file", orig, nil, n},
		{"a row changed", strings.Replace(orig, "T600,700", "T600,701", 1), ErrFileChanged, 512},
		{"a bad row fixed", strings.Replace(orig, "T700,x", "T700,800", 1), ErrFileChanged, 512},
		{"a row more", orig + "capture,M1,T9999,1,JPY\n", ErrFileChanged, 768},
		{"a row less", strings.TrimSuffix(orig, "capture,M1,T999,1099,JPY\n"), ErrFileChanged, 768},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			bad := 0
			err := ReadBatch(context.Background(), strings.NewReader(tt.text), o, d, func(r *Row) error {
				got = append(got, string(r.Data))
				if r.Err != nil {
					bad++
				}
				return nil
			})
			if !errors.Is(err, tt.wantErr) || len(got) != tt.wantRows {
				t.Fatalf("ReadBatch = %v after %d rows, want %v after %d", err, len(got), tt.wantErr, tt.wantRows)
			}
			for i := range got {
				if got[i] != checked[i] {
					t.Fatalf("row %d = %s, want %s as checked", i, got[i], checked[i])
				}
			}
			if tt.wantErr == nil && bad != 2 {
				t.Errorf("bad rows handed over = %d, want 2", bad)
			}
		})
	}
}

func TestCheckBatchStops(t *testing.T) {
	text := batchText(5000, nil)
	stop := errors.New("stop")
	n := 0
	_, err := CheckBatch(context.Background(), strings.NewReader(text), BatchOptions{Format: FormatCSV}, func(r *Row) error {
		if n++; n == 300 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 300 {
		t.Errorf("CheckBatch with fn failing at row 300 = %v after %d rows, want stop after 300", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	_, err = CheckBatch(ctx, strings.NewReader(text), BatchOptions{Format: FormatCSV}, func(r *Row) error {
		if n++; n == 10 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n >= 5000 {
		t.Errorf("CheckBatch cancelled = %v after %d rows, want context.Canceled before the end", err, n)
	}
}

// trackEvent builds an event of kind for (merchant M1, key), from command
// cmdID.
func trackEvent(kind events.Kind, key, cmdID string) events.Event {
	data := events.Data{MerchantID: "M1", IdempotencyKey: key, CommandID: cmdID, TransactionID: "T1", GatewayCode: "INFO0001"}
	if kind == events.Duplicate {
		data.OriginalEventID = "orig"
	}
	return events.New(kind, "e-"+string(kind)+"-"+cmdID, "test", time.Now(), data)
}

func TestBatchTracker(t *testing.T) {
	type step struct {
		ack   *BatchAck   // report a publication
		event events.Kind // or deliver an event...
		cmd   string      // ...from this command
		seq   uint64      // ...at this stream sequence (startSeq is 10)
	}
	ack := func(dup bool) *BatchAck {
		return &BatchAck{BatchItem: BatchItem{Line: 2, MerchantID: "M1", Key: "k", CommandID: "c"}, Duplicate: dup}
	}
	tests := []struct {
		name       string
		steps      []step
		wantResult string
		wantRepeat bool
		wantWait   int // acknowledged rows still waiting
	}{
		{"terminal after publishing", []step{{ack: ack(false)}, {event: events.CaptureSucceeded, cmd: "c", seq: 11}}, "succeeded", false, 0},
		{"terminal before the ack", []step{{event: events.CaptureFailed, cmd: "c", seq: 11}, {ack: ack(false)}}, "failed", false, 0},
		{"terminal stored before the batch", []step{{event: events.CaptureSucceeded, cmd: "c", seq: 3}, {ack: ack(true)}}, "succeeded", true, 0},
		{"terminal of another command of the key", []step{{ack: ack(false)}, {event: events.CaptureSucceeded, cmd: "other", seq: 12}}, "succeeded", true, 0},
		{"rejection of another command is not ours", []step{{ack: ack(false)}, {event: events.Rejected, cmd: "other", seq: 12}}, "pending", false, 1},
		{"duplicate answer", []step{{ack: ack(false)}, {event: events.Duplicate, cmd: "c", seq: 12}}, "duplicate", true, 0},
		{"earlier dead-lettering, publication dropped", []step{{event: events.DeadLettered, cmd: "c", seq: 4}, {ack: ack(true)}}, "dead_lettered", true, 0},
		{"earlier dead-lettering, stored anew", []step{{event: events.DeadLettered, cmd: "c", seq: 4}, {ack: ack(false)}}, "pending", false, 1},
		{"earlier dead-lettering, stored anew, then success", []step{{event: events.DeadLettered, cmd: "c", seq: 4}, {ack: ack(false)}, {event: events.CaptureSucceeded, cmd: "c", seq: 15}}, "succeeded", false, 0},
		{"earlier rejection after a dropped ack", []step{{ack: ack(true)}, {event: events.Rejected, cmd: "c", seq: 5}}, "rejected", true, 0},
		{"not published", []step{{ack: &BatchAck{BatchItem: BatchItem{Line: 2, MerchantID: "M1", Key: "k", CommandID: "c"}, Err: errors.New("boom")}}}, "unpublished", false, 0},
		{"nothing yet", nil, "unpublished", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []BatchOutcome
			tr := NewBatchTracker(func(o BatchOutcome) { got = append(got, o) })
			tr.Add(2, "M1", "k", "c")
			tr.Add(3, "M1", "other-key", "c3")
			tr.startSeq = 10
			for _, s := range tt.steps {
				if s.ack != nil {
					tr.Acked(*s.ack)
					continue
				}
				tr.event(s.seq, trackEvent(s.event, "k", s.cmd))
			}
			if _, waiting := tr.Counts(); waiting != tt.wantWait {
				t.Errorf("waiting = %d, want %d", waiting, tt.wantWait)
			}
			tr.Undecided(func(o BatchOutcome) {
				if o.Line == 2 {
					got = append(got, o)
				}
			})
			if len(got) != 1 || got[0].Line != 2 || got[0].Key != "k" {
				t.Fatalf("outcomes of line 2 = %+v, want one", got)
			}
			if r := got[0].Result(); r != tt.wantResult || got[0].Repeat != tt.wantRepeat {
				t.Errorf("outcome = %s repeat %v (%s), want %s repeat %v", r, got[0].Repeat, got[0].Message(), tt.wantResult, tt.wantRepeat)
			}
		})
	}
}

func TestBatchTrackerSharedKey(t *testing.T) {
	var got []BatchOutcome
	tr := NewBatchTracker(func(o BatchOutcome) { got = append(got, o) })
	tr.Add(2, "M1", "k", "c1")
	tr.Add(5, "M1", "k", "c2") // the same key again further down
	for _, line := range []int{2, 5} {
		tr.Acked(BatchAck{BatchItem: BatchItem{Line: line, MerchantID: "M1", Key: "k"}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tr.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with two rows waiting = %v, want DeadlineExceeded", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tr.event(1, trackEvent(events.CaptureSucceeded, "k", "c1"))
	}()
	if err := tr.Wait(context.Background()); err != nil {
		t.Errorf("Wait = %v, want nil", err)
	}
	wg.Wait()
	if len(got) != 2 || got[0].Repeat || !got[1].Repeat || got[1].Result() != "succeeded" {
		t.Errorf("outcomes = %+v, want line 2 succeeded and line 5 succeeded as a repeat", got)
	}
}

// publishBatch publishes the rows of text with a BatchPublisher and returns
// the acks, in the order OnAck got them.
func publishBatch(t *testing.T, c *Client, text string, o BatchPublishOptions) ([]BatchAck, BatchStats, error) {
	t.Helper()
	var acks []BatchAck
	onAck := o.OnAck
	o.OnAck = func(a BatchAck) {
		acks = append(acks, a)
		if onAck != nil {
			onAck(a)
		}
	}
	p, err := c.NewBatchPublisher(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	bo := BatchOptions{Format: FormatCSV}
	d, err := CheckBatch(ctx, strings.NewReader(text), bo, func(*Row) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	pubErr := ReadBatch(ctx, strings.NewReader(text), bo, d, func(r *Row) error { return p.Publish(ctx, r) })
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return acks, p.Stats(), pubErr
}

func TestBatchPublisher(t *testing.T) {
	c, js := newClient(t)
	text := batchText(3000, nil)
	acks, st, err := publishBatch(t, c, text, BatchPublishOptions{Window: 64})
	if err != nil {
		t.Fatalf("publish = %v", err)
	}
	if st != (BatchStats{Published: 3000, Acked: 3000}) || len(acks) != 3000 {
		t.Fatalf("stats = %+v with %d acks, want 3000 published and acknowledged", st, len(acks))
	}
	for i, a := range acks {
		if a.Line != i+2 || a.Err != nil || a.Duplicate || a.Sequence == 0 {
			t.Fatalf("ack %d = %+v, want line %d stored", i, a, i+2)
		}
	}
	info, err := js.Stream(testContext(t), streams.Default().Commands)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != 3000 {
		t.Errorf("commands stored = %d, want 3000", got)
	}

	// The same rows again: dropped by their Nats-Msg-Id.
	_, st, err = publishBatch(t, c, text, BatchPublishOptions{})
	if err != nil || st.Duplicates != 3000 || st.Acked != 3000 {
		t.Errorf("second publication = %v, %+v; want 3000 duplicates", err, st)
	}

	// No stream for the subjects: every row fails, and the publisher stops.
	other := streams.Default()
	other.Prefix, other.Commands = "nowhere", "NOWHERE"
	_, st, err = publishBatch(t, NewClient(c.JetStream(), other), text, BatchPublishOptions{MaxConsecutiveFailures: 3, Window: 1})
	if !errors.Is(err, ErrPublishing) || st.Failed < 3 || st.Acked != 0 {
		t.Errorf("publication without a stream = %v, %+v; want ErrPublishing after 3 failures", err, st)
	}
}

// TestBatchPublisherRetries restarts the server in the middle of a batch:
// the publications it failed are retried, and the stream stores every row
// once.
func TestBatchPublisherRetries(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS; skipped with -short")
	}
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := testContext(t)
	if err := streams.Provision(ctx, js, streams.Default()); err != nil {
		t.Fatal(err)
	}
	c := NewClient(js, streams.Default())
	const rows = 20000
	restart := make(chan struct{})
	var once sync.Once
	acked := 0
	go func() {
		<-restart
		n.Restart()
	}()
	_, st, err := publishBatch(t, c, batchText(rows, nil), BatchPublishOptions{Window: 256, OnAck: func(a BatchAck) {
		if acked++; acked == rows/4 {
			once.Do(func() { close(restart) })
		}
	}})
	if err != nil || st.Failed != 0 || st.Acked != rows {
		t.Fatalf("batch across a server restart = %v, %+v; want every row acknowledged", err, st)
	}
	if st.Retries == 0 {
		t.Errorf("retries = 0, want the publications the restart failed to be retried")
	}
	info, err := js.Stream(ctx, streams.Default().Commands)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != rows {
		t.Errorf("commands stored = %d, want %d: each row once", got, rows)
	}
	t.Logf("stats %+v", st)
}

func TestFollowBatch(t *testing.T) {
	c, js := newClient(t)
	ctx := testContext(t)
	// An outcome stored before the batch: a rerun's repeat.
	storedEvent(t, js, events.CaptureSucceeded, terminal(events.CaptureSucceeded, "M1", "old", "c-old"))

	var mu sync.Mutex
	got := map[int]BatchOutcome{}
	tr := NewBatchTracker(func(o BatchOutcome) {
		mu.Lock()
		defer mu.Unlock()
		got[o.Line] = o
	})
	tr.Add(2, "M1", "old", "c-old")
	tr.Add(3, "M1", "new", "c-new")
	stop, err := c.FollowBatch(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	tr.Acked(BatchAck{BatchItem: BatchItem{Line: 2, MerchantID: "M1", Key: "old", CommandID: "c-old"}, Duplicate: true})
	tr.Acked(BatchAck{BatchItem: BatchItem{Line: 3, MerchantID: "M1", Key: "new", CommandID: "c-new"}})
	storedEvent(t, js, events.CaptureFailed, terminal(events.CaptureFailed, "M1", "new", "c-new"))
	if err := tr.Wait(ctx); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	tests := []struct {
		line   int
		result string
		repeat bool
	}{
		{2, "succeeded", true},
		{3, "failed", false},
	}
	for _, tt := range tests {
		o := got[tt.line]
		if o.Result() != tt.result || o.Repeat != tt.repeat || o.Event.ID != events.TerminalID("M1", o.Key) {
			t.Errorf("line %d = %s repeat %v event %s, want %s repeat %v with the key's terminal event", tt.line, o.Result(), o.Repeat, o.Event.ID, tt.result, tt.repeat)
		}
	}
}

// BenchmarkBuild measures converting, checking and encoding one CSV row.
func BenchmarkBuild(b *testing.B) {
	o := BatchOptions{Format: FormatCSV}
	h, _, err := o.readHeader(strings.NewReader("type,merchant_id,transaction_id,amount,currency,metadata.order\n"))
	if err != nil {
		b.Fatal(err)
	}
	rec := []string{"capture", "M0001", txn, "1234", "JPY", "order-1"}
	bd := newBuilder(&o)
	var f fields
	var cmd command.Command
	for _, schema := range []bool{true, false} {
		b.Run(fmt.Sprintf("schema=%v", schema), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.reset()
				h.fields(rec, &f)
				if _, p := bd.build(&f, &cmd, nil, schema); p != nil {
					b.Fatal(p)
				}
			}
		})
	}
}

// FuzzJSONLineFastPath holds the fast path of parseJSONLine to the slow
// one: whatever line the fast path accepts, the slow path accepts too, with
// the same fields.
func FuzzJSONLineFastPath(f *testing.F) {
	for _, seed := range []string{
		`{"type":"capture","merchant_id":"M1","transaction_id":"T1","amount":1000,"currency":"JPY","metadata":{"a":"1"}}`,
		`{"type":"void","merchant_id":"M1","transaction_id":"T1","amount":null,"notes":"x"}`,
		`{"type":"void","type":"void"}`,
		`{"amount":"1"}`,
		`{"amount":1e2}`,
		`{"metadata":{"a":"1","a":"2"}}`,
		`{"order_id":"o-1","merchant_id":"M1"}`,
		`{"a\u0062":1}`,
		`{} {}`,
		`{"trAnsACtiOn_id":""}`,
		"{}\f",
	} {
		f.Add(seed, "")
		f.Add(seed, "transaction_id")
	}
	f.Fuzz(func(t *testing.T, line, keyColumn string) {
		o := BatchOptions{Format: FormatJSONL, KeyColumn: keyColumn}
		var fast fields
		if !o.parseJSONLineFast([]byte(line), &fast) {
			return
		}
		var slow fields
		slow.reset()
		o2 := o
		if problems := o2.parseJSONLineSlow([]byte(line), &slow); len(problems) > 0 {
			t.Fatalf("fast path accepts %q, slow path finds %v", line, problems)
		}
		slices.SortFunc(fast.meta, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		slices.SortFunc(slow.meta, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		if fast.vals != slow.vals || fast.present != slow.present || fast.key != slow.key || fast.hasKey != slow.hasKey ||
			!slices.Equal(fast.meta, slow.meta) {
			t.Fatalf("line %q: fast path %+v, slow path %+v", line, fast, slow)
		}
	})
}
