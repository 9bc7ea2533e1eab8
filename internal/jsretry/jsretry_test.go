package jsretry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestDoSendsAgainAfterTransientFailures(t *testing.T) {
	for _, transient := range []error{
		context.DeadlineExceeded,
		nats.ErrNoResponders,
		fmt.Errorf("update stream: %w", &jetstream.APIError{Code: 503, ErrorCode: ErrCodeClusterNotAvail, Description: "JetStream system temporarily unavailable"}),
	} {
		tries := 0
		err := Do(context.Background(), Policy{Timeout: time.Second}, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Fatal("a try has no deadline of its own")
			}
			tries++
			if tries < 3 {
				return transient
			}
			return nil
		})
		if err != nil || tries != 3 {
			t.Errorf("after %v: Do = %v after %d tries, want nil after 3", transient, err, tries)
		}
	}
}

func TestDoReturnsAnAnswerAtOnce(t *testing.T) {
	refused := &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "insufficient resources"}
	tries := 0
	err := Do(context.Background(), Policy{Timeout: time.Second}, func(context.Context) error { tries++; return refused })
	if !errors.Is(err, refused) || tries != 1 {
		t.Errorf("Do = %v after %d tries, want the refusal after 1", err, tries)
	}
}

func TestDoStopsAtItsBounds(t *testing.T) {
	tries := 0
	start := time.Now()
	err := Do(context.Background(), Policy{Timeout: time.Second, For: 200 * time.Millisecond}, func(context.Context) error {
		tries++
		return nats.ErrTimeout
	})
	if !errors.Is(err, nats.ErrTimeout) || time.Since(start) > 2*time.Second || tries < 2 {
		t.Errorf("Do with For 200ms = %v after %d tries in %v, want the timeout after a few tries", err, tries, time.Since(start))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	err = Do(ctx, Policy{Timeout: time.Second}, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() == nil {
		t.Errorf("Do past the caller's deadline = %v, want the deadline", err)
	}
}
