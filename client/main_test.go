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
