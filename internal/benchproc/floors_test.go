package benchproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// The floors' own streams, on the same server as the worker's: commands
// the worker never sees, and their events.
const (
	floorCommands  = "BENCHPROC_FLOOR_COMMANDS"
	floorEvents    = "BENCHPROC_FLOOR_EVENTS"
	floorCmdPrefix = "benchproc.cmd."
	floorEvtPrefix = "benchproc.evt."
)

// floorPending is the raw JetStream floor's messages in flight (the
// consumer's MaxAckPending and the pull buffer).
const floorPending = 1024

// createFloorStreams creates the floors' streams, with the file storage
// and de-duplication window of the worker's.
func (s *system) createFloorStreams(ctx context.Context) {
	s.b.Helper()
	for _, sc := range []jetstream.StreamConfig{
		{Name: floorCommands, Subjects: []string{floorCmdPrefix + ">"}, Storage: jetstream.FileStorage, Duplicates: s.streams.DuplicateWindow},
		{Name: floorEvents, Subjects: []string{floorEvtPrefix + ">"}, Storage: jetstream.FileStorage, Duplicates: s.streams.DuplicateWindow},
	} {
		if _, err := s.js.CreateOrUpdateStream(ctx, sc); err != nil {
			s.b.Fatalf("floor stream %s: %v", sc.Name, err)
		}
	}
}

// floorEvent is an event of the shape and about the size of the worker's
// capture.succeeded (CloudEvents, structured JSON).
type floorEvent struct {
	SpecVersion     string         `json:"specversion"`
	ID              string         `json:"id"`
	Source          string         `json:"source"`
	Type            string         `json:"type"`
	Subject         string         `json:"subject"`
	Time            time.Time      `json:"time"`
	DataContentType string         `json:"datacontenttype"`
	Data            floorEventData `json:"data"`
}

type floorEventData struct {
	CommandID            string `json:"command_id"`
	IdempotencyKey       string `json:"idempotency_key"`
	MerchantID           string `json:"merchant_id"`
	TransactionID        string `json:"transaction_id"`
	CommandType          string `json:"command_type"`
	Gateway              string `json:"gateway"`
	Amount               int64  `json:"amount"`
	Currency             string `json:"currency"`
	Attempts             int    `json:"attempts"`
	GatewayCode          string `json:"gateway_code"`
	GatewayMessage       string `json:"gateway_message"`
	GatewayTransactionID string `json:"gateway_transaction_id"`
	AuthCode             string `json:"auth_code"`
	Scheme               string `json:"scheme"`
	MaskedCardNumber     string `json:"masked_card_number"`
}

// floorCommand is the part of a capture command the floor reads.
type floorCommand struct {
	CommandID     string `json:"command_id"`
	MerchantID    string `json:"merchant_id"`
	TransactionID string `json:"transaction_id"`
	Amount        int64  `json:"amount"`
	Currency      string `json:"currency"`
}

// floor measures what the servers allow without the worker: cmds are
// stored first (not timed) on a subject of their own; then a pull consumer
// with inFlight messages pending does, for each, in inFlight goroutines:
// decode → (with store, claim the command) → (with gateway, one capture
// call to the sandbox) → (with store, record the outcome) → publish one
// event and wait for its PubAck → Ack (a plain ack, one write, not
// DoubleAck). It returns the messages per second, from the consumer's
// creation to the last ack sent, and the CPU used meanwhile.
func (s *system) floor(ctx context.Context, name string, cmds []command, inFlight int, gateway *gatewayClient, store *floorStore) (float64, cpuUse) {
	s.b.Helper()
	subject := floorCmdPrefix + name
	for _, c := range cmds {
		if _, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: c.body},
			jetstream.WithMsgID(c.id), jetstream.WithStallWait(time.Minute)); err != nil {
			s.b.Fatalf("floor %s: publish: %v", name, err)
		}
	}
	select {
	case <-s.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		s.b.Fatalf("floor %s: commands not stored after a minute", name)
	}
	if err := s.asyncErrs.err(); err != nil {
		s.b.Fatalf("floor %s: %v", name, err)
	}

	ctx, cancel := context.WithTimeout(ctx, floorTimeout)
	defer cancel()
	cpu0 := s.cpuSnapshot()
	start := time.Now()
	cons, err := s.js.CreateOrUpdateConsumer(ctx, floorCommands, jetstream.ConsumerConfig{
		Durable:       "floor-" + name,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: inFlight,
		MaxDeliver:    -1,
	})
	if err != nil {
		s.b.Fatalf("floor %s: consumer: %v", name, err)
	}
	msgs, err := cons.Messages(jetstream.PullMaxMessages(inFlight))
	if err != nil {
		s.b.Fatalf("floor %s: %v", name, err)
	}
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(msgs.Stop) }
	g, gctx := errgroup.WithContext(ctx)
	context.AfterFunc(gctx, stop) // Next does not watch a context

	var done atomic.Int64
	var end atomic.Pointer[time.Time]
	work := make(chan jetstream.Msg)
	g.Go(func() error {
		defer close(work)
		for {
			m, err := msgs.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			if err != nil {
				return err
			}
			select {
			case work <- m:
			case <-gctx.Done():
				return nil
			}
		}
	})
	for range inFlight {
		g.Go(func() error {
			for m := range work {
				if err := s.floorOne(gctx, m, gateway, store); err != nil {
					return err
				}
				if done.Add(1) == int64(len(cmds)) {
					now := time.Now()
					end.Store(&now)
					stop()
				}
			}
			return nil
		})
	}
	err = g.Wait()
	stop()
	cpu1 := s.cpuSnapshot()
	if err == nil && end.Load() == nil {
		err = fmt.Errorf("%d of %d messages in %s", done.Load(), len(cmds), floorTimeout)
	}
	if err != nil {
		s.b.Fatalf("floor %s: %v", name, err)
	}
	return float64(len(cmds)) / end.Load().Sub(start).Seconds(), cpu0.until(cpu1)
}

// floorTimeout bounds one floor's run.
const floorTimeout = 90 * time.Second

// floorOne handles one floor message.
func (s *system) floorOne(ctx context.Context, m jetstream.Msg, gateway *gatewayClient, store *floorStore) error {
	var c floorCommand
	if err := json.Unmarshal(m.Data(), &c); err != nil {
		return err
	}
	if store != nil {
		claimed, err := store.claim(ctx, c.CommandID)
		if err != nil {
			return fmt.Errorf("claim %s: %w", c.CommandID, err)
		}
		if !claimed {
			return m.Ack() // a duplicate: its holder captures and publishes
		}
	}
	ref := "none"
	if gateway != nil {
		var err error
		if ref, err = gateway.capture(ctx, c.TransactionID); err != nil {
			return err
		}
	}
	eventID := "evt-" + c.CommandID
	if store != nil {
		if err := store.record(ctx, c.CommandID, eventID, ref); err != nil {
			return fmt.Errorf("record %s: %w", c.CommandID, err)
		}
	}
	body, err := json.Marshal(floorEvent{
		SpecVersion: "1.0", ID: eventID, Source: "urn:payworker:benchproc:floor",
		Type: "payments.capture.succeeded", Subject: c.TransactionID, Time: time.Now().UTC(),
		DataContentType: "application/json",
		Data: floorEventData{
			CommandID: c.CommandID, IdempotencyKey: c.CommandID, MerchantID: c.MerchantID,
			TransactionID: c.TransactionID, CommandType: "capture", Gateway: "paymentoptions",
			Amount: c.Amount, Currency: c.Currency, Attempts: 1, GatewayCode: "INFO0001",
			GatewayMessage: "captured", GatewayTransactionID: ref, AuthCode: "A1B2C3",
			Scheme: "mastercard", MaskedCardNumber: "520000******1005",
		},
	})
	if err != nil {
		return err
	}
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: floorEvtPrefix + "capture.succeeded", Data: body},
		jetstream.WithMsgID(eventID)); err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	return m.Ack()
}

// floorStore is the store floor's idempotency: the least Redis traffic of
// any idempotent pipeline (a plain Watermill one with Redis SETNX, issue
// 10), one claim before the gateway call and one outcome write after it,
// with none of the worker's guarantees: no fencing token, no lease
// renewal, no detection of a lost record. Its keys are
// <prefix>claim:<command_id>, apart from the worker's.
type floorStore struct {
	rdb    *redis.Client
	prefix string
	holder string // the claim's value
}

// The claim's lease and the outcome's lifetime. go-redis sends whole
// seconds as EX (EX 30 is PX 30000).
const (
	floorClaimTTL   = 30 * time.Second
	floorOutcomeTTL = 24 * time.Hour
)

// newFloorStore connects to the Redis at addr with one connection per
// message in flight.
func newFloorStore(addr string, inFlight int) *floorStore {
	return &floorStore{
		rdb:    redis.NewClient(&redis.Options{Addr: addr, PoolSize: inFlight}),
		prefix: "benchproc:storefloor:",
		holder: "benchproc-storefloor",
	}
}

func (st *floorStore) close() error { return st.rdb.Close() }

// claim sets the command's key to the holder unless it exists (SET NX with
// the claim's lease); false means the command is claimed already.
func (st *floorStore) claim(ctx context.Context, commandID string) (bool, error) {
	return st.rdb.SetNX(ctx, st.prefix+"claim:"+commandID, st.holder, floorClaimTTL).Result()
}

// floorOutcome is what the store floor records of a capture (about 200
// bytes of JSON), in place of its claim.
type floorOutcome struct {
	EventID              string    `json:"event_id"`
	Outcome              string    `json:"outcome"`
	GatewayCode          string    `json:"gateway_code"`
	GatewayTransactionID string    `json:"gateway_transaction_id"`
	Attempts             int       `json:"attempts"`
	RecordedAt           time.Time `json:"recorded_at"`
}

// record overwrites the command's claim with its outcome, kept for the
// outcome's lifetime.
func (st *floorStore) record(ctx context.Context, commandID, eventID, gatewayTxn string) error {
	body, err := json.Marshal(floorOutcome{
		EventID: eventID, Outcome: "succeeded", GatewayCode: "INFO0001", GatewayTransactionID: gatewayTxn,
		Attempts: 1, RecordedAt: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	return st.rdb.Set(ctx, st.prefix+"claim:"+commandID, body, floorOutcomeTTL).Err()
}
