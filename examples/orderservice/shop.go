package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/client"
)

// The order service's own stream of fulfilments.
const (
	ordersStream       = "ORDERS"
	fulfilledSubject   = "orders.fulfilled"
	ordersStreamMaxAge = 24 * time.Hour
)

// Fulfilment is an orders.fulfilled event: a shipment left the warehouse,
// and its part of the order's payment is to be captured.
type Fulfilment struct {
	// EventID identifies this emission; an emitter that sends the same
	// fulfilment again (after a crash, a timeout) makes a new one.
	EventID       string `json:"event_id"`
	OrderID       string `json:"order_id"`
	ShipmentID    string `json:"shipment_id"`
	MerchantID    string `json:"merchant_id"`
	TransactionID string `json:"transaction_id"`
	Amount        int64  `json:"amount"`
	Currency      string `json:"currency"`
}

// CaptureKey is the capture's idempotency key: one capture per shipment of
// an order, however often its fulfilment is emitted.
func (f Fulfilment) CaptureKey() string { return f.OrderID + "/" + f.ShipmentID }

// outcome is what became of one emitted fulfilment.
type outcome struct {
	f   Fulfilment
	res client.Result
	err error
}

type shop struct {
	cfg config
	out io.Writer

	mu       sync.Mutex
	outcomes map[string]outcome // by fulfilment event id
	arrived  chan struct{}
	waits    sync.WaitGroup
}

func newShop(cfg config, out io.Writer) *shop {
	return &shop{cfg: cfg, out: out, outcomes: map[string]outcome{}, arrived: make(chan struct{}, 1)}
}

func (s *shop) run(ctx context.Context) error {
	nc, err := nats.Connect(s.cfg.natsURL, nats.Name("orderservice-example"))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s (start the worker: `go run ./cmd/worker`, or set NATS_URL): %w", s.cfg.natsURL, err)
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	payments := client.New(js)
	defer payments.Close()

	// 1. The checkout authorised each order's payment.
	run := uuid.NewString()[:8]
	orders := []struct {
		id     string
		amount int64
	}{{"order-" + run + "-1", 1500}, {"order-" + run + "-2", 3000}, {"order-" + run + "-3", 800}}
	var shipped []Fulfilment
	co := newCheckout(s.cfg.sandboxURL, s.cfg.apiKey)
	for _, o := range orders {
		txn, err := co.authorise(ctx, s.cfg.merchant, o.id, o.amount, "JPY")
		if err != nil {
			return fmt.Errorf("checkout of %s: %w", o.id, err)
		}
		fmt.Fprintf(s.out, "checkout   %s authorised %d JPY, transaction %s\n", o.id, o.amount, txn)
		shipped = append(shipped, Fulfilment{OrderID: o.id, ShipmentID: "ship-1", MerchantID: s.cfg.merchant,
			TransactionID: txn, Amount: o.amount, Currency: "JPY"})
	}

	// 2. The consumer that captures on fulfilment, listening before the
	// warehouse emits anything.
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: ordersStream, Subjects: []string{"orders.>"}, MaxAge: ordersStreamMaxAge, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("stream %s: %w", ordersStream, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Name:              "capture-on-fulfilment-" + run,
		FilterSubject:     fulfilledSubject,
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           10 * time.Second,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	consuming, err := cons.Consume(func(msg jetstream.Msg) { s.capture(ctx, payments, msg) })
	if err != nil {
		return err
	}
	defer func() {
		consuming.Stop()
		<-consuming.Closed()
		s.waits.Wait()
	}()

	// 3. The warehouse ships each order, and emits the second fulfilment
	// twice, as an at-least-once emitter may.
	emitted := append(shipped, shipped[1])
	for i := range emitted {
		emitted[i].EventID = uuid.NewString()
		if err := emit(ctx, js, emitted[i]); err != nil {
			return err
		}
		again := ""
		if i == len(emitted)-1 {
			again = " (again)"
		}
		fmt.Fprintf(s.out, "warehouse  %s emitted for %s%s\n", fulfilledSubject, emitted[i].CaptureKey(), again)
	}

	// 4. The outcomes, in the order the fulfilments were emitted.
	for {
		s.mu.Lock()
		n := len(s.outcomes)
		s.mu.Unlock()
		if n == len(emitted) {
			break
		}
		select {
		case <-s.arrived:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d captures answered before the timeout: is the worker running?", n, len(emitted))
		}
	}
	return s.report(emitted)
}

// emit publishes a fulfilment on the order service's stream.
func emit(ctx context.Context, js jetstream.JetStream, f Fulfilment) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, fulfilledSubject, data, jetstream.WithMsgID(f.EventID)); err != nil {
		return fmt.Errorf("emit %s: %w", f.CaptureKey(), err)
	}
	return nil
}

// capture turns one fulfilment into a capture. The fulfilment is acked
// once the capture command is stored (the capture will happen); a command
// that may not be stored leaves the fulfilment to be redelivered, which
// publishes the same command again: the CommandID comes from the
// fulfilment's event id, and the key from the order and shipment, so
// nothing is captured twice. The outcome is awaited on the side.
func (s *shop) capture(ctx context.Context, payments *client.Client, msg jetstream.Msg) {
	var f Fulfilment
	if err := json.Unmarshal(msg.Data(), &f); err != nil {
		_ = msg.Term() // never valid: do not redeliver
		return
	}
	ack, err := payments.Publish(ctx, client.Capture{
		CommandID:      "fulfilment-" + f.EventID,
		IdempotencyKey: f.CaptureKey(),
		MerchantID:     f.MerchantID,
		TransactionID:  f.TransactionID,
		Amount:         f.Amount,
		Currency:       f.Currency,
		Metadata:       map[string]string{"order_id": f.OrderID, "shipment_id": f.ShipmentID},
	})
	switch {
	case errors.Is(err, client.ErrInvalidCommand):
		_ = msg.Term()
		s.record(outcome{f: f, err: err})
		return
	case err != nil:
		_ = msg.NakWithDelay(time.Second) // stored or not, publishing again is safe
		return
	}
	_ = msg.Ack()
	s.waits.Add(1)
	go func() {
		defer s.waits.Done()
		res, err := payments.AwaitCommand(ctx, ack)
		s.record(outcome{f: f, res: res, err: err})
	}()
}

func (s *shop) record(o outcome) {
	s.mu.Lock()
	s.outcomes[o.f.EventID] = o
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

// report prints the outcome of every emitted fulfilment, and fails unless
// every shipment was captured exactly once.
func (s *shop) report(emitted []Fulfilment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	captured := map[string]int{}
	repeats := 0
	var problems []string
	fmt.Fprintln(s.out)
	for i, f := range emitted {
		o := s.outcomes[f.EventID]
		label := fmt.Sprintf("capture    %-22s", f.CaptureKey())
		switch r := o.res.(type) {
		case nil:
			fmt.Fprintf(s.out, "%s error: %v\n", label, o.err)
			problems = append(problems, fmt.Sprintf("fulfilment %d: %v", i+1, o.err))
		case *client.Succeeded:
			captured[f.CaptureKey()]++
			fmt.Fprintf(s.out, "%s captured %d %s (gateway %s, event %s)\n", label, *r.Data.Amount, r.Data.Currency, r.GatewayCode, r.ID)
		case *client.Duplicate:
			repeats++
			was := "outcome not found"
			if r.Original != nil {
				was = fmt.Sprintf("%T", r.Original)
				was = strings.ToLower(strings.TrimPrefix(was, "*client."))
			}
			fmt.Fprintf(s.out, "%s duplicate: done before (%s, event %s), no second capture\n", label, was, r.OriginalEventID)
		case *client.Declined:
			fmt.Fprintf(s.out, "%s declined by the gateway: %s %s\n", label, r.GatewayCode, r.GatewayMessage)
			problems = append(problems, fmt.Sprintf("%s declined", f.CaptureKey()))
		default:
			fmt.Fprintf(s.out, "%s %v\n", label, r)
			problems = append(problems, fmt.Sprintf("%s: %v", f.CaptureKey(), r))
		}
	}
	shipments := map[string]bool{}
	for _, f := range emitted {
		shipments[f.CaptureKey()] = true
	}
	for k := range shipments {
		if captured[k] != 1 {
			problems = append(problems, fmt.Sprintf("%s captured %d times, want once", k, captured[k]))
		}
	}
	fmt.Fprintf(s.out, "\n%d fulfilments emitted for %d shipments: %d captures, %d answered as duplicates\n",
		len(emitted), len(shipments), len(captured), repeats)
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}
