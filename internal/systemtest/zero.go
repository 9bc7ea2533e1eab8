package systemtest

import (
	"context"
	"net/url"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/natsserver"
	"github.com/payworker/payworker/internal/paymentoptions"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/worker"
)

// Zero is the zero-configuration system of `go run ./cmd/worker`, built in
// process for code that has no *testing.T (TestMain, Example functions):
// an embedded NATS server with JetStream in a temporary directory, the
// streams, idempotency keys in a JetStream key-value bucket, the sandbox
// gateway over HTTP, and one worker. It listens on free loopback ports.
type Zero struct {
	// NATSURL is the embedded server's client URL.
	NATSURL string
	// SandboxURL is the sandbox's base URL, as the worker's
	// PAYMENTOPTIONS_BASE_URL and `publisher demo --sandbox-url` take it.
	SandboxURL string
	// SandboxKey is the sandbox's API key (both headers), as the worker's
	// embedded sandbox has it.
	SandboxKey string
	Sandbox    *sandbox.Sandbox
	Streams    streams.Config

	stop func()
}

// StartZero starts a Zero system. Close stops it and removes its data.
func StartZero() (z *Zero, err error) {
	var cleanup []func()
	z = &Zero{SandboxKey: "sandbox", Streams: streams.Default()}
	z.stop = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	defer func() {
		if err != nil {
			z.stop()
			z = nil
		}
	}()

	dir, err := os.MkdirTemp("", "payworker-zero-")
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { _ = os.RemoveAll(dir) })
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: dir, ServerName: "zero"})
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { shutdown(ns) })
	z.NATSURL = ns.ClientURL()

	nc, err := nats.Connect(z.NATSURL, nats.Name("payworker-zero-worker"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := streams.Provision(ctx, js, z.Streams); err != nil {
		return nil, err
	}
	store, err := idempotency.NewKV(ctx, js, idempotency.KVOptions{TTL: time.Hour})
	if err != nil {
		return nil, err
	}

	z.Sandbox = sandbox.New(sandbox.Options{APIKey: z.SandboxKey, XAPIKey: z.SandboxKey, Seed: 1})
	base, stopSandbox, err := z.Sandbox.Start("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = stopSandbox(ctx)
	})
	z.SandboxURL = base
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	po, err := paymentoptions.New(paymentoptions.Config{BaseURL: u, APIKey: z.SandboxKey, XAPIKey: z.SandboxKey, Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}

	h := handlers.New(handlers.Config{
		JetStream:      js,
		Streams:        z.Streams,
		Store:          store,
		Gateways:       map[string]handlers.Gateway{"paymentoptions": po},
		DefaultGateway: "paymentoptions",
		Retry:          handlers.Retry{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, MaxElapsed: 5 * time.Second, MaxAttempts: 5},
		Lease:          10 * time.Second,
		AckWait:        10 * time.Second,
		Holder:         "zero",
		Source:         "urn:payworker:worker:zero",
	})
	w := worker.New(worker.Config{JetStream: js, Streams: z.Streams, Handler: h, Concurrency: 64,
		AckWait: 10 * time.Second, ShutdownTimeout: 5 * time.Second})
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	cleanup = append(cleanup, func() {
		cancel()
		<-done
	})
	return z, nil
}

// Close stops the worker, the sandbox and NATS, and removes the data.
func (z *Zero) Close() { z.stop() }

func shutdown(ns *server.Server) {
	ns.Shutdown()
	ns.WaitForShutdown()
}

// Authorise opens an authorisation on the sandbox, as a shop's checkout
// would with a payment call, and returns its transaction id.
func (z *Zero) Authorise(merchant string, amount int64, currency string) string {
	return z.Sandbox.Authorise(merchant, amount, currency)
}
