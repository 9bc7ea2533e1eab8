package ops

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// serve starts Handler on a free port and returns its base URL; the server
// stops when the test ends.
func serve(t *testing.T, reg prometheus.Gatherer, ready func(context.Context) error) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr, wait, err := Serve(ctx, "127.0.0.1:0", Handler(reg, ready), nil)
	if err != nil {
		t.Fatalf("Serve error = %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := wait(); err != nil {
			t.Errorf("wait() = %v, want nil", err)
		}
	})
	return "http://" + addr
}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "payworker_test_total", Help: "Test counter."})
	reg.MustRegister(c)
	c.Add(3)

	var readyErr atomic.Pointer[error]
	var deadline atomic.Int64
	ready := func(ctx context.Context) error {
		if d, ok := ctx.Deadline(); ok {
			deadline.Store(int64(time.Until(d)))
		}
		if p := readyErr.Load(); p != nil {
			return *p
		}
		return nil
	}
	base := serve(t, reg, ready)

	notReady := errors.New("idempotency store: dial tcp 127.0.0.1:6379: connect: connection refused")
	tests := []struct {
		name     string
		method   string
		path     string
		readyErr error
		wantCode int
		wantBody string // a substring
	}{
		{"healthz", "GET", "/healthz", nil, 200, "ok\n"},
		{"healthz while not ready", "GET", "/healthz", notReady, 200, "ok\n"},
		{"readyz", "GET", "/readyz", nil, 200, "ready\n"},
		{"readyz not ready", "GET", "/readyz", notReady, 503, "not ready: idempotency store: dial tcp 127.0.0.1:6379: connect: connection refused\n"},
		{"metrics", "GET", "/metrics", nil, 200, "payworker_test_total 3"},
		{"post healthz", "POST", "/healthz", nil, 405, ""},
		{"unknown", "GET", "/nope", nil, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.readyErr != nil {
				readyErr.Store(&tt.readyErr)
			} else {
				readyErr.Store(nil)
			}
			code, body := get(t, tt.method, base+tt.path)
			if code != tt.wantCode {
				t.Errorf("%s %s = %d, want %d", tt.method, tt.path, code, tt.wantCode)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("%s %s body = %q, want it to contain %q", tt.method, tt.path, body, tt.wantBody)
			}
		})
	}
	if d := time.Duration(deadline.Load()); d <= 0 || d > ReadyTimeout {
		t.Errorf("ready's context deadline in %v, want within (0, %v]", d, ReadyTimeout)
	}
}

func TestHandlerNilReady(t *testing.T) {
	base := serve(t, prometheus.NewRegistry(), nil)
	if code, body := get(t, "GET", base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("GET /readyz = %d %q, want 200 %q", code, body, "ready\n")
	}
}

func TestServeShutdown(t *testing.T) {
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(200 * time.Millisecond) // still in flight when ctx ends
		io.WriteString(w, "done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, wait, err := Serve(ctx, "127.0.0.1:0", h, nil)
	if err != nil {
		t.Fatalf("Serve error = %v", err)
	}
	if _, port, _ := net.SplitHostPort(addr); port == "0" || port == "" {
		t.Fatalf("Serve bound %q, want a real port", addr)
	}

	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b), err}
	}()
	<-started
	cancel()
	if err := wait(); err != nil {
		t.Errorf("wait() = %v, want nil", err)
	}
	if got := <-res; got.err != nil || got.code != 200 || got.body != "done" {
		t.Errorf("in-flight request = %d %q (%v), want 200 %q", got.code, got.body, got.err, "done")
	}
	if err := wait(); err != nil {
		t.Errorf("second wait() = %v, want nil", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Errorf("dial %s after shutdown succeeded, want refused", addr)
	}
}

func TestServeListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, _, err := Serve(context.Background(), ln.Addr().String(), http.NotFoundHandler(), nil); err == nil {
		t.Errorf("Serve(%s) on a taken port error = nil, want an error", ln.Addr())
	}
}
