package sandbox_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/sandbox"
)

// TestRateLimitWindow: with RateLimit N, a gateway answers N calls in any
// sliding second and 429s the rest, status calls counted too; Traffic
// reports the calls, the busiest second and the 429s.
func TestRateLimitWindow(t *testing.T) {
	sb, srv := server(t, sandbox.Options{})
	sb.SetFaults(sandbox.Faults{RateLimit: 3})
	auths := []string{
		sb.Authorise(merchant, 1000, "JPY"), sb.Authorise(merchant, 1000, "JPY"),
		sb.Authorise(merchant, 1000, "JPY"), sb.Authorise(merchant, 1000, "JPY"),
	}
	start := time.Now()
	got := []int{
		capture(t, srv, auths[0], 1000).status,
		status(t, srv, auths[0]).status,
		capture(t, srv, auths[1], 1000).status,
		capture(t, srv, auths[2], 1000).status, // the fourth call in a second
		status(t, srv, auths[2]).status,
	}
	want := []int{201, 200, 201, 429, 429}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("calls answered %v, want %v", got, want)
		}
	}
	if r := capture(t, srv, auths[3], 1000); r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Errorf("another call inside the second = %d, Retry-After %q; want 429, 1", r.status, r.header.Get("Retry-After"))
	}
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	if r := capture(t, srv, auths[2], 1000); r.status != 201 {
		t.Errorf("a call a second later answered %d, want 201", r.status)
	}
	tr := sb.Traffic(sandbox.GatewayPaymentOptions)
	if tr.Calls != 7 || tr.Peak != 6 || tr.RateLimited != 3 {
		t.Errorf("Traffic = %+v, want 7 calls, a peak of 6, 3 rate-limited", tr)
	}
	if tr := sb.Traffic(sandbox.GatewaySIBS); tr.Calls != 0 {
		t.Errorf("SIBS traffic = %+v, want none", tr)
	}
}

// TestFaultsConfinedToOneGateway: with Gateway set, the other gateway is
// untouched.
func TestFaultsConfinedToOneGateway(t *testing.T) {
	sb, srv := server(t, sandbox.Options{SIBSToken: sibsToken, SIBSClientID: sibsClient})
	sb.SetFaults(sandbox.Faults{Down: true, FaultStatus: true, Gateway: sandbox.GatewayPaymentOptions})
	po, sibs := sb.Authorise(merchant, 1000, "EUR"), sb.Authorise(merchant, 1000, "EUR")
	if r := capture(t, srv, po, 1000); r.err == nil {
		t.Errorf("PaymentOptions capture answered %d, want the connection dropped", r.status)
	}
	if r := status(t, srv, po); r.err == nil {
		t.Errorf("PaymentOptions status answered %d, want the connection dropped", r.status)
	}
	if r, _ := sibsOp(t, srv, sibs, "capture", "ref-1", "10", "EUR"); r.err != nil || r.status != http.StatusOK {
		t.Errorf("SIBS capture = %d (%v), want 200 while only PaymentOptions is down", r.status, r.err)
	}
	if a, _ := sb.Authorisation(sibs); a.CapturedAmount != 1000 {
		t.Errorf("SIBS captured %d, want 1000", a.CapturedAmount)
	}
}

func TestNewFaultsOverJSON(t *testing.T) {
	f := sandbox.Faults{Gateway: sandbox.GatewaySIBS, RateLimit: 250, Down: true}
	raw, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != `{"down":true,"gateway":"sibs","rate_limit":250}` {
		t.Errorf("Marshal = %s", raw)
	}
	var back sandbox.Faults
	if err := json.Unmarshal(raw, &back); err != nil || back != f {
		t.Errorf("Unmarshal(%s) = %+v, %v; want %+v", raw, back, err, f)
	}
	for _, bad := range []string{`{"gateway":"visa"}`, `{"rate_limit":-1}`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("Unmarshal(%s) = nil, want an error", bad)
		}
	}
}
