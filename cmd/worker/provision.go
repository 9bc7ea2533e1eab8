package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
)

// provision creates the streams that are missing and brings the others
// towards the configuration as streams.Ensure does: subjects set, replicas
// raised, never lowered, an operator's limits kept. It logs what it created
// and changed (INFO) and each difference it left (WARN).
func provision(ctx context.Context, js jetstream.JetStream, sc streams.Config, log *slog.Logger) error {
	rep, err := streams.Ensure(ctx, js, sc, streams.EnsureOptions{})
	if err != nil {
		return placementError(sc.Replicas, err)
	}
	for _, name := range rep.Created {
		log.Info("stream created", slog.String("stream", name), slog.Int("replicas", sc.Replicas))
	}
	for _, d := range rep.Updated {
		log.Info("stream updated", slog.String("stream", d.Stream), slog.String("setting", d.Setting),
			slog.String("was", d.Have), slog.String("now", d.Want))
	}
	for _, d := range rep.Drift {
		log.Warn("stream differs from the configuration; kept as it is (publisher provision --update-limits sets the limits)",
			slog.String("stream", d.Stream), slog.String("setting", d.Setting), slog.String("stream_has", d.Have), slog.String("configured", d.Want))
	}
	return nil
}

// placementError names STREAM_REPLICAS when err is JetStream refusing to
// place that many replicas of a stream or bucket (a usage error: exit 2);
// any other err is returned as it is.
func placementError(replicas int, err error) error {
	if replicas <= 1 || !streams.PlacementRefused(err) {
		return err
	}
	return usageError{&VarError{Var: "STREAM_REPLICAS", Err: fmt.Errorf(
		"%d replicas: the NATS servers of NATS_URL cannot place them; it must be at most the number of JetStream servers in the cluster (1 for a single server), each with room for the streams' byte bounds: %w",
		replicas, err)}}
}
