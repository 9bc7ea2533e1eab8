package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/payworker/payworker/internal/fleet"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/logging"
	"github.com/payworker/payworker/internal/metrics"
	"github.com/payworker/payworker/internal/natsconn"
	"github.com/payworker/payworker/internal/natsserver"
	"github.com/payworker/payworker/internal/ops"
	"github.com/payworker/payworker/internal/paymentoptions"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/sibs"
	"github.com/payworker/payworker/internal/worker"
)

// run builds the worker from its arguments and environment and runs it until
// ctx ends; it returns nil after a clean shutdown.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 2 && args[1] == "healthcheck" {
		return healthcheck(ctx, args[2])
	}
	cfg, err := parseConfig(args[1:], getenv, os.ReadFile)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return nil
	}
	if err != nil {
		return usageError{err}
	}
	isTerm := false
	if f, ok := stderr.(*os.File); ok {
		isTerm = logging.IsTerminal(f)
	}
	logs := logging.NewBuffer(stderr)
	defer logs.Flush()
	log, err := logging.New(logs, cfg.LogFormat, cfg.LogLevel, isTerm)
	if err != nil {
		return usageError{err}
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	log = log.With(slog.String("worker_id", cfg.WorkerID))
	for _, g := range cfg.PlainHTTPGateways() {
		log.Warn("GATEWAY_ALLOW_HTTP: gateway called over plain http; its keys and card data cross the network unencrypted, so use it for a sandbox only",
			slog.String("gateway", g.Gateway), slog.String("variable", g.Var), slog.String("url", g.URL.Redacted()))
	}
	if getenv("GOGC") == "" {
		// The worker allocates about 30 KB per command around a live heap
		// of a few MB: at Go's default the collector runs dozens of times
		// a second. Trading some memory for CPU is the better deal here;
		// GOGC, when set, decides instead.
		debug.SetGCPercent(defaultGCPercent)
	}

	a := &app{cfg: cfg, log: log, logs: logs}
	a.tracer, a.flushSpans, err = setupTracing(ctx, getenv)
	if err != nil {
		return err
	}
	err = a.start(ctx)
	if err == nil {
		err = a.serve(ctx)
	}
	a.shutdown()
	return err
}

// app holds what run starts, so shutdown can stop it in one visible order.
type app struct {
	cfg     Config
	log     *slog.Logger
	logs    *logging.Buffer
	ns      *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	rdb     redis.UniversalClient
	store   idempotency.Store
	sandbox func(context.Context) error
	// ncClosed is closed when nc is, after a drain.
	ncClosed chan struct{}
	reg      *prometheus.Registry
	metrics  *metrics.Metrics
	worker   *worker.Worker
	// fleet counts the live workers to share the gateways' rate limits
	// without Redis; nil when there is none to share.
	fleet *fleet.Fleet
	// tracer makes the commands' spans (no-op without an OTLP endpoint);
	// flushSpans sends what is left of them at shutdown.
	tracer     trace.TracerProvider
	flushSpans func(context.Context) error
}

func (a *app) start(ctx context.Context) error {
	cfg, log := a.cfg, a.log
	natsURL := cfg.NATSURL
	if cfg.EmbeddedNATS() {
		host, port, err := splitHostPort(cfg.EmbeddedNATSAddr)
		if err != nil {
			return usageError{fmt.Errorf("EMBEDDED_NATS_ADDR: %w", err)}
		}
		dir := filepath.Join(cfg.DataDir, "nats")
		ns, err := natsserver.Start(natsserver.Options{Host: host, Port: port, StoreDir: dir, ServerName: "payworker-embedded"})
		if errors.Is(err, natsserver.ErrPortInUse) {
			return fmt.Errorf("embedded NATS server: %w; set EMBEDDED_NATS_ADDR to another address, or NATS_URL=nats://%s to use the server that holds it", err, cfg.EmbeddedNATSAddr)
		}
		if err != nil {
			return fmt.Errorf("embedded NATS server: %w", err)
		}
		a.ns = ns
		natsURL = ns.ClientURL()
		log.Info("no NATS_URL: running an embedded NATS server with JetStream", slog.String("url", natsURL), slog.String("store_dir", dir))
	}
	conn := natsSettings(cfg)
	conn.URL = natsURL
	a.ncClosed = make(chan struct{})
	nc, err := natsconn.Connect(conn,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", slog.Any("error", err)) }),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", slog.String("url", c.ConnectedUrlRedacted())) }),
		nats.ErrorHandler(natsErrorLogger(conn, log)),
		nats.ClosedHandler(func(*nats.Conn) { close(a.ncClosed) }),
		nats.DrainTimeout(drainTimeout),
	)
	if err != nil {
		var se *natsconn.SettingError
		if errors.As(err, &se) {
			return usageError{err}
		}
		return err
	}
	a.nc = nc
	log.Info("NATS connected", natsConnected(nc, conn)...)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	a.js = js
	if err := provision(ctx, js, cfg.Streams, log); err != nil {
		return err
	}
	log.Info("streams ready", slog.String("commands", cfg.Streams.Commands), slog.String("events", cfg.Streams.Events),
		slog.String("dlq", cfg.Streams.DLQ), slog.Int("replicas", cfg.Streams.Replicas))

	if cfg.KVStore() {
		kv, err := idempotency.NewKV(ctx, js, idempotency.KVOptions{TTL: cfg.IdempotencyTTL, Replicas: cfg.Streams.Replicas})
		if err != nil {
			return placementError(cfg.Streams.Replicas, fmt.Errorf("idempotency key-value bucket: %w", err))
		}
		a.store = kv
		log.Info("no REDIS_URL: idempotency keys in a JetStream key-value bucket", slog.Duration("ttl", cfg.IdempotencyTTL))
	} else {
		// Standalone, Sentinel or Cluster (REDIS_MODE), with fail-fast
		// timeouts and a pool sized to WORKER_CONCURRENCY (see
		// newRedisClient).
		redis.SetLogger(redisLogger{log.With(slog.String("component", "redis"))})
		rdb, where, err := newRedisClient(cfg)
		if err != nil {
			return usageError{fmt.Errorf("REDIS_URL: %w", err)}
		}
		if clearTextPassword(cfg) {
			log.Warn("the Redis password is sent in clear text: REDIS_URL is redis:// to a server beyond this machine; use rediss:// (and REDIS_TLS_CA for a private CA)")
		}
		a.rdb = rdb
		// Exactly once does not rest on Redis keeping every write: the
		// registry (Raft-replicated, in JetStream) tells a merchant whose
		// records Redis lost from a new one, and from then on keys without
		// a record are checked at the gateway before anything is sent.
		reg, err := idempotency.NewKVScopeRegistry(ctx, js, "", cfg.Streams.Replicas)
		if err != nil {
			return placementError(cfg.Streams.Replicas, err)
		}
		a.store = idempotency.NewRedis(a.rdb, idempotency.RedisOptions{
			TTL: cfg.IdempotencyTTL, Registry: reg,
			WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout,
			OnDoubt: func(scope, reason string, until time.Time) {
				log.Warn("idempotency store lost records: keys without a record are checked at the gateway's status before any send",
					slog.String("merchant_id", scope), slog.String("reason", reason), slog.Time("until", until))
			},
		})
		if err := a.store.Ping(ctx); err != nil {
			// A certificate not trusted or credentials refused will not
			// mend by waiting: stop, naming the setting.
			if aerr := redisAccessError(cfg, err); aerr != nil {
				return aerr
			}
			// Fail closed, but run: commands wait until Redis answers.
			log.Warn("Redis not reachable yet: commands will wait for it", append(where, slog.Any("error", err))...)
		}
		log.Info("idempotency keys in Redis", append(where, slog.Duration("ttl", cfg.IdempotencyTTL))...)
	}

	gws := map[string]handlers.Gateway{}
	poURL, apiKey, xKey := cfg.PaymentOptionsBaseURL, cfg.PaymentOptionsAPIKey.Reveal(), cfg.PaymentOptionsXAPIKey.Reveal()
	sibsCfg := sibs.Config{BaseURL: cfg.SIBSBaseURL, AllowHTTP: cfg.GatewayAllowHTTP, ClientID: cfg.SIBSClientID, TerminalID: cfg.SIBSTerminalID,
		Token: cfg.SIBSToken.Reveal(), TokenURL: cfg.SIBSTokenURL, ClientSecret: cfg.SIBSClientSecret.Reveal(), Timeout: cfg.GatewayTimeout,
		MaxConns: cfg.WorkerConcurrency}
	if cfg.Sandbox() {
		sb := sandbox.New(sandbox.Options{APIKey: "sandbox", XAPIKey: "sandbox", SIBSToken: "sandbox", SIBSClientID: "sandbox",
			Logger: log.With(slog.String("component", "sandbox"))})
		base, stop, err := sb.Start(cfg.SandboxAddr)
		if err != nil {
			return fmt.Errorf("sandbox gateway on %s: %w; set SANDBOX_ADDR to another address, or PAYMENTOPTIONS_BASE_URL to a real gateway", cfg.SandboxAddr, err)
		}
		a.sandbox = stop
		u, err := url.Parse(base)
		if err != nil {
			return fmt.Errorf("sandbox base URL %q: %w", base, err)
		}
		poURL, apiKey, xKey = u, "sandbox", "sandbox"
		log.Info("no PAYMENTOPTIONS_BASE_URL: running the sandbox gateway in-process", slog.String("base_url", base))
		if cfg.SIBSSandbox() {
			su, err := url.Parse(sb.SIBSBaseURL())
			if err != nil {
				return fmt.Errorf("sandbox SIBS base URL %q: %w", sb.SIBSBaseURL(), err)
			}
			sibsCfg = sibs.Config{BaseURL: su, ClientID: "sandbox", TerminalID: "1", Token: "sandbox", Timeout: cfg.GatewayTimeout,
				MaxConns: cfg.WorkerConcurrency}
			log.Info("no SIBS_BASE_URL: the sandbox gateway serves SIBS too", slog.String("base_url", su.String()))
		}
	}
	po, err := paymentoptions.New(paymentoptions.Config{BaseURL: poURL, AllowHTTP: cfg.GatewayAllowHTTP, APIKey: apiKey, XAPIKey: xKey, Timeout: cfg.GatewayTimeout,
		MaxConns: cfg.WorkerConcurrency, HTTPClient: trustingClient(a.tracer, cfg.WorkerConcurrency, cfg.PaymentOptionsRoots)})
	if err != nil {
		return usageError{fmt.Errorf("PAYMENTOPTIONS_BASE_URL: %w", err)}
	}
	gws[GatewayPaymentOptions] = po
	log.Info("gateway configured", slog.String("gateway", GatewayPaymentOptions), slog.String("base_url", poURL.Redacted()))
	if cfg.SIBSConfigured() || cfg.SIBSSandbox() {
		sibsCfg.HTTPClient = trustingClient(a.tracer, cfg.WorkerConcurrency, cfg.SIBSRoots)
		sc, err := sibs.New(sibsCfg)
		if err != nil {
			return usageError{fmt.Errorf("SIBS_BASE_URL: %w", err)}
		}
		gws[GatewaySIBS] = sc
		log.Info("gateway configured", slog.String("gateway", GatewaySIBS), slog.String("base_url", sibsCfg.BaseURL.Redacted()))
	}

	a.reg = prometheus.NewRegistry()
	a.metrics = metrics.New(a.reg)
	breakers, limiters, err := a.protection(ctx, gws)
	if err != nil {
		return err
	}
	h := handlers.New(handlers.Config{
		JetStream:      js,
		Streams:        cfg.Streams,
		Store:          a.store,
		Gateways:       gws,
		Routes:         cfg.GatewayRoutes,
		DefaultGateway: cfg.DefaultGateway,
		Retry: handlers.Retry{
			Initial: cfg.RetryInitialInterval, Max: cfg.RetryMaxInterval,
			MaxElapsed: cfg.RetryMaxElapsed, MaxAttempts: cfg.RetryMaxAttempts,
		},
		Settle: map[string]time.Duration{
			GatewayPaymentOptions: cfg.PaymentOptionsSettle,
			GatewaySIBS:           cfg.SIBSSettle,
		},
		Breakers:   breakers,
		Limiters:   limiters,
		OutageWait: cfg.GatewayOutageWait,
		Lease:      cfg.LeaseDuration,
		AckWait:    cfg.AckWait,
		Holder:     cfg.WorkerID,
		Source:     "urn:payworker:worker:" + cfg.WorkerID,
		Logger:     log,
		Observer:   a.metrics,
		Tracer:     a.tracer.Tracer("github.com/payworker/payworker"),
	})
	a.worker = worker.New(worker.Config{
		JetStream:       js,
		Streams:         cfg.Streams,
		Handler:         h,
		Concurrency:     cfg.WorkerConcurrency,
		AckWait:         cfg.AckWait,
		MaxDeliver:      cfg.MaxDeliver,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Logger:          log,
		InFlight:        a.metrics.InFlight,
	})
	if cfg.MaxDeliver > 0 {
		// Every NakWithDelay (busy key, store unreachable, shutdown) is a
		// delivery; past MaxDeliver JetStream drops the command with no
		// dead letter and no event. The retry budget is what should end it.
		log.Warn("MAX_DELIVER is limited: a command redelivered that often is dropped by JetStream without a dead letter; -1 is the safe setting",
			slog.Int("max_deliver", cfg.MaxDeliver))
	}
	return nil
}

// serve runs the consumer and the ops endpoints until ctx ends. It returns
// once the worker has stopped fetching and its in-flight commands are done or
// handed back (steps 1 and 2 of shutdown, inside worker.Run).
func (a *app) serve(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	if a.cfg.HTTPAddr != "" && a.cfg.HTTPAddr != "off" {
		addr, wait, err := ops.Serve(gctx, a.cfg.HTTPAddr, ops.Handler(a.reg, a.ready), a.log)
		if err != nil {
			return fmt.Errorf("HTTP_ADDR %s: %w", a.cfg.HTTPAddr, err)
		}
		a.log.Info("ops endpoints", slog.String("addr", addr), slog.String("paths", "/healthz /readyz /metrics"))
		g.Go(wait)
		// Readiness, store reachability and consumer lag as metrics, for
		// alerts; both loops stop with gctx, before NATS is drained.
		g.Go(func() error { a.probe(gctx, probeInterval); return nil })
		g.Go(func() error { a.pollLag(gctx, probeInterval); return nil })
	}
	if a.fleet != nil {
		g.Go(func() error { return a.runFleet(gctx) })
	}
	g.Go(func() error { return a.worker.Run(gctx) })
	a.log.Info("worker started", slog.Int("concurrency", a.cfg.WorkerConcurrency), slog.String("consumer", a.cfg.Streams.Consumer))
	// The start-up lines (what runs where) go out now, not an interval later.
	_ = a.logs.Flush()
	return g.Wait()
}

// ready is /readyz: NATS connected, idempotency store reachable, consumer bound.
func (a *app) ready(ctx context.Context) error {
	if !a.nc.IsConnected() {
		return fmt.Errorf("NATS: %s", a.nc.Status())
	}
	if err := a.store.Ping(ctx); err != nil {
		return fmt.Errorf("idempotency store: %w", err)
	}
	return a.worker.Ready(ctx)
}

// defaultGCPercent is the garbage collector's target when GOGC is not set.
const defaultGCPercent = 200

// drainTimeout bounds the NATS drain and the sandbox's shutdown.
const drainTimeout = 5 * time.Second

// shutdown stops what start began, in the order that loses nothing:
//
//  1. stop fetching: worker.Run, when ctx ends, sends no more pull requests
//     and hands back (NakWithDelay) what was delivered but not started;
//  2. wait for in-flight commands: worker.Run waits up to SHUTDOWN_TIMEOUT,
//     then cancels the rest, which release their keys and Nak; serve returns
//     only after both;
//  3. flush publishes: events and dead letters were stored before their
//     command was acked, but acks and naks are sent without waiting, so
//     push them out now;
//  4. drain NATS: unsubscribe, flush again, close;
//  5. close Redis, which the handlers no longer use;
//
// (the spans not yet exported are flushed between 4 and 5), then stop the
// sandbox gateway and the embedded NATS server, which nothing calls any more. It is also what runs after a failed start, for whatever
// was started.
func (a *app) shutdown() {
	if a.worker != nil {
		a.log.Info("worker stopped: flushing and draining NATS")
	}
	if a.nc != nil {
		if err := a.nc.FlushTimeout(drainTimeout); err != nil { // 3
			a.log.Warn("NATS flush", slog.Any("error", err))
		}
		if err := a.nc.Drain(); err != nil { // 4
			a.log.Warn("NATS drain", slog.Any("error", err))
		}
		select {
		case <-a.ncClosed:
		case <-time.After(drainTimeout + time.Second):
			a.log.Warn("NATS drain did not finish; closing")
			a.nc.Close()
		}
	}
	if a.flushSpans != nil {
		sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		if err := a.flushSpans(sctx); err != nil {
			a.log.Warn("OpenTelemetry: spans not flushed", slog.Any("error", err))
		}
		cancel()
	}
	if a.rdb != nil { // 5
		if err := a.rdb.Close(); err != nil {
			a.log.Warn("Redis close", slog.Any("error", err))
		}
	}
	if a.sandbox != nil {
		sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		_ = a.sandbox(sctx)
		cancel()
	}
	if a.ns != nil {
		a.ns.Shutdown()
		a.ns.WaitForShutdown()
	}
}

// healthcheck is `worker healthcheck URL`: exit 0 when URL answers 200, for
// container health checks in images without curl.
func healthcheck(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a port number", p)
	}
	return host, port, nil
}

// redisLogger sends go-redis's internal messages (dial failures while Redis is
// down) through slog instead of straight to stderr.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}
