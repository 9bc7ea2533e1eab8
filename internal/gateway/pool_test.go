package gateway

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// connCounter counts the connections a test server accepts and sees
// closed.
type connCounter struct {
	mu               sync.Mutex
	accepted, closed int
}

func (c *connCounter) state(_ net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateNew:
		c.accepted++
	case http.StateClosed, http.StateHijacked:
		c.closed++
	}
}

func (c *connCounter) counts() (accepted, closed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accepted, c.closed
}

// countingServer serves h on a loopback port and returns its URL and the
// counter of its connections.
func countingServer(t *testing.T, h http.Handler) (string, *connCounter) {
	t.Helper()
	var c connCounter
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = c.state
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, &c
}

// checkReuse fails t unless calls made at most inFlight at once opened at
// most inFlight connections and kept them open.
//
// One allowance keeps the test from failing on a loaded machine: net/http
// drops a connection on its own, whatever the pool, when the goroutine that
// wrote a request has not said so 50 ms after the answer was read
// (persistConn.wroteRequest), and the next call dials a new one. So the
// bound is inFlight plus the connections closed meanwhile, and those must
// be rare: at most one in a hundred calls. The default transport's pool of
// 2 closes most connections after their answer, and fails both.
func checkReuse(t *testing.T, c *connCounter, calls, inFlight int) {
	t.Helper()
	accepted, closed := c.counts()
	// The server may see a close after the connection that replaced it.
	for deadline := time.Now().Add(time.Second); accepted > inFlight+closed && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		accepted, closed = c.counts()
	}
	t.Logf("%d calls, %d in flight: %d connections opened, %d closed", calls, inFlight, accepted, closed)
	if accepted > inFlight+closed || closed > calls/100 {
		t.Errorf("%d calls, %d in flight: %d connections opened, %d closed; want at most %d open and at most %d closed",
			calls, inFlight, accepted, closed, inFlight, calls/100)
	}
}

// inFlight runs call n times, at most workers at once, and waits for all.
func inFlight(n, workers int, call func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				call(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// TestSendReusesConnections is the contract of the pool NoRedirects sizes:
// 1,000 calls with 64 in flight open at most 64 connections, and reuse
// them.
func TestSendReusesConnections(t *testing.T) {
	const calls, workers = 1000, 64
	url, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond) // keep the calls overlapping
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	h := HTTP{Client: NoRedirects(nil, workers), Timeout: 10 * time.Second}
	var failed atomic.Int64
	inFlight(calls, workers, func(int) {
		if ex := h.Send(context.Background(), http.MethodPost, url+"/op", nil, []byte(`{}`)); ex.Status != http.StatusCreated || ex.Err != nil {
			failed.Add(1)
		}
	})
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed", n, calls)
	}
	checkReuse(t, conns, calls, workers)
}

func TestTransport(t *testing.T) {
	def := http.DefaultTransport.(*http.Transport)
	tests := []struct {
		maxConns, want int
	}{
		{0, DefaultMaxConns},
		{-1, DefaultMaxConns},
		{1, 1},
		{1024, 1024},
	}
	for _, tt := range tests {
		tr := Transport(tt.maxConns)
		if tr == def {
			t.Fatalf("Transport(%d) is http.DefaultTransport, want a clone", tt.maxConns)
		}
		if tr.MaxIdleConnsPerHost != tt.want || tr.MaxIdleConns != 2*tt.want || tr.MaxConnsPerHost != tt.want || tr.IdleConnTimeout != 90*time.Second {
			t.Errorf("Transport(%d): MaxIdleConnsPerHost %d, MaxIdleConns %d, MaxConnsPerHost %d, IdleConnTimeout %s; want %d, %d, %d, 90s",
				tt.maxConns, tr.MaxIdleConnsPerHost, tr.MaxIdleConns, tr.MaxConnsPerHost, tr.IdleConnTimeout, tt.want, 2*tt.want, tt.want)
		}
		if !tr.ForceAttemptHTTP2 || tr.TLSHandshakeTimeout != def.TLSHandshakeTimeout || tr.Proxy == nil || tr.DialContext == nil {
			t.Errorf("Transport(%d) lost the default transport's HTTP/2, TLS, proxy or dialer settings", tt.maxConns)
		}
	}
	c := NoRedirects(nil, 7)
	if tr, ok := c.Transport.(*http.Transport); !ok || tr.MaxIdleConnsPerHost != 7 {
		t.Errorf("NoRedirects(nil, 7).Transport = %v, want a Transport keeping 7 idle connections per host", c.Transport)
	}
	given := &http.Client{Transport: def}
	if c := NoRedirects(given, 7); c.Transport != def || def.MaxIdleConnsPerHost == 7 {
		t.Errorf("NoRedirects(given, 7) replaced or changed the given client's transport")
	}
}
