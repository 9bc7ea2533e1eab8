package main

import (
	"context"
	"fmt"
)

var provisionHelp = help{
	synopsis: "provision [flags]",
	desc: `Creates the three streams (commands, events, dead letters), or updates them
to the default configuration. The worker does the same at every start; run
this to publish before a worker has ever run. Safe to run twice.`,
	example: `publisher provision --nats-url nats://127.0.0.1:4222`,
}

func runProvision(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("provision")
	var conn connFlags
	conn.register(fs, e.getenv)
	if done, err := parseFlags(fs, provisionHelp, args, e); done || err != nil {
		return err
	}
	client, closeConn, err := conn.connect(ctx, false)
	if err != nil {
		return err
	}
	defer closeConn()
	if err := client.Provision(ctx); err != nil {
		return err
	}
	s := client.Streams()
	fmt.Fprintf(e.stdout, "provisioned streams %s (%s), %s (%s), %s (%s)\n",
		s.Commands, s.CommandWildcard(), s.Events, s.EventWildcard(), s.DLQ, s.DLQWildcard())
	return nil
}
