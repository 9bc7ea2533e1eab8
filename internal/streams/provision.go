package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotProvisioned is returned by Check when a stream does not exist yet.
var ErrNotProvisioned = errors.New("streams not provisioned: start the worker first or run `publisher provision`")

// errCodeStorageExceeded is JetStream's "insufficient storage resources
// available": a stream's MaxBytes is more than the server or the account has
// left to reserve.
const errCodeStorageExceeded jetstream.ErrorCode = 10047

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

// Provision creates the three streams, or updates them to this configuration.
// It is safe to call from every worker at every start. JetStream reserves a
// stream's MaxBytes when it creates it, so a server (or account) with less
// storage left than the byte bounds refuses; the error says so.
func Provision(ctx context.Context, js jetstream.JetStream, c Config) error {
	for _, sc := range c.StreamConfigs() {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStorageExceeded && sc.MaxBytes > 0 {
				return fmt.Errorf("provision stream %s: its max bytes %d exceed the JetStream storage the server or account has left; lower the bound or raise the store limit: %w",
					sc.Name, sc.MaxBytes, err)
			}
			return fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	return nil
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
