// Package sibs is the adapter for SIBS Stargate: capture and cancellation
// (void), full or partial, of a card authorisation, and the status call that
// reconciles an attempt whose outcome is unknown (SPEC §1, §5).
//
// Amounts are integer minor units inside the system and decimal major units
// on the wire, converted exactly with the ISO 4217 exponent of the currency
// (gateway.FormatMinor, gateway.ParseMajor); a currency outside the table is
// Declined before any request. returnStatus.statusCode "000" only says the
// request was processed: the outcome is paymentStatus (see classify).
//
// Every attempt returns a gateway.Result whose Outcome is the only input the
// retry, reconcile and ack decisions need. The adapter never retries by
// itself, except once after a 401 with a refreshed token, and never logs. The
// bearer token, the OAuth2 client secret and card data appear in no error and
// no formatted or logged Config or Client.
package sibs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/payworker/payworker/internal/gateway"
)

// DefaultTimeout bounds one request when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// DefaultChannel is merchant.channel when Config.Channel is empty.
const DefaultChannel = "web"

// Descriptions sent when the command has no notes.
const (
	CancellationDescription = "This is a cancellation request"
	CaptureDescription      = "This is a capture request"
)

const (
	paymentsPath = "/api/v1/payments/"
	// maxDescription is transaction.description's documented limit.
	maxDescription = 70
	// timestampLayout is the seed's ISO date-time, in UTC with milliseconds.
	timestampLayout = "2006-01-02T15:04:05.000Z"
	redacted        = "[REDACTED]"
)

// ErrUnexpectedAnswer is wrapped by Status errors, and by the errors of an
// operation that needed the status first, for an answer outside the
// documented ones (a status other than 2xx or 404, a statusCode other than
// "000", a paymentType other than AUTH, an undecodable body). The caller
// asks again later.
var ErrUnexpectedAnswer = errors.New("unexpected answer")

// Config configures a Client.
type Config struct {
	// BaseURL is the Stargate host root, such as
	// https://stargate-cer.qly.site1.sibs.pt; requests go to BaseURL +
	// "/api/v1/payments/{transactionID}/<op>". A base that already ends in
	// /api/v1 (the sandbox's) is accepted and the segment is not repeated.
	// It must be https, or http with a loopback host (127.0.0.0/8, ::1,
	// localhost), and carry no user info, query or fragment.
	BaseURL *url.URL
	// AllowHTTP accepts an http BaseURL and TokenURL whatever their host
	// (the worker's GATEWAY_ALLOW_HTTP, for a sandbox on another host of a
	// demo network). Tokens and card data then cross that network in clear.
	AllowHTTP bool
	// ClientID is sent as x-ibm-client-id on every call, and is the OAuth2
	// client id with TokenURL. Required for an https BaseURL.
	ClientID string
	// TerminalID is merchant.terminalId, 1 to 10 digits; required.
	TerminalID string
	// Channel is merchant.channel; empty means DefaultChannel ("web").
	Channel string

	// The bearer token comes from exactly one of: Token, a static token
	// (SIBS_TOKEN); TokenURL with ClientSecret, an OAuth2 client-credentials
	// token (golang.org/x/oauth2/clientcredentials), cached and replaced
	// RefreshBefore its expiry; or TokenSource, any other source. After a 401
	// the token is refreshed (a source's Token is asked again) and the request
	// resent once. One is required for an https BaseURL; a loopback sandbox
	// may run without, and then no Authorization header is sent.
	Token         string
	TokenURL      *url.URL
	ClientSecret  string
	TokenSource   oauth2.TokenSource
	RefreshBefore time.Duration

	// HTTPClient sends the requests, and the token requests; nil means a
	// client of its own. It is copied, and the copy does not follow
	// redirects.
	HTTPClient *http.Client
	// MaxConns is how many calls may be in flight at once (the worker's
	// concurrency): a client of its own opens at most that many
	// connections per host and keeps them open for reuse; a call beyond
	// them waits for a free one. 0 means gateway.DefaultMaxConns. Unused
	// with HTTPClient.
	MaxConns int
	// Timeout bounds one request, answer included, and one token request;
	// 0 means DefaultTimeout.
	Timeout time.Duration
	// Now is the clock of transaction.transactionTimestamp; nil is time.Now.
	Now func() time.Time
}

// String describes c with the token and client secret redacted.
func (c Config) String() string {
	return fmt.Sprintf("sibs.Config{BaseURL: %s, ClientID: %s, TerminalID: %s, Token: %s, TokenURL: %s, ClientSecret: %s, Timeout: %s}",
		redactURL(c.BaseURL), c.ClientID, c.TerminalID, redact(c.Token), redactURL(c.TokenURL), redact(c.ClientSecret), c.Timeout)
}

// Format prints String for every verb, so no verb prints a secret.
func (c Config) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue logs c with the secrets redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", redactURL(c.BaseURL)),
		slog.String("client_id", c.ClientID),
		slog.String("terminal_id", c.TerminalID),
		slog.String("token", redact(c.Token)),
		slog.String("oauth_url", redactURL(c.TokenURL)),
		slog.String("client_secret", redact(c.ClientSecret)),
		slog.Duration("timeout", c.Timeout),
	)
}

// MarshalJSON encodes c with the secrets redacted.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		BaseURL      string        `json:"base_url"`
		ClientID     string        `json:"client_id"`
		TerminalID   string        `json:"terminal_id"`
		Token        string        `json:"token"`
		OAuthURL     string        `json:"oauth_url"`
		ClientSecret string        `json:"client_secret"`
		Timeout      time.Duration `json:"timeout"`
	}{redactURL(c.BaseURL), c.ClientID, c.TerminalID, redact(c.Token), redactURL(c.TokenURL), redact(c.ClientSecret), c.Timeout})
}

func redact(secret string) string {
	if secret == "" {
		return `""`
	}
	return redacted
}

func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Redacted()
}

// Client calls SIBS Stargate. It is safe for concurrent use.
type Client struct {
	base       string
	clientID   string
	terminalID string
	channel    string
	tokens     *bearer
	http       gateway.HTTP
	now        func() time.Time
}

// New checks cfg and returns a Client. It makes no request (an OAuth2 token
// is fetched by the first call).
func New(cfg Config) (*Client, error) {
	if err := checkURL("base URL", cfg.BaseURL, cfg.AllowHTTP); err != nil {
		return nil, err
	}
	if cfg.TokenURL != nil {
		if err := checkURL("token URL", cfg.TokenURL, cfg.AllowHTTP); err != nil {
			return nil, err
		}
	}
	terminal, err := strconv.ParseUint(cfg.TerminalID, 10, 64)
	if err != nil || len(cfg.TerminalID) > 10 || !digits(cfg.TerminalID) {
		return nil, fmt.Errorf("sibs: terminal id %q must be 1 to 10 digits", cfg.TerminalID)
	}
	sources := 0
	for _, set := range []bool{cfg.Token != "", cfg.TokenURL != nil || cfg.ClientSecret != "", cfg.TokenSource != nil} {
		if set {
			sources++
		}
	}
	https := cfg.BaseURL.Scheme == "https"
	switch {
	case sources > 1:
		return nil, errors.New("sibs: set one token source: Token, TokenURL with ClientSecret, or TokenSource")
	case cfg.TokenURL != nil && cfg.ClientSecret == "":
		return nil, errors.New("sibs: ClientSecret is required with TokenURL")
	case cfg.TokenURL == nil && cfg.ClientSecret != "":
		return nil, errors.New("sibs: TokenURL is required with ClientSecret")
	case cfg.TokenURL != nil && cfg.ClientID == "":
		return nil, errors.New("sibs: ClientID is required with TokenURL (it is the OAuth2 client id)")
	case https && sources == 0:
		return nil, errors.New("sibs: a token (Token, TokenURL with ClientSecret, or TokenSource) is required for an https gateway")
	case https && cfg.ClientID == "":
		return nil, errors.New("sibs: ClientID is required for an https gateway")
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("sibs: timeout %s is negative", cfg.Timeout)
	case cfg.RefreshBefore < 0:
		return nil, fmt.Errorf("sibs: refresh-before %s is negative", cfg.RefreshBefore)
	case cfg.MaxConns < 0:
		return nil, fmt.Errorf("sibs: max conns %d is negative", cfg.MaxConns)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	hc := gateway.NoRedirects(cfg.HTTPClient, cfg.MaxConns)
	channel := cfg.Channel
	if channel == "" {
		channel = DefaultChannel
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	base := strings.TrimRight(cfg.BaseURL.String(), "/")
	base = strings.TrimSuffix(base, "/api/v1")
	return &Client{
		base:       base,
		clientID:   cfg.ClientID,
		terminalID: strconv.FormatUint(terminal, 10),
		channel:    channel,
		tokens:     newBearer(cfg, hc, timeout),
		http:       gateway.HTTP{Client: hc, Timeout: timeout},
		now:        now,
	}, nil
}

// checkURL checks a configured URL with gateway.CheckBaseURL; allowHTTP
// lets an http URL have any host.
func checkURL(what string, u *url.URL, allowHTTP bool) error {
	if u == nil {
		return fmt.Errorf("sibs: %s is required", what)
	}
	if err := gateway.CheckBaseURL(u); err != nil && !(allowHTTP && errors.Is(err, gateway.ErrURLNotLoopback)) {
		return fmt.Errorf("sibs: %s %q: %w", what, u.Redacted(), err)
	}
	return nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// String describes c without its secrets.
func (c Client) String() string {
	return fmt.Sprintf("sibs.Client{BaseURL: %s, ClientID: %s, TerminalID: %s, Token: %s, Timeout: %s}",
		c.base, c.clientID, c.terminalID, redacted, c.http.Timeout)
}

// Format prints String for every verb.
func (c Client) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue logs c without its secrets.
func (c Client) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("gateway", c.Name()),
		slog.String("base_url", c.base),
		slog.String("terminal_id", c.terminalID),
		slog.Duration("timeout", c.http.Timeout),
	)
}

// Name returns "sibs", the gateway's name in commands and events.
func (Client) Name() string { return "sibs" }

// Execute runs req.Operation (capture or void) once. Any other operation is
// Declined without a request.
func (c *Client) Execute(ctx context.Context, req gateway.Request) gateway.Result {
	switch req.Operation {
	case gateway.Capture:
		return c.Capture(ctx, req)
	case gateway.Void:
		return c.Void(ctx, req)
	}
	return gateway.Result{Outcome: gateway.Declined, Message: fmt.Sprintf("sibs: unsupported operation %q", req.Operation)}
}

// Capture captures req.Amount (minor units of req.Currency) of the
// authorisation req.TransactionID, once: POST
// /api/v1/payments/{id}/capture. Several partial captures may follow each
// other up to the authorised amount. The body quotes the authorisation's
// time: req.OriginalTime, or, when it is zero, the time the status call
// gives (one GET before the POST). A request that breaks the limits (no
// transaction id or reference, amount ≤ 0, a currency outside the ISO 4217
// table) is Declined unsent; a status call that fails is Retryable, since
// nothing was sent.
func (c *Client) Capture(ctx context.Context, req gateway.Request) gateway.Result {
	if msg := check(gateway.Capture, req); msg != "" {
		return gateway.Result{Outcome: gateway.Declined, Message: msg}
	}
	if _, err := gateway.FormatMinor(req.Amount, req.Currency); err != nil {
		return gateway.Result{Outcome: gateway.Declined, Message: fmt.Sprintf("sibs: capture: amount: %v", err)}
	}
	if req.OriginalTime.IsZero() {
		auth, res, ok := c.lookup(ctx, gateway.Capture, req)
		if !ok {
			return res
		}
		req.OriginalTime = auth.at
	}
	return c.operation(ctx, gateway.Capture, req)
}

// Void cancels the authorisation req.TransactionID, once: POST
// /api/v1/payments/{id}/cancellation with the seed's body. A positive
// req.Amount cancels that part of it (req.Currency is then required); zero
// cancels all that is still open, the authorised amount less what is
// captured or cancelled, as the status call gives it. The body quotes the
// authorisation's time: req.OriginalTime, or the status call's. So a void
// without an amount or without OriginalTime makes one GET before the POST;
// when that GET fails the result is Retryable (nothing was sent), and when
// nothing is left open it is Declined unsent.
func (c *Client) Void(ctx context.Context, req gateway.Request) gateway.Result {
	if msg := check(gateway.Void, req); msg != "" {
		return gateway.Result{Outcome: gateway.Declined, Message: msg}
	}
	if req.Amount > 0 || req.Currency != "" {
		if _, err := gateway.FormatMinor(req.Amount, req.Currency); err != nil {
			return gateway.Result{Outcome: gateway.Declined, Message: fmt.Sprintf("sibs: void: amount: %v", err)}
		}
	}
	if req.OriginalTime.IsZero() || req.Amount == 0 {
		auth, res, ok := c.lookup(ctx, gateway.Void, req)
		if !ok {
			return res
		}
		if req.OriginalTime.IsZero() {
			req.OriginalTime = auth.at
		}
		if req.Currency != "" && auth.currency != "" && req.Currency != auth.currency {
			return gateway.Result{Outcome: gateway.Declined, Message: fmt.Sprintf("sibs: void: currency %s is not the authorisation's %s", req.Currency, auth.currency)}
		}
		if req.Amount == 0 {
			open := auth.amount - auth.captured - auth.cancelled
			if open <= 0 {
				return gateway.Result{Outcome: gateway.Declined, Currency: auth.currency,
					Message: fmt.Sprintf("sibs: void: nothing left to cancel (authorised %d, captured %d, cancelled %d)", auth.amount, auth.captured, auth.cancelled)}
			}
			req.Amount, req.Currency = open, auth.currency
		}
	}
	return c.operation(ctx, gateway.Void, req)
}

func check(op gateway.Operation, req gateway.Request) string {
	switch {
	case req.TransactionID == "" || len(req.TransactionID) > 64:
		return "sibs: transaction id must be 1 to 64 characters"
	case req.Reference == "":
		return "sibs: the reference (merchantTransactionId) is required"
	case op == gateway.Capture && req.Amount <= 0:
		return "sibs: capture amount must be greater than 0"
	case req.Amount < 0:
		return "sibs: void amount must not be negative"
	}
	return ""
}

// opPath is the path of an operation on the authorisation id.
func opPath(op gateway.Operation, id string) string {
	name := "capture"
	if op == gateway.Void {
		name = "cancellation"
	}
	return paymentsPath + url.PathEscape(id) + "/" + name
}

// encodeBody builds the JSON body of a capture or cancellation of req, in the
// seed's key order and one-space indentation, at time now. req.Amount and
// req.Currency must be set and req.OriginalTime non-zero.
func (c *Client) encodeBody(op gateway.Operation, req gateway.Request, now time.Time) ([]byte, error) {
	value, err := gateway.FormatMinor(req.Amount, req.Currency)
	if err != nil {
		return nil, err
	}
	description := clipRunes(req.Notes, maxDescription)
	if description == "" {
		description = CaptureDescription
		if op == gateway.Void {
			description = CancellationDescription
		}
	}
	body := operationBody{
		Merchant: merchantBody{
			TerminalID:            json.Number(c.terminalID),
			Channel:               c.channel,
			MerchantTransactionID: req.Reference,
		},
		Transaction: transactionBody{
			TransactionTimestamp: now.UTC().Format(timestampLayout),
			Description:          description,
			Amount:               money{Value: json.Number(value), Currency: req.Currency},
			OriginalTransaction: originalTransaction{
				ID:       req.TransactionID,
				Datetime: req.OriginalTime.UTC().Format(timestampLayout),
			},
		},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(body); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func clipRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

func (c *Client) operation(ctx context.Context, op gateway.Operation, req gateway.Request) gateway.Result {
	payload, err := c.encodeBody(op, req, c.now())
	if err != nil {
		return gateway.Result{Outcome: gateway.Declined, Message: fmt.Sprintf("sibs: %s: %v", op, err)}
	}
	ex := c.send(ctx, http.MethodPost, opPath(op, req.TransactionID), payload)
	var res gateway.Result
	switch {
	case ex.tokenErr != nil:
		res = gateway.Result{Outcome: gateway.Retryable, HTTPStatus: ex.Status,
			Err: fmt.Errorf("sibs: %s: not sent: %w", op, ex.tokenErr)}
	case ex.Status == 0:
		res = gateway.ClassifyTransport(ctx, "sibs", op, ex.Written, ex.Err)
	case ex.Err != nil:
		res = gateway.Result{Outcome: gateway.Unknown, HTTPStatus: ex.Status,
			Err: fmt.Errorf("sibs: %s: HTTP %d: %w", op, ex.Status, ex.Err)}
	default:
		res = classify(op, ex.Status, ex.Header.Get("Retry-After"), ex.Body, time.Now())
	}
	if res.Amount == 0 {
		res.Amount = req.Amount
	}
	if res.Currency == "" {
		res.Currency = req.Currency
	}
	return res
}

// authInfo is what an operation needs from the status call.
type authInfo struct {
	at                          time.Time
	amount, captured, cancelled int64
	currency                    string
}

// lookup reads the authorisation before an operation that needs its time or
// open amount. ok is false when the operation must not be sent; res then
// says why: Retryable when the status could not be read, Declined when the
// gateway does not know the transaction.
func (c *Client) lookup(ctx context.Context, op gateway.Operation, req gateway.Request) (authInfo, gateway.Result, bool) {
	st, err := c.Status(ctx, req)
	switch {
	case err != nil:
		return authInfo{}, gateway.Result{Outcome: gateway.Retryable,
			Err: fmt.Errorf("sibs: %s: not sent: reading the authorisation first: %w", op, err)}, false
	case st.State == gateway.StateNotFound:
		res := st.Result
		res.Outcome = gateway.Declined
		res.Message = "sibs: " + string(op) + ": the gateway does not know the transaction"
		return authInfo{}, res, false
	case st.AuthorisedAt.IsZero():
		return authInfo{}, gateway.Result{Outcome: gateway.Retryable,
			Err: fmt.Errorf("sibs: %s: not sent: the status gives no transactionTimestamp: %w", op, ErrUnexpectedAnswer)}, false
	}
	return authInfo{at: st.AuthorisedAt, amount: st.AuthorisedAmount, captured: st.CapturedAmount,
		cancelled: st.VoidedAmount, currency: st.Currency}, gateway.Result{}, true
}

// Status asks GET /api/v1/payments/{id}/status what became of the
// authorisation req.TransactionID, following our reading of the answer
// (SPEC §1): paymentType AUTH, amount and transactionTimestamp of the
// authorisation, and an "operations" list of its captures (CAPT) and
// cancellations (CNCL), each with its merchantTransactionId, paymentStatus
// and amount.
//
// With the list, CapturedAmount and VoidedAmount sum the applied ones, State
// is StateCaptured when anything is captured, else StateVoided when anything
// is cancelled, else StateAuthorised, and Ours says what became of our own
// operation, the one of req.Operation's type sent with req.Reference:
// applied (with OursAmount), pending, or absent. Without the list, or when
// the authorisation's own paymentStatus is not Success, State is
// StateUnknown: what was captured cannot be told, so reconciliation must not
// guess. HTTP 404 is StateNotFound. An error means the status could not be
// read (transport, a 5xx, a statusCode other than "000", a paymentType other
// than AUTH, an unreadable amount, an operation with our reference of an
// unknown type) and the caller asks again later. When our operation was
// applied, Status.Result describes it, with Outcome Succeeded.
func (c *Client) Status(ctx context.Context, req gateway.Request) (gateway.Status, error) {
	if req.TransactionID == "" {
		return gateway.Status{}, errors.New("sibs: status: transaction id is required")
	}
	ex := c.send(ctx, http.MethodGet, paymentsPath+url.PathEscape(req.TransactionID)+"/status", nil)
	switch {
	case ex.tokenErr != nil:
		return gateway.Status{}, fmt.Errorf("sibs: status: %w", ex.tokenErr)
	case ex.Err != nil:
		return gateway.Status{}, fmt.Errorf("sibs: status: %w", ex.Err)
	}
	return statusOf(req, ex.Status, ex.Body)
}

// exchange is one HTTP request and its answer (see gateway.Exchange).
// tokenErr says no token could be had: nothing was sent, or the 401 that
// asked for a new one stands.
type exchange struct {
	gateway.Exchange
	tokenErr error
}

// send makes the request with the current bearer token and, when the
// gateway answers 401, once more with a refreshed one. A 401 stays the
// answer when the source gives the same token again (a static token).
func (c *Client) send(ctx context.Context, method, path string, payload []byte) exchange {
	var tok string
	if c.tokens != nil {
		var err error
		if tok, err = c.tokens.token(); err != nil {
			return exchange{tokenErr: err}
		}
	}
	ex := c.exchange(ctx, method, path, payload, tok)
	if ex.Status != http.StatusUnauthorized || c.tokens == nil {
		return ex
	}
	fresh, err := c.tokens.refresh(tok)
	switch {
	case errors.Is(err, errTokenUnchanged):
		return ex
	case err != nil:
		// The refresh failed, not the operation: nothing was applied.
		return exchange{Exchange: gateway.Exchange{Status: ex.Status}, tokenErr: fmt.Errorf("HTTP 401, then %w", err)}
	}
	return c.exchange(ctx, method, path, payload, fresh)
}

// exchange makes one request to the gateway with the token, when there is
// one, and the client id.
func (c *Client) exchange(ctx context.Context, method, path string, payload []byte, token string) exchange {
	h := make(http.Header)
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	if c.clientID != "" {
		h.Set("x-ibm-client-id", c.clientID)
	}
	return exchange{Exchange: c.http.Send(ctx, method, c.base+path, h, payload)}
}
