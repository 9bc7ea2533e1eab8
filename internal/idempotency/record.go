package idempotency

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// errInvalid marks a request the store refuses before touching the backend.
var errInvalid = errors.New("idempotency: invalid request")

// checkKey refuses an empty scope or key: both name the record.
func checkKey(scope, key string) error {
	switch {
	case scope == "":
		return fmt.Errorf("%w: empty scope", errInvalid)
	case key == "":
		return fmt.Errorf("%w: empty key", errInvalid)
	}
	return nil
}

// checkLease refuses a lease shorter than the stores' resolution.
func checkLease(lease time.Duration) error {
	if lease < time.Millisecond {
		return fmt.Errorf("%w: lease %v shorter than 1ms", errInvalid, lease)
	}
	return nil
}

// checkClaim validates a ClaimRequest.
func checkClaim(req ClaimRequest) error {
	if err := checkKey(req.Scope, req.Key); err != nil {
		return err
	}
	return checkLease(req.Lease)
}

// wrongTxn is the error of a Renew, Complete or Release whose txn is not the
// transaction the token's claim locked (recorded as locked; "" for none).
func wrongTxn(txn, locked string) error {
	return fmt.Errorf("%w: transaction %q named, but the claim locked %q", errInvalid, txn, locked)
}

// marshalOutcome encodes out with its Event bytes exactly as given (after
// validation), so that a replay republishes the very bytes first published:
// json.Marshal would compact them and escape HTML characters. It writes
// what marshalOutcomeJSON writes, without reflection when it can.
func marshalOutcome(out Outcome) ([]byte, error) {
	ev, ok := outcomeEvent(out.Event)
	if !ok {
		return marshalOutcomeJSON(out)
	}
	b := make([]byte, 0, len(ev)+len(out.EventID)+len(out.Subject)+64)
	return appendOutcome(b, &out, ev), nil
}

// marshalOutcomeJSON is marshalOutcome through encoding/json: the
// reference the fast path must equal, and its fallback.
func marshalOutcomeJSON(out Outcome) ([]byte, error) {
	ev := bytes.TrimSpace(out.Event)
	if len(ev) == 0 {
		ev = []byte("null")
	}
	if !json.Valid(ev) {
		return nil, fmt.Errorf("%w: outcome event is not valid JSON", errInvalid)
	}
	head, err := json.Marshal(struct {
		Succeeded bool   `json:"succeeded"`
		EventID   string `json:"event_id"`
		Subject   string `json:"subject"`
	}{out.Succeeded, out.EventID, out.Subject})
	if err != nil {
		return nil, fmt.Errorf("idempotency: encode outcome: %w", err)
	}
	b := make([]byte, 0, len(head)+len(ev)+16)
	b = append(b, head[:len(head)-1]...)
	b = append(b, `,"event":`...)
	b = append(b, ev...)
	return append(b, '}'), nil
}

// marshalRecord encodes r in the Record JSON format, keeping the outcome's
// event bytes as marshalOutcome does. It writes what marshalRecordJSON
// writes, without reflection when it can.
func marshalRecord(r Record) ([]byte, error) {
	n := 320 + len(r.Fingerprint) + len(r.CommandID) + len(r.State) + len(r.Holder) + len(r.TxnLock)
	if r.Outcome != nil {
		n += 96 + len(r.Outcome.Event) + len(r.Outcome.EventID) + len(r.Outcome.Subject)
	}
	if b, ok := appendRecord(make([]byte, 0, n), &r); ok {
		return b, nil
	}
	return marshalRecordJSON(r)
}

// marshalRecordJSON is marshalRecord through encoding/json: the reference
// the fast path must equal, and its fallback.
func marshalRecordJSON(r Record) ([]byte, error) {
	out := r.Outcome
	r.Outcome = nil
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("idempotency: encode record: %w", err)
	}
	if out == nil {
		return b, nil
	}
	o, err := marshalOutcomeJSON(*out)
	if err != nil {
		return nil, err
	}
	b = append(b[:len(b)-1], `,"outcome":`...)
	b = append(b, o...)
	return append(b, '}'), nil
}

// unmarshalRecord decodes a stored record: as json.Unmarshal does, in one
// pass without reflection when the record has the usual shape.
func unmarshalRecord(b []byte) (Record, error) {
	if r, ok := decodeRecord(b); ok {
		return r, nil
	}
	return unmarshalRecordJSON(b)
}

// unmarshalRecordJSON is unmarshalRecord through json.Unmarshal: the
// reference the fast path must equal, and its fallback.
func unmarshalRecordJSON(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("idempotency: decode record: %w", err)
	}
	return r, nil
}
