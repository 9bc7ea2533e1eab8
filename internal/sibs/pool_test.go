package sibs

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/sandbox"
)

// TestClientReusesConnections makes 1,000 captures with 64 in flight
// through a Client built with MaxConns 64 and OAuth2 tokens replaced every
// few milliseconds. The sandbox and the token endpoint share one server,
// which counts the connections it accepts: the token requests go through
// the captures' pool, and all of them open at most 64 connections, kept
// open (the internal/gateway test of the same name explains the allowance
// for connections net/http closes on a loaded machine).
func TestClientReusesConnections(t *testing.T) {
	const calls, workers = 1000, 64
	sb := sandbox.New(sandbox.Options{SIBSToken: token, SIBSClientID: clientID, Latency: time.Millisecond})
	var tokens atomic.Int64
	mux := http.NewServeMux()
	mux.Handle("/", sb.Handler())
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		tokens.Add(1)
		w.Header().Set("Content-Type", "application/json")
		// With RefreshBefore below, good for 5 ms.
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":1}`, token)
	})
	var mu sync.Mutex
	var accepted, closed int
	srv := httptest.NewUnstartedServer(mux)
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
	c := newClient(t, Config{BaseURL: mustURL(t, srv.URL), ClientID: clientID, TerminalID: terminal,
		TokenURL: mustURL(t, srv.URL+"/oauth/token"), ClientSecret: clientSecret,
		RefreshBefore: time.Second - 5*time.Millisecond, Timeout: 10 * time.Second, MaxConns: workers})
	reqs := make([]gateway.Request, calls)
	for i := range reqs {
		auth := sb.Authorise(merchant, 1000, "EUR")
		at, _ := sb.Authorisation(auth)
		reqs[i] = gateway.Request{Operation: gateway.Capture, MerchantID: merchant, TransactionID: auth,
			Amount: 1000, Currency: "EUR", Reference: fmt.Sprintf("cap-%d", i), OriginalTime: at.AuthorisedAt}
	}

	next := make(chan gateway.Request)
	failed := make(chan gateway.Result, calls)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for req := range next {
				if res := c.Execute(context.Background(), req); res.Outcome != gateway.Succeeded {
					failed <- res
				}
			}
		})
	}
	for _, req := range reqs {
		next <- req
	}
	close(next)
	wg.Wait()
	close(failed)
	for res := range failed {
		t.Fatalf("capture = %+v, want Succeeded", res)
	}
	if n := tokens.Load(); n < 2 {
		t.Fatalf("%d token requests, want the token replaced during the run", n)
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
	t.Logf("%d captures and %d token requests, %d in flight: %d connections opened, %d closed", calls, tokens.Load(), workers, opened, shut)
	if opened > workers+shut || shut > calls/100 {
		t.Errorf("%d captures and %d token requests, %d in flight: %d connections opened, %d closed; want at most %d open and at most %d closed",
			calls, tokens.Load(), workers, opened, shut, workers, calls/100)
	}
}
