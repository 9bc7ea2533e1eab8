package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/tracing"
)

// TestCommandsCarryATraceparent: capture, void and batch send each command
// with a valid traceparent; two captures start two traces, a batch's
// commands share one.
func TestCommandsCarryATraceparent(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	const txn = "ab8444e7-fec0-40dd-994d-0ad813785f74"
	for _, args := range [][]string{
		{"capture", "--merchant", "M1", "--transaction", "T1", "--amount", "1000", "--currency", "JPY"},
		{"capture", "--merchant", "M1", "--transaction", "T2", "--amount", "1000", "--currency", "JPY"},
		{"void", "--merchant", "M1", "--transaction", "T3"},
	} {
		if _, stderr, err := h.run(ctx, args...); err != nil {
			t.Fatalf("%v = %v\n%s", args, err, stderr)
		}
	}
	file := filepath.Join(t.TempDir(), "b.csv")
	csv := "type,merchant_id,transaction_id,amount,currency\ncapture,M001," + txn + ",1000,JPY\nvoid,M001," + txn + ",,\n"
	if err := os.WriteFile(file, []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := h.run(ctx, "batch", "--file", file); err != nil {
		t.Fatalf("batch = %v\n%s", err, stderr)
	}

	s, err := h.js.Stream(ctx, streams.Default().Commands)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := uint64(1); seq <= 5; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		tp := msg.Header.Get(tracing.HeaderTraceparent)
		id := tracing.TraceID(tp)
		if id == "" {
			t.Errorf("command %d (%s) has traceparent %q, want a valid one", seq, msg.Subject, tp)
		}
		ids = append(ids, id)
	}
	if ids[0] == ids[1] || ids[1] == ids[2] {
		t.Errorf("capture, capture, void traces %v, want one each", ids[:3])
	}
	if ids[3] != ids[4] || ids[3] == ids[2] {
		t.Errorf("batch traces %v, want one for the batch, new", ids[3:])
	}
}
