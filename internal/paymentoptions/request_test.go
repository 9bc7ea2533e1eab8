package paymentoptions

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzRequestBody checks that the capture and void bodies are json.Marshal's,
// byte for byte.
func FuzzRequestBody(f *testing.F) {
	for _, s := range []struct {
		id, merchant, notes string
		amount              int64
	}{
		{"9dfd39ec-eb4a-4f8b-a526-17abf140a717", "M000001", "", 1000},
		{"t-1", "M1", "order 42", 1},
		{"t\"1", "<M&1>", "notes\n\twith\x00controls\\", -9223372036854775808},
		{"é", "\u2028\u2029", "\xff\xfe invalid", 9223372036854775807},
		{"注文", "a/b", "キャプチャ", 0},
	} {
		f.Add(s.id, s.merchant, s.notes, s.amount)
	}
	f.Fuzz(func(t *testing.T, id, merchant, notes string, amount int64) {
		capture := captureBody{TransactionID: id, Amount: amount, MerchantID: merchant, Notes: notes}
		want, err := json.Marshal(capture)
		if err != nil {
			t.Fatal(err)
		}
		if got := capture.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("captureBody.appendJSON(%+v) = %s, json.Marshal gives %s", capture, got, want)
		}
		void := voidBody{TransactionID: id, MerchantID: merchant}
		if want, err = json.Marshal(void); err != nil {
			t.Fatal(err)
		}
		if got := void.appendJSON([]byte("x")); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Fatalf("voidBody.appendJSON(%+v) = %s, json.Marshal gives %s", void, got, want)
		}
	})
}

// sink keeps a benchmark's result alive.
var sink []byte

func BenchmarkCaptureBody(b *testing.B) {
	body := captureBody{TransactionID: "9dfd39ec-eb4a-4f8b-a526-17abf140a717", Amount: 1000, MerchantID: merchant}
	b.Run("careful", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if sink, err = json.Marshal(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = body.appendJSON(make([]byte, 0, 128))
		}
	})
}
