package worker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/events"
	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/sandbox"
	"github.com/payworker/payworker/internal/systemtest"
)

// TestChaos runs the real worker binary as three processes against one NATS
// server, one idempotency store and the sandbox gateway, which refuses calls
// with 503 and 429 and applies some then drops the connection. It publishes
// hundreds of captures, partial captures and voids through PaymentOptions,
// and partial captures through SIBS, some authorisations captured in two
// parts under two keys, every one two or three times (the same command_id,
// dropped by the stream's Nats-Msg-Id de-duplication, or another command_id
// with the same idempotency key), plus capture-and-void pairs on one
// authorisation, while it kills a random worker with SIGKILL about every
// second and starts it again. When everything has settled it checks SPEC §4
// on the whole record:
//
//   - the sandbox's ledger holds exactly one effective operation per key, and
//     exactly one per authorisation of a pair; at SIBS, the captured total of
//     each authorisation is the sum of its keys' amounts, each key once;
//   - PAYMENT_EVENTS holds exactly one terminal event per key (none for a key
//     dead-lettered because its budget ran out, which then has a DLQ entry and
//     a dead_lettered event), and it matches the ledger: succeeded ⇔ applied;
//   - the consumer has no message pending or unacked;
//   - at the gateway (a recording proxy in front of the sandbox, on the paths
//     of both gateways), no operation was resent blind after an answer that
//     may have been applied, and no two operations of one authorisation were
//     in flight at once (SPEC §4.5, §5);
//   - some keys were taken over from killed workers.
//
// Since the PaymentOptions sandbox refuses a second operation on an
// authorisation, its ledger alone cannot show a resend there; the proxy's
// record can. SIBS applies a second partial capture, so there the ledger
// shows it too.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: kills and restarts worker processes for half a minute")
	}
	bin := buildWorker(t)
	for _, tc := range []struct {
		name string
		kv   bool
		mix  chaosMix
	}{
		{"redis", false, chaosMix{singles: 340, pairs: 40, sibsSingles: 60, sibsSplits: 30}},
		{"jetstream-kv", true, chaosMix{singles: 110, pairs: 20, sibsSingles: 20, sibsSplits: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runChaos(t, bin, tc.kv, tc.mix)
		})
	}
}

// chaosMix is how many of each kind of command a chaos run publishes.
type chaosMix struct {
	// singles are PaymentOptions captures, partial captures and voids, one
	// per authorisation; pairs are a capture and a void of one
	// authorisation (two commands each).
	singles, pairs int
	// sibsSingles are SIBS partial captures, one per authorisation;
	// sibsSplits are SIBS authorisations captured in two parts under two
	// keys (two commands each). Every amount leaves room for a second
	// capture of it, so that the sandbox would apply a resend.
	sibsSingles, sibsSplits int
}

// chaosSIBSMerchants are routed to SIBS (GATEWAY_ROUTES); the others use
// PaymentOptions.
var chaosSIBSMerchants = []string{"S01", "S02"}

// Chaos settings: the workers' lease and ack wait are short, so that the
// keys and messages of a killed worker come back within the test.
const (
	chaosWorkers   = 3
	chaosLease     = 2 * time.Second
	chaosPublish   = 6 * time.Second  // commands are published over this long
	chaosKillEvery = time.Second      // a worker is killed about this often
	chaosKills     = 6                // and at least this many times
	chaosSettle    = 75 * time.Second // all must be done within this after publishing
)

// chaosCommand is one command of the run, published two or three times.
type chaosCommand struct {
	merchant, key, typ, auth string
	amount                   int64 // 0 for a void
	currency                 string
	pair                     int // >0: the pair (capture and void of one authorisation) it belongs to
	// sibs: the merchant is routed to SIBS. The command then carries the
	// authorisation's time (authorisedAt), so the adapter makes no status
	// call of its own before an attempt, which would hide a blind resend
	// from checkNeverBlind.
	sibs         bool
	authorisedAt time.Time
	// after: the first copy is published right after after's first copy,
	// so that both are in flight together (the transaction lock has work).
	after *chaosCommand
	ids   []string
}

func runChaos(t *testing.T, bin string, kv bool, mix chaosMix) {
	began := time.Now()
	o := systemtest.DefaultOptions()
	o.KV = kv
	o.Workers = 0
	s := systemtest.Start(t, o)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	t.Logf("seed %d", seed)
	// Keys unique to the run: a shared Redis (REDIS_URL) keeps earlier runs' keys.
	run := fmt.Sprintf("%06x", rng.IntN(1<<24))

	tap := startGatewayTap(t, s.GatewayURL)
	env := []string{
		"NATS_URL=" + s.NATS.URL,
		"PAYMENTOPTIONS_BASE_URL=" + tap.url,
		"PAYMENTOPTIONS_API_KEY=k",
		"PAYMENTOPTIONS_X_API_KEY=x",
		"SIBS_BASE_URL=" + tap.root,
		"SIBS_CLIENT_ID=c",
		"SIBS_TOKEN=t",
		"SIBS_TERMINAL_ID=1",
		"GATEWAY_ROUTES=" + chaosSIBSMerchants[0] + "=sibs," + chaosSIBSMerchants[1] + "=sibs",
		"HTTP_ADDR=off",
		"LEASE_DURATION=" + chaosLease.String(),
		"ACK_WAIT=" + chaosLease.String(),
		"GATEWAY_TIMEOUT=1s",
		"RETRY_INITIAL_INTERVAL=20ms",
		"RETRY_MAX_INTERVAL=500ms",
		"RETRY_MAX_ELAPSED=60s",
		"RETRY_MAX_ATTEMPTS=40",
		"WORKER_CONCURRENCY=32",
		"SHUTDOWN_TIMEOUT=5s",
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
	}
	if !kv {
		env = append(env, "REDIS_URL="+s.Redis.URL)
	}
	logDir := t.TempDir()
	procs := make([]*workerProc, chaosWorkers)
	for i := range procs {
		procs[i] = &workerProc{bin: bin, name: fmt.Sprintf("chaos-w%d", i), env: env, log: filepath.Join(logDir, fmt.Sprintf("w%d.log", i))}
		if err := procs[i].start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(procs[i].kill)
	}
	defer func() {
		if t.Failed() {
			for _, p := range procs {
				t.Logf("worker %s log (warnings and errors):\n%s", p.name, p.problems(60))
			}
		}
	}()
	waitUntil(t, 20*time.Second, "the workers to bind the consumer", func() bool {
		c, err := s.JS.Consumer(context.Background(), s.Streams.Commands, s.Streams.Consumer)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && len(info.Name) > 0
	})

	// The commands: PaymentOptions captures, partial captures and voids on
	// distinct authorisations, and capture-and-void pairs on one; SIBS
	// partial captures on distinct authorisations, and SIBS authorisations
	// captured in two parts under two keys.
	merchants := []string{"M01", "M02", "M03"}
	var cmds []*chaosCommand
	for i := range mix.singles {
		m := merchants[i%len(merchants)]
		authorised := int64(500 + rng.IntN(5000))
		c := &chaosCommand{merchant: m, key: fmt.Sprintf("%s-s%d", run, i), currency: "JPY", auth: s.Sandbox.Authorise(m, authorised, "JPY")}
		switch i % 3 {
		case 0:
			c.typ, c.amount = "capture", authorised
		case 1:
			c.typ, c.amount = "capture", 1+rng.Int64N(authorised-1)
		default:
			c.typ = "void"
		}
		cmds = append(cmds, c)
	}
	for i := range mix.pairs {
		m := merchants[i%len(merchants)]
		authorised := int64(500 + rng.IntN(5000))
		auth := s.Sandbox.Authorise(m, authorised, "JPY")
		capture := &chaosCommand{merchant: m, key: fmt.Sprintf("%s-p%d-capture", run, i), typ: "capture", currency: "JPY",
			auth: auth, amount: authorised, pair: i + 1}
		cmds = append(cmds, capture,
			&chaosCommand{merchant: m, key: fmt.Sprintf("%s-p%d-void", run, i), typ: "void", auth: auth, pair: i + 1, after: capture})
	}
	sibsCurrencies := []string{"PLN", "EUR"}
	sibsCapture := func(key, auth string, amount int64) *chaosCommand {
		a, _ := s.Sandbox.Authorisation(auth)
		return &chaosCommand{merchant: a.MerchantID, key: key, typ: "capture", auth: auth, amount: amount, currency: a.Currency,
			sibs: true, authorisedAt: a.AuthorisedAt}
	}
	for i := range mix.sibsSingles {
		// At most half the authorisation: a second capture would fit.
		authorised := int64(500 + rng.IntN(5000))
		auth := s.Sandbox.Authorise(chaosSIBSMerchants[i%2], authorised, sibsCurrencies[i/2%2])
		cmds = append(cmds, sibsCapture(fmt.Sprintf("%s-b%d", run, i), auth, 1+rng.Int64N(authorised/2)))
	}
	for i := range mix.sibsSplits {
		// Two parts of at most a quarter each: a second capture of either
		// would fit after both.
		authorised := int64(1000 + rng.IntN(5000))
		auth := s.Sandbox.Authorise(chaosSIBSMerchants[i%2], authorised, sibsCurrencies[i/2%2])
		first := sibsCapture(fmt.Sprintf("%s-t%d-a", run, i), auth, 1+rng.Int64N(authorised/4))
		second := sibsCapture(fmt.Sprintf("%s-t%d-b", run, i), auth, 1+rng.Int64N(authorised/4))
		second.after = first
		cmds = append(cmds, first, second)
	}

	// Every command is published two or three times: the first copy, then
	// copies with the same command_id (the stream drops them) or another.
	// The copies are shuffled, except that the first copy of a pair's void
	// (of a split's second part) follows that of its capture (first part) at
	// once, so that both are in flight together and the transaction lock
	// has work to do.
	type publication struct {
		c   *chaosCommand
		id  string
		dup bool // same command_id as an earlier copy: the stream must drop it
	}
	var units [][]publication
	firstUnit := map[*chaosCommand]int{} // the unit of a command's first copy
	var following []publication          // first copies that follow another's
	for _, c := range cmds {
		c.ids = []string{c.key + "-c0"}
		first := publication{c: c, id: c.ids[0]}
		if c.after != nil {
			following = append(following, first)
		} else {
			firstUnit[c] = len(units)
			units = append(units, []publication{first})
		}
		copies := 2 + rng.IntN(2)
		for j := 1; j < copies; j++ {
			if rng.IntN(2) == 0 {
				units = append(units, []publication{{c: c, id: c.ids[0]}})
				continue
			}
			id := fmt.Sprintf("%s-c%d", c.key, j)
			c.ids = append(c.ids, id)
			units = append(units, []publication{{c: c, id: id}})
		}
	}
	for _, p := range following {
		i := firstUnit[p.c.after]
		units[i] = append(units[i], p)
	}
	rng.Shuffle(len(units), func(i, j int) { units[i], units[j] = units[j], units[i] })
	var pubs []publication
	for _, u := range units {
		pubs = append(pubs, u...)
	}
	// The first copy of a command_id is stored, the others are dropped by
	// the stream's de-duplication.
	seen := map[string]bool{}
	for i := range pubs {
		if !seen[pubs[i].id] {
			seen[pubs[i].id] = true
			pubs[i].dup = false
		} else {
			pubs[i].dup = true
		}
	}

	s.Sandbox.SetFaults(sandbox.Faults{
		ErrorRate: 0.10, ErrorStatus: 503,
		RateLimitRate: 0.05, RetryAfter: time.Second,
		ApplyThenDropRate: 0.10,
		Latency:           30 * time.Millisecond,
	})

	// Kill a random worker about every second, and start it again.
	killer := &chaosKiller{procs: procs, rng: rand.New(rand.NewPCG(uint64(seed), 0x6b11))}
	stopKilling := killer.run()

	// Publish, spread over chaosPublish.
	const ticks = 60
	var dropped, droppedWant int
	for i, p := range pubs {
		body, err := json.Marshal(p.c.command(p.id))
		if err != nil {
			t.Fatal(err)
		}
		ack, err := s.JS.PublishMsg(context.Background(), &nats.Msg{Subject: s.Streams.CommandSubject(p.c.typ), Data: body}, jetstream.WithMsgID(p.id))
		if err != nil {
			t.Fatalf("publish %s: %v", p.id, err)
		}
		if p.dup {
			droppedWant++
		}
		if ack.Duplicate {
			dropped++
		}
		if ack.Duplicate != p.dup {
			t.Errorf("publish %s: PubAck.Duplicate = %t, want %t", p.id, ack.Duplicate, p.dup)
		}
		if (i+1)%(len(pubs)/ticks+1) == 0 {
			time.Sleep(chaosPublish / ticks)
		}
	}
	// Keep killing for a little longer (and for at least chaosKills kills),
	// then let everything settle.
	time.Sleep(2 * chaosKillEvery)
	waitUntil(t, 30*time.Second, "the workers to be killed often enough", func() bool { return killer.kills.Load() >= chaosKills })
	kills, killErrs := stopKilling()
	for _, err := range killErrs {
		t.Errorf("killer: %v", err)
	}

	// Wait until every key has a terminal or dead_lettered event and the
	// consumer has nothing pending.
	done := func() (missing []string) {
		have := map[string]bool{}
		for _, r := range s.Events() {
			if k, ok := events.KindOfType(r.Event.Type); ok && (k.Terminal() || k == events.DeadLettered) {
				have[r.Event.Data.MerchantID+"/"+r.Event.Data.IdempotencyKey] = true
			}
		}
		for _, c := range cmds {
			if !have[c.merchant+"/"+c.key] {
				missing = append(missing, c.key)
			}
		}
		return missing
	}
	deadline := time.Now().Add(chaosSettle)
	for {
		missing := done()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d keys have no outcome, e.g. %v", chaosSettle, len(missing), missing[:min(len(missing), 10)])
		}
		time.Sleep(100 * time.Millisecond)
	}
	settleWithin(t, s, chaosSettle)
	// Stop the workers the way SIGTERM does: nothing is in flight after it.
	for _, p := range procs {
		waitUntil(t, 20*time.Second, p.name+" to start", p.started)
		if err := p.terminate(10 * time.Second); err != nil {
			t.Errorf("worker %s: SIGTERM: %v, want a clean exit", p.name, err)
		}
	}
	settleWithin(t, s, 5*time.Second)
	// The workers' records: the test's own store reads the same bucket, or
	// Redis under the workers' (default) key prefix.
	records := s.Store
	if !kv {
		records = idempotency.NewRedis(s.Redis.Client(t), idempotency.RedisOptions{TTL: time.Hour})
	}
	checkChaos(t, s, records, cmds)
	checkNeverBlind(t, tap)
	t.Logf("%d commands (%d pairs; %d through SIBS, %d of them on split authorisations), %d publications (%d dropped as duplicates), %d kills, %v",
		len(cmds), mix.pairs, mix.sibsSingles+2*mix.sibsSplits, 2*mix.sibsSplits, len(pubs), dropped, kills, time.Since(began).Round(time.Millisecond))
	if dropped != droppedWant {
		t.Errorf("publications dropped as duplicates = %d, want %d", dropped, droppedWant)
	}
}

// command is c as published under command_id id.
func (c *chaosCommand) command(id string) systemtest.Cmd {
	cmd := systemtest.Cmd{"command_id": id, "type": c.typ, "idempotency_key": c.key, "merchant_id": c.merchant,
		"transaction_id": c.auth}
	if c.typ == "capture" {
		cmd["amount"], cmd["currency"] = c.amount, c.currency
	}
	if !c.authorisedAt.IsZero() {
		cmd["original_transaction_time"] = c.authorisedAt.Format(time.RFC3339Nano)
	}
	return cmd
}

// checkChaos checks the ledger, the whole events stream, the DLQ and the
// consumer against the commands.
func checkChaos(t *testing.T, s *systemtest.System, records idempotency.Store, cmds []*chaosCommand) {
	t.Helper()
	all := readEvents(t, s)
	byKey := map[string][]storedEvent{}
	for _, e := range all {
		k := e.Event.Data.MerchantID + "/" + e.Event.Data.IdempotencyKey
		byKey[k] = append(byKey[k], e)
	}
	dlqKeys := map[string]int{}
	for _, m := range readStream(t, s.JS, s.Streams.DLQ) {
		var c struct {
			Key      string `json:"idempotency_key"`
			Merchant string `json:"merchant_id"`
		}
		if err := json.Unmarshal(m.Data(), &c); err == nil {
			dlqKeys[c.Merchant+"/"+c.Key]++
		}
	}
	ledger := map[string][]sandbox.Operation{}
	for _, op := range s.Sandbox.Ledger() {
		ledger[op.AuthorisationID] = append(ledger[op.AuthorisationID], op)
	}

	var deadLettered, reconciled, sibsReconciled, duplicates, takeovers int
	applied := map[string]bool{}   // key → its operation is in the ledger
	succeeded := map[string]bool{} // key → its terminal event is a success
	dead := map[string]bool{}      // key → dead-lettered, no terminal event
	for _, c := range cmds {
		k := c.merchant + "/" + c.key
		evs := byKey[k]
		term := terminals(evs)
		if n := countType(evs, events.Rejected); n != 0 {
			t.Errorf("%s: %d rejected events, want none", k, n)
		}
		dups := countType(evs, events.Duplicate)
		duplicates += dups
		if dups > len(c.ids)-1 {
			t.Errorf("%s: %d duplicate events for %d command ids, want at most one per other command", k, dups, len(c.ids))
		}
		rec, err := records.Get(context.Background(), c.merchant, c.key)
		switch {
		case err != nil:
			t.Errorf("%s: record: %v", k, err)
		case rec.State != idempotency.StateCompleted && len(term) == 1:
			t.Errorf("%s: record %s, want completed", k, rec.State)
		case rec.Claims > 1:
			takeovers++
		}
		ops := ledger[c.auth]
		mine := len(ops) > 0 && string(ops[0].Operation) == c.typ && (c.amount == 0 || ops[0].Amount == c.amount)
		if c.sibs {
			// SIBS lists each capture with its merchant reference, the key:
			// the key's own capture, applied once at most, for its amount.
			var own []sandbox.Operation
			for _, op := range ops {
				if op.Reference == c.key {
					own = append(own, op)
				}
			}
			if len(own) > 1 || len(own) == 1 && (string(own[0].Operation) != c.typ || own[0].Amount != c.amount) {
				t.Errorf("%s: SIBS applied %d operations with the key's reference (ledger of %s: %q), want at most one %s of %d",
					k, len(own), c.auth, ledgerOf(s.Sandbox, c.auth), c.typ, c.amount)
			}
			mine = len(own) > 0
		}
		applied[k] = mine
		switch len(term) {
		case 1:
			e := term[0]
			if want := events.TerminalID(c.merchant, c.key); e.Event.ID != want || e.MsgID != want {
				t.Errorf("%s: terminal event id %q, Nats-Msg-Id %q, want both %q", k, e.Event.ID, e.MsgID, want)
			}
			success := e.Event.Type == events.TerminalKind(c.typ, true).Type()
			succeeded[k] = success
			if !success && e.Event.Type != events.TerminalKind(c.typ, false).Type() {
				t.Errorf("%s: terminal event %s for a %s", k, e.Event.Type, c.typ)
			}
			if success != mine {
				t.Errorf("%s: terminal event %s, but the ledger of %s is %+v: succeeded must mean applied", k, e.Event.Type, c.auth, ops)
			}
			if c.pair == 0 && !success {
				t.Errorf("%s: %s (%+v), want success: nothing refuses it", k, e.Event.Type, e.Event.Data.Error)
			}
			if e.Event.Data.Reconciled {
				reconciled++
				if c.sibs {
					sibsReconciled++
				}
			}
		case 0:
			// Dead-lettered: only when the budget ran out, with a DLQ entry.
			deadLettered++
			dead[k] = true
			dl := countType(evs, events.DeadLettered)
			if dl == 0 || dlqKeys[k] == 0 {
				t.Errorf("%s: no terminal event, %d dead_lettered events, %d DLQ entries (%v); want a terminal event, or a dead letter",
					k, dl, dlqKeys[k], typesOf(evs))
			}
			for _, e := range evs {
				if e.Event.Type == events.DeadLettered.Type() && e.Event.Data.Error != nil {
					if code := e.Event.Data.Error.Code; code != "retries_exhausted" && code != "outcome_unknown" {
						t.Errorf("%s: dead-lettered for %q, want only a spent budget", k, code)
					}
					if e.Event.Data.Error.Code == "retries_exhausted" && mine {
						t.Errorf("%s: dead-lettered as retries_exhausted, but the ledger shows it applied", k)
					}
				}
			}
		default:
			t.Errorf("%s: %d terminal events (%v), want exactly one", k, len(term), typesOf(evs))
		}
	}
	// The ledger: one operation per single's authorisation, one per pair's.
	auths := map[string]bool{}
	sibsKeys := map[string][]*chaosCommand{} // SIBS authorisation → its keys' commands
	var sibsAuths []string
	for _, c := range cmds {
		if c.sibs {
			if sibsKeys[c.auth] == nil {
				sibsAuths = append(sibsAuths, c.auth)
			}
			sibsKeys[c.auth] = append(sibsKeys[c.auth], c)
			continue
		}
		if auths[c.auth] {
			continue
		}
		auths[c.auth] = true
		if n := len(ledger[c.auth]); n > 1 || (n == 0 && applied[c.merchant+"/"+c.key]) {
			t.Errorf("authorisation %s: %d operations applied (%+v), want at most one", c.auth, n, ledger[c.auth])
		}
	}
	// SIBS would apply a second partial capture: the captured total of each
	// authorisation, in the ledger and in the authorisation's state, must be
	// the sum of its distinct keys' amounts (those that succeeded, and any
	// dead-lettered one the ledger shows applied), each counted once, and
	// every capture must name one of its keys.
	var sibsCaptured int64
	for _, auth := range sibsAuths {
		keys := map[string]bool{}
		var want, captured int64
		for _, c := range sibsKeys[auth] {
			k := c.merchant + "/" + c.key
			keys[c.key] = true
			if succeeded[k] || dead[k] && applied[k] {
				want += c.amount
			}
		}
		for _, op := range ledger[auth] {
			captured += op.Amount
			if string(op.Operation) != "capture" || !keys[op.Reference] {
				t.Errorf("SIBS authorisation %s: %s of %d with reference %q is no capture of its keys", auth, op.Operation, op.Amount, op.Reference)
			}
		}
		a, _ := s.Sandbox.Authorisation(auth)
		if captured != want || a.CapturedAmount != want {
			t.Errorf("SIBS authorisation %s: captured %d by the ledger (%q), %d by its state; want %d, its keys' amounts once each",
				auth, captured, ledgerOf(s.Sandbox, auth), a.CapturedAmount, want)
		}
		sibsCaptured += captured
	}
	pairs := map[int][]*chaosCommand{}
	for _, c := range cmds {
		if c.pair > 0 {
			pairs[c.pair] = append(pairs[c.pair], c)
		}
	}
	for n, p := range pairs {
		won := 0
		for _, c := range p {
			if applied[c.merchant+"/"+c.key] {
				won++
			}
		}
		if len(ledger[p[0].auth]) != 1 || won != 1 {
			t.Errorf("pair %d on %s: ledger %+v, %d keys applied; want exactly one of capture and void", n, p[0].auth, ledger[p[0].auth], won)
		}
	}
	c, err := s.JS.Consumer(context.Background(), s.Streams.Commands, s.Streams.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer: %d pending, %d unacked; want none", info.NumPending, info.NumAckPending)
	}
	// The kills must have hit work in flight, or the test proves little.
	if takeovers == 0 {
		t.Errorf("no key was taken over from a killed worker (claimed twice); want some")
	}
	t.Logf("%d events, %d keys taken over, %d reconciled successes, %d duplicate events, %d dead letters; SIBS: %d reconciled successes, %d captured on %d authorisations",
		len(all), takeovers, reconciled, duplicates, deadLettered, sibsReconciled, sibsCaptured, len(sibsAuths))
}

// buildWorker builds cmd/worker into a temporary directory.
func buildWorker(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build cmd/worker: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "worker")
	out, err := exec.Command(goTool, "build", "-o", bin, "github.com/payworker/payworker/cmd/worker").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cmd/worker: %v\n%s", err, out)
	}
	return bin
}

// workerProc is one worker process slot: started, killed and started again.
type workerProc struct {
	bin, name, log string
	env            []string

	mu  sync.Mutex
	cmd *exec.Cmd
	gen int
}

// started reports whether the current generation has logged "worker started"
// (it handles SIGTERM from then on).
func (p *workerProc) started() bool {
	p.mu.Lock()
	id := fmt.Sprintf(`"worker_id":"%s-g%d"`, p.name, p.gen)
	p.mu.Unlock()
	b, err := os.ReadFile(p.log)
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"msg":"worker started"`) && strings.Contains(l, id) {
			return true
		}
	}
	return false
}

// start runs a new generation of the worker, logging to the slot's file.
func (p *workerProc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(p.bin)
	cmd.Env = append(append([]string(nil), p.env...), fmt.Sprintf("WORKER_ID=%s-g%d", p.name, p.gen))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd = cmd
	return nil
}

// kill sends SIGKILL and reaps the process.
func (p *workerProc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// terminate sends SIGTERM and waits up to d for a clean exit.
func (p *workerProc) terminate(d time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return errors.New("not running")
	}
	cmd := p.cmd
	p.cmd = nil
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("no exit %v after SIGTERM", d)
	}
}

// problems returns the last n warning and error lines of the slot's log.
func (p *workerProc) problems(n int) string {
	f, err := os.Open(p.log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, `"level":"INFO"`) && !strings.Contains(l, `"level":"DEBUG"`) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// chaosKiller kills a random worker about every chaosKillEvery and starts it
// again a moment later.
type chaosKiller struct {
	procs []*workerProc
	rng   *rand.Rand
	kills atomic.Int32
}

// run starts killing; the returned stop ends it and reports the kills.
func (k *chaosKiller) run() (stop func() (kills int, errs []error)) {
	quit := make(chan struct{})
	result := make(chan struct {
		kills int
		errs  []error
	}, 1)
	go func() {
		var errs []error
		for {
			wait := chaosKillEvery/2 + time.Duration(k.rng.Int64N(int64(chaosKillEvery)))
			select {
			case <-quit:
				result <- struct {
					kills int
					errs  []error
				}{int(k.kills.Load()), errs}
				return
			case <-time.After(wait):
			}
			p := k.procs[k.rng.IntN(len(k.procs))]
			p.kill()
			k.kills.Add(1)
			time.Sleep(time.Duration(50+k.rng.IntN(250)) * time.Millisecond)
			if err := p.start(); err != nil {
				errs = append(errs, err)
			}
		}
	}()
	return func() (int, []error) {
		close(quit)
		r := <-result
		return r.kills, r.errs
	}
}

// gatewayTap is a reverse proxy in front of the sandbox, for both gateways:
// the worker processes call it, and it records, per authorisation, every
// request and the status of its answer, in the order the requests arrive. A
// request the sandbox drops (apply-then-drop) is dropped to the worker too.
type gatewayTap struct {
	url      string // the PaymentOptions base URL
	root     string // the SIBS base URL: the host root
	upstream string
	client   *http.Client

	mu    sync.Mutex
	calls map[string][]tapCall
}

// tapCall is one request: its endpoint (capture, void, status), the
// merchant reference it carries (a SIBS operation's merchantTransactionId,
// the idempotency key; empty otherwise) and the HTTP status of its answer, 0
// when none came (dropped, or the worker gave up).
type tapCall struct {
	endpoint   string
	reference  string
	status     int
	start, end time.Time
}

// sibsTapPath matches a SIBS operation or status path and captures the
// escaped authorisation id and the operation.
var sibsTapPath = regexp.MustCompile(`/api/v1/payments/([^/]+)/(capture|cancellation|status)$`)

func startGatewayTap(t *testing.T, gatewayURL string) *gatewayTap {
	t.Helper()
	u, err := url.Parse(gatewayURL)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatewayTap{
		upstream: u.Scheme + "://" + u.Host,
		client:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		calls:    map[string][]tapCall{},
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	g.url, g.root = srv.URL+u.Path, srv.URL
	return g
}

func (g *gatewayTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	endpoint, auth, reference := path.Base(r.URL.Path), "", ""
	switch m := sibsTapPath.FindStringSubmatch(r.URL.EscapedPath()); {
	case m != nil:
		// SIBS: /api/v1/payments/{id}/capture, .../cancellation, .../status;
		// an operation's body names its key as merchant.merchantTransactionId.
		auth, _ = url.PathUnescape(m[1])
		endpoint = map[string]string{"capture": "capture", "cancellation": "void", "status": "status"}[m[2]]
		var b struct {
			Merchant struct {
				MerchantTransactionID string `json:"merchantTransactionId"`
			} `json:"merchant"`
		}
		_ = json.Unmarshal(body, &b)
		reference = b.Merchant.MerchantTransactionID
	case r.Method == http.MethodGet:
		endpoint, auth = "status", path.Base(r.URL.Path)
	default:
		var b struct {
			TransactionID string `json:"transactionId"`
		}
		_ = json.Unmarshal(body, &b)
		auth = b.TransactionID
	}
	g.mu.Lock()
	i := len(g.calls[auth])
	g.calls[auth] = append(g.calls[auth], tapCall{endpoint: endpoint, reference: reference, start: time.Now()})
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.calls[auth][i].end = time.Now()
		g.mu.Unlock()
	}()

	req, err := http.NewRequestWithContext(r.Context(), r.Method, g.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header = r.Header.Clone()
	resp, err := g.client.Do(req)
	var answer []byte
	if err == nil {
		answer, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		// No answer: close the worker's connection as the gateway did.
		panic(http.ErrAbortHandler)
	}
	g.mu.Lock()
	g.calls[auth][i].status = resp.StatusCode
	g.mu.Unlock()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

func (c tapCall) String() string {
	name := c.endpoint
	if c.reference != "" {
		name += "(" + c.reference + ")"
	}
	return fmt.Sprintf("%s→%d at %s for %v", name, c.status, c.start.Format("15:04:05.000"), c.end.Sub(c.start).Round(time.Millisecond))
}

// checkNeverBlind checks SPEC §5's "never resend it blind" on every
// authorisation, on the calls of both gateways: an operation of one key
// follows an earlier one of the same key only when that one was certainly
// not applied (429, 503) or right after a status call. A SIBS operation's
// key is its reference; a PaymentOptions call carries none, and its
// endpoint stands for the key (this test gives an authorisation one capture
// key and one void key at most). A status call names no key, so only the
// call right before the resend counts: under the transaction lock (SPEC
// §4.5) no other key's call comes between a holder's status call and its
// own next attempt. It also checks that lock: no two operations (captures
// or voids, of any keys) of one authorisation are in flight at once.
func checkNeverBlind(t *testing.T, g *gatewayTap) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	var calls, blind, sibs int
	for auth, cs := range g.calls {
		calls += len(cs)
		for i, a := range cs {
			if a.reference != "" {
				sibs++
			}
			if a.endpoint == "status" {
				continue
			}
			for _, b := range cs[i+1:] {
				if b.endpoint != "status" && a.start.Before(b.end) && b.start.Before(a.end) {
					t.Errorf("authorisation %s: two operations in flight at once: %v, %v", auth, a, b)
				}
			}
		}
		last := map[string]tapCall{} // key → its previous operation
		for i, c := range cs {
			if c.endpoint == "status" {
				continue
			}
			key := c.endpoint + "/" + c.reference
			asked := i > 0 && cs[i-1].endpoint == "status"
			if prev, ok := last[key]; ok && prev.status != http.StatusTooManyRequests &&
				prev.status != http.StatusServiceUnavailable && !asked {
				blind++
				if blind <= 5 {
					t.Errorf("authorisation %s: %s resent after an answer %d without a status call: %v", auth, c.endpoint, prev.status, cs)
				}
			}
			last[key] = c
		}
	}
	if blind > 0 {
		t.Errorf("%d operations resent blind, want none", blind)
	}
	t.Logf("%d gateway requests on %d authorisations (%d SIBS operations)", calls, len(g.calls), sibs)
}
