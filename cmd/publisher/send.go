package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/publish"
	"github.com/payworker/payworker/internal/tracing"
)

func runCapture(ctx context.Context, e *env, args []string) error {
	return runSend(ctx, e, command.Capture, args)
}

func runVoid(ctx context.Context, e *env, args []string) error {
	return runSend(ctx, e, command.Void, args)
}

// flagOfField names the flag that sets each command field, for the messages
// of an invalid command.
var flagOfField = map[string]string{
	"command_id":      "--command-id",
	"idempotency_key": "--idempotency-key",
	"merchant_id":     "--merchant",
	"transaction_id":  "--transaction",
	"amount":          "--amount",
	"currency":        "--currency",
	"gateway":         "--gateway",
	"notes":           "--notes",
	"metadata":        "--metadata",
}

func sendHelp(typ command.Type) help {
	h := help{synopsis: string(typ) + " --merchant ID --transaction ID [flags]"}
	switch typ {
	case command.Capture:
		h.desc = `Publishes one capture command on the commands stream (header Nats-Msg-Id =
command_id) and prints its stream sequence once JetStream has stored it. The
command is checked against the command schema first; an invalid one is not
published (exit status 2). With --wait it then waits for the result event of
the idempotency key and exits 0 only if the capture succeeded.`
		h.example = `publisher capture --merchant M001 --transaction 3f1c...e9 \
    --amount 1000 --currency JPY --idempotency-key order-1234 --wait`
	case command.Void:
		h.desc = `Publishes one void command (a cancellation of an authorisation; --amount and
--currency ask for a partial cancellation where the gateway supports it). The
command is checked against the command schema first; an invalid one is not
published (exit status 2). With --wait it then waits for the result event of
the idempotency key and exits 0 only if the void succeeded.`
		h.example = `publisher void --merchant M001 --transaction 3f1c...e9 \
    --idempotency-key cancel-order-1234 --wait=1m`
	}
	return h
}

func runSend(ctx context.Context, e *env, typ command.Type, args []string) error {
	fs := newFlagSet(string(typ))
	var conn connFlags
	conn.register(fs, e.getenv)
	var (
		cmd    = command.Command{Type: typ, Metadata: map[string]string{}}
		amount int64Flag
		wait   waitFlag
	)
	fs.StringVar(&cmd.MerchantID, "merchant", "", "the gateway's merchant `id` (required)")
	fs.StringVar(&cmd.TransactionID, "transaction", "", "the authorisation's transaction `id` (required)")
	fs.Var(&amount, "amount", "`amount` in minor units of the currency (required for capture)")
	fs.StringVar(&cmd.Currency, "currency", "", "ISO 4217 `code`, required with --amount")
	fs.StringVar(&cmd.IdempotencyKey, "idempotency-key", "", "idempotency `key` (default: the command id)")
	fs.StringVar(&cmd.CommandID, "command-id", "", "command `id`, also the Nats-Msg-Id (default: a new UUID)")
	fs.StringVar(&cmd.Notes, "notes", "", "free `text` for the gateway, at most 128 characters")
	fs.StringVar(&cmd.Gateway, "gateway", "", "`gateway`: paymentoptions or sibs (default: the worker's)")
	fs.Var(metadataFlag(cmd.Metadata), "metadata", "`key=value` echoed in the result event (repeatable)")
	fs.Var(&wait, "wait", "wait for the outcome, at most `duration` (--wait alone: 30s)")
	if done, err := parseFlags(fs, sendHelp(typ), args, e); done || err != nil {
		return err
	}
	if cmd.CommandID == "" {
		cmd.CommandID = uuid.NewString()
	}
	if len(cmd.Metadata) == 0 {
		cmd.Metadata = nil
	}
	cmd.Amount = amount.ptr()
	// Checked, encoded and published by the public client, as an order
	// service would.
	enc, err := publish.EncodeCommand(&cmd)
	if err != nil {
		return invalidCommand(fs, err)
	}

	pc, closeConn, err := conn.connect(ctx, true)
	if err != nil {
		return err
	}
	defer closeConn()
	cl := pc.Client()
	defer cl.Close()

	// A new trace for the command: its events carry the trace id
	// (`publisher events` shows it).
	ack, err := cl.Publish(client.ContextWithTraceparent(ctx, tracing.NewTraceparent(), ""), enc)
	if err != nil {
		return err
	}
	note := ""
	if ack.Duplicate {
		note = " (already in the stream: this command_id was published before, the copy was dropped)"
	}
	fmt.Fprintf(e.stdout, "published %s command_id=%s idempotency_key=%s stream_seq=%d%s\n",
		typ, ack.CommandID, ack.IdempotencyKey, ack.Sequence, note)
	if wait.d == 0 {
		return nil
	}
	o, err := awaitOutcome(ctx, cl, ack, wait.d)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, o.Line())
	return outcomeError(o)
}

// invalidCommand turns a validation error into a usage error that names each
// field and the flag that sets it.
func invalidCommand(fs *flag.FlagSet, err error) error {
	var ie *command.InvalidError
	if !errors.As(err, &ie) {
		return usageErrorf("%s: %v", fs.Name(), err)
	}
	msgs := make([]string, 0, len(ie.Problems))
	for _, p := range ie.Problems {
		top, _, _ := strings.Cut(p.Field, ".")
		if f, ok := flagOfField[top]; ok {
			msgs = append(msgs, fmt.Sprintf("%s (flag %s)", p.Message, f))
		} else {
			msgs = append(msgs, p.Message)
		}
	}
	return usageErrorf("%s: invalid command: %s", fs.Name(), strings.Join(msgs, "; "))
}

// awaitOutcome waits at most d for the answer to the published command
// (client.Client.AwaitCommand): its terminal event, or the worker's answer
// to it; a duplicate comes with the terminal event it repeats when that is
// found. When the stream dropped the publication as a duplicate command_id,
// the answer to the first publication may already be stored: it is read
// back.
func awaitOutcome(ctx context.Context, cl *client.Client, ack client.PubAck, d time.Duration) (publish.Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	res, err := cl.AwaitCommand(ctx, ack)
	if err != nil {
		if errors.Is(err, client.ErrNoOutcome) {
			return publish.Outcome{}, fmt.Errorf("no outcome for %s command_id=%s idempotency_key=%s within %s: is a worker running (`go run ./cmd/worker`)? follow it with `publisher events --key %s`: %w",
				ack.Type, ack.CommandID, ack.IdempotencyKey, d, ack.IdempotencyKey, err)
		}
		return publish.Outcome{}, err
	}
	return publish.OutcomeOf(res)
}

// outcomeError is nil for a success and an exit-1 error otherwise.
func outcomeError(o publish.Outcome) error {
	if o.Succeeded() {
		return nil
	}
	switch o.Kind {
	case events.Duplicate:
		return fmt.Errorf("%s is a duplicate of event %s, whose outcome was not found", o.CommandType(), o.Event.Data.OriginalEventID)
	case events.Rejected:
		return fmt.Errorf("%s rejected", o.CommandType())
	case events.DeadLettered:
		return fmt.Errorf("%s dead-lettered: it is kept in the DLQ for replay", o.CommandType())
	}
	if f, ok := o.Final(); ok {
		k, _ := events.KindOfType(f.Type)
		return fmt.Errorf("%s %s", o.CommandType(), strings.TrimPrefix(string(k), o.CommandType()+"."))
	}
	return fmt.Errorf("%s: %s", o.CommandType(), o.Kind)
}
