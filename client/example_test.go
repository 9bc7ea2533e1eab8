package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/systemtest"
)

// The examples run against real servers: TestMain starts what `go run
// ./cmd/worker` runs with no configuration (embedded NATS with JetStream,
// the key-value idempotency store, the sandbox gateway, a worker), on free
// ports. With that worker running, natsURL is nats://127.0.0.1:4333.
var (
	natsURL string
	zero    *systemtest.Zero
)

// authorise stands for the shop's checkout, which authorised the payment
// at the gateway; it returns the authorisation's transaction id.
func authorise(merchant string, amount int64, currency string) string {
	return zero.Authorise(merchant, amount, currency)
}

var orders atomic.Int64

// nextOrder returns a new order number, so that a rerun of the examples
// (go test -count=2) does not repeat an idempotency key.
func nextOrder() int64 { return 1000 + orders.Add(1) }

// connect returns a Client on the worker's NATS server.
func connect() (*client.Client, func()) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	c := client.New(js)
	return c, func() {
		c.Close()
		nc.Close()
	}
}

// ExampleClient_Do captures a shipped order and waits for the outcome.
func ExampleClient_Do() {
	c, done := connect()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	txn := authorise("M001", 2500, "JPY")
	order := nextOrder()
	res, err := c.Do(ctx, client.Capture{
		// One capture per shipment, however often the fulfilment is seen.
		IdempotencyKey: fmt.Sprintf("order-%d/shipment-1", order),
		MerchantID:     "M001",
		TransactionID:  txn,
		Amount:         2500,
		Currency:       "JPY",
		Metadata:       map[string]string{"order": fmt.Sprint(order)},
	})
	if err != nil {
		log.Fatal(err)
	}
	switch r := res.(type) {
	case *client.Succeeded:
		fmt.Println("captured", *r.Data.Amount, r.Data.Currency, "gateway code", r.GatewayCode)
	default:
		fmt.Println("not captured:", res)
	}

	// The same fulfilment again: no second capture, the first outcome.
	res, err = c.Do(ctx, client.Capture{
		IdempotencyKey: fmt.Sprintf("order-%d/shipment-1", order),
		MerchantID:     "M001",
		TransactionID:  txn,
		Amount:         2500,
		Currency:       "JPY",
		Metadata:       map[string]string{"order": fmt.Sprint(order)},
	})
	if err != nil {
		log.Fatal(err)
	}
	if dup, ok := res.(*client.Duplicate); ok {
		fmt.Println("again: duplicate, original", dup.Original.(*client.Succeeded).GatewayCode, "ok:", res.OK())
	}
	// Output:
	// captured 2500 JPY gateway code INFO0001
	// again: duplicate, original INFO0001 ok: true
}

// ExampleClient_Do_void cancels an authorisation when the order is
// cancelled before shipping.
func ExampleClient_Do_void() {
	c, done := connect()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	txn := authorise("M001", 800, "JPY")
	res, err := c.Do(ctx, client.Void{
		IdempotencyKey: fmt.Sprintf("order-%d/cancel", nextOrder()),
		MerchantID:     "M001",
		TransactionID:  txn,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%T ok=%v gateway code %s\n", res, res.OK(), res.(*client.Succeeded).GatewayCode)
	// Output: *client.Succeeded ok=true gateway code INFO0003
}

// ExampleDeclined handles a capture the gateway refuses: more than was
// authorised. A decline is final; the order needs another payment.
func ExampleDeclined() {
	c, done := connect()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	txn := authorise("M001", 1000, "JPY")
	res, err := c.Do(ctx, client.Capture{
		IdempotencyKey: fmt.Sprintf("order-%d/shipment-1", nextOrder()),
		MerchantID:     "M001",
		TransactionID:  txn,
		Amount:         1500,
		Currency:       "JPY",
	})
	if err != nil {
		log.Fatal(err)
	}
	var declined *client.Declined
	switch r := res.(type) {
	case *client.Succeeded:
		fmt.Println("captured")
	case *client.Declined:
		declined = r
		fmt.Println("declined:", r.Code, r.GatewayCode, r.Data.GatewayResponseCode)
	default:
		fmt.Println("other outcome:", res)
	}
	if declined != nil {
		fmt.Println("retry with another payment method; gateway said:", declined.GatewayMessage)
	}
	// Output:
	// declined: gateway_declined ERR0400 836
	// retry with another payment method; gateway said: キャプチャ金額が事前承認額を超えています。
}

// ExampleCapture_Validate shows the worker's own error for a command it
// would reject: the field, the problem and the rule. Nothing is published.
func ExampleCapture_Validate() {
	err := client.Capture{
		MerchantID:    "MERCHANT-0001",
		TransactionID: "ab8444e7-fec0-40dd-994d-0ad813785f74",
		Amount:        1000,
		Currency:      "jpy",
	}.Validate()
	var ve *client.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			fmt.Printf("%s (%s): %s\n", p.Field, p.Rule, p.Message)
		}
	}
	fmt.Println(errors.Is(err, client.ErrInvalidCommand))
	// Output:
	// merchant_id (maxLength): merchant_id: must be at most 10 characters, got 13
	// currency (pattern): currency: must match ^[A-Z]{3}$ (ISO 4217 alpha-3), got "jpy"
	// true
}

// ExampleClient_Await reads the outcome of a key whose command was
// published earlier, by another process or before a restart.
func ExampleClient_Await() {
	c, done := connect()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	txn := authorise("M002", 300, "JPY")
	key := fmt.Sprintf("order-%d/shipment-1", nextOrder())
	if _, err := c.Publish(ctx, client.Capture{IdempotencyKey: key, MerchantID: "M002", TransactionID: txn, Amount: 300, Currency: "JPY"}); err != nil {
		log.Fatal(err)
	}

	// Later, maybe in another process:
	other, done2 := connect()
	defer done2()
	res, err := other.Await(ctx, "M002", key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.EventOf(res).Kind(), res.OK())
	// Output: capture.succeeded true
}

func ExampleClient_Events() {
	c, done := connect()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	txn := authorise("M003", 700, "JPY")
	if _, err := c.Do(ctx, client.Void{IdempotencyKey: fmt.Sprintf("order-%d/cancel", nextOrder()), MerchantID: "M003", TransactionID: txn}); err != nil {
		log.Fatal(err)
	}
	for ev, err := range c.Events(ctx, client.Filter{MerchantID: "M003", TransactionID: txn, All: true}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Kind(), ev.Subject == txn)
		break
	}
	// Output: void.succeeded true
}
