// Package jsretry sends JetStream API requests again while the cluster
// cannot answer them: during a leader election a request times out, meets no
// responders or is told the system is briefly unavailable, and the same
// request a moment later succeeds. Each try has its own short timeout, so an
// election costs a caller about the election's length, not its whole
// deadline.
package jsretry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrCodeClusterNotAvail is JetStream's "JetStream system temporarily
// unavailable": a group without a leader (an election) answering.
const ErrCodeClusterNotAvail jetstream.ErrorCode = 10008

// Policy bounds the tries of Do.
type Policy struct {
	// Timeout bounds one try.
	Timeout time.Duration
	// For bounds how long Do keeps trying again; 0 means until ctx ends.
	For time.Duration
}

// Do runs request with its own timeout, again after a transient failure
// (Transient), until it succeeds, fails otherwise, ctx ends or p.For has
// passed. Only requests that are safe to send twice belong here: a create or
// update with the same configuration, a compare-and-set, a read.
func Do(ctx context.Context, p Policy, request func(ctx context.Context) error) error {
	var deadline time.Time
	if p.For > 0 {
		deadline = time.Now().Add(p.For)
	}
	delay := 25 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, p.Timeout)
		err := request(rctx)
		cancel()
		if err == nil || !Transient(err) || ctx.Err() != nil || (!deadline.IsZero() && !time.Now().Before(deadline)) {
			return err
		}
		// Half the delay, plus up to as much again at random: callers that
		// failed together do not retry together.
		d := delay/2 + rand.N(delay/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %w)", ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

// Transient reports whether err may be gone on the next try: a request that
// timed out or met no responders (the server it went to died, or the group
// it needs has no leader), or JetStream saying it is briefly unavailable.
func Transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == ErrCodeClusterNotAvail || apiErr.Code == http.StatusServiceUnavailable)
}
