package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/payworker/payworker/internal/streams"
)

var provisionHelp = help{
	synopsis: "provision [flags]",
	desc: `Creates the three streams (commands, events, dead letters) that are missing,
with the STREAM_* settings the worker reads (replicas, ages, byte bounds, duplicate
window). Streams that exist get the configured subjects and, if STREAM_REPLICAS is
higher, more replicas; replicas are never lowered, and the limits an operator set
are kept: each difference is printed, and --update-limits sets the limits to the
settings. The worker does the same at every start; run this to publish before a
worker has ever run. Safe to run twice.`,
	example: `publisher provision --nats-url nats://n1:4222,nats://n2:4222,nats://n3:4222 --stream-replicas 3`,
}

// provisionSettings are the stream settings connFlags does not register:
// the replicas and limits, which only provisioning uses.
var provisionSettings = []string{"STREAM_REPLICAS", "COMMANDS_MAX_AGE", "EVENTS_MAX_AGE", "EVENTS_MAX_BYTES",
	"DLQ_MAX_AGE", "DLQ_MAX_BYTES", "DUPLICATE_WINDOW"}

func runProvision(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("provision")
	var conn connFlags
	conn.register(fs, e.getenv)
	values := make(map[string]*string)
	for _, s := range streams.Settings() {
		for _, name := range provisionSettings {
			if s.Name == name {
				values[name] = fs.String(flagName(name), envOr(e.getenv, name, s.Default), s.Desc+" (env "+name+")")
			}
		}
	}
	updateLimits := fs.Bool("update-limits", false, "set the limits of existing streams to the settings too (replicas are still never lowered)")
	if done, err := parseFlags(fs, provisionHelp, args, e); done || err != nil {
		return err
	}
	var errs []error
	for _, s := range streams.Settings() {
		if v, ok := values[s.Name]; ok {
			if err := s.Set(&conn.streams, *v); err != nil {
				errs = append(errs, fmt.Errorf("--%s (%s): %w", flagName(s.Name), s.Name, err))
			}
		}
	}
	if len(errs) == 0 {
		if err := conn.streams.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return usageErrorf("provision: %v", err)
	}

	client, closeConn, err := conn.connect(ctx, false)
	if err != nil {
		return err
	}
	defer closeConn()
	rep, err := streams.Ensure(ctx, client.JetStream(), client.Streams(), streams.EnsureOptions{SetLimits: *updateLimits})
	if err != nil {
		return err
	}
	s := client.Streams()
	fmt.Fprintf(e.stdout, "provisioned streams %s (%s), %s (%s), %s (%s) with %d replicas\n",
		s.Commands, s.CommandWildcard(), s.Events, s.EventWildcard(), s.DLQ, s.DLQWildcard(), s.Replicas)
	if len(rep.Created) > 0 {
		fmt.Fprintf(e.stdout, "created: %s\n", strings.Join(rep.Created, ", "))
	}
	for _, d := range rep.Updated {
		fmt.Fprintf(e.stdout, "updated %s\n", d)
	}
	for _, d := range rep.Drift {
		fmt.Fprintf(e.stderr, "kept %s\n", d)
	}
	if len(rep.Drift) > 0 && !*updateLimits {
		fmt.Fprintln(e.stderr, "(limits an operator set are kept; --update-limits sets them to the settings)")
	}
	return nil
}

// flagName is the flag of an environment variable: STREAM_REPLICAS →
// stream-replicas.
func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(env), "_", "-")
}
