// Command worker is the payworker daemon: it consumes capture and void
// commands from NATS JetStream, de-duplicates them by idempotency key, calls the
// payment gateway and publishes one result event per outcome.
//
// With no configuration at all it runs the whole system in one process: an
// embedded NATS server with JetStream, a JetStream key-value idempotency store
// and the sandbox gateway. See the README for every variable.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		var ec exitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

// exitCoder is an error that chooses the process's exit status.
type exitCoder interface{ ExitCode() int }

// usageError is a configuration or usage problem: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }
func (e usageError) ExitCode() int { return 2 }
