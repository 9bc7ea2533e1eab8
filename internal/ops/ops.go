// Package ops serves the operator's HTTP endpoints: /healthz (liveness),
// /readyz (readiness) and /metrics (Prometheus).
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyTimeout bounds one call of the readiness check.
const ReadyTimeout = 2 * time.Second

// ShutdownTimeout bounds Serve's graceful shutdown; connections still open
// after it are closed.
const ShutdownTimeout = 5 * time.Second

// Handler serves:
//
//   - GET /healthz: 200 "ok" while the process can answer at all;
//   - GET /readyz: ready's verdict within ReadyTimeout, 200 "ready" or 503
//     "not ready: <error>" (a nil ready is always ready);
//   - GET /metrics: the metrics gathered from reg.
func Handler(reg prometheus.Gatherer, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
			defer cancel()
			if err := ready(ctx); err != nil {
				text(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
		}
		text(w, http.StatusOK, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

func text(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, body)
}

// Serve listens on addr (":0" picks a free port) and serves h until ctx is
// done, then shuts down gracefully within ShutdownTimeout. It returns the
// bound address, and wait, which blocks until the server has stopped and
// returns why it stopped abnormally (nil after a shutdown caused by ctx). A
// listen error is returned at once. wait is safe to call more than once.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (boundAddr string, wait func() error, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	done := make(chan struct{})
	var result error
	go func() {
		defer close(done)
		select {
		case err := <-served:
			// Serve failed on its own; ctx has not asked for this.
			result = fmt.Errorf("serve %s: %w", ln.Addr(), err)
			return
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
			result = fmt.Errorf("shut down %s: %w", ln.Addr(), err)
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			result = errors.Join(result, fmt.Errorf("serve %s: %w", ln.Addr(), err))
		}
	}()

	wait = func() error {
		<-done
		return result
	}
	return ln.Addr().String(), wait, nil
}
