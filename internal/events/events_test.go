package events_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// now is the fixed event time of the golden files.
var now = time.Date(2026, 1, 14, 9, 31, 2, 417e6, time.FixedZone("CET", 3600))

const source = "payworker/worker-1"

func amount(v int64) *int64 { return &v }

// sample returns a realistic event of kind.
func sample(kind events.Kind) events.Event {
	capture := events.Data{
		CommandID:      "cmd-01J9Z3K7Q8R2M4N6P0S5T7V9WX",
		IdempotencyKey: "order-88412-capture",
		MerchantID:     "10004512",
		TransactionID:  "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77",
		CommandType:    "capture",
		Gateway:        "paymentoptions",
		Amount:         amount(12990),
		Currency:       "EUR",
		Attempts:       1,
		Metadata:       map[string]string{"order_id": "88412"},
	}
	void := events.Data{
		CommandID:      "cmd-01J9Z4B2C6D8E0F2G4H6J8K0LM",
		IdempotencyKey: "order-88413-void",
		MerchantID:     "20001",
		TransactionID:  "TX20260114093012845",
		CommandType:    "void",
		Gateway:        "sibs",
		Attempts:       2,
	}
	var d events.Data
	switch kind {
	case events.CaptureSucceeded:
		d = capture
		d.GatewayCode, d.GatewayMessage = "00", "Approved"
		d.GatewayTransactionID, d.GatewayRef, d.AuthCode = "PO-7731942", "order-88412-capture", "A1B2C3"
		d.Scheme, d.MaskedCardNumber = "mastercard", "520000******1005"
	case events.CaptureFailed:
		d = capture
		d.GatewayCode, d.GatewayMessage = "51", "Insufficient funds"
		d.Scheme, d.MaskedCardNumber = "visa", "411111******1111"
		d.Error = &events.Error{Code: "gateway_declined", Message: "gateway declined the capture: 51 insufficient funds"}
	case events.VoidSucceeded:
		d = void
		d.GatewayCode, d.GatewayMessage = "000.100.110", "Request successfully processed"
		d.GatewayTransactionID, d.Reconciled = "8ac7a4a28d3b1f2e018d3c5a7e1b4f92", true
	case events.VoidFailed:
		d = void
		d.Amount, d.Currency = amount(5000), "PLN"
		d.GatewayCode, d.GatewayResponseCode = "700.400.100", "700.400.100"
		d.Error = &events.Error{Code: "gateway_declined", Message: "gateway refused the void: transaction already captured"}
	case events.Rejected:
		d = events.Data{
			Error: &events.Error{
				Code:    "invalid_json",
				Message: "message is not valid JSON: unexpected end of input at offset 14",
			},
			DLQSubject:  "payments.dlq.capture",
			DLQSequence: 1042,
		}
	case events.Duplicate:
		d = capture
		d.CommandID, d.Attempts = "cmd-01J9Z8Q2R4S6T8V0W2X4Y6Z8AB", 0
		d.OriginalEventID = events.TerminalID(capture.MerchantID, capture.IdempotencyKey)
		d.OriginalCommandID = capture.CommandID
	case events.DeadLettered:
		d = capture
		d.Attempts = 6
		d.Error = &events.Error{Code: "retries_exhausted", Message: "gateway unavailable after 6 attempts", Retryable: true}
		d.DLQSubject, d.DLQSequence = "payments.dlq.capture", 1057
	}
	id := events.MessageID(kind, d.MerchantID, d.IdempotencyKey, d.CommandID)
	if kind.Terminal() {
		id = events.TerminalID(d.MerchantID, d.IdempotencyKey)
	}
	return events.New(kind, id, source, now, d)
}

func TestEventsMatchSchemasAndGoldenFiles(t *testing.T) {
	for _, kind := range events.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			data, err := sample(kind).Marshal()
			if err != nil {
				t.Fatalf("Marshal() error = %v", err)
			}
			if err := schemas.ValidateEventJSON(data); err != nil {
				t.Errorf("ValidateEventJSON(%s) = %v, want nil", data, err)
			}
			var got bytes.Buffer
			if err := json.Indent(&got, data, "", "  "); err != nil {
				t.Fatal(err)
			}
			got.WriteByte('\n')
			golden := filepath.Join("testdata", string(kind)+".json")
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("event %s =\n%s\nwant (%s)\n%s", kind, got.Bytes(), golden, want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	e := sample(events.CaptureSucceeded)
	tests := []struct {
		name, got, want string
	}{
		{"SpecVersion", e.SpecVersion, "1.0"},
		{"Type", e.Type, "payments.capture.succeeded"},
		{"Subject", e.Subject, "8f14e45f-ceea-467f-a9b8-2d3c1b0a9e77"},
		{"DataContentType", e.DataContentType, "application/json"},
		{"Source", e.Source, source},
		{"Time", e.Time.Format(time.RFC3339Nano), "2026-01-14T08:31:02.417Z"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("New(...).%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestTerminalID(t *testing.T) {
	base := events.TerminalID("10004512", "order-88412-capture")
	if again := events.TerminalID("10004512", "order-88412-capture"); again != base {
		t.Errorf("TerminalID twice = %q then %q, want the same", base, again)
	}
	tests := []struct {
		name          string
		merchant, key string
	}{
		{"other merchant", "10004513", "order-88412-capture"},
		{"other key", "10004512", "order-88412-void"},
		{"boundary moved", "10004512order", "-88412-capture"},
		{"swapped", "order-88412-capture", "10004512"},
	}
	for _, tt := range tests {
		if got := events.TerminalID(tt.merchant, tt.key); got == base {
			t.Errorf("%s: TerminalID(%q, %q) = %q, the same as for (10004512, order-88412-capture)", tt.name, tt.merchant, tt.key, got)
		}
	}
}

func TestMessageID(t *testing.T) {
	base := events.MessageID(events.Rejected, "10004512", "key-1", "cmd-1")
	if again := events.MessageID(events.Rejected, "10004512", "key-1", "cmd-1"); again != base {
		t.Errorf("MessageID twice = %q then %q, want the same", base, again)
	}
	tests := []struct {
		name               string
		kind               events.Kind
		merchant, key, cmd string
	}{
		{"other kind", events.Duplicate, "10004512", "key-1", "cmd-1"},
		{"other merchant", events.Rejected, "10004513", "key-1", "cmd-1"},
		{"other key", events.Rejected, "10004512", "key-2", "cmd-1"},
		{"other command", events.Rejected, "10004512", "key-1", "cmd-2"},
		{"boundary moved", events.Rejected, "10004512key-1", "", "cmd-1"},
	}
	for _, tt := range tests {
		if got := events.MessageID(tt.kind, tt.merchant, tt.key, tt.cmd); got == base {
			t.Errorf("%s: MessageID(%q, %q, %q, %q) = %q, the same as the base", tt.name, tt.kind, tt.merchant, tt.key, tt.cmd, got)
		}
	}
	if got := events.TerminalID("10004512", "key-1"); got == base {
		t.Errorf("TerminalID(10004512, key-1) = MessageID(...) = %q, want them distinct", got)
	}
}

func TestKinds(t *testing.T) {
	tests := []struct {
		kind     events.Kind
		typ      string
		terminal bool
	}{
		{events.CaptureSucceeded, "payments.capture.succeeded", true},
		{events.CaptureFailed, "payments.capture.failed", true},
		{events.VoidSucceeded, "payments.void.succeeded", true},
		{events.VoidFailed, "payments.void.failed", true},
		{events.Rejected, "payments.command.rejected", false},
		{events.Duplicate, "payments.command.duplicate", false},
		{events.DeadLettered, "payments.command.dead_lettered", false},
	}
	if len(tests) != len(events.Kinds) {
		t.Errorf("len(Kinds) = %d, want %d", len(events.Kinds), len(tests))
	}
	for _, tt := range tests {
		if got := tt.kind.Type(); got != tt.typ {
			t.Errorf("%s.Type() = %q, want %q", tt.kind, got, tt.typ)
		}
		if got := tt.kind.Terminal(); got != tt.terminal {
			t.Errorf("%s.Terminal() = %v, want %v", tt.kind, got, tt.terminal)
		}
		if got, ok := events.KindOfType(tt.typ); !ok || got != tt.kind {
			t.Errorf("KindOfType(%q) = %q, %v, want %q, true", tt.typ, got, ok, tt.kind)
		}
	}
	if got, ok := events.KindOfType("com.example.other"); ok {
		t.Errorf("KindOfType(foreign) = %q, true, want false", got)
	}
	if got, want := events.TerminalKind("void", false), events.VoidFailed; got != want {
		t.Errorf("TerminalKind(void, false) = %q, want %q", got, want)
	}
	if got, want := events.TerminalKind("capture", true), events.CaptureSucceeded; got != want {
		t.Errorf("TerminalKind(capture, true) = %q, want %q", got, want)
	}
}
