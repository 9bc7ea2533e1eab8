package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/handlers"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/paymentoptions"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
	"github.com/payworker/payworker/internal/worker"
)

// clusterSystem is payworker on a JetStream cluster (or on one server):
// in-process NATS servers, workers in-process, each with its own NATS
// connection and store client as separate processes would have, a real
// redis-server or the JetStream KV store, and the sandbox gateway over HTTP.
type clusterSystem struct {
	tb       testing.TB
	cl       *testenv.NATSCluster // nil on one server
	url      string
	replicas int
	js       jetstream.JetStream // the test's own connection
	sc       streams.Config
	sb       *sandbox.Sandbox
	gw       *paymentoptions.Client
	redis    *testenv.Redis // nil with the KV store
	o        clusterOptions
}

// clusterOptions shape a clusterSystem.
type clusterOptions struct {
	// nodes is the number of NATS servers; the streams and buckets get as
	// many replicas.
	nodes       int
	workers     int
	concurrency int
	kv          bool
	lease       time.Duration
	ackWait     time.Duration
	// log receives the workers' logs; nil discards them.
	log *slog.Logger
}

func startClusterSystem(tb testing.TB, o clusterOptions) *clusterSystem {
	tb.Helper()
	s := &clusterSystem{tb: tb, sc: streams.Default(), replicas: o.nodes, o: o}
	if o.nodes > 1 {
		s.cl = testenv.StartNATSCluster(tb, o.nodes)
		s.url = s.cl.URL()
	} else {
		s.url = testenv.StartNATS(tb).URL
	}
	s.sc.Replicas = s.replicas
	s.js = s.connect()
	if _, err := streams.Ensure(context.Background(), s.js, s.sc, streams.EnsureOptions{}); err != nil {
		tb.Fatalf("provision R%d streams: %v", s.replicas, err)
	}
	if !o.kv {
		s.redis = testenv.StartRedis(tb)
	}
	s.sb = sandbox.New(sandbox.Options{APIKey: "k", XAPIKey: "x", Seed: 1})
	base, stop, err := s.sb.Start("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = stop(context.Background()) })
	u, _ := url.Parse(base)
	s.gw, err = paymentoptions.New(paymentoptions.Config{BaseURL: u, APIKey: "k", XAPIKey: "x", Timeout: 2 * time.Second,
		MaxConns: o.workers * o.concurrency})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range o.workers {
		s.startWorker(fmt.Sprintf("w%d", i+1))
	}
	return s
}

// connect opens a connection to every server of the system, closed at the
// end of the test.
func (s *clusterSystem) connect() jetstream.JetStream {
	s.tb.Helper()
	nc, err := nats.Connect(s.url, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		s.tb.Fatalf("connect %s: %v", s.url, err)
	}
	s.tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.tb.Fatal(err)
	}
	return js
}

// startWorker runs one worker with its own connection and store client,
// stopped (as by SIGTERM) when the test ends.
func (s *clusterSystem) startWorker(id string) {
	tb := s.tb
	tb.Helper()
	ctx := context.Background()
	js := s.connect()
	var store handlers.Store
	if s.o.kv {
		kv, err := idempotency.NewKV(ctx, js, idempotency.KVOptions{TTL: time.Hour, Replicas: s.replicas})
		if err != nil {
			tb.Fatalf("worker %s: KV store: %v", id, err)
		}
		store = kv
	} else {
		reg, err := idempotency.NewKVScopeRegistry(ctx, js, "", s.replicas)
		if err != nil {
			tb.Fatalf("worker %s: scope registry: %v", id, err)
		}
		store = idempotency.NewRedis(s.redis.Client(tb), idempotency.RedisOptions{Prefix: s.redis.Prefix, TTL: time.Hour, Registry: reg})
	}
	log := slog.New(slog.DiscardHandler)
	if s.o.log != nil {
		log = s.o.log.With(slog.String("worker_id", id))
	}
	h := handlers.New(handlers.Config{
		JetStream:      js,
		Streams:        s.sc,
		Store:          store,
		Gateways:       map[string]handlers.Gateway{"paymentoptions": s.gw},
		DefaultGateway: "paymentoptions",
		Retry:          handlers.Retry{Initial: 20 * time.Millisecond, Max: 500 * time.Millisecond, MaxElapsed: time.Minute, MaxAttempts: 40},
		Lease:          s.o.lease,
		AckWait:        s.o.ackWait,
		Holder:         id,
		Source:         "urn:payworker:test:" + id,
		Logger:         log,
	})
	w := worker.New(worker.Config{JetStream: js, Streams: s.sc, Handler: h, Concurrency: s.o.concurrency,
		AckWait: s.o.ackWait, ShutdownTimeout: 5 * time.Second, Logger: log})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("worker %s: %v", id, err)
		}
	})
}

// capture is one capture command of a run: its key, authorisation and the
// command ids it is published under.
type capture struct {
	merchant, key, auth string
	amount              int64
	id                  string   // the first command_id
	otherIDs            []string // re-emissions under another command_id
	sameAgain           bool     // published a second time with the same command_id
}

func (c *capture) body(id string) []byte {
	b, _ := json.Marshal(map[string]any{"command_id": id, "type": "capture", "idempotency_key": c.key,
		"merchant_id": c.merchant, "transaction_id": c.auth, "amount": c.amount, "currency": "JPY"})
	return b
}

// publishRetrying publishes a command with Nats-Msg-Id = its command_id, as
// a client should: an attempt that times out or finds no stream (an
// election) is made again with the same id, which the stream stores once.
func publishRetrying(ctx context.Context, js jetstream.JetStream, subject string, body []byte, id string) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.PublishMsg(pctx, &nats.Msg{Subject: subject, Data: body}, jetstream.WithMsgID(id))
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNATSLeaderFailover runs 3 workers on a 3-node JetStream cluster with
// every stream and bucket R3, publishes 1,500 captures in waves (some again
// under the same command_id, some under another with the same key), and
// crashes the leader of PAYMENT_COMMANDS mid-run and restarts it, then the
// leader of PAYMENT_EVENTS (Kill: routes cut, then shut down, as kill -9).
// Once everything has settled:
//
//   - every key has exactly one terminal event, capture.succeeded, with the
//     key's deterministic id as its Nats-Msg-Id, and no failed, rejected or
//     dead_lettered event is stored;
//   - every re-emission under another command_id has its duplicate event;
//   - the sandbox's ledger holds exactly one capture per authorisation, and
//     it was asked for exactly one per key: no capture was sent twice, so
//     none was refused as already captured;
//   - the consumer has nothing pending or unacked.
//
// It logs, for each kill, what the killed server led, how long the stream
// took to elect a new leader, the largest gap between consecutive events
// stored around it and the slowest command (stored command to stored
// terminal event) among those in flight at the kill (docs/BENCHMARKS.md).
func TestNATSLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node JetStream cluster with two leader crashes: waits out two elections per store")
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) { runLeaderFailover(t, st.kv) })
	}
}

// Failover run settings.
const (
	failoverCaptures = 1500
	failoverWave     = 30                     // captures per wave
	failoverEvery    = 150 * time.Millisecond // between waves
)

func runLeaderFailover(t *testing.T, kv bool) {
	began := time.Now()
	logs := &testenv.LogBuffer{}
	s := startClusterSystem(t, clusterOptions{nodes: 3, workers: 3, concurrency: 32, kv: kv,
		// The lease bounds the finishing steps (fin) as in production, where
		// it is 30s: longer than an election. The ack wait is short so that
		// acks lost with a killed server come back soon.
		lease: 15 * time.Second, ackWait: 5 * time.Second,
		log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	defer func() {
		if t.Failed() {
			lines := strings.Split(logs.String(), "\n")
			t.Logf("workers' warnings (last 80 of %d):\n%s", len(lines), strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	// A gateway that answers in 100ms, as real ones do (or slower): about
	// 20 captures are in flight at any time, so some are at each kill.
	s.sb.SetFaults(sandbox.Faults{Latency: 100 * time.Millisecond})

	caps := make([]*capture, failoverCaptures)
	merchants := []string{"M01", "M02", "M03", "M04", "M05"}
	for i := range caps {
		m := merchants[i%len(merchants)]
		amount := int64(100 + rng.IntN(5000))
		c := &capture{merchant: m, key: fmt.Sprintf("k%04d", i), auth: s.sb.Authorise(m, amount, "JPY"), amount: amount}
		c.id = c.key + "-c0"
		switch rng.IntN(10) {
		case 0:
			c.sameAgain = true
		case 1:
			c.otherIDs = []string{c.key + "-c1"}
		}
		caps[i] = c
	}

	// Publish in waves, from a goroutine; a wave re-emits a few captures of
	// earlier waves (same or other command_id).
	var published atomic.Int64
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- func() error {
			subject := s.sc.CommandSubject("capture")
			var again []func() error
			for start := 0; start < len(caps); start += failoverWave {
				wave := caps[start:min(start+failoverWave, len(caps))]
				for _, c := range wave {
					if err := publishRetrying(ctx, s.js, subject, c.body(c.id), c.id); err != nil {
						return fmt.Errorf("publish %s: %w", c.id, err)
					}
					published.Add(1)
					if c.sameAgain {
						again = append(again, func() error { return publishRetrying(ctx, s.js, subject, c.body(c.id), c.id) })
					}
					for _, id := range c.otherIDs {
						again = append(again, func() error { return publishRetrying(ctx, s.js, subject, c.body(id), id) })
					}
				}
				// Re-emit what the wave before this one queued.
				n := len(again) / 2
				for _, f := range again[:n] {
					if err := f(); err != nil {
						return err
					}
				}
				again = again[n:]
				time.Sleep(failoverEvery)
			}
			for _, f := range again {
				if err := f(); err != nil {
					return err
				}
			}
			return nil
		}()
	}()

	type kill struct {
		stream, server string
		led            []string // the groups it led
		// elections holds how long each group it led was without a
		// leader on a running server.
		elections map[string]time.Duration
		at, back  time.Time
	}
	var kills []kill
	crash := func(stream string, after int64) {
		t.Helper()
		waitUntil(t, 2*time.Minute, fmt.Sprintf("%d captures published", after), func() bool { return published.Load() >= after })
		leader := s.cl.WaitStreamLeader(s.js, stream, 30*time.Second)
		k := kill{stream: stream, server: leader, led: s.ledBy(ctx, leader)}
		s.cl.Kill(leader)
		k.at = time.Now()
		k.elections = s.waitLeaders(t, k.led, k.at, 60*time.Second)
		s.cl.Restart(leader)
		s.cl.WaitJetStream(60 * time.Second)
		s.cl.WaitStreamLeader(s.js, stream, 60*time.Second)
		k.back = time.Now()
		kills = append(kills, k)
	}
	crash(s.sc.Commands, failoverCaptures/5)
	crash(s.sc.Events, failoverCaptures*3/5)
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	doneAt := s.waitAllDone(t, caps, 90*time.Second)
	processing := doneAt.Sub(began)
	s.settle(t, 60*time.Second)

	evs := s.readEventsWithTimes(t)
	again := checkFailover(t, s, caps, evs)

	// Measurements: the stored times of the commands and of their events.
	cmdAt := map[string]time.Time{} // command_id → first stored
	copies := map[string]int{}      // command_id → messages stored with it
	for _, m := range s.readAll(t, s.sc.Commands) {
		var c struct {
			ID string `json:"command_id"`
		}
		if json.Unmarshal(m.Data, &c) == nil {
			if _, ok := cmdAt[c.ID]; !ok {
				cmdAt[c.ID] = m.Time
			}
			copies[c.ID]++
		}
	}
	// A key's first command delivered again as a new message once the key
	// was completed gets a duplicate event naming the terminal one (the
	// handler republishes only for a redelivery, NumDelivered > 1): no
	// second terminal event, no gateway call. Stored twice, or delivered
	// twice as new by a consumer whose leader changed?
	if len(again) > 0 {
		first, last := again[0].at, again[0].at
		stored := 0
		for _, e := range again {
			if e.at.Before(first) {
				first = e.at
			}
			if e.at.After(last) {
				last = e.at
			}
			if copies[e.ev.Data.CommandID] > 1 {
				stored++
			}
		}
		t.Logf("%d commands came back as new messages after their key was completed (a duplicate event each, naming the terminal one), from %v to %v after the first kill; %d of them are stored twice in %s",
			len(again), first.Sub(kills[0].at).Round(10*time.Millisecond), last.Sub(kills[0].at).Round(10*time.Millisecond), stored, s.sc.Commands)
	}
	termAt := map[string]time.Time{} // key → its terminal event stored
	for _, e := range evs {
		if k, ok := events.KindOfType(e.ev.Type); ok && k.Terminal() {
			termAt[e.ev.Data.IdempotencyKey] = e.at
		}
	}
	var slowest time.Duration
	var slowestKey string
	for _, c := range caps {
		if d := termAt[c.key].Sub(cmdAt[c.id]); d > slowest {
			slowest, slowestKey = d, c.key
		}
	}

	for i, k := range kills {
		// Around the kill: until 5s after the last of its groups had a
		// leader again (not into the restart, nor the next kill).
		var elected time.Duration
		for _, d := range k.elections {
			elected = max(elected, d)
		}
		to := k.at.Add(elected + 5*time.Second)
		if i+1 < len(kills) && kills[i+1].at.Before(to) {
			to = kills[i+1].at
		}
		gap, gapAt := largestGap(evs, k.at.Add(-time.Second), to)
		var inFlight int
		var slow time.Duration
		for _, c := range caps {
			if at, ok := cmdAt[c.id]; ok && at.Before(k.at) && termAt[c.key].After(k.at) {
				inFlight++
				slow = max(slow, termAt[c.key].Sub(at))
			}
		}
		var elections []string
		for _, g := range k.led {
			elections = append(elections, fmt.Sprintf("%s %v", g, k.elections[g].Round(10*time.Millisecond)))
		}
		t.Logf("killed %s, leader of %s; without a leader: %s; restarted and current after %v; largest gap between stored events %v (from %v after the kill); %d commands stored before the kill ended after it, the slowest %v after it was stored",
			k.server, k.stream, strings.Join(elections, ", "), k.back.Sub(k.at).Round(10*time.Millisecond),
			gap.Round(10*time.Millisecond), gapAt.Sub(k.at).Round(10*time.Millisecond), inFlight, slow.Round(10*time.Millisecond))
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "idempotency_key="+slowestKey+" ") {
			t.Logf("slowest command: %s", line)
		}
	}
	retries := strings.Count(logs.String(), "publish failed; retrying")
	t.Logf("%d captures (%d events) in %v with two leader crashes; slowest command %v (%s); %d publish retries logged by the workers",
		len(caps), len(evs), processing.Round(10*time.Millisecond), slowest.Round(10*time.Millisecond), slowestKey, retries)
}

// consumerGroup names the shared consumer among the groups ledBy lists.
const consumerGroup = "consumer"

// ledBy lists the groups server leads among the streams, the KV buckets and
// the shared consumer of the system.
func (s *clusterSystem) ledBy(ctx context.Context, server string) []string {
	var led []string
	for _, g := range []string{s.sc.Commands, s.sc.Events, s.sc.DLQ, "KV_payworker_idempotency", "KV_payworker_scopes", consumerGroup} {
		if l, _ := s.leader(ctx, g); l == server {
			led = append(led, g)
		}
	}
	return led
}

// leader names the leader of a stream, or of the shared consumer.
func (s *clusterSystem) leader(ctx context.Context, group string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if group != consumerGroup {
		return s.cl.Leader(ctx, s.js, group)
	}
	c, err := s.js.Consumer(ctx, s.sc.Commands, s.sc.Consumer)
	if err != nil {
		return "", err
	}
	info, err := c.Info(ctx)
	if err != nil || info.Cluster == nil {
		return "", err
	}
	return info.Cluster.Leader, nil
}

// waitLeaders waits until each group has a leader on a running server and
// returns how long after since each took.
func (s *clusterSystem) waitLeaders(t *testing.T, groups []string, since time.Time, d time.Duration) map[string]time.Duration {
	t.Helper()
	took := map[string]time.Duration{}
	deadline := time.Now().Add(d)
	for len(took) < len(groups) {
		for _, g := range groups {
			if _, ok := took[g]; ok {
				continue
			}
			if l, err := s.leader(context.Background(), g); err == nil && l != "" && s.cl.Running(l) {
				took[g] = time.Since(since)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader for some of %q after %v (have %v)", groups, d, took)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return took
}

// waitAllDone waits until every capture's key has a terminal event and every
// re-emission its duplicate event (the events stream holds them all), and
// returns when that was first seen.
func (s *clusterSystem) waitAllDone(t *testing.T, caps []*capture, d time.Duration) time.Time {
	t.Helper()
	want := uint64(len(caps))
	for _, c := range caps {
		want += uint64(len(c.otherIDs))
	}
	var have uint64
	waitUntil(t, d, fmt.Sprintf("%d events", want), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := s.js.Stream(ctx, s.sc.Events)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false
		}
		have = info.State.Msgs
		return have >= want
	})
	return time.Now()
}

// settle waits until the consumer has nothing pending or unacked (acks lost
// with a killed server come back as redeliveries after the ack wait).
func (s *clusterSystem) settle(t *testing.T, d time.Duration) {
	t.Helper()
	var last string
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := s.js.Consumer(ctx, s.sc.Commands, s.sc.Consumer)
		if err == nil {
			info, err := c.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				cancel()
				return
			}
			if err == nil {
				last = fmt.Sprintf("%d pending, %d unacked", info.NumPending, info.NumAckPending)
			}
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("commands not settled after %v: %s", d, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// timedEvent is an event as the stream holds it, with the time it was stored.
type timedEvent struct {
	msgID string
	ev    events.Event
	at    time.Time
}

func (s *clusterSystem) readEventsWithTimes(t *testing.T) []timedEvent {
	t.Helper()
	var out []timedEvent
	for _, m := range s.readAll(t, s.sc.Events) {
		var ev events.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event on %s is not JSON: %v", m.Subject, err)
		}
		out = append(out, timedEvent{msgID: m.Header.Get(jetstream.MsgIDHeader), ev: ev, at: m.Time})
	}
	return out
}

// readAll reads every message of stream by sequence, each read retried
// for a while: after a restart, a group can still be settling.
func (s *clusterSystem) readAll(t *testing.T, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	var st jetstream.Stream
	var info *jetstream.StreamInfo
	retry(t, "info of "+stream, func(ctx context.Context) (err error) {
		if st, err = s.js.Stream(ctx, stream); err == nil {
			info, err = st.Info(ctx)
		}
		return err
	})
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		var m *jetstream.RawStreamMsg
		retry(t, fmt.Sprintf("%s message %d", stream, seq), func(ctx context.Context) (err error) {
			m, err = st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return nil
			}
			return err
		})
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// retry calls f, each call with 2s, until it returns nil, failing the test
// after 30s.
func retry(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// largestGap is the largest time between two consecutive stored events of
// which the second was stored within [from, to], and when it began.
func largestGap(evs []timedEvent, from, to time.Time) (time.Duration, time.Time) {
	var gap time.Duration
	var at time.Time
	for i := 1; i < len(evs); i++ {
		if evs[i].at.Before(from) || evs[i].at.After(to) {
			continue
		}
		if d := evs[i].at.Sub(evs[i-1].at); d > gap {
			gap, at = d, evs[i-1].at
		}
	}
	return gap, at
}

// checkFailover checks the events stream and the ledger against the captures:
// each key has one terminal event, named for whichever of its commands got
// there first (a re-emission can overtake the first command held up by a
// crash), and every other command of the key one duplicate event naming it.
// It returns the duplicate events of the very command the terminal event
// names: a command delivered again as a new message after it completed its
// key (see runLeaderFailover).
func checkFailover(t *testing.T, s *clusterSystem, caps []*capture, evs []timedEvent) (again []timedEvent) {
	t.Helper()
	byKey := map[string][]timedEvent{}
	for _, e := range evs {
		byKey[e.ev.Data.MerchantID+"/"+e.ev.Data.IdempotencyKey] = append(byKey[e.ev.Data.MerchantID+"/"+e.ev.Data.IdempotencyKey], e)
		switch e.ev.Type {
		case events.CaptureFailed.Type(), events.Rejected.Type(), events.DeadLettered.Type():
			t.Errorf("event %s for %s/%s: %+v, want none of these", e.ev.Type, e.ev.Data.MerchantID, e.ev.Data.IdempotencyKey, e.ev.Data.Error)
		}
	}
	var dups int
	for _, c := range caps {
		k := c.merchant + "/" + c.key
		var terms int
		var winner string         // the command_id of the terminal event
		dupOf := map[string]int{} // command_id → its duplicate events
		var dupEvents []timedEvent
		for _, e := range byKey[k] {
			switch e.ev.Type {
			case events.CaptureSucceeded.Type():
				terms++
				winner = e.ev.Data.CommandID
				if want := events.TerminalID(c.merchant, c.key); e.ev.ID != want || e.msgID != want {
					t.Errorf("%s: terminal event id %q, Nats-Msg-Id %q, want both %q", k, e.ev.ID, e.msgID, want)
				}
			case events.Duplicate.Type():
				dups++
				dupOf[e.ev.Data.CommandID]++
				dupEvents = append(dupEvents, e)
				if want := events.TerminalID(c.merchant, c.key); e.ev.Data.OriginalEventID != want {
					t.Errorf("%s: duplicate event of %s names %q, want the terminal event %q", k, e.ev.Data.CommandID, e.ev.Data.OriginalEventID, want)
				}
			}
		}
		if terms != 1 {
			t.Errorf("%s: %d capture.succeeded events, want exactly 1 (events: %v)", k, terms, eventTypes(byKey[k]))
			continue
		}
		ids := append([]string{c.id}, c.otherIDs...)
		if !slices.Contains(ids, winner) {
			t.Errorf("%s: terminal event for command %q, not one of %q", k, winner, ids)
		}
		for _, id := range ids {
			if id != winner && dupOf[id] != 1 {
				t.Errorf("%s: %d duplicate events for its command %s, want 1 (the terminal event is %s's)", k, dupOf[id], id, winner)
			}
		}
		for id, n := range dupOf {
			if !slices.Contains(ids, id) || id == winner && n > 1 {
				t.Errorf("%s: %d duplicate events for command %s", k, n, id)
			}
		}
		for _, e := range dupEvents {
			if e.ev.Data.CommandID == winner {
				again = append(again, e)
			}
		}
		if ops := s.sb.Applied(c.auth); len(ops) != 1 || ops[0].Operation != "capture" || ops[0].Amount != c.amount {
			t.Errorf("%s: ledger of %s = %+v, want exactly one capture of %d", k, c.auth, ops, c.amount)
		}
	}
	if got := s.sb.Calls("capture"); got != len(caps) {
		t.Errorf("capture calls at the gateway = %d, want %d: one per key, none sent twice (and so none refused as already captured)", got, len(caps))
	}
	if want := len(caps) + dups; len(evs) != want {
		t.Errorf("events stream holds %d events, want %d (%d terminal, %d duplicate)", len(evs), want, len(caps), dups)
	}
	return again
}

func eventTypes(evs []timedEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ev.Type)
	}
	return slices.Clip(out)
}
