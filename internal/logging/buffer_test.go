package logging_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/logging"
)

// countingWriter counts the writes it gets.
type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func (w *countingWriter) state() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.writes
}

// TestBufferBatchesInfoAndFlushesWarnings: a thousand INFO lines go out in
// a few writes, all of them, within the interval; a WARN line goes out at
// once with what waited before it; Flush empties the buffer.
func TestBufferBatchesInfoAndFlushesWarnings(t *testing.T) {
	var w countingWriter
	buf := logging.NewBuffer(&w)
	log, err := logging.New(buf, "json", "info", false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		log.Info("command done", slog.Int("i", i))
	}
	if _, n := w.state(); n > 3 {
		t.Errorf("%d writes for 1,000 lines logged at once, want a few", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		out, _ := w.state()
		if strings.Count(out, "\n") == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 1,000 lines written 2s later", strings.Count(out, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}

	log.Info("held")
	log.With(slog.String("k", "v")).Warn("at once")
	out, _ := w.state()
	if !strings.Contains(out, `"msg":"held"`) || !strings.Contains(out, `"msg":"at once"`) {
		t.Errorf("after a WARN, output lacks the waiting INFO line or the WARN line:\n%s", out[len(out)-200:])
	}
	log.Info("last")
	if err := buf.Flush(); err != nil {
		t.Fatal(err)
	}
	if out, _ := w.state(); !strings.HasSuffix(out, "\n") || !strings.Contains(out, `"msg":"last"`) {
		t.Errorf("Flush did not write the last line")
	}
}
