package events_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/schemas"
)

// checkMarshal fails t unless Marshal gives e's json.Marshal bytes, or fails
// as json.Marshal does (same error text).
func checkMarshal(t *testing.T, e events.Event) {
	t.Helper()
	want, wantErr := json.Marshal(e)
	got, err := e.Marshal()
	if (err != nil) != (wantErr != nil) || err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("Marshal() error = %v, want %v (json.Marshal)", err, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal() =\n%s\nwant (json.Marshal)\n%s", got, want)
	}
	prefix := []byte("prefix")
	fast, ok := events.FastJSON(&e, prefix)
	if ok != (wantErr == nil) {
		t.Fatalf("FastJSON() ok = %v, want %v (json.Marshal error %v)", ok, wantErr == nil, wantErr)
	}
	if ok && !bytes.Equal(fast, append(prefix, want...)) {
		t.Fatalf("FastJSON() =\n%s\nwant (json.Marshal)\n%s", fast, want)
	}
}

// examples returns the events of schemas/examples and of the golden files
// in testdata/, decoded, by file name.
func examples(t testing.TB) map[string]events.Event {
	t.Helper()
	out := make(map[string]events.Event)
	decode := func(name string, data []byte) {
		var e events.Event
		if err := json.Unmarshal(data, &e); err != nil {
			t.Fatalf("decode %s: %v", name, err)
		}
		out[name] = e
	}
	names, err := fs.Glob(schemas.FS, "examples/event.*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("schemas examples: %v, %d files", err, len(names))
	}
	for _, name := range names {
		data, err := fs.ReadFile(schemas.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		decode("schemas/"+name, data)
	}
	golden, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(golden) == 0 {
		t.Fatalf("golden files: %v, %d files", err, len(golden))
	}
	for _, name := range golden {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		decode(name, data)
	}
	return out
}

func TestMarshalMatchesJSONMarshalOnExamples(t *testing.T) {
	for _, kind := range events.Kinds {
		t.Run("sample "+string(kind), func(t *testing.T) { checkMarshal(t, sample(kind)) })
	}
	for name, e := range examples(t) {
		t.Run(name, func(t *testing.T) { checkMarshal(t, e) })
	}
}

// TestMarshalTakesFastPath guards the speed-up: the events the worker
// publishes are encoded without json.Marshal.
func TestMarshalTakesFastPath(t *testing.T) {
	all := examples(t)
	for _, kind := range events.Kinds {
		all["sample "+string(kind)] = sample(kind)
	}
	for name, e := range all {
		if _, ok := events.FastJSON(&e, nil); !ok {
			t.Errorf("%s: FastJSON() ok = false, want true", name)
		}
	}
	e := sample(events.CaptureSucceeded)
	e.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if allocs := testing.AllocsPerRun(100, func() { _, _ = e.Marshal() }); allocs > 1 {
		t.Errorf("Marshal() of %s allocates %v times, want 1", e.Type, allocs)
	}
}

func TestMarshalMatchesJSONMarshalOnEdgeCases(t *testing.T) {
	base := sample(events.CaptureSucceeded)
	tests := []struct {
		name string
		edit func(e *events.Event)
	}{
		{"zero event", func(e *events.Event) { *e = events.Event{} }},
		{"html and quotes", func(e *events.Event) {
			e.Source = `<script>alert("x & y")</script>\`
			e.Data.GatewayMessage = "a>b<c&d"
		}},
		{"control characters", func(e *events.Event) {
			e.Data.GatewayMessage = "\x00\x01\b\f\n\r\t\x1f\x7f"
		}},
		{"line and paragraph separators", func(e *events.Event) { e.Subject = "a\u2028b\u2029c\u2027" }},
		{"invalid utf-8", func(e *events.Event) { e.ID = "a\xffb\xc3(\xed\xa0\x80z\xf0\x9f\x98" }},
		{"multibyte", func(e *events.Event) { e.Data.MerchantID = "żółć €𝄞 日本" }},
		{"empty metadata map", func(e *events.Event) { e.Data.Metadata = map[string]string{} }},
		{"nil metadata", func(e *events.Event) { e.Data.Metadata = nil }},
		{"metadata sorted by raw bytes", func(e *events.Event) {
			e.Data.Metadata = map[string]string{
				"b": "1", "a": "2", "<": "3", "\u2028": "4", "\xff": "5", "": "6", "A": "7", "a\x00": "8",
				"k1": "", "k2": "x", "k3": "y", "k4": "z", "k5": "w",
			}
		}},
		{"empty error", func(e *events.Event) { e.Data.Error = &events.Error{} }},
		{"error with field", func(e *events.Event) {
			e.Data.Error = &events.Error{Code: "schema_violation", Message: "bad", Field: "amount", Retryable: true}
		}},
		{"zero amount", func(e *events.Event) { e.Data.Amount = new(int64) }},
		{"negative numbers", func(e *events.Event) {
			*e.Data.Amount = -1 << 63
			e.Data.Attempts = -5
		}},
		{"largest sequence", func(e *events.Event) { e.Data.DLQSequence = 1<<64 - 1 }},
		{"every member", func(e *events.Event) {
			e.TraceParent, e.TraceState = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "congo=t61rcWkgMzE"
			e.Data.GatewayResponseCode, e.Data.Reconciled = "000.000.000", true
			e.Data.Error = &events.Error{Code: "c", Message: "m", Field: "f"}
			e.Data.OriginalEventID, e.Data.OriginalCommandID = "oe", "oc"
			e.Data.DLQSubject, e.Data.DLQSequence = "payments.dlq.capture", 7
		}},
		{"only attempts in data", func(e *events.Event) { e.Data = events.Data{} }},
		{"zero time", func(e *events.Event) { e.Time = time.Time{} }},
		{"time with offset", func(e *events.Event) { e.Time = now }},
		{"time with odd offset", func(e *events.Event) {
			e.Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("", -(23*3600+59*60+59)))
		}},
		{"time in local zone", func(e *events.Event) { e.Time = time.Now() }},
		{"year 9999", func(e *events.Event) { e.Time = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC) }},
		{"year 10000", func(e *events.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"year -1", func(e *events.Event) { e.Time = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"offset 24 hours", func(e *events.Event) {
			e.Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 24*3600))
		}},
		{"offset -30 hours", func(e *events.Event) {
			e.Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -30*3600))
		}},
		{"long strings", func(e *events.Event) { e.Data.GatewayMessage = strings.Repeat("<é>\xff", 1000) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base
			d := base.Data
			amount := *base.Data.Amount
			d.Amount = &amount
			e.Data = d
			tt.edit(&e)
			checkMarshal(t, e)
		})
	}
}

// fuzzArgs lays e out as FuzzMarshal's arguments; the metadata map becomes
// key NUL value NUL ... (keys and values without NUL).
func fuzzArgs(e events.Event) []any {
	d := e.Data
	_, offset := e.Time.Zone()
	var amount int64
	if d.Amount != nil {
		amount = *d.Amount
	}
	var errCode, errMessage, errField string
	var retryable bool
	if d.Error != nil {
		errCode, errMessage, errField, retryable = d.Error.Code, d.Error.Message, d.Error.Field, d.Error.Retryable
	}
	var meta []string
	for k, v := range d.Metadata {
		meta = append(meta, k, v)
	}
	return []any{
		e.SpecVersion, e.ID, e.Source, e.Type, e.Subject, e.DataContentType, e.TraceParent, e.TraceState,
		e.Time.Unix(), int64(e.Time.Nanosecond()), offset,
		d.CommandID, d.IdempotencyKey, d.MerchantID, d.TransactionID, d.CommandType, d.Gateway,
		d.Amount != nil, amount, d.Currency, d.Attempts,
		d.GatewayCode, d.GatewayMessage, d.GatewayResponseCode, d.GatewayTransactionID, d.GatewayRef,
		d.AuthCode, d.Scheme, d.MaskedCardNumber, d.Reconciled,
		d.Error != nil, errCode, errMessage, errField, retryable,
		d.OriginalEventID, d.OriginalCommandID, d.DLQSubject, d.DLQSequence,
		d.Metadata != nil, strings.Join(meta, "\x00"),
	}
}

// FuzzMarshal holds Marshal to json.Marshal on events built
// from every field: the same bytes, or the same error.
func FuzzMarshal(f *testing.F) {
	// add is f.Add, called through a value: vet cannot count the arguments
	// of a call spread from fuzzArgs.
	add := f.Add
	for _, kind := range events.Kinds {
		add(fuzzArgs(sample(kind))...)
	}
	for _, e := range examples(f) {
		add(fuzzArgs(e)...)
	}
	edge := sample(events.DeadLettered)
	edge.TraceParent, edge.TraceState = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "a=<b>&c"
	edge.Data.GatewayMessage = "\x00\x1f\"\\\u2028\u2029\xff\xed\xa0\x80é"
	edge.Data.Reconciled = true
	edge.Data.Metadata = map[string]string{"z": "1", "<a>": "2", "\xff": "\u2029"}
	add(fuzzArgs(edge)...)
	edge.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.FixedZone("", 25*3600))
	add(fuzzArgs(edge)...)

	f.Fuzz(func(t *testing.T,
		specVersion, id, source, typ, subject, dataContentType, traceParent, traceState string,
		sec, nsec int64, offset int,
		commandID, idempotencyKey, merchantID, transactionID, commandType, gateway string,
		hasAmount bool, amount int64, currency string, attempts int,
		gatewayCode, gatewayMessage, gatewayResponseCode, gatewayTransactionID, gatewayRef string,
		authCode, scheme, maskedCardNumber string, reconciled bool,
		hasError bool, errCode, errMessage, errField string, retryable bool,
		originalEventID, originalCommandID, dlqSubject string, dlqSequence uint64,
		hasMetadata bool, metadata string,
	) {
		loc := time.UTC
		if offset != 0 {
			loc = time.FixedZone("", offset)
		}
		e := events.Event{
			SpecVersion: specVersion, ID: id, Source: source, Type: typ, Subject: subject,
			Time:            time.Unix(sec, nsec).In(loc),
			DataContentType: dataContentType, TraceParent: traceParent, TraceState: traceState,
			Data: events.Data{
				CommandID: commandID, IdempotencyKey: idempotencyKey, MerchantID: merchantID,
				TransactionID: transactionID, CommandType: commandType, Gateway: gateway,
				Currency: currency, Attempts: attempts,
				GatewayCode: gatewayCode, GatewayMessage: gatewayMessage,
				GatewayResponseCode: gatewayResponseCode, GatewayTransactionID: gatewayTransactionID,
				GatewayRef: gatewayRef, AuthCode: authCode, Scheme: scheme,
				MaskedCardNumber: maskedCardNumber, Reconciled: reconciled,
				OriginalEventID: originalEventID, OriginalCommandID: originalCommandID,
				DLQSubject: dlqSubject, DLQSequence: dlqSequence,
			},
		}
		if hasAmount {
			e.Data.Amount = &amount
		}
		if hasError {
			e.Data.Error = &events.Error{Code: errCode, Message: errMessage, Field: errField, Retryable: retryable}
		}
		if hasMetadata {
			e.Data.Metadata = make(map[string]string)
			kv := strings.Split(metadata, "\x00")
			for i := 0; i < len(kv); i += 2 {
				if i+1 < len(kv) {
					e.Data.Metadata[kv[i]] = kv[i+1]
				} else if kv[i] != "" {
					e.Data.Metadata[kv[i]] = ""
				}
			}
		}
		checkMarshal(t, e)
	})
}

// BenchmarkMarshal compares json.Marshal ("careful", what Marshal was) with
// Marshal ("fast") and its encoder into a reused buffer ("append") on a
// capture.succeeded event with metadata and trace context.
func BenchmarkMarshal(b *testing.B) {
	e := sample(events.CaptureSucceeded)
	e.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	e.Data.Metadata = map[string]string{"order_id": "88412", "channel": "web"}
	b.Run("careful", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			var ok bool
			if buf, ok = events.FastJSON(&e, buf[:0]); !ok {
				b.Fatal("FastJSON declined")
			}
		}
	})
}
