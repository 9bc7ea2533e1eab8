package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotProvisioned is returned by Check when a stream does not exist yet.
var ErrNotProvisioned = errors.New("streams not provisioned: start the worker first or run `publisher provision`")

// StreamConfigs returns the configuration of the three streams. All use limits
// retention so acked commands stay for audit and replay, file storage, and the
// Nats-Msg-Id duplicate window.
func (c Config) StreamConfigs() []jetstream.StreamConfig {
	base := func(name, subject, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
			Discard:     jetstream.DiscardOld,
		}
	}
	cmds := base(c.Commands, c.CommandWildcard(), "payworker capture and void commands")
	cmds.MaxAge = c.CommandsMaxAge
	evts := base(c.Events, c.EventWildcard(), "payworker result events")
	evts.MaxAge = c.EventsMaxAge
	dlq := base(c.DLQ, c.DLQWildcard(), "payworker dead letters and rejected messages")
	dlq.MaxAge = c.DLQMaxAge
	return []jetstream.StreamConfig{cmds, evts, dlq}
}

// Provision creates the three streams, or updates them to this configuration.
// It is safe to call from every worker at every start.
func Provision(ctx context.Context, js jetstream.JetStream, c Config) error {
	for _, sc := range c.StreamConfigs() {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
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
