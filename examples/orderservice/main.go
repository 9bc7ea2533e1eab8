// Command orderservice is an example order service built on the public
// client package (github.com/payworker/payworker/client). Against the
// zero-configuration worker (`go run ./cmd/worker`) it:
//
//  1. authorises a few orders' payments at the sandbox gateway over HTTP,
//     as its checkout would;
//  2. emits an orders.fulfilled event per shipment on a stream of its own,
//     ORDERS, and emits one of them twice, as an at-least-once emitter does;
//  3. runs a consumer that turns each fulfilment into a capture through the
//     client, with the idempotency key <order id>/<shipment id>, and acks the
//     fulfilment once the capture command is stored;
//  4. prints every capture's outcome: each shipment captured once, the
//     re-emitted fulfilment answered as a duplicate, never captured twice.
//
// Usage:
//
//	go run ./cmd/worker &
//	go run ./examples/orderservice [--nats-url URL] [--sandbox-url URL]
//
// Every flag has an environment variable: NATS_URL, SANDBOX_URL,
// SANDBOX_API_KEY. The defaults are the zero-configuration worker's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderservice:", err)
		os.Exit(1)
	}
}

// config is the parsed command line and environment.
type config struct {
	natsURL    string
	sandboxURL string
	apiKey     string
	merchant   string
	timeout    time.Duration
}

// Defaults: the zero-configuration worker's embedded NATS server and
// sandbox gateway.
const (
	defaultNATSURL    = "nats://127.0.0.1:4333"
	defaultSandboxURL = "http://127.0.0.1:8099/api/v1"
	defaultAPIKey     = "sandbox"
)

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	or := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var c config
	fs := flag.NewFlagSet("orderservice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.natsURL, "nats-url", or("NATS_URL", defaultNATSURL), "NATS server `URL` of the worker (env NATS_URL)")
	fs.StringVar(&c.sandboxURL, "sandbox-url", or("SANDBOX_URL", defaultSandboxURL), "sandbox gateway base `URL` (env SANDBOX_URL)")
	fs.StringVar(&c.apiKey, "api-key", or("SANDBOX_API_KEY", defaultAPIKey), "sandbox API `key` (env SANDBOX_API_KEY)")
	fs.StringVar(&c.merchant, "merchant", "SHOP01", "merchant `id` at the gateway")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the outcomes")
	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.timeout <= 0 {
		return c, errors.New("--timeout must be positive")
	}
	return c, nil
}

// run is the whole program; tests call it with their own servers.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	return newShop(cfg, stdout).run(ctx)
}
