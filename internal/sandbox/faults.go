package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"strconv"
	"time"
)

// Fault names, as logged.
const (
	faultDown          = "down"
	faultRateLimit     = "rate_limit"
	faultError         = "error"
	faultUnclear       = "unclear"
	faultApplyThenDrop = "apply_then_drop"
)

// Faults is the misbehaviour the sandbox injects. Only the payment, capture
// and void endpoints are faulted (SIBS's payment, capture and cancellation
// too), and the status endpoints too when FaultStatus is set; only those of
// one gateway when Gateway names it. RateLimit is the exception: like a real
// gateway's limit it counts and refuses every call of its gateway, status
// calls included.
// A rate is the probability, from 0 (never) to 1 (every call), that a call
// gets the fault. On a faulted call they are tried in this order:
//
//  1. Latency is waited (after Options.Latency).
//  2. Down: the connection is closed without applying and without answering.
//  3. RateLimit: 429 with a Retry-After header, not applied, when the
//     gateway already answered RateLimit calls in the last second.
//  4. RateLimitRate: 429 with a Retry-After header, not applied.
//  5. ErrorRate: a 5xx, not applied.
//  6. The request is read and checked; a refusal (4xx) is answered as usual.
//  7. UnclearRate: the operation is applied on a coin toss and answered with
//     HTTP 200, success false and response_code 680 ("result unclear"); on
//     SIBS, HTTP 200 with statusCode "000" and paymentStatus Pending.
//  8. ApplyThenDropRate: the operation is applied and the connection closed
//     without an answer.
//
// The zero Faults injects nothing.
type Faults struct {
	Latency   time.Duration
	ErrorRate float64
	// ErrorStatus is the status ErrorRate answers; 0 picks one of 500, 502,
	// 503 and 504 at random.
	ErrorStatus   int
	RateLimitRate float64
	// RetryAfter is the Retry-After of a 429, in whole seconds rounded up; 0
	// means 1 second.
	RetryAfter        time.Duration
	ApplyThenDropRate float64
	Down              bool
	UnclearRate       float64
	FaultStatus       bool
	// SIBSUnlisted: SIBS status answers omit their operations list, as a
	// SIBS that does not list an authorisation's operations would; a
	// partial capture's fate then cannot be read from status.
	SIBSUnlisted bool
	// Gateway, when set (GatewayPaymentOptions or GatewaySIBS), confines
	// the faults to that gateway's endpoints: the other one works.
	Gateway string
	// RateLimit, when positive, is each gateway's own limit: a call that
	// comes when RateLimit calls of its gateway were answered within the
	// last second (a sliding window) is answered 429 with a Retry-After.
	RateLimit int
}

type faultsJSON struct {
	Latency           string  `json:"latency,omitempty"`
	ErrorRate         float64 `json:"error_rate,omitempty"`
	ErrorStatus       int     `json:"error_status,omitempty"`
	RateLimitRate     float64 `json:"rate_limit_rate,omitempty"`
	RetryAfter        string  `json:"retry_after,omitempty"`
	ApplyThenDropRate float64 `json:"apply_then_drop_rate,omitempty"`
	Down              bool    `json:"down,omitempty"`
	UnclearRate       float64 `json:"unclear_rate,omitempty"`
	FaultStatus       bool    `json:"fault_status,omitempty"`
	SIBSUnlisted      bool    `json:"sibs_unlisted,omitempty"`
	Gateway           string  `json:"gateway,omitempty"`
	RateLimit         int     `json:"rate_limit,omitempty"`
}

// MarshalJSON encodes f with snake_case names and durations as Go duration
// strings ("250ms"), the form POST /_sandbox/faults accepts.
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{
		ErrorRate:         f.ErrorRate,
		ErrorStatus:       f.ErrorStatus,
		RateLimitRate:     f.RateLimitRate,
		ApplyThenDropRate: f.ApplyThenDropRate,
		Down:              f.Down,
		UnclearRate:       f.UnclearRate,
		FaultStatus:       f.FaultStatus,
		SIBSUnlisted:      f.SIBSUnlisted,
		Gateway:           f.Gateway,
		RateLimit:         f.RateLimit,
	}
	if f.Latency != 0 {
		j.Latency = f.Latency.String()
	}
	if f.RetryAfter != 0 {
		j.RetryAfter = f.RetryAfter.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON encodes, rejects unknown fields, and
// validates the result.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	out := Faults{
		ErrorRate:         j.ErrorRate,
		ErrorStatus:       j.ErrorStatus,
		RateLimitRate:     j.RateLimitRate,
		ApplyThenDropRate: j.ApplyThenDropRate,
		Down:              j.Down,
		UnclearRate:       j.UnclearRate,
		FaultStatus:       j.FaultStatus,
		SIBSUnlisted:      j.SIBSUnlisted,
		Gateway:           j.Gateway,
		RateLimit:         j.RateLimit,
	}
	var err error
	if j.Latency != "" {
		if out.Latency, err = time.ParseDuration(j.Latency); err != nil {
			return fmt.Errorf("faults: latency: %w", err)
		}
	}
	if j.RetryAfter != "" {
		if out.RetryAfter, err = time.ParseDuration(j.RetryAfter); err != nil {
			return fmt.Errorf("faults: retry_after: %w", err)
		}
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*f = out
	return nil
}

// Validate reports a rate outside [0, 1], a negative duration or rate limit,
// an ErrorStatus that is neither 0 nor a 5xx, or an unknown Gateway.
func (f Faults) Validate() error {
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"error_rate", f.ErrorRate},
		{"rate_limit_rate", f.RateLimitRate},
		{"apply_then_drop_rate", f.ApplyThenDropRate},
		{"unclear_rate", f.UnclearRate},
	} {
		if math.IsNaN(r.v) || r.v < 0 || r.v > 1 {
			return fmt.Errorf("faults: %s %v is outside [0, 1]", r.name, r.v)
		}
	}
	if f.Latency < 0 || f.RetryAfter < 0 {
		return errors.New("faults: durations must not be negative")
	}
	if f.ErrorStatus != 0 && (f.ErrorStatus < 500 || f.ErrorStatus > 599) {
		return fmt.Errorf("faults: error_status %d is not a 5xx", f.ErrorStatus)
	}
	switch f.Gateway {
	case "", GatewayPaymentOptions, GatewaySIBS:
	default:
		return fmt.Errorf("faults: gateway %q is not %q or %q", f.Gateway, GatewayPaymentOptions, GatewaySIBS)
	}
	if f.RateLimit < 0 {
		return fmt.Errorf("faults: rate_limit %d is negative", f.RateLimit)
	}
	return nil
}

// SetFaults replaces the injected faults; calls already past a fault's step
// are not affected. Rates outside [0, 1] act as 0 or 1.
func (s *Sandbox) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the injected faults.
func (s *Sandbox) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// rollLocked reports whether a call gets a fault of the given rate. A zero
// rate draws nothing, so enabling one fault does not shift another's dice.
func (s *Sandbox) rollLocked(rate float64) bool {
	return rate > 0 && s.rng.Float64() < rate
}

// infrastructureFault rolls the faults that strike before the request is
// read, and the status a 5xx fault answers: those of f when faulted, and the
// gateway's rate limit (when scoped: f applies to the gateway) whatever the
// endpoint. It counts the call in the gateway's traffic.
func (s *Sandbox) infrastructureFault(f Faults, gw string, faulted, scoped bool) (fault string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := s.trafficLocked(gw)
	now := time.Now()
	tr.all = append(pruned(tr.all, now), now)
	tr.Peak = max(tr.Peak, len(tr.all))
	tr.Calls++
	defer func() {
		if status == http.StatusTooManyRequests {
			tr.RateLimited++
		}
	}()
	if faulted && f.Down {
		return faultDown, 0
	}
	if scoped && f.RateLimit > 0 {
		tr.answered = pruned(tr.answered, now)
		if len(tr.answered) >= f.RateLimit {
			return faultRateLimit, http.StatusTooManyRequests
		}
		tr.answered = append(tr.answered, now)
	}
	if !faulted {
		return "", 0
	}
	switch {
	case s.rollLocked(f.RateLimitRate):
		return faultRateLimit, http.StatusTooManyRequests
	case s.rollLocked(f.ErrorRate):
		if f.ErrorStatus != 0 {
			return faultError, f.ErrorStatus
		}
		codes := [...]int{500, 502, 503, 504}
		return faultError, codes[s.rng.IntN(len(codes))]
	}
	return "", 0
}

// Traffic is what one gateway of the sandbox received.
type Traffic struct {
	// Calls counts every request to the gateway's endpoints.
	Calls int
	// Peak is the most requests within any one second (a sliding window).
	Peak int
	// RateLimited counts the requests answered 429.
	RateLimited int

	all, answered []time.Time // the last second's requests, and those answered
}

// Traffic returns what the gateway (GatewayPaymentOptions or GatewaySIBS)
// received since the sandbox started.
func (s *Sandbox) Traffic(gateway string) Traffic {
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := *s.trafficLocked(gateway)
	tr.all, tr.answered = nil, nil
	return tr
}

func (s *Sandbox) trafficLocked(gw string) *Traffic {
	tr := s.traffic[gw]
	if tr == nil {
		tr = &Traffic{}
		s.traffic[gw] = tr
	}
	return tr
}

// pruned drops the times more than a second before now.
func pruned(ts []time.Time, now time.Time) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= time.Second {
		i++
	}
	return ts[i:]
}

// answerFault answers a rate-limit or 5xx fault.
func answerFault(w http.ResponseWriter, fault string, status int, f Faults) {
	switch fault {
	case faultRateLimit:
		setRetryAfter(w, f)
		writeError(w, status, "ERR0429", msgTooMany, nil)
	case faultError:
		msg := msgServerError
		switch status {
		case http.StatusBadGateway:
			msg = msgBadGateway
		case http.StatusServiceUnavailable:
			msg = msgUnavailable
		case http.StatusGatewayTimeout:
			msg = msgTimeout
		}
		writeError(w, status, fmt.Sprintf("ERR%04d", status), msg, nil)
	}
}

// setRetryAfter sets the Retry-After header of a rate-limit fault: f's
// RetryAfter in whole seconds, rounded up, at least 1.
func setRetryAfter(w http.ResponseWriter, f Faults) {
	secs := int64(math.Ceil(f.RetryAfter.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
}

func (s *Sandbox) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost, http.MethodPut:
		var f Faults
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		if err := dec.Decode(&f); err != nil {
			invalid(w, err.Error())
			return
		}
		s.SetFaults(f)
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "sandbox faults set", slog.Any("faults", f))
	default:
		w.Header().Set("Allow", "GET, POST, PUT")
		writeError(w, http.StatusMethodNotAllowed, "ERR0405", msgMethod, nil)
		return
	}
	writeJSON(w, http.StatusOK, s.Faults())
}

func (s *Sandbox) serveLedger(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, "ERR0405", msgMethod, nil)
		return
	}
	ledger := s.Ledger()
	if ledger == nil {
		ledger = []Operation{}
	}
	writeJSON(w, http.StatusOK, ledger)
}

// serveGC runs the garbage collector of the sandbox's process now and
// answers 204 when it is done (POST). A benchmark calls it before it times
// a worker's latency: the sandbox keeps every authorisation and operation,
// and on a busy machine a collection that marks them all holds its answers
// back for tens of milliseconds, a pause that a remote gateway answering
// at once would not add.
func serveGC(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "ERR0405", msgMethod, nil)
		return
	}
	runtime.GC()
	w.WriteHeader(http.StatusNoContent)
}
