package command_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/command"
)

// TestEncodeAgreesWithValidate holds Encode (AppendJSON, the size, the
// fast check or the schema) and Check to Validate on json.Marshal's bytes.
func TestEncodeAgreesWithValidate(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	big := map[string]string{}
	for i := range 800 {
		big[strings.Repeat("k", 10)+string(rune('a'+i%26))+strings.Repeat("x", i%50)] = strings.Repeat("v", 80)
	}
	many := map[string]string{}
	for i := range 20 {
		many[string(rune('a'+i))+"&"] = "<>"
	}
	at := time.Date(2026, 1, 14, 9, 30, 12, 845_000_000, time.UTC)
	for _, c := range []command.Command{
		{CommandID: "c", Type: command.Capture, MerchantID: "M", TransactionID: "T", Amount: n(1), Currency: "EUR"},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T"},
		{CommandID: "c", Type: command.Capture, MerchantID: "M", TransactionID: "T"},
		{CommandID: "c", Type: command.Capture, MerchantID: "M", TransactionID: "T", Amount: n(0), Currency: "eur"},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T", Metadata: big},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T", Metadata: many},
		{CommandID: "", Type: "refund", MerchantID: "M", TransactionID: "T"},
		{CommandID: "c", Type: "", MerchantID: "M", TransactionID: "T"},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T", Notes: strings.Repeat("&", 128)},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T", Notes: strings.Repeat("&", 129)},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T", Notes: strings.Repeat("\xff", 129)},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T",
			Metadata: map[string]string{"a\xff": "1", "a\xfe": "2"}},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T",
			Metadata: map[string]string{"a\xff": "1", "a\ufffd": "2"}},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T", OriginalTransactionTime: &at},
	} {
		checkAgrees(t, &c)
	}
}

// FuzzEncodeAgreesWithValidate holds AppendJSON to json.Marshal, and Encode
// and Check to Validate on json.Marshal's bytes, for any command.
func FuzzEncodeAgreesWithValidate(f *testing.F) {
	for _, c := range benchCommands() {
		var at int64
		var nsec uint32
		if c.OriginalTransactionTime != nil {
			at, nsec = c.OriginalTransactionTime.Unix(), uint32(c.OriginalTransactionTime.Nanosecond())
		}
		var keys []string
		for k, v := range c.Metadata {
			keys = append(keys, k, v)
		}
		keys = append(keys, "", "", "", "")
		f.Add(string(c.Type), c.CommandID, c.IdempotencyKey, c.MerchantID, c.TransactionID, c.Currency, c.Gateway,
			c.Notes, c.AmountValue(), uint8(7), keys[0], keys[1], keys[2], keys[3], at, nsec, int32(0))
	}
	f.Add("void", "c", "", "m", "t", "", "sibs", "", int64(0), uint8(2), "", "", "", "", int64(1), uint32(5), int32(3600))
	f.Add("void", "c&", "k", "m<", "t>", "eur", "x", "\xff\u2028\x01", int64(-1), uint8(7),
		"a\xff", "\"", "a\xfe", "\\", int64(-1<<40), uint32(0), int32(-86400))
	f.Add("void", "c", "", "m", "t", "", "", "", int64(0), uint8(2), "", "", "", "", int64(253402300800), uint32(0), int32(0))
	f.Add("capture", "c", "", "m", "t", "EUR", "", "", int64(1<<53), uint8(1), "", "", "", "", int64(0), uint32(0), int32(0))
	f.Fuzz(func(t *testing.T, typ, id, key, merchant, txn, currency, gateway, notes string, amount int64,
		flags uint8, k1, v1, k2, v2 string, at int64, nsec uint32, offset int32) {
		c := command.Command{CommandID: id, Type: command.Type(typ), IdempotencyKey: key, MerchantID: merchant,
			TransactionID: txn, Currency: currency, Gateway: gateway, Notes: notes}
		if flags&1 != 0 {
			c.Amount = &amount
		}
		if flags&2 != 0 {
			ts := time.Unix(at, int64(nsec%1e9)).In(time.FixedZone("", int(offset)))
			c.OriginalTransactionTime = &ts
		}
		if flags&4 != 0 {
			c.Metadata = map[string]string{k1: v1, k2: v2}
		}
		checkAgrees(t, &c)
	})
}

// checkAgrees holds AppendJSON to json.Marshal, and Encode and Check to
// Validate on json.Marshal's bytes.
func checkAgrees(t *testing.T, c *command.Command) {
	t.Helper()
	want, marshalErr := json.Marshal(c)
	if marshalErr != nil {
		if err := c.Check(); err == nil {
			t.Errorf("Check(%+v) = nil, json.Marshal's error = %v", c, marshalErr)
		}
		if _, err := c.Encode(nil); err == nil {
			t.Errorf("Encode(%+v) error = nil, json.Marshal's error = %v", c, marshalErr)
		}
		return
	}
	if got := c.AppendJSON([]byte("prefix")); !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Errorf("AppendJSON = %s, want prefix%s", got, want)
	}
	wantErr := command.Validate(string(c.Type), want)
	checkErr := c.Check()
	switch {
	case len(want) <= command.MaxSize && (checkErr == nil) != (wantErr == nil):
		t.Errorf("Check(%s) = %v, Validate = %v; want them to agree", want, checkErr, wantErr)
	case checkErr != nil && wantErr != nil && checkErr.Error() != wantErr.Error():
		t.Errorf("Check(%s) error %q, Validate %q", want, checkErr, wantErr)
	}
	got, err := c.Encode([]byte("prefix"))
	switch {
	case (err == nil) != (wantErr == nil):
		t.Errorf("Encode(%s) = %v, Validate = %v; want them to agree", want, err, wantErr)
	case err != nil && err.Error() != wantErr.Error():
		t.Errorf("Encode(%s) error %q, Validate %q", want, err, wantErr)
	case err != nil && (!errors.Is(err, command.ErrInvalid) || string(got) != "prefix"):
		t.Errorf("Encode error %v with %q, want ErrInvalid and dst unchanged", err, got)
	case err == nil && !bytes.Equal(got, append([]byte("prefix"), want...)):
		t.Errorf("Encode = %s, want prefix%s", got, want)
	}
}

// benchCommands are commands as the publisher sends them: plain, and with
// the characters AppendJSON escapes in its notes and metadata.
func benchCommands() map[string]*command.Command {
	n := func(v int64) *int64 { return &v }
	return map[string]*command.Command{
		"plain": {CommandID: "cmd-01J9Z3K7Q8R2M4N6P0S5T7V9WX", Type: command.Capture,
			IdempotencyKey: "order-88412-capture", MerchantID: "10004512",
			TransactionID: "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77", Amount: n(12990), Currency: "EUR",
			Gateway: "paymentoptions", Notes: "order 88412, 3 items",
			Metadata: map[string]string{"order_id": "88412", "channel": "web"}},
		"escaped": {CommandID: "cmd-01J9Z3K7Q8R2M4N6P0S5T7V9WX", Type: command.Capture,
			IdempotencyKey: "order-88412-capture", MerchantID: "10004512",
			TransactionID: "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77", Amount: n(12990), Currency: "EUR",
			Gateway: "paymentoptions", Notes: `Tom & Jerry <"gift">` + "\nline 2",
			Metadata: map[string]string{"order_id": "88412", "channel": "web & app"}},
	}
}

// BenchmarkEncode encodes and checks a command (Encode) and checks one
// alone (Check).
func BenchmarkEncode(b *testing.B) {
	for name, c := range benchCommands() {
		b.Run(name+"/encode", func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 1024)
			for b.Loop() {
				if _, err := c.Encode(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/check", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Check(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
