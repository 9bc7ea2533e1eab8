package logging

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Buffer batches log lines into few writes: lines are written at most
// Interval after they were logged, as soon as MaxBytes are waiting, and at
// once with any line at WARN or above (through the handler that New wraps
// around it). At one structured line per command, this turns thousands of
// write system calls a second into about ten. A crash loses at most the
// INFO and DEBUG lines of the last interval; call Flush before exiting.
type Buffer struct {
	w        io.Writer
	interval time.Duration

	mu    sync.Mutex
	buf   []byte
	armed bool
	err   error
}

// Buffer limits.
const (
	bufferInterval = 100 * time.Millisecond
	bufferMaxBytes = 64 << 10
)

// NewBuffer returns a Buffer writing to w.
func NewBuffer(w io.Writer) *Buffer {
	return &Buffer{w: w, interval: bufferInterval}
}

// Write keeps p (a whole line, as slog's handlers write them) for the next
// flush. It reports the error of an earlier flush, if any.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) >= bufferMaxBytes {
		b.flushLocked()
	} else if !b.armed {
		b.armed = true
		time.AfterFunc(b.interval, func() { _ = b.Flush() })
	}
	return len(p), b.err
}

// Flush writes what is waiting.
func (b *Buffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	return b.err
}

func (b *Buffer) flushLocked() {
	b.armed = false
	if len(b.buf) == 0 {
		return
	}
	if _, err := b.w.Write(b.buf); err != nil {
		b.err = err
	}
	b.buf = b.buf[:0]
}

// flushing flushes buf after every record at WARN or above, so warnings and
// errors are never held back.
type flushing struct {
	slog.Handler
	buf *Buffer
}

func (h flushing) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		_ = h.buf.Flush()
	}
	return err
}

func (h flushing) WithAttrs(as []slog.Attr) slog.Handler {
	return flushing{h.Handler.WithAttrs(as), h.buf}
}

func (h flushing) WithGroup(name string) slog.Handler {
	return flushing{h.Handler.WithGroup(name), h.buf}
}
