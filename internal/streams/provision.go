package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/jsretry"
)

// ErrNotProvisioned is returned by Check when a stream does not exist yet.
var ErrNotProvisioned = errors.New("streams not provisioned: start the worker first or run `publisher provision`")

// errCodeStorageExceeded is JetStream's "insufficient storage resources
// available": a stream's MaxBytes is more than the server or the account has
// left to reserve.
const errCodeStorageExceeded jetstream.ErrorCode = 10047

// requestPolicy bounds each JetStream API request of Ensure: a request the
// cluster drops during an election (the meta leader moving after a server
// restart) is sent again after this long rather than holding the caller's
// whole deadline, until the caller's context ends.
var requestPolicy = jsretry.Policy{Timeout: 10 * time.Second}

// StreamConfigs returns the configuration of the three streams. All use limits
// retention so acked commands stay for audit and replay, file storage, and the
// Nats-Msg-Id duplicate window. The commands stream takes only the capture and
// void subjects. The events stream drops its oldest events at its age and
// byte bounds; the DLQ refuses new dead letters at its byte bound
// (DiscardNew) and drops them only at its age bound.
func (c Config) StreamConfigs() []jetstream.StreamConfig {
	base := func(name string, subjects []string, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
			Discard:     jetstream.DiscardOld,
		}
	}
	cmds := base(c.Commands, c.CommandSubjects(), "payworker capture and void commands")
	cmds.MaxAge = c.CommandsMaxAge
	evts := base(c.Events, []string{c.EventWildcard()}, "payworker result events")
	evts.MaxAge = c.EventsMaxAge
	evts.MaxBytes = c.EventsMaxBytes
	dlq := base(c.DLQ, []string{c.DLQWildcard()}, "payworker dead letters and rejected messages")
	dlq.MaxAge = c.DLQMaxAge
	dlq.MaxBytes = c.DLQMaxBytes
	dlq.Discard = jetstream.DiscardNew
	return []jetstream.StreamConfig{cmds, evts, dlq}
}

// Provision is Ensure without its report, for tests and tools that create the
// streams on a server of their own.
func Provision(ctx context.Context, js jetstream.JetStream, c Config) error {
	_, err := Ensure(ctx, js, c, EnsureOptions{})
	return err
}

// EnsureOptions says what Ensure may change on a stream that exists.
type EnsureOptions struct {
	// SetLimits sets the limits (max age, max bytes, discard policy,
	// duplicate window) of existing streams to the configuration, as
	// `publisher provision --update-limits` does. Without it they are kept
	// and each difference is reported as a Drift.
	SetLimits bool
}

// Report is what Ensure did, and what it left as it found it.
type Report struct {
	// Created names the streams that were missing and were created.
	Created []string
	// Updated lists the changes made to existing streams: subjects set to
	// the configuration's, replicas raised.
	Updated []Drift
	// Drift lists the differences left in place: fewer replicas configured
	// than a stream has (never lowered), limits an operator set (unless
	// EnsureOptions.SetLimits), and what JetStream cannot change in place
	// (storage, retention).
	Drift []Drift
}

// Drift is one setting of one stream that differs from the configuration.
type Drift struct {
	Stream string
	// Setting is the configuration's name for it: subjects, replicas,
	// max_age, max_bytes, discard, duplicate_window, storage, retention.
	Setting string
	// Have is the stream's value, Want the configuration's.
	Have, Want string
}

// String reads "PAYMENT_EVENTS max_bytes: 1073741824, configured 10737418240".
func (d Drift) String() string {
	return fmt.Sprintf("%s %s: %s, configured %s", d.Stream, d.Setting, d.Have, d.Want)
}

// Ensure creates the streams that are missing with this configuration, and
// brings the ones that exist towards it without taking anything away from
// what an operator set:
//
//   - subjects are set to the configuration's (they are the program's
//     contract with publishers, not a tuning);
//   - replicas are raised to Config.Replicas, never lowered: a worker or a
//     publisher started with the default 1 against R3 streams leaves them R3;
//   - limits (max age, max bytes, discard policy, duplicate window) are kept
//     as they are unless opts.SetLimits, and each difference is reported;
//   - storage and retention, which JetStream cannot change in place, are
//     reported when they differ.
//
// Nothing is written when nothing changes, so every worker can call it at
// every start. JetStream reserves a stream's MaxBytes when it creates it,
// so a server (or account) with less storage left than the byte bounds
// refuses; the error says so. A replica count the servers cannot place
// (more than the cluster has, or more than 1 on a single server) fails with
// an error PlacementRefused recognises.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config, opts EnsureOptions) (Report, error) {
	var rep Report
	for _, want := range c.StreamConfigs() {
		created, err := ensureStream(ctx, js, want, opts, &rep)
		if err != nil {
			var apiErr *jetstream.APIError
			switch {
			case errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStorageExceeded && want.MaxBytes > 0:
				return rep, fmt.Errorf("provision stream %s: its max bytes %d exceed the JetStream storage the server or account has left; lower the bound or raise the store limit: %w",
					want.Name, want.MaxBytes, err)
			case PlacementRefused(err):
				return rep, fmt.Errorf("provision stream %s: JetStream cannot place %d replicas of it (at most as many as the cluster has JetStream servers, each with room for its max bytes; 1 on a single server): %w",
					want.Name, want.Replicas, err)
			}
			return rep, fmt.Errorf("provision stream %s: %w", want.Name, err)
		}
		if created {
			rep.Created = append(rep.Created, want.Name)
		}
	}
	return rep, nil
}

// ensureStream creates want, or updates the existing stream as Ensure says,
// adding what it changed and left to rep. It reports whether it created it.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, opts EnsureOptions, rep *Report) (bool, error) {
	var s jetstream.Stream
	lookup := func(ctx context.Context) (err error) { s, err = js.Stream(ctx, want.Name); return err }
	err := jsretry.Do(ctx, requestPolicy, lookup)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Sent again after a timeout, a create whose first try was applied
		// meets the same configuration and succeeds.
		err = jsretry.Do(ctx, requestPolicy, func(ctx context.Context) error { _, err := js.CreateStream(ctx, want); return err })
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return err == nil, err
		}
		// Another worker created it a moment ago: bring that one along.
		err = jsretry.Do(ctx, requestPolicy, lookup)
	}
	if err != nil {
		return false, err
	}
	have := s.CachedInfo().Config
	next := have
	changed := false
	change := func(setting, h, w string, apply func()) {
		rep.Updated = append(rep.Updated, Drift{Stream: want.Name, Setting: setting, Have: h, Want: w})
		apply()
		changed = true
	}
	drift := func(setting, h, w string) {
		rep.Drift = append(rep.Drift, Drift{Stream: want.Name, Setting: setting, Have: h, Want: w})
	}

	if !slices.Equal(have.Subjects, want.Subjects) {
		change("subjects", strings.Join(have.Subjects, ","), strings.Join(want.Subjects, ","), func() { next.Subjects = want.Subjects })
	}
	switch r := max(have.Replicas, 1); {
	case r < want.Replicas:
		change("replicas", strconv.Itoa(r), strconv.Itoa(want.Replicas), func() { next.Replicas = want.Replicas })
	case r > want.Replicas:
		drift("replicas", strconv.Itoa(r), strconv.Itoa(want.Replicas)+" (replicas are never lowered)")
	}
	limit := func(setting string, differs bool, h, w string, apply func()) {
		switch {
		case !differs:
		case opts.SetLimits:
			change(setting, h, w, apply)
		default:
			drift(setting, h, w)
		}
	}
	limit("max_age", have.MaxAge != want.MaxAge, ageString(have.MaxAge), ageString(want.MaxAge), func() { next.MaxAge = want.MaxAge })
	limit("max_bytes", bytesLimit(have.MaxBytes) != bytesLimit(want.MaxBytes),
		bytesString(have.MaxBytes), bytesString(want.MaxBytes), func() { next.MaxBytes = bytesLimit(want.MaxBytes) })
	limit("discard", have.Discard != want.Discard, have.Discard.String(), want.Discard.String(), func() { next.Discard = want.Discard })
	limit("duplicate_window", have.Duplicates != want.Duplicates, have.Duplicates.String(), want.Duplicates.String(),
		func() { next.Duplicates = want.Duplicates })
	if have.Storage != want.Storage {
		drift("storage", have.Storage.String(), want.Storage.String()+" (JetStream cannot change it in place)")
	}
	if have.Retention != want.Retention {
		drift("retention", have.Retention.String(), want.Retention.String()+" (JetStream cannot change it in place)")
	}
	if !changed {
		return false, nil
	}
	// The same update sent twice leaves the stream as one would.
	err = jsretry.Do(ctx, requestPolicy, func(ctx context.Context) error { _, err := js.UpdateStream(ctx, next); return err })
	return false, err
}

// bytesLimit is a byte bound as the server spells it: -1 for none.
func bytesLimit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func bytesString(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

func ageString(d time.Duration) string {
	if d <= 0 {
		return "unlimited"
	}
	return d.String()
}

// JetStream's answers to a stream or bucket it cannot place.
const (
	// no suitable peers for placement: fewer servers in the cluster than
	// replicas, or too few with the storage for the stream's max bytes.
	errCodeNoSuitablePeers       jetstream.ErrorCode = 10005
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	// replicas > 1 not supported in non-clustered mode.
	errCodeReplicasNotSupported jetstream.ErrorCode = 10074
)

// PlacementRefused reports whether err is JetStream refusing to place a
// stream or a key-value bucket on as many servers as its replicas: more
// replicas than the cluster has JetStream servers (or too few of them with
// room for its max bytes; the error's description says which), or more
// than 1 on a server that is not clustered. Streams and buckets answer
// alike.
func PlacementRefused(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errCodeNoSuitablePeers, errCodeInsufficientResources, errCodeReplicasNotSupported:
		return true
	}
	return false
}

// Check reports ErrNotProvisioned when any of the three streams is missing.
func Check(ctx context.Context, js jetstream.JetStream, c Config) error {
	for _, name := range []string{c.Commands, c.Events, c.DLQ} {
		if _, err := js.Stream(ctx, name); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("stream %s: %w", name, ErrNotProvisioned)
			}
			return fmt.Errorf("stream %s: %w", name, err)
		}
	}
	return nil
}
