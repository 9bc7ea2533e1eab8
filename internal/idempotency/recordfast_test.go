package idempotency

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Records as the scripts store them (cjson: any key order, "\/" for a
// slash) and as marshalRecord writes them, copied from
// TestDecodeRedisRecords.
const (
	claimedSample   = `{"claims":1,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.009Z","state":"in_progress","token":1796633598009,"txn_lock":"txn-42","updated_at":"2026-12-07T08:53:18.009Z","lease_until":"2026-12-07T08:53:48.009Z","command_id":"cmd-locked","holder":"worker-1"}`
	completedSample = `{"claims":2,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.010Z","uncertain":true,"state":"completed","token":1796633598011,"txn_lock":"txn-7","command_id":"cmd-uncertain","updated_at":"2026-12-07T08:53:18.010Z","outcome":{"succeeded":true,"event_id":"evt-1","subject":"payments.events.M1","event":{"specversion":"1.0","id":"evt-1","type":"payment.captured","source":"payworker","data":{"amount":12.5,"currency":"EUR","note":"<b>Café & Co</b>","codes":[0,-1,1e3,true,null]}}}}`
)

var recordSamples = []string{
	claimedSample,
	completedSample,
	`{"claims":1,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.009Z","state":"in_progress","token":1796633598009,"updated_at":"2026-12-07T08:53:18.009Z","lease_until":"2026-12-07T08:53:48.009Z","command_id":"cmd-claimed","holder":"worker-1"}`,
	`{"claims":1,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.009Z","updated_at":"2026-12-07T08:53:18.009Z","token":1796633598009,"state":"released","command_id":"cmd-released"}`,
	`{"claims":1,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.010Z","uncertain":true,"txn_lock":"txn-7","token":1796633598010,"command_id":"cmd-uncertain","state":"released","updated_at":"2026-12-07T08:53:18.010Z"}`,
	`{"claims":2,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.010Z","uncertain":true,"state":"in_progress","token":1796633598011,"lease_until":"2026-12-07T08:53:48.010Z","holder":"worker-2","updated_at":"2026-12-07T08:53:18.010Z","command_id":"cmd-uncertain","txn_lock":"txn-7"}`,
	`{"claims":1,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.010Z","updated_at":"2026-12-07T08:53:18.010Z","token":1796633598010,"state":"completed","command_id":"cmd-declined","outcome":{"succeeded":false,"event_id":"evt-2","subject":"payments.events.M1","event":[1, 2]}}`,
	`{"claims":1,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.009Z","state":"in_progress","token":1796633598009,"updated_at":"2026-12-07T08:53:18.009Z","lease_until":"2026-12-07T08:53:48.009Z","command_id":"cmd-slash","holder":"host\/worker-1"}`,
	`{"claims":1,"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","created_at":"2026-12-07T08:53:18.009Z","uncertain":true,"state":"in_progress","token":1796633598009,"updated_at":"2026-12-07T08:53:18.009Z","lease_until":"2026-12-07T08:53:48.009Z","command_id":"cmd-doubt","holder":"worker-1"}`,
	`{"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","command_id":"cmd-uncertain","state":"completed","token":1796633598011,"claims":2,"uncertain":true,"txn_lock":"txn-7","created_at":"2026-12-07T08:53:18.01Z","updated_at":"2026-12-07T08:53:18.01Z","outcome":{"succeeded":true,"event_id":"evt-1","subject":"payments.events.M1","event":{"specversion":"1.0","id":"evt-1","type":"payment.captured","source":"payworker","data":{"amount":12.5,"currency":"EUR","note":"<b>Café & Co</b>","codes":[0,-1,1e3,true,null]}}}}`,
	`{"fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","command_id":"cmd-claimed","state":"in_progress","holder":"worker-1","lease_until":"2026-12-07T08:53:48.009Z","token":1796633598009,"claims":1,"created_at":"2026-12-07T08:53:18.009Z","updated_at":"2026-12-07T08:53:18.009Z"}`,
	`{"fingerprint":"f","command_id":"c","state":"in_progress","holder":"w","lease_until":"2026-12-07T08:53:48.123456789Z","token":1,"claims":1,"created_at":"2026-12-07T08:53:18+01:00","updated_at":"2026-12-07T08:53:18.5-03:30"}`,
}

// recordOddities are records the fast path must decline or get right:
// cjson number forms, escapes, case-folded and duplicate keys, null,
// unknown keys, invalid UTF-8 and JSON.
var recordOddities = []string{
	`{"token":1.7966335980e+12,"claims":1}`,
	`{"token":1796633598009.0}`,
	`{"token":-0,"claims":-12}`,
	`{"token":01}`,
	`{"token":"1"}`,
	`{"token":9223372036854775807,"claims":9223372036854775808}`,
	`{"Token":1,"STATE":"completed"}`,
	`{"state":"in_progress","state":"completed"}`,
	`{"outcome":{"event_id":"a"},"outcome":{"subject":"b"}}`,
	`{"holder":null,"outcome":null,"lease_until":null}`,
	`{"holder":"a\u002fb\ud800","fingerprint":"\"\\\/\b\f\n\r\t"}`,
	`{"fingerprint":"a\"\\\/\b\f\n\r\tb","holder":"caf\u00e9"}`,
	`{"fingerprint":"a\"\\\/\b\f\n\r\tb","holder":"Café"}`,
	`{"holder":"caf` + "\xe9" + `","fingerprint":"caf` + "\xc3\xa9" + `"}`,
	`{"other":[1,{"a":null}],"state":"released"}`,
	`{"outcome":{"event":"` + "\xff" + `\u00e9"}}`,
	`{"outcome":{"event":{"a":[1,2.5e-3,-0.0,true,false,null,{}]}}}`,
	` {} `,
	`{}x`,
	`{"state":"released",}`,
	`{"uncertain":true,"uncertain":false}`,
	`{"uncertain":"true"}`,
	`{"created_at":"2026-13-07T08:53:18Z"}`,
	`{"created_at":"2026-12-07T08:53:18.Z"}`,
	`{"created_at":"2026-12-07 08:53:18Z"}`,
	`null`,
	`[]`,
	`{"outcome":{"event":` + strings.Repeat("[", 1200) + strings.Repeat("]", 1200) + `}}`,
}

func FuzzUnmarshalRecord(f *testing.F) {
	for _, s := range recordSamples {
		f.Add([]byte(s))
	}
	for _, s := range recordOddities {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, wantErr := unmarshalRecordJSON(b)
		in := bytes.Clone(b)
		got, ok := decodeRecord(in)
		clear(in) // the record must not share the input's memory
		if ok {
			if wantErr != nil {
				t.Fatalf("fast path accepts %q, json.Unmarshal: %v", b, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%q:\nfast %#v\njson %#v", b, got, want)
			}
		}
		got, err := unmarshalRecord(b)
		if !sameError(err, wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: unmarshalRecord = %#v, %v; json.Unmarshal: %#v, %v", b, got, err, want, wantErr)
		}
	})
}

func FuzzMarshalRecord(f *testing.F) {
	f.Add("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "cmd-1", "in_progress", "worker-1", "",
		int64(1796633598009), 1, false, int64(1796633628), int64(1796633598), int64(9000000), 0,
		false, false, "", "", []byte(nil))
	f.Add("fp", "cmd-<1>", "completed", "", "txn-&", int64(-1), -3, true, int64(0), int64(-62135596800), int64(0), 3600,
		true, true, "evt-1", "payments.events.M1", []byte(` {"note":"<b>Café & Co</b>","n":[1,2.5e3]} `))
	f.Add("caf\xe9", "\u2028\x00\"\\", "released", "h\xc3\xa9", "t\x7f", int64(0), 0, false, int64(253402300800), int64(1), int64(999999999), 86400,
		true, false, "e\n", "s\t", []byte("\v\u00a0null\u0085"))
	f.Add("a", "b", "c", "d", "e", int64(1), 1, false, int64(-62135596801), int64(1), int64(1), -60,
		true, false, "e", "s", []byte(`{"a":1,}`))
	f.Fuzz(func(t *testing.T, fingerprint, commandID, state, holder, txn string, token int64, claims int, uncertain bool,
		leaseSec, createdSec, nsec int64, zone int, withOutcome, succeeded bool, eventID, subject string, event []byte) {
		loc := time.UTC
		if zone != 0 {
			loc = time.FixedZone("", zone%(30*3600))
		}
		at := func(sec int64) time.Time { return time.Unix(sec, nsec).In(loc) }
		r := Record{Fingerprint: fingerprint, CommandID: commandID, State: State(state), Holder: holder,
			Token: token, Claims: claims, Uncertain: uncertain, TxnLock: txn,
			CreatedAt: at(createdSec), UpdatedAt: at(createdSec + 1)}
		if leaseSec != 0 {
			r.LeaseUntil = at(leaseSec)
		}
		out := Outcome{Succeeded: succeeded, EventID: eventID, Subject: subject, Event: event}
		if withOutcome {
			r.Outcome = &out
		}
		got, err := marshalRecord(r)
		want, wantErr := marshalRecordJSON(r)
		if !bytes.Equal(got, want) || !sameError(err, wantErr) {
			t.Fatalf("%#v:\nmarshalRecord     %q, %v\nmarshalRecordJSON %q, %v", r, got, err, want, wantErr)
		}
		if err == nil {
			// Decoding what the stores write must take json.Unmarshal's answer too.
			dec, ok := decodeRecord(got)
			if dj, err := unmarshalRecordJSON(got); ok && (err != nil || !reflect.DeepEqual(dec, dj)) {
				t.Fatalf("%q:\nfast %#v\njson %#v, %v", got, dec, dj, err)
			}
		}
		got, err = marshalOutcome(out)
		want, wantErr = marshalOutcomeJSON(out)
		if !bytes.Equal(got, want) || !sameError(err, wantErr) {
			t.Fatalf("%#v:\nmarshalOutcome     %q, %v\nmarshalOutcomeJSON %q, %v", out, got, err, want, wantErr)
		}
	})
}

// sameError reports whether a and b are both nil or say the same.
func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error() == b.Error()
}

// TestRecordFastPathTaken guards the speed-up: the usual records decode and
// encode without encoding/json, in at most one allocation for the strings,
// one for the outcome and one for its event.
func TestRecordFastPathTaken(t *testing.T) {
	for _, s := range recordSamples {
		if _, ok := decodeRecord([]byte(s)); !ok {
			t.Errorf("fast path declined %s", s)
		}
	}
	for _, c := range []struct {
		raw    string
		allocs float64
	}{{claimedSample, 1}, {completedSample, 3}} {
		b := []byte(c.raw)
		if n := testing.AllocsPerRun(100, func() { _, _ = decodeRecord(b) }); n > c.allocs {
			t.Errorf("decodeRecord: %v allocations, want at most %v: %s", n, c.allocs, c.raw)
		}
		r, err := unmarshalRecordJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := appendRecord(nil, &r); !ok {
			t.Errorf("appendRecord declined %+v", r)
		}
		if r.Outcome != nil {
			if _, ok := outcomeEvent(r.Outcome.Event); !ok {
				t.Errorf("outcomeEvent declined %s", r.Outcome.Event)
			}
		}
	}
}

func BenchmarkUnmarshalRecord(b *testing.B) {
	for _, s := range []struct{ name, raw string }{{"claimed", claimedSample}, {"completed", completedSample}} {
		raw := []byte(s.raw)
		b.Run(s.name+"/careful", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := unmarshalRecordJSON(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := unmarshalRecord(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMarshalRecord(b *testing.B) {
	for _, s := range []struct{ name, raw string }{{"claimed", claimedSample}, {"completed", completedSample}} {
		r, err := unmarshalRecordJSON([]byte(s.raw))
		if err != nil {
			b.Fatal(err)
		}
		r.CreatedAt = time.Now().UTC() // nanoseconds, as the KV store writes
		b.Run(s.name+"/careful", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := marshalRecordJSON(r); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := marshalRecord(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMarshalOutcome(b *testing.B) {
	out := Outcome{Succeeded: true, EventID: "evt-1", Subject: "payments.events.M1",
		Event: json.RawMessage(`{"specversion":"1.0","id":"` + strings.Repeat("x", 1200) + `","data":{"amount":12.5,"codes":[0,-1,1e3,true,null]}}`)}
	b.Run("careful", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := marshalOutcomeJSON(out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := marshalOutcome(out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
