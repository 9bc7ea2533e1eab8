package sibs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
)

const clientSecret = "sekret-client-secret"

// tokenServer is an OAuth2 token endpoint that issues tok-1, tok-2, ... with
// the given lifetime (0: no expires_in), after checking the client
// credentials grant.
type tokenServer struct {
	*httptest.Server
	mu       sync.Mutex
	issued   int
	lifetime int
	fail     bool
}

func startTokenServer(t *testing.T, lifetime int) *tokenServer {
	t.Helper()
	ts := &tokenServer{lifetime: lifetime}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, basic := r.BasicAuth()
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if !basic {
			user, pass = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if ts.fail || r.PostForm.Get("grant_type") != "client_credentials" || user != clientID || pass != clientSecret {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			// A body that quotes the secret must not leak into our errors.
			fmt.Fprintf(w, `{"error":"invalid_client","error_description":"bad secret %s"}`, clientSecret)
			return
		}
		ts.issued++
		ans := map[string]any{"access_token": fmt.Sprintf("tok-%d", ts.issued), "token_type": "Bearer"}
		if ts.lifetime > 0 {
			ans["expires_in"] = ts.lifetime
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.issued
}

// gatewayServer answers 401 to any token in refused, success otherwise, and
// records the bearer token of every request.
type gatewayServer struct {
	*httptest.Server
	mu      sync.Mutex
	refused map[string]bool
	seen    []string
}

func startGateway(t *testing.T, refused ...string) *gatewayServer {
	t.Helper()
	g := &gatewayServer{refused: map[string]bool{}}
	for _, r := range refused {
		g.refused[r] = true
	}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		g.mu.Lock()
		g.seen = append(g.seen, tok)
		refused := g.refused[tok]
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if refused {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"returnStatus":{"statusCode":"E0401","statusMsg":"Unauthorized"}}`))
			return
		}
		_, _ = w.Write([]byte(answerJSON("000", "Success", "CAPT", "1", "EUR")))
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *gatewayServer) tokens() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.seen, " ")
}

func oauthClient(t *testing.T, g *gatewayServer, ts *tokenServer) *Client {
	t.Helper()
	return newClient(t, Config{BaseURL: mustURL(t, g.URL), ClientID: clientID, TerminalID: terminal,
		TokenURL: mustURL(t, ts.URL), ClientSecret: clientSecret, RefreshBefore: 30 * time.Second})
}

var captureReq = gateway.Request{Operation: gateway.Capture, TransactionID: "t", Amount: 100, Currency: "EUR", Reference: "k",
	OriginalTime: time.Date(2022, 5, 29, 17, 23, 36, 0, time.UTC)}

func TestOAuthToken(t *testing.T) {
	tests := []struct {
		name       string
		lifetime   int
		refused    []string
		calls      int
		want       gateway.Outcome
		wantTokens string
		wantIssued int
	}{
		// One token serves every call while it is fresh.
		{"reused while fresh", 3600, nil, 3, gateway.Succeeded, "tok-1 tok-1 tok-1", 1},
		// A token within RefreshBefore of its expiry is replaced before use.
		{"refreshed before expiry", 10, nil, 3, gateway.Succeeded, "tok-1 tok-2 tok-3", 3},
		// A 401 drops the cached token: one refresh, one resend.
		{"401 refreshes once", 3600, []string{"tok-1"}, 2, gateway.Succeeded, "tok-1 tok-2 tok-2", 2},
		// A 401 with the fresh token too is final: no second refresh.
		{"401 twice is final", 3600, []string{"tok-1", "tok-2"}, 1, gateway.Declined, "tok-1 tok-2", 2},
		// No expires_in: the token is kept until a 401.
		{"no expiry", 0, nil, 2, gateway.Succeeded, "tok-1 tok-1", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startTokenServer(t, tt.lifetime)
			g := startGateway(t, tt.refused...)
			c := oauthClient(t, g, ts)
			var res gateway.Result
			for range tt.calls {
				res = c.Execute(context.Background(), captureReq)
			}
			if res.Outcome != tt.want {
				t.Errorf("last Execute = %v (%s %v), want %v", res.Outcome, res.Message, res.Err, tt.want)
			}
			if got := g.tokens(); got != tt.wantTokens {
				t.Errorf("tokens the gateway saw = %q, want %q", got, tt.wantTokens)
			}
			if got := ts.count(); got != tt.wantIssued {
				t.Errorf("tokens issued = %d, want %d", got, tt.wantIssued)
			}
		})
	}
}

// TestOAuthConcurrent401: many requests refused with the same stale token
// cause one refresh, not one each.
func TestOAuthConcurrent401(t *testing.T) {
	ts := startTokenServer(t, 3600)
	g := startGateway(t, "tok-1")
	c := oauthClient(t, g, ts)
	if tok, err := c.tokens.token(); err != nil || tok != "tok-1" {
		t.Fatalf("first token = %q, %v; want tok-1", tok, err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := c.Execute(context.Background(), captureReq); res.Outcome != gateway.Succeeded {
				t.Errorf("Execute = %v, want succeeded", res.Outcome)
			}
		}()
	}
	wg.Wait()
	if got := ts.count(); got != 2 {
		t.Errorf("tokens issued = %d, want 2 (one refresh for all)", got)
	}
}

func TestStaticToken401(t *testing.T) {
	g := startGateway(t, token)
	c := newClient(t, Config{BaseURL: mustURL(t, g.URL), ClientID: clientID, TerminalID: terminal, Token: token})
	res := c.Execute(context.Background(), captureReq)
	if res.Outcome != gateway.Declined || res.HTTPStatus != http.StatusUnauthorized {
		t.Errorf("Execute = %v HTTP %d, want declined 401", res.Outcome, res.HTTPStatus)
	}
	if got := g.tokens(); got != token {
		t.Errorf("requests = %q, want one (a static token cannot be refreshed)", got)
	}
}

// TestTokenEndpointFails: no token means nothing was sent: retryable, and
// the error quotes neither the secret nor the endpoint's body.
func TestTokenEndpointFails(t *testing.T) {
	ts := startTokenServer(t, 3600)
	ts.fail = true
	g := startGateway(t)
	c := oauthClient(t, g, ts)
	res := c.Execute(context.Background(), captureReq)
	if res.Outcome != gateway.Retryable || res.Err == nil {
		t.Fatalf("Execute = %v (%v), want retryable with an error", res.Outcome, res.Err)
	}
	if msg := res.Err.Error(); strings.Contains(msg, clientSecret) || !strings.Contains(msg, "401") {
		t.Errorf("error %q: want HTTP 401 named and no secret", msg)
	}
	if got := g.tokens(); got != "" {
		t.Errorf("the gateway saw %q, want no request", got)
	}
	if _, err := c.Status(context.Background(), captureReq); err == nil || strings.Contains(err.Error(), clientSecret) {
		t.Errorf("Status error = %v, want one without the secret", err)
	}

	// The endpoint recovers: the next attempt gets a token.
	ts.mu.Lock()
	ts.fail = false
	ts.mu.Unlock()
	if res := c.Execute(context.Background(), captureReq); res.Outcome != gateway.Succeeded {
		t.Errorf("Execute after recovery = %v (%v), want succeeded", res.Outcome, res.Err)
	}
}

// TestRefreshFailsAfter401: a 401, then a failing refresh, is retryable:
// the operation was refused for the token, not on its merits.
func TestRefreshFailsAfter401(t *testing.T) {
	ts := startTokenServer(t, 3600)
	g := startGateway(t, "tok-1")
	c := oauthClient(t, g, ts)
	if _, err := c.tokens.token(); err != nil {
		t.Fatal(err)
	}
	ts.mu.Lock()
	ts.fail = true
	ts.mu.Unlock()
	if res := c.Execute(context.Background(), captureReq); res.Outcome != gateway.Retryable {
		t.Errorf("Execute = %v (%v), want retryable", res.Outcome, res.Err)
	}
}
