package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/sandbox"
)

// startSandbox runs the sandbox gateway on a free port.
func startSandbox(t *testing.T, opts sandbox.Options) (*sandbox.Sandbox, string) {
	t.Helper()
	sb := sandbox.New(opts)
	baseURL, stop, err := sb.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("start sandbox: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stop(ctx); err != nil {
			t.Errorf("stop sandbox: %v", err)
		}
	})
	return sb, baseURL
}

// sandboxVerdict answers like the gateway would: success for an
// authorisation the sandbox holds, a 404 refusal otherwise.
func sandboxVerdict(sb *sandbox.Sandbox) func(*command.Command) verdict {
	return func(c *command.Command) verdict {
		if _, ok := sb.Authorisation(c.TransactionID); !ok {
			return verdict{ok: false, code: "ERR0404"}
		}
		if c.Type == command.Void {
			return verdict{ok: true, code: "INFO0003"}
		}
		return verdict{ok: true, code: "INFO0001"}
	}
}

func TestDemo(t *testing.T) {
	h := newHarness(t, true)
	ctx := testContext(t)
	sb, baseURL := startSandbox(t, sandbox.Options{APIKey: "k-basic", XAPIKey: "k-x"})
	h.respond(sandboxVerdict(sb))
	h.env["SANDBOX_URL"] = baseURL
	h.env["SANDBOX_API_KEY"] = "k-basic"
	h.env["SANDBOX_X_API_KEY"] = "k-x"

	stdout, stderr, err := h.run(ctx, "demo", "--timeout", "10s")
	if err != nil {
		t.Fatalf("demo = %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if got := sb.Calls(sandbox.EndpointPayment); got != 4 {
		t.Errorf("sandbox payment calls = %d, want 4", got)
	}
	for _, want := range []string{
		"authorised #4",
		"STEP", "KIND", "GATEWAY CODE", "EVENT ID",
		"#1 full capture", "capture.succeeded", "1500 JPY",
		"#2 partial capture", "1200 JPY",
		"#3 void", "void.succeeded", "INFO0003",
		"unknown transaction", "capture.failed", "ERR0404",
		"#4 again, same key", "command.duplicate",
		"publisher events --merchant DEMO001",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output does not contain %q:\n%s", want, stdout)
		}
	}
	t.Log("\n" + stdout)
}

func TestDemoFailures(t *testing.T) {
	tests := []struct {
		name    string
		respond bool
		keys    bool // the demo sends the sandbox's keys
		want    []string
	}{
		{"no worker", false, true, []string{"outcomes not as expected", "no outcome"}},
		{"wrong keys", true, false, []string{"401", "--api-key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true)
			ctx := testContext(t)
			sb, baseURL := startSandbox(t, sandbox.Options{APIKey: "k-basic"})
			if tt.respond {
				h.respond(sandboxVerdict(sb))
			}
			h.env["SANDBOX_URL"] = baseURL
			if tt.keys {
				h.env["SANDBOX_API_KEY"] = "k-basic"
			}
			_, _, err := h.run(ctx, "demo", "--timeout", "300ms")
			if exitStatus(err) != exitFailed {
				t.Fatalf("demo = %v, want exit 1", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("demo error %q does not mention %q", err, w)
				}
			}
		})
	}
}
