// Package sandbox is an in-memory emulator of the PaymentOptions
// server-to-server gateway: payment (pre-authorisation), capture, void and
// transaction status, with the request and answer shapes of the gateway's
// documentation, the authorisation state machine, a ledger of every applied
// operation, and fault injection (latency, 5xx, 429, "apply then drop the
// connection", unclear results).
//
// The same server also emulates SIBS Stargate (see sibs.go): capture,
// cancellation and status under /api/v1/payments/{id}/..., over the same
// authorisations, so an authorisation made by Authorise or by either
// gateway's payment endpoint can be captured or voided through both.
//
// It serves real HTTP, so the adapter under test talks to it exactly as it
// talks to the gateway. It follows our two readings of SPEC §1: the status
// endpoint answers the authorisation's current state in transaction_type, and
// a refusal is a 4xx with success false and gateway_response.type ERROR.
package sandbox

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/payworker/payworker/internal/gateway"
)

// Gateway names, as Faults.Gateway and Traffic take them.
const (
	GatewayPaymentOptions = "paymentoptions"
	GatewaySIBS           = "sibs"
)

// Endpoint names, as counted by Calls.
const (
	EndpointPayment = "payment"
	EndpointCapture = "capture"
	EndpointVoid    = "void"
	EndpointStatus  = "status"
)

// apiPrefix is the path segment every gateway endpoint follows; whatever comes
// before it (the documented base repeats /api/v1) is accepted.
const apiPrefix = "/api/v1/server-to-server-interface/"

const maxBody = 64 << 10

// Options configure a Sandbox.
type Options struct {
	// APIKey, when non-empty, must arrive as "Authorization: Basic <APIKey>";
	// XAPIKey, when non-empty, as "x-api-key: <XAPIKey>". A request without
	// them is refused with 401.
	APIKey  string
	XAPIKey string
	// Latency is waited before every gateway request (not the /_sandbox
	// control endpoints) is handled.
	Latency time.Duration
	// Logger receives one debug record per request (never card data) and an
	// info record when faults change; nil discards.
	Logger *slog.Logger
	// Seed seeds the fault dice and the generated auth codes, so a run with
	// the same seed and the same sequence of calls faults the same calls.
	Seed int64
	// SIBSToken, when non-empty, must arrive on the SIBS endpoints as
	// "Authorization: Bearer <SIBSToken>"; SIBSClientID, when non-empty, as
	// "x-ibm-client-id". A request without them is refused with 401.
	SIBSToken    string
	SIBSClientID string
}

// LogValue redacts the keys.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("api_key_set", o.APIKey != ""),
		slog.Bool("x_api_key_set", o.XAPIKey != ""),
		slog.Bool("sibs_token_set", o.SIBSToken != ""),
		slog.Duration("latency", o.Latency),
		slog.Int64("seed", o.Seed),
	)
}

// State is the state of one authorisation in the sandbox.
type State string

// Authorisation states.
const (
	StateAuthorised        State = "authorised"
	StateCaptured          State = "captured"
	StatePartiallyCaptured State = "partially_captured"
	StateVoided            State = "voided"
)

const (
	defaultCardNumber       = "5200000000001005"
	defaultCardName         = "John Doe"
	legalName               = "Payworker Sandbox"
	timestampLayout         = "2006-01-02T15:04:05.000Z"
	firstRef          int64 = 74797
)

// Authorisation is a snapshot of one authorisation. It holds no card data.
type Authorisation struct {
	ID             string
	MerchantID     string
	Amount         int64
	Currency       string
	CapturedAmount int64
	// VoidedAmount is what is cancelled (SIBS cancels part or all of what is
	// still open; a PaymentOptions void cancels all of it).
	VoidedAmount int64
	State        State
	AuthorisedAt time.Time
	UpdatedAt    time.Time
}

// Operation is one applied (effective) capture or void.
type Operation struct {
	// ID is the gateway's id of the operation (transaction_details.id of its
	// answer), distinct from the authorisation's id.
	ID              string            `json:"id"`
	MerchantID      string            `json:"merchant_id"`
	AuthorisationID string            `json:"authorisation_id"`
	Operation       gateway.Operation `json:"operation"`
	Amount          int64             `json:"amount"`
	Currency        string            `json:"currency"`
	Time            time.Time         `json:"time"`
	// Reference is the merchant's reference of the operation (SIBS
	// merchantTransactionId), empty for PaymentOptions.
	Reference string `json:"reference,omitempty"`
}

type card struct {
	number, name, expMonth, expYear string
}

type authorisation struct {
	Authorisation
	card           card
	authCode       string
	ref            int64
	merchantTxnRef string
}

// opEntry is an applied operation with its gateway reference number.
type opEntry struct {
	Operation
	ref int64
}

// Sandbox is the emulated gateway. It is safe for concurrent use.
type Sandbox struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	rng     *rand.Rand
	faults  Faults
	auths   map[string]*authorisation
	ops     map[string]opEntry
	ledger  []Operation
	calls   map[string]int
	traffic map[string]*Traffic
	nextRef int64
	addr    string
}

// New returns an empty sandbox with no faults.
func New(opts Options) *Sandbox {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	seed := uint64(opts.Seed)
	return &Sandbox{
		opts:    opts,
		log:     log,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		auths:   make(map[string]*authorisation),
		ops:     make(map[string]opEntry),
		calls:   make(map[string]int),
		traffic: make(map[string]*Traffic),
		nextRef: firstRef,
	}
}

// Authorise creates an open authorisation of amount minor units of currency
// for merchantID, with the documentation's test card, as the payment endpoint
// does, and returns its transaction id.
func (s *Sandbox) Authorise(merchantID string, amount int64, currency string) (authID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.authoriseLocked(merchantID, amount, currency, card{
		number: defaultCardNumber, name: defaultCardName, expMonth: "12", expYear: "30",
	}, "")
	return a.ID
}

func (s *Sandbox) authoriseLocked(merchantID string, amount int64, currency string, c card, merchantTxnRef string) *authorisation {
	now := time.Now().UTC()
	a := &authorisation{
		Authorisation: Authorisation{
			ID:           uuid.NewString(),
			MerchantID:   merchantID,
			Amount:       amount,
			Currency:     currency,
			State:        StateAuthorised,
			AuthorisedAt: now,
			UpdatedAt:    now,
		},
		card:           c,
		authCode:       fmt.Sprintf("%06d", s.rng.IntN(1_000_000)),
		ref:            s.newRefLocked(),
		merchantTxnRef: merchantTxnRef,
	}
	s.auths[a.ID] = a
	return a
}

func (s *Sandbox) newRefLocked() int64 {
	r := s.nextRef
	s.nextRef++
	return r
}

// Authorisation returns a snapshot of the authorisation authID.
func (s *Sandbox) Authorisation(authID string) (Authorisation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.auths[authID]
	if !ok {
		return Authorisation{}, false
	}
	return a.Authorisation, true
}

// Ledger returns every applied capture and void, in the order applied. An
// operation answered with an error, refused, or faulted before it was applied
// is not in it; one applied and then dropped or answered "unclear" is.
func (s *Sandbox) Ledger() []Operation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Operation(nil), s.ledger...)
}

// Applied returns the applied operations on the authorisation authID.
func (s *Sandbox) Applied(authID string) []Operation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Operation
	for _, op := range s.ledger {
		if op.AuthorisationID == authID {
			out = append(out, op)
		}
	}
	return out
}

// Calls returns how many HTTP requests reached the endpoint op (one of the
// Endpoint constants), including refused and faulted ones.
func (s *Sandbox) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Handler returns the HTTP handler of the gateway endpoints, for any path
// prefix before /api/v1/server-to-server-interface/<op> (PaymentOptions) or
// a path ending in /api/v1/payments[/{id}/<op>] (SIBS), and of the control
// endpoints /_sandbox/faults (GET, POST), /_sandbox/ledger (GET) and
// /_sandbox/gc (POST).
func (s *Sandbox) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Sandbox) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_sandbox/faults":
		s.serveFaults(w, r)
		return
	case "/_sandbox/ledger":
		s.serveLedger(w, r)
		return
	case "/_sandbox/gc":
		serveGC(w, r)
		return
	}
	if m := sibsPath.FindStringSubmatch(r.URL.EscapedPath()); m != nil {
		s.serveSIBS(w, r, m[1], m[2])
		return
	}
	_, rest, ok := strings.Cut(r.URL.Path, apiPrefix)
	if !ok {
		writeError(w, http.StatusNotFound, "ERR0404", msgNoEndpoint, nil)
		return
	}
	var endpoint, statusID string
	switch {
	case rest == EndpointPayment || rest == EndpointCapture || rest == EndpointVoid:
		endpoint = rest
	case strings.HasPrefix(rest, "transaction/status/"):
		endpoint = EndpointStatus
		statusID = strings.TrimPrefix(rest, "transaction/status/")
	default:
		writeError(w, http.StatusNotFound, "ERR0404", msgNoEndpoint, nil)
		return
	}
	s.serveCall(w, r, endpoint, endpoint == EndpointStatus, answerFault, func(w http.ResponseWriter) outcome {
		return s.serveEndpoint(w, r, endpoint, statusID)
	})
}

// serveCall serves one call of a gateway endpoint, of either gateway: it
// counts the call, waits Options.Latency, and, unless isStatus (a status
// endpoint) is set and Faults.FaultStatus is not, or the faults are confined
// to the other gateway, the faults' latency, then rolls the faults that
// strike before the request is read (a drop, or an answer written by
// writeFault in the gateway's shape); the gateway's rate limit applies to
// every call. When none strikes,
// serve handles the request. A handler's outcome that asks for a drop
// closes the connection. One record is logged per call.
func (s *Sandbox) serveCall(w http.ResponseWriter, r *http.Request, endpoint string, isStatus bool,
	writeFault func(w http.ResponseWriter, fault string, status int, f Faults),
	serve func(w http.ResponseWriter) outcome) {
	s.mu.Lock()
	s.calls[endpoint]++
	faults := s.faults
	s.mu.Unlock()

	gw := GatewayPaymentOptions
	if strings.HasPrefix(endpoint, "sibs_") {
		gw = GatewaySIBS
	}
	scoped := faults.Gateway == "" || faults.Gateway == gw
	faulted := scoped && (!isStatus || faults.FaultStatus)
	delay := s.opts.Latency
	if faulted {
		delay += faults.Latency
	}
	if !sleep(r.Context(), delay) {
		return
	}
	rec := &recorder{ResponseWriter: w}
	var res outcome
	fault, code := s.infrastructureFault(faults, gw, faulted, scoped)
	switch fault {
	case "":
		res = serve(rec)
	case faultDown:
		res = outcome{drop: true, fault: fault}
	default:
		writeFault(rec, fault, code, faults)
		res = outcome{fault: fault}
	}
	if res.drop {
		dropConnection(w, r)
	}
	level := slog.LevelDebug
	if res.fault != "" {
		level = slog.LevelInfo
	}
	s.log.LogAttrs(r.Context(), level, "sandbox request",
		slog.String("endpoint", endpoint),
		slog.Int("status", rec.status),
		slog.Bool("applied", res.applied),
		slog.String("fault", res.fault))
}

// serveEndpoint handles a PaymentOptions call that no fault struck before
// the request was read.
func (s *Sandbox) serveEndpoint(w http.ResponseWriter, r *http.Request, endpoint, statusID string) outcome {
	want := http.MethodPost
	if endpoint == EndpointStatus {
		want = http.MethodGet
	}
	switch {
	case r.Method != want:
		w.Header().Set("Allow", want)
		writeError(w, http.StatusMethodNotAllowed, "ERR0405", msgMethod, nil)
	case !s.authorised(r):
		writeError(w, http.StatusUnauthorized, "ERR0401", msgUnauthorised, nil)
	case endpoint == EndpointPayment:
		return s.payment(w, r)
	case endpoint == EndpointCapture:
		return s.captureOrVoid(w, r, gateway.Capture)
	case endpoint == EndpointVoid:
		return s.captureOrVoid(w, r, gateway.Void)
	default:
		s.status(w, statusID)
	}
	return outcome{}
}

// outcome is what an operation handler did, for the fault that follows it.
type outcome struct {
	applied bool
	// drop asks the caller to close the connection instead of answering; the
	// handler has then written nothing.
	drop  bool
	fault string
}

func (s *Sandbox) authorised(r *http.Request) bool {
	ok := true
	if s.opts.APIKey != "" {
		ok = subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Basic "+s.opts.APIKey)) == 1
	}
	if s.opts.XAPIKey != "" {
		ok = subtle.ConstantTimeCompare([]byte(r.Header.Get("x-api-key")), []byte(s.opts.XAPIKey)) == 1 && ok
	}
	return ok
}

// Start serves the sandbox on addr (such as "127.0.0.1:0") and returns the
// base URL to configure the PaymentOptions adapter with,
// "http://HOST:PORT/api/v1", and a stop function that shuts the server down
// gracefully within its context and waits for it. SIBSBaseURL then gives the
// SIBS adapter's base.
func (s *Sandbox) Start(addr string) (baseURL string, stop func(context.Context) error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("sandbox: listen: %w", err)
	}
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.mu.Unlock()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	stop = func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if err != nil {
			_ = srv.Close()
		}
		if serveErr := <-done; !errors.Is(serveErr, http.ErrServerClosed) {
			return errors.Join(err, serveErr)
		}
		return err
	}
	return "http://" + ln.Addr().String() + "/api/v1", stop, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dropConnection closes the client's connection without an answer. w must
// not have been written to.
func dropConnection(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxBody))
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 or a writer that cannot be hijacked: abort the stream.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// recorder remembers the status written, for the log.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
