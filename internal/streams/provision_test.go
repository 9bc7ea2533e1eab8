package streams_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/internal/streams"
	"github.com/payworker/payworker/internal/testenv"
)

func TestStreamConfigs(t *testing.T) {
	c := streams.Default()
	got := c.StreamConfigs()
	if len(got) != 3 {
		t.Fatalf("StreamConfigs() = %d streams, want 3", len(got))
	}
	cmds, evts, dlq := got[0], got[1], got[2]
	tests := []struct {
		name      string
		sc        jetstream.StreamConfig
		stream    string
		subjects  []string
		maxAge    time.Duration
		maxBytes  int64
		discard   jetstream.DiscardPolicy
		dupWindow time.Duration
	}{
		{"commands", cmds, "PAYMENT_COMMANDS", []string{"payments.cmd.capture", "payments.cmd.void"},
			7 * 24 * time.Hour, 0, jetstream.DiscardOld, 10 * time.Minute},
		{"events", evts, "PAYMENT_EVENTS", []string{"payments.evt.>"},
			30 * 24 * time.Hour, 10 << 30, jetstream.DiscardOld, 10 * time.Minute},
		{"dlq", dlq, "PAYMENT_DLQ", []string{"payments.dlq.>"},
			30 * 24 * time.Hour, 1 << 30, jetstream.DiscardNew, 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.sc.Name != tt.stream {
				t.Errorf("Name = %q, want %q", tt.sc.Name, tt.stream)
			}
			if !slices.Equal(tt.sc.Subjects, tt.subjects) {
				t.Errorf("Subjects = %q, want %q", tt.sc.Subjects, tt.subjects)
			}
			if tt.sc.MaxAge != tt.maxAge {
				t.Errorf("MaxAge = %v, want %v", tt.sc.MaxAge, tt.maxAge)
			}
			if tt.sc.MaxBytes != tt.maxBytes {
				t.Errorf("MaxBytes = %d, want %d", tt.sc.MaxBytes, tt.maxBytes)
			}
			if tt.sc.Discard != tt.discard {
				t.Errorf("Discard = %v, want %v", tt.sc.Discard, tt.discard)
			}
			if tt.sc.Duplicates != tt.dupWindow {
				t.Errorf("Duplicates = %v, want %v", tt.sc.Duplicates, tt.dupWindow)
			}
			if tt.sc.Retention != jetstream.LimitsPolicy || tt.sc.Storage != jetstream.FileStorage {
				t.Errorf("Retention, Storage = %v, %v, want limits, file", tt.sc.Retention, tt.sc.Storage)
			}
		})
	}
}

// TestProvisionCommandSubjects checks that the commands stream takes capture
// and void only, and that the consumer's wildcard filter still binds to it.
func TestProvisionCommandSubjects(t *testing.T) {
	ctx := context.Background()
	_, js := testenv.StartNATS(t).Connect(t)
	c := streams.Default()
	if err := streams.Provision(ctx, js, c); err != nil {
		t.Fatalf("Provision() error = %v", err)
	}
	if err := streams.Check(ctx, js, c); err != nil {
		t.Fatalf("Check() error = %v", err)
	}
	for _, typ := range []string{"capture", "void"} {
		if _, err := js.Publish(ctx, c.CommandSubject(typ), []byte(`{}`)); err != nil {
			t.Errorf("Publish(%s) error = %v, want stored", c.CommandSubject(typ), err)
		}
	}
	for _, typ := range []string{"refund", "capture.x", "x{y}"} {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(pctx, c.CommandSubject(typ), []byte(`{}`), jetstream.WithRetryAttempts(0))
		cancel()
		if !errors.Is(err, jetstream.ErrNoStreamResponse) {
			t.Errorf("Publish(%s) error = %v, want %v", c.CommandSubject(typ), err, jetstream.ErrNoStreamResponse)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, c.Commands, jetstream.ConsumerConfig{
		Durable: c.Consumer, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: c.CommandWildcard()})
	if err != nil {
		t.Fatalf("CreateOrUpdateConsumer(filter %s) error = %v", c.CommandWildcard(), err)
	}
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, m.Subject())
	}
	if want := c.CommandSubjects(); !slices.Equal(got, want) {
		t.Errorf("consumed subjects = %q, want %q", got, want)
	}
}

// TestEnsureKeepsOperatorLimits checks a deployment provisioned before the
// bounds (wildcard commands subject, unbounded streams): Ensure sets the
// subjects, keeps the limits and reports each one, and keeps what the
// streams hold; with SetLimits it sets the limits too; a third run changes
// nothing.
func TestEnsureKeepsOperatorLimits(t *testing.T) {
	ctx := context.Background()
	_, js := testenv.StartNATS(t).Connect(t)
	c := streams.Default()
	old := c.StreamConfigs()
	old[0].Subjects = []string{c.CommandWildcard()}
	for i := range old {
		old[i].MaxBytes, old[i].Discard = -1, jetstream.DiscardOld
		if i > 0 {
			old[i].MaxAge = 0
		}
		if _, err := js.CreateStream(ctx, old[i]); err != nil {
			t.Fatalf("CreateStream(%s) error = %v", old[i].Name, err)
		}
	}
	for _, subj := range []string{c.CommandSubject("capture"), c.CommandSubject("refund"), c.DLQSubject("invalid")} {
		if _, err := js.Publish(ctx, subj, []byte(`{}`)); err != nil {
			t.Fatalf("Publish(%s) error = %v", subj, err)
		}
	}

	rep, err := streams.Ensure(ctx, js, c, streams.EnsureOptions{})
	if err != nil {
		t.Fatalf("Ensure() over the old streams error = %v", err)
	}
	if got, want := drifts(rep.Updated), []string{"PAYMENT_COMMANDS subjects: payments.cmd.>, configured payments.cmd.capture,payments.cmd.void"}; !slices.Equal(got, want) {
		t.Errorf("Ensure().Updated = %q, want %q", got, want)
	}
	wantDrift := []string{
		"PAYMENT_EVENTS max_age: unlimited, configured 720h0m0s",
		"PAYMENT_EVENTS max_bytes: unlimited, configured 10737418240",
		"PAYMENT_DLQ max_age: unlimited, configured 720h0m0s",
		"PAYMENT_DLQ max_bytes: unlimited, configured 1073741824",
		"PAYMENT_DLQ discard: DiscardOld, configured DiscardNew",
	}
	if got := drifts(rep.Drift); !slices.Equal(got, wantDrift) {
		t.Errorf("Ensure().Drift =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantDrift, "\n"))
	}
	for i, want := range old {
		got := streamConfig(t, js, want.Name)
		if i == 0 {
			want.Subjects = c.CommandSubjects()
		}
		if !slices.Equal(got.Subjects, want.Subjects) || got.MaxAge != want.MaxAge || got.MaxBytes != want.MaxBytes || got.Discard != want.Discard {
			t.Errorf("stream %s = subjects %q, max age %v, max bytes %d, discard %v; want %q, %v, %d, %v (limits kept)",
				want.Name, got.Subjects, got.MaxAge, got.MaxBytes, got.Discard, want.Subjects, want.MaxAge, want.MaxBytes, want.Discard)
		}
	}

	rep, err = streams.Ensure(ctx, js, c, streams.EnsureOptions{SetLimits: true})
	if err != nil {
		t.Fatalf("Ensure(SetLimits) error = %v", err)
	}
	if len(rep.Updated) != len(wantDrift) || len(rep.Drift) != 0 {
		t.Errorf("Ensure(SetLimits) = updated %q, drift %q; want the %d limits updated, no drift", drifts(rep.Updated), drifts(rep.Drift), len(wantDrift))
	}
	for _, want := range c.StreamConfigs() {
		got := streamConfig(t, js, want.Name)
		if want.MaxBytes == 0 {
			want.MaxBytes = -1 // the server's spelling of no limit
		}
		if !slices.Equal(got.Subjects, want.Subjects) || got.MaxAge != want.MaxAge ||
			got.MaxBytes != want.MaxBytes || got.Discard != want.Discard {
			t.Errorf("stream %s = subjects %q, max age %v, max bytes %d, discard %v; want %q, %v, %d, %v",
				want.Name, got.Subjects, got.MaxAge, got.MaxBytes, got.Discard,
				want.Subjects, want.MaxAge, want.MaxBytes, want.Discard)
		}
	}
	for name, want := range map[string]uint64{c.Commands: 2, c.DLQ: 1} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().State.Msgs; got != want {
			t.Errorf("stream %s holds %d messages after the updates, want %d", name, got, want)
		}
	}
	if rep, err := streams.Ensure(ctx, js, c, streams.EnsureOptions{}); err != nil || len(rep.Created)+len(rep.Updated)+len(rep.Drift) != 0 {
		t.Errorf("Ensure() once more = %+v, %v; want nothing to do", rep, err)
	}
}

// TestEnsureReplicasOnOneServer checks that more than one replica on a
// server that is not clustered fails with an error PlacementRefused knows.
func TestEnsureReplicasOnOneServer(t *testing.T) {
	_, js := testenv.StartNATS(t).Connect(t)
	c := streams.Default()
	c.Replicas = 3
	_, err := streams.Ensure(context.Background(), js, c, streams.EnsureOptions{})
	if !streams.PlacementRefused(err) {
		t.Fatalf("Ensure(3 replicas, one server) error = %v, want one PlacementRefused recognises", err)
	}
	if want := "provision stream PAYMENT_COMMANDS: JetStream cannot place 3 replicas of it"; !strings.Contains(err.Error(), want) {
		t.Errorf("Ensure() error = %q, want it to contain %q", err, want)
	}
}

func drifts(ds []streams.Drift) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

// TestDLQFullRefusesNewEntries checks DiscardNew: a full DLQ refuses a new
// dead letter and keeps the old ones, while the events stream drops its
// oldest events instead.
func TestDLQFullRefusesNewEntries(t *testing.T) {
	ctx := context.Background()
	_, js := testenv.StartNATS(t).Connect(t)
	c := streams.Default()
	c.DLQMaxBytes, c.EventsMaxBytes = 4<<10, 4<<10
	if err := streams.Provision(ctx, js, c); err != nil {
		t.Fatalf("Provision() error = %v", err)
	}
	body := []byte(strings.Repeat("x", 1000))
	var refused error
	stored := 0
	for i := 0; i < 20 && refused == nil; i++ {
		if _, refused = js.Publish(ctx, c.DLQSubject("capture"), body, jetstream.WithMsgID(fmt.Sprint("dlq-", i))); refused == nil {
			stored++
		}
	}
	if refused == nil || stored == 0 {
		t.Fatalf("DLQ stored %d dead letters of 1000 bytes in 4 KiB and refused none (%v), want some stored, then refused", stored, refused)
	}
	if !strings.Contains(refused.Error(), "maximum bytes exceeded") {
		t.Errorf("refusal = %v, want maximum bytes exceeded", refused)
	}
	dlq, err := js.Stream(ctx, c.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != 1 || info.State.Msgs != uint64(stored) {
		t.Errorf("DLQ holds seq %d.., %d messages; want the first %d kept from seq 1", info.State.FirstSeq, info.State.Msgs, stored)
	}

	for i := 0; i < 20; i++ {
		if _, err := js.Publish(ctx, c.EventSubject("capture.succeeded"), body, jetstream.WithMsgID(fmt.Sprint("evt-", i))); err != nil {
			t.Fatalf("Publish(event %d) error = %v, want the oldest dropped instead", i, err)
		}
	}
	evts, err := js.Stream(ctx, c.Events)
	if err != nil {
		t.Fatal(err)
	}
	if info, err = evts.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != 20 || info.State.FirstSeq == 1 || info.State.Bytes > 4<<10 {
		t.Errorf("events stream = seq %d..%d, %d bytes; want the latest kept within 4 KiB", info.State.FirstSeq, info.State.LastSeq, info.State.Bytes)
	}
}

// TestProvisionStorageExceeded checks that a server with less storage than
// the byte bounds refuses with an error that says why.
func TestProvisionStorageExceeded(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), JetStreamMaxStore: 64 << 20, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	err = streams.Provision(context.Background(), js, streams.Default())
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10047 {
		t.Fatalf("Provision() on a 64 MiB store error = %v, want insufficient storage (10047)", err)
	}
	if want := "stream PAYMENT_EVENTS: its max bytes 10737418240 exceed"; !strings.Contains(err.Error(), want) {
		t.Errorf("Provision() error = %q, want it to contain %q", err, want)
	}

	c := streams.Default()
	c.EventsMaxBytes, c.DLQMaxBytes = 32<<20, 16<<20
	if err := streams.Provision(context.Background(), js, c); err != nil {
		t.Errorf("Provision() with bounds within the store error = %v", err)
	}
}
