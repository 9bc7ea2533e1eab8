package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxAnswer bounds the answer HTTP.Send reads; the documented answers of the
// gateways are a few KiB.
const maxAnswer = 1 << 20

// Reasons CheckBaseURL refuses a URL for. It returns them as they are, so an
// adapter can tell them apart with errors.Is and wrap them with its own prefix.
var (
	ErrURLScheme      = errors.New("scheme must be https")
	ErrURLUserInfo    = errors.New("must not carry user info")
	ErrURLHost        = errors.New("missing host")
	ErrURLQuery       = errors.New("must not carry a query or fragment")
	ErrURLNotLoopback = errors.New("http:// is accepted only for a loopback host (127.0.0.0/8, ::1, localhost); use https")
)

// CheckBaseURL checks a gateway URL given in an adapter's configuration: it
// must be https, or http with a loopback host (127.0.0.0/8, ::1, localhost
// in any case), have a host, and carry no user info, query or fragment. The
// checks run in that order but for the loopback one, which comes last; the
// first that fails returns its ErrURL* value unwrapped. u must not be nil:
// each adapter says in its own words that a URL is required.
func CheckBaseURL(u *url.URL) error {
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return ErrURLScheme
	case u.User != nil:
		return ErrURLUserInfo
	case u.Host == "" || u.Hostname() == "":
		return ErrURLHost
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return ErrURLQuery
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return ErrURLNotLoopback
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultMaxConns is the number of calls an adapter expects in flight when
// its configuration gives none.
const DefaultMaxConns = 64

// idleConnTimeout closes a connection left idle this long, as
// http.DefaultTransport does.
const idleConnTimeout = 90 * time.Second

// NoRedirects returns the client an adapter sends with: a copy of c, or,
// when c is nil, a client with a Transport sized for maxConns calls in
// flight (DefaultMaxConns when maxConns is not positive). The copy does not
// follow redirects: a 3xx is the answer, to be classified, rather than
// replayed as a GET. c itself is not changed, nor is its transport: a
// caller that gives its own client sizes its own pool.
func NoRedirects(c *http.Client, maxConns int) *http.Client {
	var hc http.Client
	if c != nil {
		hc = *c
	} else {
		hc.Transport = Transport(maxConns)
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// Transport returns a clone of http.DefaultTransport (its proxy, dialer, TLS
// and HTTP/2 settings) for maxConns calls in flight (DefaultMaxConns when
// maxConns is not positive): it keeps up to maxConns idle connections per
// host, so that the calls reuse their connections instead of each opening
// a new one (the default keeps 2 and closes the others after every answer:
// a TCP and a TLS handshake per call, and a socket left in TIME_WAIT).
//
// It also opens at most maxConns connections per host. Without that bound a
// call that starts while no connection is idle dials, even when another
// call's connection comes back a moment later and serves it; the dialled
// one then sits idle, and a burst opens more connections than calls. With
// it such a call waits for the next free connection instead, within its own
// timeout and before anything is written. The caller keeps at most
// maxConns calls in flight, so the wait is that of a connection being
// handed back. The idle pool as a whole holds twice maxConns, room for a
// second host such as an OAuth2 token endpoint.
func Transport(maxConns int) *http.Transport {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = maxConns
	t.MaxIdleConns = 2 * maxConns
	t.MaxConnsPerHost = maxConns
	t.IdleConnTimeout = idleConnTimeout
	return t
}

// HTTP sends an adapter's requests, one attempt each. It is safe for
// concurrent use.
type HTTP struct {
	// Client sends the requests; it should come from NoRedirects.
	Client *http.Client
	// Timeout bounds one attempt, the answer's body included; it must be
	// positive.
	Timeout time.Duration
}

// Exchange is one request and its answer, as HTTP.Send returns it. Status is
// 0 when no answer arrived, and Err says why; Written then says whether the
// request may have reached the gateway (see ClassifyTransport). Err with a
// non-zero Status is a failure to read the answer, one larger than 1 MiB
// included; Body then holds what was read.
type Exchange struct {
	Status  int
	Header  http.Header
	Body    []byte
	Written bool
	Err     error
}

// Send makes one request, method to url, within h.Timeout: with payload as a
// JSON body (no body when payload is nil), the fields of header (which Send
// does not change), "Accept: application/json", and with a payload
// "Content-Type: application/json". It reads at most 1 MiB of the answer.
//
// Written is true from the moment the request has been handed to the
// connection, even when the write then failed part-way (httptrace's
// WroteRequest): from then on the gateway may have received all of it. It is
// false when the request could not be built, dialled or written.
func (h HTTP) Send(ctx context.Context, method, url string, header http.Header, payload []byte) Exchange {
	actx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	var written atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { written.Store(true) },
	})
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, method, url, body)
	if err != nil {
		return Exchange{Err: err}
	}
	maps.Copy(req.Header, header)
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return Exchange{Written: written.Load(), Err: err}
	}
	defer resp.Body.Close()
	ans, err := readAnswer(resp.Body, resp.ContentLength)
	if err == nil && len(ans) > maxAnswer {
		err = fmt.Errorf("answer larger than %d bytes", maxAnswer)
	}
	return Exchange{Status: resp.StatusCode, Header: resp.Header, Body: ans, Written: true, Err: err}
}

// readAnswer reads at most maxAnswer+1 bytes of r, like io.ReadAll but into
// a buffer sized from the answer's Content-Length when it has one (-1 when
// unknown), so that a whole answer costs one allocation instead of a
// doubling series from 512 bytes.
func readAnswer(r io.Reader, contentLength int64) ([]byte, error) {
	size := 512
	if contentLength >= 0 && contentLength <= maxAnswer {
		size = int(contentLength) + 1 // room to read the EOF without growing
	}
	b := make([]byte, 0, size)
	r = io.LimitReader(r, maxAnswer+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// ClassifyTransport maps an attempt of op at the gateway gatewayName that
// got no answer. Before the request was written (dial error, connection
// refused, DNS, TLS handshake) nothing reached the gateway: Retryable, with
// Err "<gatewayName>: <op>: not sent: <err>". After (timeout, reset, EOF) it
// may have been applied: Unknown, with Err "<gatewayName>: <op>: sent, no
// answer: <err>". When ctx is done (the caller's own cancellation or
// deadline) the same rule applies with ctx.Err() in place of err. Err wraps
// the error with %w; HTTPStatus is 0.
func ClassifyTransport(ctx context.Context, gatewayName string, op Operation, written bool, err error) Result {
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = ctxErr
	}
	if written {
		return Result{Outcome: Unknown, Err: fmt.Errorf("%s: %s: sent, no answer: %w", gatewayName, op, err)}
	}
	return Result{Outcome: Retryable, Err: fmt.Errorf("%s: %s: not sent: %w", gatewayName, op, err)}
}

// ParseRetryAfter reads a Retry-After header value at time now: whole
// seconds (surrounding spaces ignored; a value too large for a Duration
// gives the largest Duration) or an HTTP date (any of the three formats of
// http.ParseTime). It returns 0 when v is empty, unreadable, not positive, or
// a date not after now.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		switch {
		case secs <= 0:
			return 0
		case secs > int64(math.MaxInt64/time.Second):
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
