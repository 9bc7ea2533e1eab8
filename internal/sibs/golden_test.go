package sibs

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/gateway"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestCancellationGolden reproduces the seed's example cancellation
// (003_3c5d9cfdf81510a2.txt) byte for byte from a void command: 500 minor
// units of PLN are "value": 5, the idempotency key is the
// merchantTransactionId, the command's original_transaction_time the
// originalTransaction.datetime.
func TestCancellationGolden(t *testing.T) {
	cmd, err := command.Decode("void", []byte(`{
		"command_id": "c-seed-003",
		"type": "void",
		"idempotency_key": "BO_Order Id: c9876bcasd",
		"merchant_id": "M24",
		"transaction_id": "1ach2CGpZ2BAKUfqJ9Rp",
		"amount": 500,
		"currency": "PLN",
		"gateway": "sibs",
		"original_transaction_time": "2022-05-29T17:23:36.105Z"
	}`))
	if err != nil {
		t.Fatalf("command.Decode: %v", err)
	}
	srv, requests := recorder(t, 200, answerJSON("000", "Success", "CNCL", "5", "PLN"))
	now := time.Date(2022, 5, 29, 18, 23, 41, 367_000_000, time.UTC)
	c := newClient(t, Config{BaseURL: mustURL(t, srv.URL), ClientID: "b4480347-9fc8-4790-b359-100a99c60ea3",
		TerminalID: "24", Token: token, Now: func() time.Time { return now }})

	res := c.Execute(context.Background(), cmd.Request())
	if res.Outcome != gateway.Succeeded {
		t.Fatalf("Execute = %v (%s), want succeeded", res.Outcome, res.Message)
	}
	got := requests()
	if len(got) != 1 {
		t.Fatalf("server saw %d requests, want 1 (the command carries the original time and amount)", len(got))
	}
	if want := "/api/v1/payments/1ach2CGpZ2BAKUfqJ9Rp/cancellation"; got[0].path != want {
		t.Errorf("path = %s, want %s", got[0].path, want)
	}
	golden := filepath.Join("testdata", "cancellation_seed_003.golden.json")
	if *update {
		if err := os.WriteFile(golden, got[0].raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got[0].raw, want) {
		t.Errorf("cancellation body =\n%s\nwant (%s)\n%s", got[0].raw, golden, want)
	}
}
