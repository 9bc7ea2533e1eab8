package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// NotProvisioned turns err into ErrNotProvisioned, naming stream, when err
// says the stream does not exist; any other error is returned unchanged.
func NotProvisioned(stream string, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", stream, ErrNotProvisioned)
	}
	return err
}

// ConsumerDeleter is the part of jetstream.JetStream that deletes consumers.
type ConsumerDeleter interface {
	DeleteConsumer(ctx context.Context, stream, consumer string) error
}

// DeleteConsumer deletes the current server-side consumer of cons, an
// ordered consumer on stream, which would otherwise linger until its
// inactivity threshold. It waits at most 2 s, and ignores a failure: the
// server removes the consumer at that threshold anyway.
func DeleteConsumer(js ConsumerDeleter, stream string, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = js.DeleteConsumer(ctx, stream, info.Name)
}
