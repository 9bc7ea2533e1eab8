package publish

import (
	"encoding/json"
	"testing"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/schemas"
)

func BenchmarkScratchValidate(b *testing.B) {
	amt := int64(1000)
	cmd := &command.Command{CommandID: "bcmd-0123456789abcdef0123456789abcdef", Type: "capture", IdempotencyKey: "batch-0123456789abcdef0123456789abcdef",
		MerchantID: "M0001", TransactionID: "ab8444e7-fec0-40dd-994d-0ad813785f74", Amount: &amt, Currency: "JPY", Metadata: map[string]string{"order": "42"}}
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := Encode(cmd); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("marshal", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(cmd)
		}
	})
	b.Run("map+schema", func(b *testing.B) {
		for b.Loop() {
			doc := map[string]any{"command_id": cmd.CommandID, "type": string(cmd.Type), "idempotency_key": cmd.IdempotencyKey,
				"merchant_id": cmd.MerchantID, "transaction_id": cmd.TransactionID, "amount": *cmd.Amount, "currency": cmd.Currency,
				"metadata": map[string]any{"order": "42"}}
			if err := schemas.ValidateCommand("capture", doc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
