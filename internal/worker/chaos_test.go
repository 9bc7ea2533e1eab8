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
// hundreds of captures, partial captures and voids, every one two or three
// times (the same command_id, dropped by the stream's Nats-Msg-Id
// de-duplication, or another command_id with the same idempotency key), plus
// capture-and-void pairs on one authorisation, while it kills a random worker
// with SIGKILL about every second and starts it again. When everything has
// settled it checks SPEC §4 on the whole record:
//
//   - the sandbox's ledger holds exactly one effective operation per key, and
//     exactly one per authorisation of a pair;
//   - PAYMENT_EVENTS holds exactly one terminal event per key (none for a key
//     dead-lettered because its budget ran out, which then has a DLQ entry and
//     a dead_lettered event), and it matches the ledger: succeeded ⇔ applied;
//   - the consumer has no message pending or unacked;
//   - at the gateway (a recording proxy in front of the sandbox), no
//     operation was resent blind after an answer that may have been applied,
//     and a capture and a void of one authorisation were never in flight at
//     once (SPEC §4.5, §5);
//   - some keys were taken over from killed workers.
//
// Since the sandbox refuses a second operation on an authorisation, the
// ledger alone cannot show a resend; the proxy's record can.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: kills and restarts worker processes for half a minute")
	}
	bin := buildWorker(t)
	for _, tc := range []struct {
		name           string
		kv             bool
		singles, pairs int
	}{
		{"redis", false, 460, 40},
		{"jetstream-kv", true, 150, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runChaos(t, bin, tc.kv, tc.singles, tc.pairs)
		})
	}
}

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
	pair                     int   // >0: the pair (capture and void of one authorisation) it belongs to
	ids                      []string
}

func runChaos(t *testing.T, bin string, kv bool, singles, pairs int) {
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

	// The commands: captures, partial captures and voids on distinct
	// authorisations, and capture-and-void pairs on one.
	merchants := []string{"M01", "M02", "M03"}
	var cmds []*chaosCommand
	for i := range singles {
		m := merchants[i%len(merchants)]
		authorised := int64(500 + rng.IntN(5000))
		c := &chaosCommand{merchant: m, key: fmt.Sprintf("%s-s%d", run, i), auth: s.Sandbox.Authorise(m, authorised, "JPY")}
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
	for i := range pairs {
		m := merchants[i%len(merchants)]
		authorised := int64(500 + rng.IntN(5000))
		auth := s.Sandbox.Authorise(m, authorised, "JPY")
		cmds = append(cmds,
			&chaosCommand{merchant: m, key: fmt.Sprintf("%s-p%d-capture", run, i), typ: "capture", auth: auth, amount: authorised, pair: i + 1},
			&chaosCommand{merchant: m, key: fmt.Sprintf("%s-p%d-void", run, i), typ: "void", auth: auth, pair: i + 1})
	}

	// Every command is published two or three times: the first copy, then
	// copies with the same command_id (the stream drops them) or another.
	// The copies are shuffled, except that a pair's void follows its capture
	// at once, so that both are in flight together and the transaction lock
	// has work to do.
	type publication struct {
		c   *chaosCommand
		id  string
		dup bool // same command_id as an earlier copy: the stream must drop it
	}
	var units [][]publication
	var pairVoid []publication // the first copy of each pair's void, by pair
	for _, c := range cmds {
		c.ids = []string{c.key + "-c0"}
		first := []publication{{c: c, id: c.ids[0]}}
		switch {
		case c.pair > 0 && c.typ == "capture":
			pairVoid = append(pairVoid, publication{}) // filled below
		case c.pair > 0 && c.typ == "void":
			pairVoid[c.pair-1] = first[0]
			first = nil
		}
		if first != nil {
			units = append(units, first)
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
	for i, u := range units {
		if c := u[0].c; c.pair > 0 && c.typ == "capture" && pairVoid[c.pair-1].c != nil {
			units[i] = append(u, pairVoid[c.pair-1])
			pairVoid[c.pair-1] = publication{}
		}
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
	t.Logf("%d commands (%d pairs), %d publications (%d dropped as duplicates), %d kills, %v",
		len(cmds), pairs, len(pubs), dropped, kills, time.Since(began).Round(time.Millisecond))
	if dropped != droppedWant {
		t.Errorf("publications dropped as duplicates = %d, want %d", dropped, droppedWant)
	}
}

// command is c as published under command_id id.
func (c *chaosCommand) command(id string) systemtest.Cmd {
	cmd := systemtest.Cmd{"command_id": id, "type": c.typ, "idempotency_key": c.key, "merchant_id": c.merchant,
		"transaction_id": c.auth}
	if c.typ == "capture" {
		cmd["amount"], cmd["currency"] = c.amount, "JPY"
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

	var deadLettered, reconciled, duplicates, takeovers int
	applied := map[string]bool{} // key → its operation is in the ledger
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
		applied[k] = mine
		switch len(term) {
		case 1:
			e := term[0]
			if want := events.TerminalID(c.merchant, c.key); e.Event.ID != want || e.MsgID != want {
				t.Errorf("%s: terminal event id %q, Nats-Msg-Id %q, want both %q", k, e.Event.ID, e.MsgID, want)
			}
			succeeded := e.Event.Type == events.TerminalKind(c.typ, true).Type()
			if !succeeded && e.Event.Type != events.TerminalKind(c.typ, false).Type() {
				t.Errorf("%s: terminal event %s for a %s", k, e.Event.Type, c.typ)
			}
			if succeeded != mine {
				t.Errorf("%s: terminal event %s, but the ledger of %s is %+v: succeeded must mean applied", k, e.Event.Type, c.auth, ops)
			}
			if c.pair == 0 && !succeeded {
				t.Errorf("%s: %s (%+v), want success: nothing refuses it", k, e.Event.Type, e.Event.Data.Error)
			}
			if e.Event.Data.Reconciled {
				reconciled++
			}
		case 0:
			// Dead-lettered: only when the budget ran out, with a DLQ entry.
			deadLettered++
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
	for _, c := range cmds {
		if auths[c.auth] {
			continue
		}
		auths[c.auth] = true
		if n := len(ledger[c.auth]); n > 1 || (n == 0 && applied[c.merchant+"/"+c.key]) {
			t.Errorf("authorisation %s: %d operations applied (%+v), want at most one", c.auth, n, ledger[c.auth])
		}
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
	t.Logf("%d events, %d keys taken over, %d reconciled successes, %d duplicate events, %d dead letters",
		len(all), takeovers, reconciled, duplicates, deadLettered)
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

// gatewayTap is a reverse proxy in front of the sandbox: the worker
// processes call it, and it records, per authorisation, every request and the
// status of its answer, in the order the requests arrive. A request the
// sandbox drops (apply-then-drop) is dropped to the worker too.
type gatewayTap struct {
	url      string
	upstream string
	client   *http.Client

	mu    sync.Mutex
	calls map[string][]tapCall
}

// tapCall is one request: its endpoint (capture, void, status) and the HTTP
// status of its answer, 0 when none came (dropped, or the worker gave up).
type tapCall struct {
	endpoint   string
	status     int
	start, end time.Time
}

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
	g.url = srv.URL + u.Path
	return g
}

func (g *gatewayTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	endpoint, auth := path.Base(r.URL.Path), ""
	if r.Method == http.MethodGet {
		endpoint, auth = "status", path.Base(r.URL.Path)
	} else {
		var b struct {
			TransactionID string `json:"transactionId"`
		}
		_ = json.Unmarshal(body, &b)
		auth = b.TransactionID
	}
	g.mu.Lock()
	i := len(g.calls[auth])
	g.calls[auth] = append(g.calls[auth], tapCall{endpoint: endpoint, start: time.Now()})
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
	return fmt.Sprintf("%s→%d at %s for %v", c.endpoint, c.status, c.start.Format("15:04:05.000"), c.end.Sub(c.start).Round(time.Millisecond))
}

// checkNeverBlind checks SPEC §5's "never resend it blind" on every
// authorisation: a capture (or void) follows an earlier one of its kind only
// when that one was certainly not applied (429, 503) or a status call came
// in between.
func checkNeverBlind(t *testing.T, g *gatewayTap) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	var calls, blind int
	for auth, cs := range g.calls {
		calls += len(cs)
		// SPEC §4.5: a capture and a void of one authorisation are never in
		// flight at once.
		for _, a := range cs {
			for _, b := range cs {
				if a.endpoint == "capture" && b.endpoint == "void" && a.start.Before(b.end) && b.start.Before(a.end) {
					t.Errorf("authorisation %s: a capture and a void in flight at once: %v, %v", auth, a, b)
				}
			}
		}
		last := map[string]tapCall{} // endpoint → its previous call
		asked := map[string]bool{}   // endpoint → a status call since its previous call
		for _, c := range cs {
			if c.endpoint == "status" {
				for e := range last {
					asked[e] = true
				}
				continue
			}
			if prev, ok := last[c.endpoint]; ok && prev.status != http.StatusTooManyRequests &&
				prev.status != http.StatusServiceUnavailable && !asked[c.endpoint] {
				blind++
				if blind <= 5 {
					t.Errorf("authorisation %s: %s resent after an answer %d without a status call: %v", auth, c.endpoint, prev.status, cs)
				}
			}
			last[c.endpoint], asked[c.endpoint] = c, false
		}
	}
	if blind > 0 {
		t.Errorf("%d operations resent blind, want none", blind)
	}
	t.Logf("%d gateway requests on %d authorisations", calls, len(g.calls))
}
