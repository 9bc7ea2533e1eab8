package paymentoptions

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/sandbox"
)

// TestClientReusesConnections makes 1,000 captures with 64 in flight
// through a Client built with MaxConns 64, against the sandbox, and counts
// the connections the sandbox accepts: at most 64, kept open (the
// internal/gateway test of the same name explains the allowance for
// connections net/http closes on a loaded machine).
func TestClientReusesConnections(t *testing.T) {
	const calls, workers = 1000, 64
	sb := sandbox.New(sandbox.Options{APIKey: apiKey, XAPIKey: xAPIKey, Latency: time.Millisecond})
	var mu sync.Mutex
	var accepted, closed int
	srv := httptest.NewUnstartedServer(sb.Handler())
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			accepted++
		case http.StateClosed, http.StateHijacked:
			closed++
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: mustURL(t, srv.URL+"/api/v1"), APIKey: apiKey, XAPIKey: xAPIKey, Timeout: 10 * time.Second, MaxConns: workers})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	auths := make([]string, calls)
	for i := range auths {
		auths[i] = sb.Authorise(merchant, 1000, "JPY")
	}

	next := make(chan string)
	failed := make(chan gateway.Result, calls)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for auth := range next {
				req := gateway.Request{Operation: gateway.Capture, MerchantID: merchant, TransactionID: auth, Amount: 1000}
				if res := c.Execute(context.Background(), req); res.Outcome != gateway.Succeeded {
					failed <- res
				}
			}
		})
	}
	for _, auth := range auths {
		next <- auth
	}
	close(next)
	wg.Wait()
	close(failed)
	for res := range failed {
		t.Fatalf("capture = %+v, want Succeeded", res)
	}

	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return accepted, closed
	}
	opened, shut := counts()
	for deadline := time.Now().Add(time.Second); opened > workers+shut && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the server may see a close late
		opened, shut = counts()
	}
	if opened > workers+shut || shut > calls/100 {
		t.Errorf("%d captures, %d in flight: %d connections opened, %d closed; want at most %d open and at most %d closed",
			calls, workers, opened, shut, workers, calls/100)
	}
}
