package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestScratchDryRun(t *testing.T) {
	path := writeBenchBatch(t, t.TempDir(), 200000)
	start := time.Now()
	err := run(context.Background(), []string{"publisher", "batch", "--file", path, "--quiet", "--dry-run"}, func(string) string { return "" }, strings.NewReader(""), io.Discard, io.Discard)
	t.Logf("dry run: %v %s", err, time.Since(start))
}
