package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/publish"
)

// defaultSandboxURL and defaultSandboxKey are those of the sandbox gateway the
// worker embeds when it has no gateway URL.
const (
	defaultSandboxURL = "http://127.0.0.1:8099/api/v1"
	defaultSandboxKey = "sandbox"
)

var demoHelp = help{
	synopsis: "demo [--sandbox-url URL] [--merchant ID] [flags]",
	desc: `Runs a short demonstration against the sandbox gateway and a running worker:
it authorises four payments on the sandbox (over HTTP, like a shop would),
then publishes a full capture of #1, a partial capture of #2, a void of #3, a
capture of #4 published twice with the same idempotency key (the second is
answered as a duplicate), and a capture of an unknown transaction (which is
expected to fail). It waits for each outcome and prints the result events.
Exit status 0 when every outcome is the expected one. Sandbox only: never
point it at a real gateway.`,
	example: `go run ./cmd/worker &   # embeds NATS and the sandbox gateway
publisher demo`,
}

// demoStep is one command of the demo and what it should produce.
type demoStep struct {
	label   string
	cmd     command.Command
	want    events.Kind
	ack     client.PubAck
	outcome *publish.Outcome
	err     error
}

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("demo")
	var conn connFlags
	conn.register(fs, e.getenv)
	var (
		sandboxURL = envOr(e.getenv, "SANDBOX_URL", defaultSandboxURL)
		merchant   = "DEMO001"
		apiKey     = envOr(e.getenv, "SANDBOX_API_KEY", defaultSandboxKey)
		xAPIKey    = envOr(e.getenv, "SANDBOX_X_API_KEY", defaultSandboxKey)
		timeout    = defaultWait
	)
	fs.StringVar(&sandboxURL, "sandbox-url", sandboxURL, "sandbox gateway base `URL` (env SANDBOX_URL)")
	fs.StringVar(&merchant, "merchant", merchant, "merchant `id` of the demo payments")
	fs.StringVar(&apiKey, "api-key", apiKey, "sandbox API `key`, sent as Authorization: Basic (env SANDBOX_API_KEY)")
	fs.StringVar(&xAPIKey, "x-api-key", xAPIKey, "sandbox `key` sent as x-api-key (env SANDBOX_X_API_KEY)")
	fs.DurationVar(&timeout, "timeout", timeout, "how long to wait for the outcomes")
	if done, err := parseFlags(fs, demoHelp, args, e); done || err != nil {
		return err
	}
	if u, err := url.Parse(sandboxURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("demo: --sandbox-url: want an http(s) URL such as %s, got %q", defaultSandboxURL, sandboxURL)
	}
	if timeout <= 0 {
		return usageErrorf("demo: --timeout must be positive, got %s", timeout)
	}

	pc, closeConn, err := conn.connect(ctx, true)
	if err != nil {
		return err
	}
	defer closeConn()
	cl := pc.Client()
	defer cl.Close()

	// 1. Four authorisations on the sandbox, as a shop's checkout makes them.
	gw := sandboxClient{base: strings.TrimRight(sandboxURL, "/"), apiKey: apiKey, xAPIKey: xAPIKey, http: &http.Client{Timeout: 10 * time.Second}}
	run := uuid.NewString()[:8]
	amounts := []int64{1500, 3000, 800, 2000}
	txns := make([]string, len(amounts))
	for i, a := range amounts {
		ref := fmt.Sprintf("demo-%s-%d", run, i+1)
		id, err := gw.authorise(ctx, merchant, a, "JPY", ref)
		if err != nil {
			return err
		}
		txns[i] = id
		fmt.Fprintf(e.stdout, "authorised #%d transaction=%s amount=%d currency=JPY\n", i+1, id, a)
	}

	// 2. The commands.
	key := func(n int) string { return fmt.Sprintf("demo-%s-%d", run, n) }
	jpy := func(n int64) *int64 { return &n }
	newCmd := func(typ command.Type, txn string, amount *int64, k string) command.Command {
		c := command.Command{CommandID: uuid.NewString(), Type: typ, IdempotencyKey: k, MerchantID: merchant,
			TransactionID: txn, Amount: amount, Notes: "publisher demo"}
		if amount != nil {
			c.Currency = "JPY"
		}
		return c
	}
	steps := []*demoStep{
		{label: "#1 full capture", cmd: newCmd(command.Capture, txns[0], jpy(amounts[0]), key(1)), want: events.CaptureSucceeded},
		{label: "#2 partial capture", cmd: newCmd(command.Capture, txns[1], jpy(1200), key(2)), want: events.CaptureSucceeded},
		{label: "#3 void", cmd: newCmd(command.Void, txns[2], nil, key(3)), want: events.VoidSucceeded},
		{label: "#4 capture", cmd: newCmd(command.Capture, txns[3], jpy(amounts[3]), key(4)), want: events.CaptureSucceeded},
		{label: "unknown transaction", cmd: newCmd(command.Capture, uuid.NewString(), jpy(500), key(5)), want: events.CaptureFailed},
		{label: "#4 again, same key", cmd: newCmd(command.Capture, txns[3], jpy(amounts[3]), key(4)), want: events.Duplicate},
	}
	first, repeat := steps[:5], steps[5]

	// Published and awaited by the public client, as an order service
	// would: its one follower of the events stream answers every wait, and
	// finds an outcome stored before its wait began.
	publishStep := func(s *demoStep) error {
		enc, err := publish.EncodeCommand(&s.cmd)
		if err != nil {
			return fmt.Errorf("demo %s: %w", s.label, err)
		}
		if s.ack, err = cl.Publish(ctx, enc); err != nil {
			return fmt.Errorf("demo %s: %w", s.label, err)
		}
		fmt.Fprintf(e.stdout, "published %-21s %s command_id=%s idempotency_key=%s stream_seq=%d\n",
			s.label, s.cmd.Type, s.cmd.CommandID, s.cmd.Key(), s.ack.Sequence)
		return nil
	}
	waitStep := func(ctx context.Context, s *demoStep) {
		if s.outcome != nil || s.err != nil {
			return
		}
		res, err := cl.AwaitCommand(ctx, s.ack)
		if err != nil {
			s.err = err
			return
		}
		o, err := publish.OutcomeOf(res)
		if err != nil {
			s.err = err
			return
		}
		s.outcome = &o
	}
	for _, s := range first {
		if err := publishStep(s); err != nil {
			return err
		}
	}
	// One deadline for the five outcomes, another for the repeat, so a demo
	// without a worker gives up after at most twice the timeout.
	firstCtx, cancelFirst := context.WithTimeout(ctx, timeout)
	defer cancelFirst()
	// The repeat goes out once #4 has its outcome, so the worker answers it
	// from the stored outcome: a command.duplicate event.
	waitStep(firstCtx, steps[3])
	if steps[3].outcome != nil {
		if err := publishStep(repeat); err != nil {
			return err
		}
	} else {
		repeat.err = errors.New("not published: #4 had no outcome")
	}
	for _, s := range first {
		waitStep(firstCtx, s)
	}
	repeatCtx, cancelRepeat := context.WithTimeout(ctx, timeout)
	defer cancelRepeat()
	waitStep(repeatCtx, repeat)

	// 3. The result table and the verdict.
	fmt.Fprintln(e.stdout)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tKIND\tTRANSACTION\tAMOUNT\tGATEWAY CODE\tEVENT ID")
	var problems []string
	for _, s := range steps {
		if s.outcome == nil {
			fmt.Fprintf(tw, "%s\t(no outcome)\t%s\t-\t-\t-\n", s.label, s.cmd.TransactionID)
			problems = append(problems, fmt.Sprintf("%s: %v", s.label, s.err))
			continue
		}
		ev := s.outcome.Event
		d := ev.Data
		amount := "-"
		if d.Amount != nil {
			amount = strconv.FormatInt(*d.Amount, 10) + " " + d.Currency
		}
		code := d.GatewayCode
		if code == "" && d.Error != nil {
			code = d.Error.Code
		}
		if code == "" {
			code = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.label, s.outcome.Kind, orDash(d.TransactionID), amount, code, ev.ID)
		if s.outcome.Kind != s.want {
			problems = append(problems, fmt.Sprintf("%s: got %s, want %s", s.label, s.outcome.Kind, s.want))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "\nThe capture of the unknown transaction is expected to fail.\nFollow the events: publisher events --merchant %s --all%s\n", merchant, urlHint(conn.conn.URL))
	if len(problems) > 0 {
		return fmt.Errorf("demo: %d of %d outcomes not as expected: %s", len(problems), len(steps), strings.Join(problems, "; "))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// urlHint repeats a non-default --nats-url in a printed command.
func urlHint(u string) string {
	if u == defaultNATSURL {
		return ""
	}
	return " --nats-url " + publish.RedactURL(u)
}

// sandboxClient makes the shop's authorisation call on the sandbox gateway.
type sandboxClient struct {
	base    string
	apiKey  string
	xAPIKey string
	http    *http.Client
}

// paymentAnswer is the part of the payment answer the demo reads.
type paymentAnswer struct {
	Success         bool `json:"success"`
	StatusCode      int  `json:"status_code"`
	GatewayResponse struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"gateway_response"`
	TransactionDetails struct {
		ID string `json:"id"`
	} `json:"transaction_details"`
}

// authorise posts a payment (pre-authorisation) with the documented body and
// test card, and returns the authorisation's transaction id.
func (c sandboxClient) authorise(ctx context.Context, merchant string, amount int64, currency, ref string) (string, error) {
	address := map[string]string{
		"country": "JP", "email": "billing@testemail.com", "phone_number": "8112345678",
		"address1": "1-2-3 Shinjuku", "city": "Shinjuku-ku", "state": "Tokyo", "postal_code": "1600022",
	}
	body, err := json.Marshal(map[string]any{
		"amount":   strconv.FormatInt(amount, 10),
		"currency": currency,
		"card": map[string]string{
			"cvc": "100", "expiry_month": "12", "expiry_year": "30", "name": "John Doe", "number": "5200000000001005",
		},
		"merchant_txn_ref": ref,
		"customer_ip":      "127.0.0.1",
		"merchant_id":      merchant,
		"return_url": map[string]string{
			"webhook_url": "http://127.0.0.1/webhook", "success_url": "http://www.successurl.com/", "decline_url": "http://www.declineurl.com/",
		},
		"billing_address":  address,
		"shipping_address": address,
		"browser_info": map[string]any{
			"acceptHeader": "text/html", "screenColorDepth": "48", "javaEnabled": false, "language": "en",
			"screenHeight": "1200", "screenWidth": "1600", "challengeWindow": "4", "userAgent": "payworker-publisher-demo",
		},
		"time_zone": "Asia/Tokyo",
	})
	if err != nil {
		return "", err
	}
	endpoint := c.base + "/api/v1/server-to-server-interface/payment"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("sandbox payment: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Basic "+c.apiKey)
	}
	if c.xAPIKey != "" {
		req.Header.Set("x-api-key", c.xAPIKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("sandbox gateway at %s does not answer: it runs inside the worker (`go run ./cmd/worker` without a gateway URL) or as `go run ./cmd/sandbox`; point --sandbox-url (SANDBOX_URL) at it: %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("sandbox payment: read answer: %w", err)
	}
	var a paymentAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return "", fmt.Errorf("sandbox payment: HTTP %d, answer is not JSON: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusCreated || !a.Success || a.TransactionDetails.ID == "" {
		if resp.StatusCode == http.StatusUnauthorized {
			return "", errors.New("sandbox payment: HTTP 401: set --api-key/--x-api-key (SANDBOX_API_KEY, SANDBOX_X_API_KEY) to the sandbox's keys")
		}
		return "", fmt.Errorf("sandbox payment: HTTP %d %s: %s", resp.StatusCode, a.GatewayResponse.Code, a.GatewayResponse.Message)
	}
	return a.TransactionDetails.ID, nil
}
