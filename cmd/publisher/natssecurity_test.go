package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/natsconn"
	"github.com/payworker/payworker/internal/natsconn/natsconntest"
	"github.com/payworker/payworker/internal/testenv"
)

// securedPublisher runs the publisher as the operator user of
// deploy/nats/permissions.conf.
type securedPublisher struct {
	srv *natsconntest.Server
	env map[string]string
}

func (p *securedPublisher) run(ctx context.Context, t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(ctx, append([]string{"publisher"}, args...), func(k string) string { return p.env[k] }, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

// startWorkerProcess builds cmd/worker and runs it against srv as the
// payworker user, with a small retry budget, until the test ends. It returns
// the address of its in-process sandbox gateway.
func startWorkerProcess(t *testing.T, srv *natsconntest.Server) (sandboxAddr string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build cmd/worker: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	if out, err := exec.Command(goTool, "build", "-o", bin, "github.com/payworker/payworker/cmd/worker").CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/worker: %v\n%s", err, out)
	}
	sandboxAddr = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	httpAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"NATS_URL="+srv.URL, "NATS_USER=payworker", "NATS_PASSWORD_FILE="+srv.PasswordFile(t, "payworker"),
		"SANDBOX_ADDR="+sandboxAddr, "HTTP_ADDR="+httpAddr, "DATA_DIR="+dir, "LOG_FORMAT=json", "WORKER_ID=secured",
		"RETRY_MAX_ELAPSED=2s", "RETRY_MAX_ATTEMPTS=2", "RETRY_INITIAL_INTERVAL=10ms", "RETRY_MAX_INTERVAL=50ms",
		"GATEWAY_OUTAGE_WAIT=0", "PAYMENTOPTIONS_SETTLE_DELAY=0")
	var log testenv.LogBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("worker log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return sandboxAddr
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("worker exited before it was ready: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready after a minute:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// authorise creates an authorisation on the sandbox at addr.
func authorise(t *testing.T, addr, merchant string) string {
	t.Helper()
	body := fmt.Sprintf(`{"amount":"1000","currency":"JPY","merchant_id":%q,"merchant_txn_ref":"order-1",
		"card":{"number":"5200000000001005","name":"John Doe","expiry_month":"12","expiry_year":"30","cvc":"123"}}`, merchant)
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/server-to-server-interface/payment", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic sandbox")
	req.Header.Set("x-api-key", "sandbox")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("payment: %v", err)
	}
	defer resp.Body.Close()
	var ans struct {
		TransactionDetails struct {
			ID string `json:"id"`
		} `json:"transaction_details"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &ans); err != nil || ans.TransactionDetails.ID == "" {
		t.Fatalf("payment = %d %s, want a transaction id", resp.StatusCode, raw)
	}
	return ans.TransactionDetails.ID
}

// setFaults sets the sandbox's faults (a JSON object; {} clears them).
func setFaults(t *testing.T, addr, faults string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/_sandbox/faults", "application/json", strings.NewReader(faults))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST /_sandbox/faults %s = %d", faults, resp.StatusCode)
	}
}

// TestPublisherAsOperator runs the publisher's subcommands as the operator
// user of deploy/nats/permissions.conf against a worker process running as
// payworker: provision, capture --wait, a dead letter replayed with --wait,
// events, batch, demo; no subject either uses is refused. Then the acts the
// operator must not do are refused: deleting or purging a stream,
// publishing an event, pulling the workers' commands.
func TestPublisherAsOperator(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/worker")
	}
	srv := natsconntest.Start(t, natsconntest.Options{})
	p := &securedPublisher{srv: srv, env: map[string]string{
		"NATS_URL": srv.URL, "NATS_USER": "operator", "NATS_PASSWORD_FILE": srv.PasswordFile(t, "operator"),
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if out, errOut, err := p.run(ctx, t, "provision"); err != nil || !strings.Contains(out, "created: PAYMENT_COMMANDS, PAYMENT_EVENTS, PAYMENT_DLQ") {
		t.Fatalf("provision as operator = %v\n%s%s", err, out, errOut)
	}
	sandboxAddr := startWorkerProcess(t, srv)

	auth := authorise(t, sandboxAddr, "M0001")
	out, errOut, err := p.run(ctx, t, "capture", "--merchant", "M0001", "--transaction", auth, "--amount", "1000", "--currency", "JPY",
		"--command-id", "op-1", "--wait=30s")
	if err != nil || !strings.Contains(out+errOut, "succeeded") {
		t.Fatalf("capture --wait as operator = %v\n%s%s", err, out, errOut)
	}

	// A capture the gateway keeps failing is dead-lettered; replayed once
	// the gateway is back, it succeeds.
	auth2 := authorise(t, sandboxAddr, "M0001")
	setFaults(t, sandboxAddr, `{"error_rate":1,"error_status":500}`)
	out, errOut, err = p.run(ctx, t, "capture", "--merchant", "M0001", "--transaction", auth2, "--amount", "1000", "--currency", "JPY",
		"--command-id", "op-2", "--wait=30s")
	if err == nil || !strings.Contains(out+errOut, "dead") {
		t.Fatalf("capture during an outage = %v, want dead-lettered\n%s%s", err, out, errOut)
	}
	setFaults(t, sandboxAddr, `{}`)
	out, errOut, err = p.run(ctx, t, "replay", "--wait=30s")
	if err != nil || !strings.Contains(out+errOut, "succeeded") {
		t.Fatalf("replay --wait as operator = %v\n%s%s", err, out, errOut)
	}

	out, errOut, err = p.run(ctx, t, "events", "--all", "--json", "--count", "3")
	if err != nil || strings.Count(out, "payments.capture.succeeded") != 2 {
		t.Errorf("events --all --count 3 as operator = %v, want 2 capture.succeeded among them\n%s%s", err, out, errOut)
	}

	auth3 := authorise(t, sandboxAddr, "M0002")
	file := filepath.Join(t.TempDir(), "batch.csv")
	if err := os.WriteFile(file, []byte("merchant_id,transaction_id,amount,currency\nM0002,"+auth3+",1000,JPY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = p.run(ctx, t, "batch", "--file", file, "--type", "capture", "--quiet", "--wait=30s")
	if err != nil {
		t.Errorf("batch --wait as operator = %v\n%s%s", err, out, errOut)
	}

	out, errOut, err = p.run(ctx, t, "demo", "--sandbox-url", "http://"+sandboxAddr+"/api/v1")
	if err != nil {
		t.Errorf("demo as operator = %v\n%s%s", err, out, errOut)
	}

	for _, v := range srv.Violations() {
		t.Errorf("nats-server refused a subject a program uses: %s", v)
	}
	if t.Failed() {
		return
	}

	// What the operator must not do.
	nc, err := natsconn.Connect(natsconn.Settings{URL: srv.URL, User: "operator", Password: srv.Password("operator"), InboxPrefix: defaultInboxPrefix},
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // the refusals are checked in the server's log
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{"PAYMENT_COMMANDS", "PAYMENT_EVENTS", "PAYMENT_DLQ"} {
		operatorRefused(t, srv, "$JS.API.STREAM.DELETE."+stream, func(ctx context.Context) error { return js.DeleteStream(ctx, stream) })
		operatorRefused(t, srv, "$JS.API.STREAM.PURGE."+stream, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+stream, nil)
			return err
		})
	}
	operatorRefused(t, srv, "payments.evt.capture.succeeded", func(ctx context.Context) error {
		_, err := js.Publish(ctx, "payments.evt.capture.succeeded", []byte(`{}`))
		return err
	})
	operatorRefused(t, srv, "$JS.API.CONSUMER.MSG.NEXT.PAYMENT_COMMANDS.payworker", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.PAYMENT_COMMANDS.payworker", []byte(`{"batch":1}`))
		return err
	})
	operatorRefused(t, srv, "$KV.payworker_idempotency.M0001", func(ctx context.Context) error {
		_, err := js.Publish(ctx, "$KV.payworker_idempotency.M0001", []byte(`{}`))
		return err
	})
}

// operatorRefused runs act, which must fail, and checks that the server
// logged a violation of the operator's permissions on subject.
func operatorRefused(t *testing.T, srv *natsconntest.Server, subject string, act func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 750*time.Millisecond)
	defer cancel()
	if err := act(ctx); err == nil {
		t.Errorf("operator on %s succeeded, want it refused", subject)
		return
	}
	want := fmt.Sprintf("user:operator\" - Publish Violation - Subject %q", subject)
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, v := range srv.Violations() {
			if strings.Contains(v, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("operator on %s failed, but the server logged no violation; violations: %q", subject, srv.Violations())
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPublisherTLS: the publisher reaches a nats-server that requires TLS and
// client certificates with --tls-ca, --tls-cert and --tls-key (or their
// NATS_TLS_* variables), as the operator user; a CA that did not sign the
// server's certificate fails naming NATS_TLS_CA, an unreadable password
// file naming NATS_PASSWORD_FILE.
func TestPublisherTLS(t *testing.T) {
	ca := natsconntest.NewCA(t, "payworker test CA")
	srv := natsconntest.Start(t, natsconntest.Options{TLS: &natsconntest.ServerTLS{CA: ca, Cert: ca.Server(t, "nats"), Verify: true}})
	op := ca.Client(t, "operator")
	ctx := testContext(t)
	p := &securedPublisher{srv: srv, env: map[string]string{
		"NATS_URL": srv.URL, "NATS_USER": "operator", "NATS_PASSWORD_FILE": srv.PasswordFile(t, "operator"), "NATS_TLS_CA": ca.File,
	}}
	if out, errOut, err := p.run(ctx, t, "provision", "--tls-cert", op.Cert, "--tls-key", op.Key); err != nil {
		t.Fatalf("provision over TLS = %v\n%s%s", err, out, errOut)
	}
	for _, v := range srv.Violations() {
		t.Errorf("nats-server refused a subject provision uses: %s", v)
	}

	other := natsconntest.NewCA(t, "another CA")
	p.env["NATS_TLS_CA"], p.env["NATS_TLS_CERT"], p.env["NATS_TLS_KEY"] = other.File, op.Cert, op.Key
	_, _, err := p.run(ctx, t, "provision")
	if want := "NATS_TLS_CA: the server's certificate is not signed by a CA in " + other.File; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("provision with another CA = %v, want it to say %q", err, want)
	}

	p.env["NATS_TLS_CA"] = ca.File
	p.env["NATS_PASSWORD_FILE"] = filepath.Join(t.TempDir(), "missing")
	_, _, err = p.run(ctx, t, "provision")
	if want := "NATS_PASSWORD_FILE (--password-file): open "; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("provision with a missing password file = %v, want it to say %q", err, want)
	}
	// The password itself in NATS_PASSWORD, as the worker takes it too.
	delete(p.env, "NATS_PASSWORD_FILE")
	p.env["NATS_PASSWORD"] = srv.Password("operator")
	if out, errOut, err := p.run(ctx, t, "provision"); err != nil {
		t.Errorf("provision with NATS_PASSWORD = %v\n%s%s", err, out, errOut)
	}
	p.env["NATS_PASSWORD_FILE"] = srv.PasswordFile(t, "operator")
	_, _, err = p.run(ctx, t, "provision")
	if want := "set either it or NATS_PASSWORD, not both"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("provision with NATS_PASSWORD and NATS_PASSWORD_FILE = %v, want it to say %q", err, want)
	}
	delete(p.env, "NATS_PASSWORD")
	delete(p.env, "NATS_TLS_KEY")
	_, _, err = p.run(ctx, t, "provision")
	if want := "NATS_TLS_KEY (--tls-key): required with NATS_TLS_CERT"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("provision with a certificate and no key = %v, want it to say %q", err, want)
	}
}
