// Package paymentoptions is the adapter for the PaymentOptions server-to-server
// interface: capture and void of an authorisation, and the status call that
// reconciles an attempt whose outcome is unknown (SPEC §1, §5).
//
// Every attempt returns a gateway.Result whose Outcome is the only input the
// retry, reconcile and ack decisions need; see classify for the table. The
// adapter never retries by itself and never logs: it classifies one attempt
// and returns. Card numbers are masked while the answer is decoded, so no
// value or error this package returns holds a full card number, and the API
// keys appear in no error and no formatted or logged Config or Client.
package paymentoptions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/payworker/payworker/internal/gateway"
)

// DefaultTimeout bounds one attempt when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

const (
	opPath     = "/api/v1/server-to-server-interface/"
	statusPath = opPath + "transaction/status/"
	redacted   = "[REDACTED]"
)

// ErrUnexpectedAnswer is wrapped by Status errors for an answer outside the
// documented ones (a status other than 2xx or 404, success false, an unknown
// transaction_type, an undecodable body). The caller retries the status call.
var ErrUnexpectedAnswer = errors.New("unexpected answer")

// Config configures a Client.
type Config struct {
	// BaseURL is the gateway base, such as the documented sandbox base
	// https://api-dev.paymentoptions.com/api/v1; requests go to BaseURL (a
	// trailing slash trimmed) + "/api/v1/server-to-server-interface/<op>".
	// It must be https, or http with a loopback host (127.0.0.0/8, ::1,
	// localhost), and carry no user info, query or fragment.
	BaseURL *url.URL
	// AllowHTTP accepts an http BaseURL whatever its host (the worker's
	// GATEWAY_ALLOW_HTTP, for a sandbox on another host of a demo
	// network). The keys and card data then cross that network in clear.
	AllowHTTP bool
	// APIKey is sent as "Authorization: Basic <APIKey>", as given (the gateway
	// issues it ready to use; it is not base64-encoded here). XAPIKey is sent
	// as "x-api-key". Both are required for an https BaseURL; a loopback
	// sandbox may run without them, and an empty key's header is not sent.
	APIKey  string
	XAPIKey string
	// HTTPClient sends the requests; nil means a client of its own. It is
	// copied, and the copy does not follow redirects, so that a 3xx is
	// classified rather than replayed as a GET.
	HTTPClient *http.Client
	// MaxConns is how many calls may be in flight at once (the worker's
	// concurrency): a client of its own opens at most that many
	// connections per host and keeps them open for reuse; a call beyond
	// them waits for a free one. 0 means gateway.DefaultMaxConns. Unused
	// with HTTPClient.
	MaxConns int
	// Timeout bounds one attempt, answer included; 0 means DefaultTimeout.
	Timeout time.Duration
}

// String describes c with the keys redacted.
func (c Config) String() string {
	base := "<nil>"
	if c.BaseURL != nil {
		base = c.BaseURL.Redacted()
	}
	return fmt.Sprintf("paymentoptions.Config{BaseURL: %s, APIKey: %s, XAPIKey: %s, Timeout: %s}",
		base, redact(c.APIKey), redact(c.XAPIKey), c.Timeout)
}

// Format prints String for every verb, so no verb (%d, %#v, %x...) prints a
// key.
func (c Config) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue logs c with the keys redacted.
func (c Config) LogValue() slog.Value {
	base := ""
	if c.BaseURL != nil {
		base = c.BaseURL.Redacted()
	}
	return slog.GroupValue(
		slog.String("base_url", base),
		slog.String("api_key", redact(c.APIKey)),
		slog.String("x_api_key", redact(c.XAPIKey)),
		slog.Duration("timeout", c.Timeout),
	)
}

// MarshalJSON encodes c with the keys redacted.
func (c Config) MarshalJSON() ([]byte, error) {
	base := ""
	if c.BaseURL != nil {
		base = c.BaseURL.Redacted()
	}
	return json.Marshal(struct {
		BaseURL string        `json:"base_url"`
		APIKey  string        `json:"api_key"`
		XAPIKey string        `json:"x_api_key"`
		Timeout time.Duration `json:"timeout"`
	}{base, redact(c.APIKey), redact(c.XAPIKey), c.Timeout})
}

func redact(secret string) string {
	if secret == "" {
		return `""`
	}
	return redacted
}

// Client calls the PaymentOptions server-to-server interface. It is safe for
// concurrent use.
type Client struct {
	base    string
	apiKey  string
	xAPIKey string
	http    gateway.HTTP
}

// New checks cfg and returns a Client. It makes no request.
func New(cfg Config) (*Client, error) {
	u := cfg.BaseURL
	if u == nil {
		return nil, errors.New("paymentoptions: base URL is required")
	}
	if err := gateway.CheckBaseURL(u); err != nil && !(cfg.AllowHTTP && errors.Is(err, gateway.ErrURLNotLoopback)) {
		hint := ""
		if errors.Is(err, gateway.ErrURLUserInfo) {
			hint = "; the keys go in APIKey and XAPIKey"
		}
		return nil, fmt.Errorf("paymentoptions: base URL %q: %w%s", u.Redacted(), err, hint)
	}
	if u.Scheme == "https" && (cfg.APIKey == "" || cfg.XAPIKey == "") {
		return nil, errors.New("paymentoptions: APIKey and XAPIKey are required for an https gateway")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("paymentoptions: timeout %s is negative", cfg.Timeout)
	}
	if cfg.MaxConns < 0 {
		return nil, fmt.Errorf("paymentoptions: max conns %d is negative", cfg.MaxConns)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	return &Client{
		base:    strings.TrimRight(u.String(), "/"),
		apiKey:  cfg.APIKey,
		xAPIKey: cfg.XAPIKey,
		http:    gateway.HTTP{Client: gateway.NoRedirects(cfg.HTTPClient, cfg.MaxConns), Timeout: timeout},
	}, nil
}

// String describes c without its keys.
func (c Client) String() string {
	return fmt.Sprintf("paymentoptions.Client{BaseURL: %s, APIKey: %s, XAPIKey: %s, Timeout: %s}",
		c.base, redacted, redacted, c.http.Timeout)
}

// Format prints String for every verb.
func (c Client) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue logs c without its keys.
func (c Client) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("gateway", c.Name()),
		slog.String("base_url", c.base),
		slog.Duration("timeout", c.http.Timeout),
	)
}

// Name returns "paymentoptions", the gateway's name in commands and events.
func (Client) Name() string { return "paymentoptions" }

// Execute runs req.Operation (capture or void) once. Any other operation is
// Declined without a request.
func (c *Client) Execute(ctx context.Context, req gateway.Request) gateway.Result {
	switch req.Operation {
	case gateway.Capture:
		return c.Capture(ctx, req)
	case gateway.Void:
		return c.Void(ctx, req)
	}
	return gateway.Result{Outcome: gateway.Declined, Message: fmt.Sprintf("paymentoptions: unsupported operation %q", req.Operation)}
}

type captureBody struct {
	TransactionID string `json:"transactionId"`
	Amount        int64  `json:"amount"`
	MerchantID    string `json:"merchant_id"`
	Notes         string `json:"notes,omitempty"`
}

type voidBody struct {
	TransactionID string `json:"transactionId"`
	MerchantID    string `json:"merchant_id"`
}

// Capture captures req.Amount of the authorisation req.TransactionID, once.
// The gateway's amount is an integer and is sent as req.Amount unchanged: we
// read it as minor units of the authorisation's currency (the documentation's
// JPY example has no decimals, so both readings agree there). req.Currency is
// not sent; the gateway captures in the authorisation's currency. A request
// that breaks the documented limits (transactionId 1–36 characters,
// merchant_id 1–10, amount > 0, notes up to 128) is Declined unsent.
func (c *Client) Capture(ctx context.Context, req gateway.Request) gateway.Result {
	if msg := check(gateway.Capture, req); msg != "" {
		return gateway.Result{Outcome: gateway.Declined, Message: msg}
	}
	body := captureBody{
		TransactionID: req.TransactionID,
		Amount:        req.Amount,
		MerchantID:    req.MerchantID,
		Notes:         req.Notes,
	}
	return c.operation(ctx, gateway.Capture, req, body.appendJSON(make([]byte, 0, 128)))
}

// Void cancels the authorisation req.TransactionID, once. PaymentOptions
// voids only a whole authorisation: req.Amount is not sent, and a void with
// an amount still releases the full authorised amount.
func (c *Client) Void(ctx context.Context, req gateway.Request) gateway.Result {
	if msg := check(gateway.Void, req); msg != "" {
		return gateway.Result{Outcome: gateway.Declined, Message: msg}
	}
	body := voidBody{TransactionID: req.TransactionID, MerchantID: req.MerchantID}
	return c.operation(ctx, gateway.Void, req, body.appendJSON(make([]byte, 0, 128)))
}

func check(op gateway.Operation, req gateway.Request) string {
	switch {
	case req.TransactionID == "" || len(req.TransactionID) > 36:
		return "paymentoptions: transaction id must be 1 to 36 characters"
	case req.MerchantID == "" || len(req.MerchantID) > 10:
		return "paymentoptions: merchant id must be 1 to 10 characters"
	case op == gateway.Capture && req.Amount <= 0:
		return "paymentoptions: capture amount must be greater than 0"
	case op == gateway.Capture && utf8.RuneCountInString(req.Notes) > 128:
		return "paymentoptions: notes must be at most 128 characters"
	}
	return ""
}

// operation sends payload, the JSON body of op, once and classifies the
// answer.
func (c *Client) operation(ctx context.Context, op gateway.Operation, req gateway.Request, payload []byte) gateway.Result {
	ex := c.exchange(ctx, http.MethodPost, opPath+string(op), payload)
	var res gateway.Result
	switch {
	case ex.Status == 0:
		res = gateway.ClassifyTransport(ctx, "paymentoptions", op, ex.Written, ex.Err)
	case ex.Err != nil:
		res = gateway.Result{
			Outcome:    gateway.Unknown,
			HTTPStatus: ex.Status,
			Err:        fmt.Errorf("paymentoptions: %s: HTTP %d: %w", op, ex.Status, ex.Err),
		}
	default:
		res = classify(op, ex.Status, ex.Header.Get("Retry-After"), ex.Body, time.Now())
	}
	if res.Amount == 0 && op == gateway.Capture {
		res.Amount = req.Amount
	}
	if res.Currency == "" {
		res.Currency = req.Currency
	}
	return res
}

// Status asks the gateway for the current state of the authorisation
// req.TransactionID (SPEC §1 reading (a)): PRE_AUTH is StateAuthorised,
// CAPTURE StateCaptured with CapturedAmount the captured amount, VOID
// StateVoided (of the whole authorisation), and HTTP 404 StateNotFound. It
// returns an error, and the caller asks again later, for anything else: a
// transport error, a timeout, a 5xx, an unexpected answer. Status.Result
// carries the gateway's codes and masked card data, with Outcome Succeeded
// when the state is captured or voided, so a reconciled success can be
// reported like a direct one.
func (c *Client) Status(ctx context.Context, req gateway.Request) (gateway.Status, error) {
	if req.TransactionID == "" {
		return gateway.Status{}, errors.New("paymentoptions: status: transaction id is required")
	}
	ex := c.exchange(ctx, http.MethodGet, statusPath+url.PathEscape(req.TransactionID), nil)
	if ex.Err != nil {
		return gateway.Status{}, fmt.Errorf("paymentoptions: status: %w", ex.Err)
	}
	return statusOf(ex.Status, ex.Body)
}

func statusOf(httpStatus int, body []byte) (gateway.Status, error) {
	var ans answer
	decodeErr := decodeAnswer(body, &ans)
	res := gateway.Result{HTTPStatus: httpStatus}
	if decodeErr == nil {
		ans.fill(&res)
	}
	if httpStatus == http.StatusNotFound {
		return gateway.Status{State: gateway.StateNotFound, Result: res}, nil
	}
	if httpStatus < 200 || httpStatus > 299 {
		return gateway.Status{}, fmt.Errorf("paymentoptions: status: HTTP %d %s: %w", httpStatus, res.Code, ErrUnexpectedAnswer)
	}
	if decodeErr != nil {
		return gateway.Status{}, fmt.Errorf("paymentoptions: status: decode answer: %w: %w", decodeErr, ErrUnexpectedAnswer)
	}
	if !ans.Success {
		return gateway.Status{}, fmt.Errorf("paymentoptions: status: success false, code %q: %w", res.Code, ErrUnexpectedAnswer)
	}
	st := gateway.Status{Currency: res.Currency, Result: res}
	if t, err := time.Parse(time.RFC3339Nano, ans.TransactionDetails.Timestamp); err == nil {
		st.AuthorisedAt = t
	}
	amount := ans.PaymentDetails.Amount.value
	switch ans.TransactionType {
	case "PRE_AUTH":
		st.State = gateway.StateAuthorised
		st.AuthorisedAmount = amount
	case "CAPTURE":
		st.State = gateway.StateCaptured
		st.CapturedAmount = amount
		st.Result.Outcome = gateway.Succeeded
	case "VOID":
		st.State = gateway.StateVoided
		st.AuthorisedAmount = amount
		st.VoidedAmount = amount
		st.Result.Outcome = gateway.Succeeded
	default:
		return gateway.Status{}, fmt.Errorf("paymentoptions: status: transaction_type %q: %w", ans.TransactionType, ErrUnexpectedAnswer)
	}
	return st, nil
}

// exchange makes one request to the gateway with the keys.
func (c *Client) exchange(ctx context.Context, method, path string, payload []byte) gateway.Exchange {
	h := make(http.Header)
	if c.apiKey != "" {
		h.Set("Authorization", "Basic "+c.apiKey)
	}
	if c.xAPIKey != "" {
		h.Set("x-api-key", c.xAPIKey)
	}
	return c.http.Send(ctx, method, c.base+path, h, payload)
}
