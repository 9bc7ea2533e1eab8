package handlers

import (
	"testing"

	"github.com/payworker/payworker/internal/gateway"
)

func TestReconcile(t *testing.T) {
	capture := func(amount int64) gateway.Request {
		return gateway.Request{Operation: gateway.Capture, TransactionID: "t", Amount: amount, Currency: "EUR", Reference: "key-2"}
	}
	void := func(amount int64) gateway.Request {
		return gateway.Request{Operation: gateway.Void, TransactionID: "t", Amount: amount, Currency: "EUR", Reference: "key-3"}
	}
	// listed is a SIBS status of a 100.00 authorisation: captured and voided
	// so far, and what it says of our operation.
	listed := func(state gateway.State, captured, voided int64, ours gateway.OursState, oursAmount int64) gateway.Status {
		return gateway.Status{State: state, AuthorisedAmount: 10_000, CapturedAmount: captured, VoidedAmount: voided,
			Currency: "EUR", Ours: ours, OursAmount: oursAmount}
	}
	tests := []struct {
		name string
		req  gateway.Request
		st   gateway.Status
		want finding
	}{
		// Not listed (PaymentOptions): State and the captured amount decide.
		{"unlisted: not found", capture(300), gateway.Status{State: gateway.StateNotFound}, findingImpossible},
		{"unlisted: unknown", capture(300), gateway.Status{State: gateway.StateUnknown}, findingUnknown},
		{"unlisted: open", capture(300), gateway.Status{State: gateway.StateAuthorised, AuthorisedAmount: 10_000}, findingNotApplied},
		{"unlisted: captured our amount", capture(300), gateway.Status{State: gateway.StateCaptured, CapturedAmount: 300}, findingApplied},
		{"unlisted: captured another amount", capture(300), gateway.Status{State: gateway.StateCaptured, CapturedAmount: 500}, findingImpossible},
		{"unlisted: capture of a voided one", capture(300), gateway.Status{State: gateway.StateVoided}, findingImpossible},
		{"unlisted: void applied", void(0), gateway.Status{State: gateway.StateVoided}, findingApplied},
		{"unlisted: void of a captured one", void(0), gateway.Status{State: gateway.StateCaptured, CapturedAmount: 300}, findingImpossible},

		// Listed (SIBS): several partial captures. An earlier capture of
		// the same amount under another key is not ours: the amount rule
		// would call it applied and lose our capture.
		{"listed: another capture of the same amount, ours absent", capture(300),
			listed(gateway.StateCaptured, 300, 0, gateway.OursAbsent, 0), findingNotApplied},
		{"listed: ours applied among others", capture(300),
			listed(gateway.StateCaptured, 800, 0, gateway.OursApplied, 300), findingApplied},
		{"listed: ours applied, another amount", capture(300),
			listed(gateway.StateCaptured, 800, 0, gateway.OursApplied, 500), findingUnknown},
		{"listed: ours pending", capture(300),
			listed(gateway.StateAuthorised, 0, 0, gateway.OursPending, 0), findingUnknown},
		{"listed: ours absent, exactly the rest open", capture(300),
			listed(gateway.StateCaptured, 9_700, 0, gateway.OursAbsent, 0), findingNotApplied},
		{"listed: ours absent, not enough open", capture(300),
			listed(gateway.StateCaptured, 9_000, 800, gateway.OursAbsent, 0), findingImpossible},
		{"listed: ours absent, all voided", capture(300),
			listed(gateway.StateVoided, 0, 10_000, gateway.OursAbsent, 0), findingImpossible},
		{"listed: not found wins", capture(300),
			gateway.Status{State: gateway.StateNotFound, Ours: gateway.OursApplied, OursAmount: 300}, findingImpossible},
		{"listed: unknown authorisation state wins", capture(300),
			gateway.Status{State: gateway.StateUnknown, Ours: gateway.OursApplied, OursAmount: 300}, findingUnknown},

		// Listed: cancellations, partial or full (amount 0).
		{"listed: full void applied", void(0), listed(gateway.StateCaptured, 300, 9_700, gateway.OursApplied, 9_700), findingApplied},
		{"listed: partial void applied", void(200), listed(gateway.StateVoided, 0, 200, gateway.OursApplied, 200), findingApplied},
		{"listed: full void absent, something open", void(0), listed(gateway.StateCaptured, 300, 0, gateway.OursAbsent, 0), findingNotApplied},
		{"listed: full void absent, nothing open", void(0), listed(gateway.StateCaptured, 10_000, 0, gateway.OursAbsent, 0), findingImpossible},
		{"listed: partial void absent, too little open", void(500), listed(gateway.StateCaptured, 9_800, 0, gateway.OursAbsent, 0), findingImpossible},
		{"listed: void pending", void(0), listed(gateway.StateAuthorised, 0, 0, gateway.OursPending, 0), findingUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := reconcile(tt.req, tt.st)
			if got != tt.want {
				t.Errorf("reconcile(%s %d, %+v) = %d (%s), want %d", tt.req.Operation, tt.req.Amount, tt.st, got, detail, tt.want)
			}
			if got == findingImpossible && detail == "" {
				t.Errorf("reconcile(%s) impossible without a detail", tt.name)
			}
		})
	}
}
