package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"

	"github.com/payworker/payworker/internal/sandbox"
)

// shutdownTimeout bounds the wait for requests in flight at shutdown.
const shutdownTimeout = 10 * time.Second

// config is the sandbox command's configuration.
type config struct {
	addr    string
	apiKey  string
	xAPIKey string
	// sibsToken and sibsClientID are what the SIBS endpoints require, if set.
	sibsToken    string
	sibsClientID string
	latency      time.Duration
	seed         int64
	logFormat    string
	logLevel     slog.Level
}

// LogValue logs c without the keys.
func (c config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("addr", c.addr),
		slog.Bool("api_key_set", c.apiKey != ""),
		slog.Bool("x_api_key_set", c.xAPIKey != ""),
		slog.Bool("sibs_token_set", c.sibsToken != ""),
		slog.Bool("sibs_client_id_set", c.sibsClientID != ""),
		slog.Duration("latency", c.latency),
		slog.Int64("seed", c.seed),
	)
}

// parseConfig reads the environment, then the flags, which override it.
// Errors name the variable or flag.
func parseConfig(args []string, getenv func(string) string, output io.Writer) (config, error) {
	c := config{
		addr:    "127.0.0.1:8099",
		apiKey:  getenv("SANDBOX_API_KEY"),
		xAPIKey: getenv("SANDBOX_X_API_KEY"),
		// The SIBS endpoints check the bearer token and x-ibm-client-id
		// only when these are set.
		sibsToken:    getenv("SANDBOX_SIBS_TOKEN"),
		sibsClientID: getenv("SANDBOX_SIBS_CLIENT_ID"),
		seed:         1,
		logFormat:    strings.ToLower(getenv("LOG_FORMAT")),
	}
	if v := getenv("SANDBOX_ADDR"); v != "" {
		c.addr = v
	}
	if v := getenv("SANDBOX_LATENCY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return c, fmt.Errorf("SANDBOX_LATENCY: %q is not a non-negative Go duration such as 50ms", v)
		}
		c.latency = d
	}
	if v := getenv("SANDBOX_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return c, fmt.Errorf("SANDBOX_SEED: %q is not an integer", v)
		}
		c.seed = n
	}
	if v := getenv("LOG_LEVEL"); v != "" {
		if err := c.logLevel.UnmarshalText([]byte(v)); err != nil {
			return c, fmt.Errorf("LOG_LEVEL: %q is not one of debug, info, warn, error", v)
		}
	}
	switch c.logFormat {
	case "", "json", "text":
	default:
		return c, fmt.Errorf("LOG_FORMAT: %q is not json or text", c.logFormat)
	}

	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&c.addr, "addr", c.addr, "listen `address` (env SANDBOX_ADDR)")
	fs.DurationVar(&c.latency, "latency", c.latency, "latency added to every request (env SANDBOX_LATENCY)")
	fs.Int64Var(&c.seed, "seed", c.seed, "seed of the fault dice (env SANDBOX_SEED)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.latency < 0 {
		return c, errors.New("-latency: must not be negative")
	}
	return c, nil
}

// newLogger returns a JSON logger, or a tint text logger for LOG_FORMAT=text
// or, when LOG_FORMAT is unset, for a terminal.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	term := false
	if f, ok := w.(*os.File); ok {
		term = isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
	}
	if format == "text" || format == "" && term {
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: level, NoColor: !term, TimeFormat: time.TimeOnly}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// run serves the sandbox until ctx ends, then shuts it down gracefully and
// returns nil. Once it listens it writes two lines to stdout,
// PAYMENTOPTIONS_BASE_URL=<base> and SIBS_BASE_URL=<base>; logs go to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args[1:], getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.logFormat, cfg.logLevel)

	sb := sandbox.New(sandbox.Options{
		APIKey:       cfg.apiKey,
		XAPIKey:      cfg.xAPIKey,
		SIBSToken:    cfg.sibsToken,
		SIBSClientID: cfg.sibsClientID,
		Latency:      cfg.latency,
		Logger:       log,
		Seed:         cfg.seed,
	})
	base, stop, err := sb.Start(cfg.addr)
	if err != nil {
		return fmt.Errorf("SANDBOX_ADDR %s: %w", cfg.addr, err)
	}
	log.Info("sandbox gateway listening", slog.String("base_url", base), slog.Any("config", cfg))
	if _, err := fmt.Fprintf(stdout, "PAYMENTOPTIONS_BASE_URL=%s\nSIBS_BASE_URL=%s\n", base, sb.SIBSBaseURL()); err != nil {
		log.Warn("cannot write the base URL to stdout", slog.Any("error", err))
	}

	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := stop(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}
