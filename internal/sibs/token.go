package sibs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// DefaultRefreshBefore is how long before its expiry an OAuth2 token is
// replaced when Config.RefreshBefore is zero.
const DefaultRefreshBefore = 30 * time.Second

// errTokenUnchanged says a refresh gave the token that was just refused.
var errTokenUnchanged = errors.New("the token source gave the same token again")

// bearer supplies the bearer token of every request. Caching and expiry are
// oauth2.ReuseTokenSource's; bearer only drops the cache after a 401, once
// for all the requests that were refused with the same token.
type bearer struct {
	mu  sync.Mutex
	src oauth2.TokenSource
	// renew returns a source with an empty cache; nil when the token cannot
	// be renewed (a static token).
	renew func() oauth2.TokenSource
	// secrets are redacted from token errors.
	secrets []string
}

// newBearer picks the token source of cfg: a static token, OAuth2 client
// credentials from TokenURL, or cfg.TokenSource. It returns nil when none is
// configured (a loopback sandbox without authentication).
func newBearer(cfg Config, hc *http.Client, timeout time.Duration) *bearer {
	switch {
	case cfg.TokenSource != nil:
		src := cfg.TokenSource
		return &bearer{src: src, renew: func() oauth2.TokenSource { return src }}
	case cfg.TokenURL != nil:
		early := cfg.RefreshBefore
		if early == 0 {
			early = DefaultRefreshBefore
		}
		// A copy of the calls' client, with its Transport: the token
		// requests reuse the pooled connections (gateway.Transport) rather
		// than opening their own.
		tokenHTTP := *hc
		tokenHTTP.Timeout = timeout
		// The token requests are made outside any one attempt's context,
		// bounded by the client's timeout.
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &tokenHTTP)
		cc := &clientcredentials.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: cfg.TokenURL.String()}
		fetch := fetcher{ctx: ctx, cc: cc}
		renew := func() oauth2.TokenSource { return oauth2.ReuseTokenSourceWithExpiry(nil, fetch, early) }
		return &bearer{src: renew(), renew: renew, secrets: []string{cfg.ClientSecret}}
	case cfg.Token != "":
		return &bearer{src: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: cfg.Token})}
	}
	return nil
}

// fetcher asks the token endpoint for a new token on every call; the
// ReuseTokenSource around it decides when to call.
type fetcher struct {
	ctx context.Context
	cc  *clientcredentials.Config
}

func (f fetcher) Token() (*oauth2.Token, error) { return f.cc.Token(f.ctx) }

// token returns the current token, fetching one when the cached one is
// missing or about to expire.
func (b *bearer) token() (string, error) {
	b.mu.Lock()
	src := b.src
	b.mu.Unlock()
	return b.access(src)
}

// refresh returns a token other than stale, which the gateway refused: the
// one another request already fetched, or a new one. It fails with
// errTokenUnchanged when the source can give no other token.
func (b *bearer) refresh(stale string) (string, error) {
	if b.renew == nil {
		return "", errTokenUnchanged
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if tok, err := b.access(b.src); err == nil && tok != stale {
		return tok, nil
	}
	b.src = b.renew()
	tok, err := b.access(b.src)
	if err != nil {
		return "", err
	}
	if tok == stale {
		return "", errTokenUnchanged
	}
	return tok, nil
}

func (b *bearer) access(src oauth2.TokenSource) (string, error) {
	t, err := src.Token()
	if err != nil {
		return "", b.clean(err)
	}
	if t == nil || t.AccessToken == "" {
		return "", errors.New("bearer token: the token source gave an empty token")
	}
	return t.AccessToken, nil
}

// clean turns a token error into one that carries no secret: the token
// endpoint's body (which oauth2.RetrieveError quotes) is dropped, and the
// client secret is redacted from anything else.
func (b *bearer) clean(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if re.ErrorCode != "" {
			return fmt.Errorf("bearer token: token endpoint answered HTTP %d, error %q", status, re.ErrorCode)
		}
		return fmt.Errorf("bearer token: token endpoint answered HTTP %d", status)
	}
	msg := err.Error()
	for _, s := range b.secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
	}
	return fmt.Errorf("bearer token: %s", msg)
}
