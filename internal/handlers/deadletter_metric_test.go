package handlers_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/metrics"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

// TestDeadLetterCountedByReason: a capture that spends its retry budget on a
// gateway answering 503 is dead-lettered, and
// payworker_dead_letters_total counts it under the type and the reason its
// dead_lettered event gives.
func TestDeadLetterCountedByReason(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := streams.Default()
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Commands, jetstream.ConsumerConfig{Durable: "test",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, FilterSubject: cfg.CommandWildcard()})
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.StartRedis(t)
	scopes, err := idempotency.NewKVScopeRegistry(ctx, js, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	store := idempotency.NewRedis(r.Client(t), idempotency.RedisOptions{Prefix: r.Prefix, TTL: time.Hour, Registry: scopes})
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	gw := &fakeGateway{}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	h := handlers.New(handlers.Config{
		JetStream: js, Streams: cfg, Store: store,
		Gateways: map[string]handlers.Gateway{"paymentoptions": gw}, DefaultGateway: "paymentoptions",
		Retry: fastRetry, Lease: 30 * time.Second, AckWait: 30 * time.Second,
		Holder: "test", Source: "urn:payworker:test",
		Now: c.Now, Sleep: c.Sleep, Observer: m,
	})
	gw.set(busy, busy, busy, busy, busy, busy, busy, busy)

	body, _ := json.Marshal(map[string]any{"command_id": "dl-1", "idempotency_key": "dl-1", "type": "capture", "merchant_id": merchant,
		"transaction_id": "auth-dl-1", "amount": 1000, "currency": "EUR"})
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: cfg.CommandSubject("capture"), Data: body}); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := <-batch.Messages()
	if !ok {
		t.Fatalf("no message: %v", batch.Error())
	}
	h.Handle(ctx, &spy{Msg: msg})

	evs, err := js.Stream(ctx, cfg.Events)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := evs.GetLastMsgForSubject(ctx, cfg.EventSubject(string(events.DeadLettered)))
	if err != nil {
		t.Fatalf("no dead_lettered event: %v", err)
	}
	var ev events.Event
	if err := json.Unmarshal(raw.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Data.Error == nil {
		t.Fatalf("dead_lettered event without an error: %s", raw.Data)
	}
	reason := ev.Data.Error.Code
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total, ours float64
	for _, f := range families {
		if f.GetName() != "payworker_dead_letters_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			total += s.GetCounter().GetValue()
			if labels["type"] == "capture" && labels["reason"] == reason {
				ours = s.GetCounter().GetValue()
			}
		}
	}
	if ours != 1 || total != 1 {
		t.Errorf("payworker_dead_letters_total{type=capture,reason=%s} = %v (all reasons %v), want 1 (1)", reason, ours, total)
	}
	// Each store call of the handler is timed: the claim at least.
	var claims uint64
	for _, f := range families {
		if f.GetName() != "payworker_idempotency_store_duration_seconds" {
			continue
		}
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["operation"] == "claim" && labels["result"] == "ok" {
				claims = s.GetHistogram().GetSampleCount()
			}
		}
	}
	if claims != 1 {
		t.Errorf("payworker_idempotency_store_duration_seconds{operation=claim,result=ok} count = %d, want 1", claims)
	}
}
