package publish

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

func TestScratchScan(t *testing.T) {
	var buf bytes.Buffer
	fmt.Fprintln(&buf, "type,merchant_id,transaction_id,amount,currency,metadata.order")
	for i := range 200000 {
		fmt.Fprintf(&buf, "capture,M%04d,%08x-fec0-40dd-994d-%012x,%d,JPY,order-%d\n", i%100, i, i, 100+i%10000, i)
	}
	for _, w := range []int{2} {
		start := time.Now()
		n := 0
		_, err := CheckBatch(context.Background(), bytes.NewReader(buf.Bytes()), BatchOptions{Format: FormatCSV, Workers: w}, func(r *Row) error { n++; return nil })
		t.Logf("workers %d: %v %d rows %s", w, err, n, time.Since(start))
	}
}
