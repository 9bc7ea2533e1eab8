// Command sandbox serves the sandbox PaymentOptions gateway over HTTP, for
// demos and for a worker run against a separate gateway process. It prints
// the base URL to configure the worker with and runs until SIGINT or SIGTERM.
//
// Environment (flags mirror the non-secret ones):
//
//	SANDBOX_ADDR       listen address (-addr), default 127.0.0.1:8099
//	SANDBOX_API_KEY    key required as "Authorization: Basic <key>"; empty: none
//	SANDBOX_X_API_KEY  key required as "x-api-key"; empty: none
//	SANDBOX_LATENCY    added to every request (-latency), a Go duration
//	SANDBOX_SEED       seed of the fault dice (-seed), default 1
//	LOG_FORMAT         json or text; default text on a terminal, json otherwise
//	LOG_LEVEL          debug (one record per request), info, warn or error
//
// Faults are set at run time with POST /_sandbox/faults; GET /_sandbox/ledger
// lists the applied captures and voids; POST /_sandbox/gc runs the garbage
// collector now (benchmarks do before timing latency).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}
