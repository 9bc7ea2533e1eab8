package command_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/payworker/payworker/internal/command"
)

// TestEncodeAgreesWithValidate holds Encode (AppendJSON, the size, Check on
// a document built from the fields) to Validate on json.Marshal's bytes.
func TestEncodeAgreesWithValidate(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	big := map[string]string{}
	for i := range 800 {
		big[strings.Repeat("k", 10)+string(rune('a'+i%26))+strings.Repeat("x", i%50)] = strings.Repeat("v", 80)
	}
	for _, c := range []command.Command{
		{CommandID: "c", Type: command.Capture, MerchantID: "M", TransactionID: "T", Amount: n(1), Currency: "EUR"},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T"},
		{CommandID: "c", Type: command.Capture, MerchantID: "M", TransactionID: "T"},
		{CommandID: "c", Type: command.Capture, MerchantID: "M", TransactionID: "T", Amount: n(0), Currency: "eur"},
		{CommandID: "c", Type: command.Void, MerchantID: "M", TransactionID: "T", Metadata: big},
		{CommandID: "", Type: "refund", MerchantID: "M", TransactionID: "T"},
	} {
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		wantErr := command.Validate(string(c.Type), want)
		got, err := c.Encode([]byte("prefix"))
		switch {
		case (err == nil) != (wantErr == nil):
			t.Errorf("Encode(%+v) = %v, Validate = %v; want them to agree", c.Type, err, wantErr)
		case err != nil && err.Error() != wantErr.Error():
			t.Errorf("Encode error %q, Validate %q", err, wantErr)
		case err != nil && (!errors.Is(err, command.ErrInvalid) || string(got) != "prefix"):
			t.Errorf("Encode error %v with %q, want ErrInvalid and dst unchanged", err, got)
		case err == nil && !bytes.Equal(got, append([]byte("prefix"), want...)):
			t.Errorf("Encode = %s, want prefix%s", got, want)
		}
	}
}
