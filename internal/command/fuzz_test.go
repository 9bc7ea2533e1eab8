package command_test

import (
	"bytes"
	"errors"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/schemas"
)

var cardLike = regexp.MustCompile(`[0-9]{13,19}`)

// maxAmount is the schema's bound, which messages quote.
const maxAmount = "9007199254740991"

var codes = []string{
	command.CodeOversize, command.CodeInvalidJSON, command.CodeSchemaViolation, command.CodeSubjectMismatch,
}

// FuzzDecodeCommand checks that Decode never panics, that what it accepts is
// a command that survives Marshal and Decode again, and that what it rejects
// is an *InvalidError that explains itself without echoing card numbers.
func FuzzDecodeCommand(f *testing.F) {
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
	for _, s := range []string{
		``, `null`, `[]`, `{}`, `"capture"`, `{"type":"capture"}`, `{"type":"void"}`,
		`{"command_id":"c","type":"void","merchant_id":"m","transaction_id":"t"}`,
		`{"command_id":"c","type":"capture","merchant_id":"m","transaction_id":"t","amount":1.0e3,"currency":"EUR"}`,
		`{"command_id":"c","type":"capture","merchant_id":"m","merchant_id":"m"}`,
		`{"command_id":"c","type":"capture","merchant_id":"m","transaction_id":"t","amount":-0,"currency":"EUR"}`,
		`{"notes":"5200000000001005","currency":"4111 1111 1111 1111"}`,
		`{"metadata":{"a":{"b":[[[[[[1]]]]]]}}}`,
		`{"amount":1e400}`, `{"amount":0.00000000000000000001e20}`,
		"{\"command_id\":\"\xff\xfe\"}", `{"\u0000":1}`, `{"a":"\ud800"}`,
		`{"original_transaction_time":"2026-02-30T25:61:61Z"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, subject := range []string{"capture", "void", ""} {
			c, err := command.Decode(subject, data)
			if err == nil {
				checkAccepted(t, subject, c)
				continue
			}
			checkRejected(t, data, c, err)
		}
	})
}

func checkAccepted(t *testing.T, subject string, c *command.Command) {
	t.Helper()
	if c == nil {
		t.Fatalf("Decode(%q) = nil, nil", subject)
	}
	if subject != "" && string(c.Type) != subject {
		t.Fatalf("Decode(%q) type = %q, want the subject's", subject, c.Type)
	}
	data, err := c.Marshal()
	if err != nil {
		t.Fatalf("Marshal() of a decoded command: %v", err)
	}
	again, err := command.Decode(string(c.Type), data)
	if err != nil {
		t.Fatalf("Decode(Marshal(c)) error = %v, want nil", err)
	}
	if got, want := asJSON(again), asJSON(c); got != want {
		t.Fatalf("Decode(Marshal(c)) = %s, want %s", got, want)
	}
	if got, want := again.Fingerprint("sibs"), c.Fingerprint("sibs"); got != want {
		t.Fatalf("Fingerprint after round trip = %s, want %s", got, want)
	}
}

func checkRejected(t *testing.T, data []byte, c *command.Command, err error) {
	t.Helper()
	if c != nil {
		t.Fatalf("Decode returned a command and an error %v", err)
	}
	if !errors.Is(err, command.ErrInvalid) {
		t.Fatalf("error %v does not match ErrInvalid", err)
	}
	var ie *command.InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T is not an *InvalidError", err)
	}
	if !slices.Contains(codes, ie.Code()) {
		t.Fatalf("Code() = %q, want one of %v", ie.Code(), codes)
	}
	if len(ie.Problems) == 0 || err.Error() == "" {
		t.Fatalf("error %#v has no problems or no message", ie)
	}
	for _, p := range ie.Problems {
		if p.Message == "" || p.Rule == "" {
			t.Fatalf("problem %+v has no message or rule", p)
		}
		if p.Field != "" && !strings.HasPrefix(p.Message, p.Field+": ") {
			t.Fatalf("problem message %q does not start with its field %q", p.Message, p.Field)
		}
	}
	msg := err.Error()
	for _, pan := range cardLike.FindAll(data, -1) {
		if string(pan) != maxAmount && strings.Contains(msg, string(pan)) {
			t.Fatalf("error %q echoes card-like number %s", msg, pan)
		}
	}
	if len(msg) > 16<<10 {
		t.Fatalf("error is %d bytes long", len(msg))
	}
	if bytes.Equal(data, nil) && ie.Code() != command.CodeInvalidJSON {
		t.Fatalf("empty message: Code() = %q, want %q", ie.Code(), command.CodeInvalidJSON)
	}
}
