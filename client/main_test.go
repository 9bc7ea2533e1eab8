package client_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/client"

	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/systemtest"
)

func TestMain(m *testing.M) {
	z, err := systemtest.StartZero()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the zero-config system:", err)
		os.Exit(1)
	}
	zero, natsURL = z, z.NATSURL
	code := m.Run()
	z.Close()
	os.Exit(code)
}

func TestAwaitManyConcurrent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	events, err := js.Stream(ctx, "PAYMENT_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	// The worker and the sandbox run in this process too, with goroutines
	// of their own that come and go: only the client's are counted (its
	// own code, and the subscriptions of its ordered consumers, which the
	// worker does not use).
	baseline := clientGoroutines()

	// 1,000 orders: the even ones capture what was authorised, the odd ones
	// more (declined by the gateway). The first half is done before anyone
	// waits.
	const n, before = 1000, 500
	type order struct {
		key, txn string
		amount   int64
	}
	orders := make([]order, n)
	for i := range orders {
		txn := zero.Authorise("MANY", 1000, "JPY")
		amount := int64(1000)
		if i%2 == 1 {
			amount = 1001
		}
		orders[i] = order{key: fmt.Sprintf("many-%d-%s", i, txn[:8]), txn: txn, amount: amount}
	}
	capture := func(o order) client.Capture {
		return client.Capture{IdempotencyKey: o.key, MerchantID: "MANY", TransactionID: o.txn, Amount: o.amount, Currency: "JPY"}
	}
	pub := client.New(js)
	defer pub.Close()
	lastBefore := events.CachedInfo().State.Msgs
	for _, o := range orders[:before] {
		if _, err := pub.Publish(ctx, capture(o)); err != nil {
			t.Fatal(err)
		}
	}
	for {
		info, err := events.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= lastBefore+before {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the worker answered %d of %d commands", info.State.Msgs-lastBefore, before)
		}
		time.Sleep(20 * time.Millisecond)
	}

	c := client.New(js)
	var maxConsumers atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if info, err := events.Info(ctx); err == nil {
				if n := int64(info.State.Consumers); n > maxConsumers.Load() {
					maxConsumers.Store(n)
				}
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	results := make([]client.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, o := range orders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i >= before {
				if _, err := c.Publish(ctx, capture(o)); err != nil {
					errs[i] = err
					return
				}
			}
			results[i], errs[i] = c.Await(ctx, "MANY", o.key)
		}()
	}
	wg.Wait()
	close(stopSampling)
	<-sampled

	for i, res := range results {
		o := orders[i]
		if errs[i] != nil {
			t.Fatalf("order %d: %v", i, errs[i])
		}
		ev := client.EventOf(res)
		want := "*client.Succeeded"
		if i%2 == 1 {
			want = "*client.Declined"
		}
		if got := fmt.Sprintf("%T", res); got != want || ev.Data.IdempotencyKey != o.key || ev.Data.TransactionID != o.txn || *ev.Data.Amount != o.amount {
			t.Errorf("order %d (key %s, amount %d): %s %v, want %s of its key", i, o.key, o.amount, got, res, want)
		}
	}
	// One follower and at most one history pass, whatever the number of
	// waits; the publisher client never waited.
	if got := maxConsumers.Load(); got > 2 {
		t.Errorf("consumers on the events stream during the waits: up to %d, want at most 2", got)
	}
	c.Close()
	pub.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(clientGoroutines()) > len(baseline) {
		if time.Now().After(deadline) {
			t.Fatalf("client goroutines: %d after Close, %d before: a leak\n%s",
				len(clientGoroutines()), len(baseline), strings.Join(clientGoroutines(), "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d outcomes; up to %d consumers on the events stream; client goroutines %d before, %d after Close",
		n, maxConsumers.Load(), len(baseline), len(clientGoroutines()))
}

// clientGoroutines returns the stacks of the goroutines that run this
// package's code or an ordered consumer's subscription, but not this
// function's.
func clientGoroutines() []string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "clientGoroutines") || strings.Contains(g, "testing.(*T)") && !strings.Contains(g, "payworker/client.") {
			continue
		}
		if strings.Contains(g, "payworker/payworker/client.") || strings.Contains(g, "orderedSubscription") ||
			strings.Contains(g, "pullSubscription") {
			out = append(out, g)
		}
	}
	return out
}

// TestDoReEmissions sends every capture of a batch again with a new
// command id, as an order service re-emitting its fulfilments does, all at
// once through one Client: every Do returns, each key is captured once, and
// every re-emission's *Duplicate carries the key's original outcome. A
// third of the keys were done before the client started (their outcome is
// in the history); the others are sent twice at the same time, so that a
// re-emission often finds its key recorded before the original event is
// published (the worker records the outcome, then publishes it): the
// duplicate event can precede the original in the stream.
func TestDoReEmissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const n, early = 300, 100
	run := fmt.Sprint(time.Now().UnixNano())
	captures := make([]client.Capture, n)
	for i := range captures {
		captures[i] = client.Capture{IdempotencyKey: fmt.Sprintf("reemit-%s-%d", run, i), MerchantID: "REEMIT",
			TransactionID: zero.Authorise("REEMIT", 1000, "JPY"), Amount: 1000, Currency: "JPY"}
	}
	gatewayBefore := zero.Sandbox.Calls(sandbox.EndpointCapture)

	first := client.New(js)
	var wg sync.WaitGroup
	for i := range captures[:early] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := first.Do(ctx, captures[i]); err != nil || !res.OK() {
				t.Errorf("first capture of key %d = %v, %v; want success", i, res, err)
			}
		}()
	}
	wg.Wait()
	first.Close()
	if t.Failed() {
		t.FailNow()
	}

	// Every key is re-emitted; the keys not done yet are also sent for the
	// first time, concurrently with their re-emission.
	type call struct {
		key int
		res client.Result
		err error
	}
	var calls []*call
	for i := range captures {
		calls = append(calls, &call{key: i})
		if i >= early {
			calls = append(calls, &call{key: i})
		}
	}
	c := client.New(js)
	defer c.Close()
	for _, cl := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl.res, cl.err = c.Do(ctx, captures[cl.key]) // CommandID empty: a new one each time
		}()
	}
	wg.Wait()

	succeeded := make([]int, n)
	var duplicates, noOriginal int
	for _, cl := range calls {
		key := captures[cl.key].IdempotencyKey
		switch r := cl.res.(type) {
		case nil:
			t.Errorf("key %d: Do = %v", cl.key, cl.err)
		case *client.Succeeded:
			succeeded[cl.key]++
		case *client.Duplicate:
			duplicates++
			o, ok := r.Original.(*client.Succeeded)
			if !ok || o.ID != r.OriginalEventID || o.Data.IdempotencyKey != key || o.Data.CommandID != r.OriginalCommandID {
				noOriginal++
				t.Errorf("key %d: duplicate of %s (command %s), Original = %v; want that success", cl.key, r.OriginalEventID, r.OriginalCommandID, r.Original)
			}
		default:
			t.Errorf("key %d: Do = %v, want a success or a duplicate", cl.key, r)
		}
	}
	for i, got := range succeeded {
		want := 1
		if i < early {
			want = 0 // captured before this round
		}
		if got != want {
			t.Errorf("key %d: %d successes in this round, want %d", i, got, want)
		}
	}
	if got := zero.Sandbox.Calls(sandbox.EndpointCapture) - gatewayBefore; got != n {
		t.Errorf("captures at the gateway = %d, want %d: one per key", got, n)
	}
	t.Logf("%d calls: %d duplicates, %d without their original", len(calls), duplicates, noOriginal)
}
