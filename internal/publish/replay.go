package publish

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payworker/payworker/client"
	"github.com/payworker/payworker/internal/command"
	"github.com/payworker/payworker/internal/events"
)

// HeaderReplayOf names, on a republished command, the DLQ entry it replays:
// "<dlq stream>:<sequence>". A replayed command whose entry was uncertain
// also carries hdrUncertain, which the worker reads.
const HeaderReplayOf = "Payworker-Replay-Of"

// ErrNotReplayable is returned (wrapped) for a DLQ entry that cannot be
// turned back into a command: no command type can be told from its body or
// its original subject, or a dead-lettered command's body no longer decodes.
var ErrNotReplayable = errors.New("not replayable")

// ReplayCommandID returns the command_id of the replay of DLQ entry seq of
// stream: "replay-<stream>-<seq>" (a hash of the stream name stands in for a
// name too long for the 64 characters of a command_id). It is the same on
// every run: a replay that published an entry but stopped before deleting it
// publishes the same Nats-Msg-Id when it is run again, and JetStream drops
// the copy (within the commands stream's duplicate window; after it, the
// worker answers the copy as a duplicate of the key).
func ReplayCommandID(stream string, seq uint64) string {
	n := strconv.FormatUint(seq, 10)
	if id := "replay-" + stream + "-" + n; len(id) <= 64 {
		return id
	}
	sum := sha256.Sum256([]byte(stream))
	return "replay-" + hex.EncodeToString(sum[:8]) + "-" + n
}

// ReplayStatus is what became of one DLQ entry in a replay.
type ReplayStatus string

// Replay statuses. Without a wait, a republished entry stays ReplayPublished;
// with one, it ends in one of the outcome statuses or ReplayTimedOut.
const (
	ReplayPlanned   ReplayStatus = "would replay" // dry run
	ReplaySkipped   ReplayStatus = "skipped"      // invalid entry without IncludeInvalid
	ReplayError     ReplayStatus = "error"        // not republished, or not deleted
	ReplayPublished ReplayStatus = "replayed"     // republished and deleted from the DLQ
	// Outcomes, with a wait.
	ReplaySucceeded    ReplayStatus = "succeeded"
	ReplayFailed       ReplayStatus = "failed"
	ReplayAlreadyDone  ReplayStatus = "already done" // the key had its outcome: not executed again
	ReplayDeadLettered ReplayStatus = "dead-lettered again"
	ReplayRejected     ReplayStatus = "rejected again"
	ReplayTimedOut     ReplayStatus = "timed out"
)

// ReplayOptions select the entries of a replay and say whether to wait for
// their outcomes.
type ReplayOptions struct {
	Filter DLQFilter
	// IncludeInvalid replays rejected messages (payments.dlq.invalid) too;
	// they are skipped otherwise, since the worker rejects them again unless
	// they were fixed.
	IncludeInvalid bool
	// Limit replays at most that many entries (skipped ones not counted); 0
	// is no limit.
	Limit int
	// DryRun selects and reports the entries and changes nothing.
	DryRun bool
	// Wait, when positive, waits after the last publication at most that
	// long for the outcome of every replayed command.
	Wait time.Duration
	// Progress, when set, is told of each entry once it is republished (or
	// skipped, planned or failed), before any wait.
	Progress func(ReplayResult)

	// afterPublish is a test hook run between an entry's publication and its
	// deletion; an error ends the replay there, as a crash would.
	afterPublish func(DeadLetter) error
}

// ReplayResult is what a replay did with one DLQ entry.
type ReplayResult struct {
	Entry  DeadLetter
	Status ReplayStatus
	// CommandID is the replay's new command_id; Key the idempotency key it
	// kept; Subject the command subject it was published on.
	CommandID string
	Key       string
	Subject   string
	// CommandSeq is the command's sequence in the commands stream.
	CommandSeq uint64
	// Republished is set when JetStream dropped the publication as a
	// duplicate: an earlier replay that stopped before deleting the entry
	// had published this very command.
	Republished bool
	// Outcome is the event that answered the command, with a wait.
	Outcome *Outcome
	// Detail explains the status in words; Err is the error of an
	// ReplayError status.
	Detail string
	Err    error
}

// ReplaySummary counts the results of a replay.
type ReplaySummary struct {
	// Replayed counts the entries republished and deleted from the DLQ;
	// Republished those of them an earlier, interrupted replay had
	// already published.
	Replayed    int
	Republished int
	Planned     int
	// Outcomes, with a wait.
	Succeeded    int
	Failed       int
	AlreadyDone  int
	DeadLettered int
	Rejected     int
	TimedOut     int
	// Skipped counts the invalid entries left in the DLQ.
	Skipped int
	// Errors counts the entries that could not be republished or deleted.
	Errors int
}

// OK reports whether nothing went wrong: no errors and no outcome other than
// succeeded or already done.
func (s ReplaySummary) OK() bool {
	return s.Errors == 0 && s.Failed == 0 && s.DeadLettered == 0 && s.Rejected == 0 && s.TimedOut == 0
}

func (s *ReplaySummary) add(r ReplayResult) {
	switch r.Status {
	case ReplayPlanned:
		s.Planned++
	case ReplaySkipped:
		s.Skipped++
	case ReplayError:
		s.Errors++
	case ReplaySucceeded:
		s.Succeeded++
	case ReplayFailed:
		s.Failed++
	case ReplayAlreadyDone:
		s.AlreadyDone++
	case ReplayDeadLettered:
		s.DeadLettered++
	case ReplayRejected:
		s.Rejected++
	case ReplayTimedOut:
		s.TimedOut++
	}
	switch r.Status {
	case ReplayPlanned, ReplaySkipped, ReplayError:
	default:
		s.Replayed++
		if r.Republished {
			s.Republished++
		}
	}
}

// Replay republishes the dead letters that o selects, in DLQ order, each on
// its command subject with a new command_id (ReplayCommandID) and the same
// idempotency key, so that a key that reached its outcome meanwhile is not
// executed again (the worker answers command.duplicate). A body without an
// idempotency_key gets one: its original command_id, which was its key. An
// entry whose outcome was uncertain carries Payworker-Outcome-Uncertain on
// the command, so the worker reconciles through the status call first even
// if the key's record has expired.
//
// Each entry is deleted from the DLQ only after JetStream acknowledged its
// publication. A replay stopped at any point therefore loses nothing (what
// was not acknowledged is still in the DLQ) and, run again, executes
// nothing twice (the same command_id is dropped as a duplicate, and the key
// protects beyond the duplicate window).
//
// Replay returns one result per entry seen, in order, and their summary.
// An entry that cannot be republished or deleted is a ReplayError result,
// not an error; the error is for a replay that could not run or was
// stopped (ctx), with the results so far.
func (c *Client) Replay(ctx context.Context, o ReplayOptions) ([]ReplayResult, ReplaySummary, error) {
	var (
		results []ReplayResult
		waits   []replayWait
		start   = time.Now()
		wait    = o.Wait > 0 && !o.DryRun
	)
	if wait {
		if _, err := c.js.Stream(ctx, c.streams.Events); err != nil {
			return nil, ReplaySummary{}, fmt.Errorf("events: %w", c.streamErr(err))
		}
	}
	progress := func(r ReplayResult) {
		results = append(results, r)
		if o.Progress != nil {
			o.Progress(r)
		}
	}
	selected := 0
	err := c.DeadLetters(ctx, o.Filter, func(d DeadLetter) error {
		if d.Invalid() && !o.IncludeInvalid {
			progress(ReplayResult{Entry: d, Status: ReplaySkipped, Key: d.Key(),
				Detail: "rejected message: the worker would reject it again unless it is fixed (--include-invalid replays it)"})
			return nil
		}
		if o.Limit > 0 && selected >= o.Limit {
			return ErrStop
		}
		selected++
		msg, m, err := c.replayMessage(d)
		r := ReplayResult{Entry: d, CommandID: m.CommandID, Key: m.IdempotencyKey}
		if msg != nil {
			r.Subject = msg.Subject
		}
		if err != nil {
			r.Status, r.Err = ReplayError, err
			progress(r)
			return nil
		}
		if o.DryRun {
			r.Status = ReplayPlanned
			progress(r)
			return nil
		}
		ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(c.streams.Commands))
		if err != nil {
			r.Status, r.Err = ReplayError, fmt.Errorf("publish %s: %w", msg.Subject, err)
			r.Detail = "not republished; the entry stays in the DLQ"
			progress(r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		r.CommandSeq, r.Republished = ack.Sequence, ack.Duplicate
		if o.afterPublish != nil {
			if err := o.afterPublish(d); err != nil {
				return err
			}
		}
		if err := c.DeleteDeadLetter(ctx, d.Seq); err != nil {
			r.Status, r.Err = ReplayError, err
			r.Detail = fmt.Sprintf("republished as command_id %s but still in the DLQ: run the replay again to delete it (the second publication is dropped as a duplicate)", r.CommandID)
			progress(r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		r.Status = ReplayPublished
		if r.Republished {
			r.Detail = "an earlier, interrupted replay had published it; JetStream dropped this copy"
		}
		progress(r)
		if wait {
			waits = append(waits, replayWait{i: len(results) - 1, ack: client.PubAck{
				Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate,
				Type:      client.Type(msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]),
				CommandID: m.CommandID, MerchantID: m.MerchantID, IdempotencyKey: m.IdempotencyKey,
			}})
		}
		return nil
	})
	if err == nil && len(waits) > 0 {
		c.awaitReplays(ctx, o.Wait, start, results, waits)
	}
	var sum ReplaySummary
	for _, r := range results {
		sum.add(r)
	}
	if err != nil {
		return results, sum, fmt.Errorf("replay stopped: %w", err)
	}
	return results, sum, nil
}

// replayWait is a replayed command whose outcome is awaited.
type replayWait struct {
	i   int
	ack client.PubAck
}

// awaitReplays waits at most d for the outcomes, with the public client
// (AwaitCommand, every wait served by one follower of the events stream),
// and sets each result's status from its outcome. An outcome may be stored
// before its wait begins: the client's history reaches back to the
// replay's start, and for a command an earlier, interrupted replay had
// published, to the commands stream's duplicate window before it.
func (c *Client) awaitReplays(ctx context.Context, d time.Duration, start time.Time, results []ReplayResult, waits []replayWait) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	history := time.Since(start) + clockSkew
	for _, rw := range waits {
		if rw.ack.Duplicate {
			history += c.duplicateWindow(ctx)
			break
		}
	}
	cl := client.New(c.js, client.WithStreams(PublicStreams(c.streams)), client.WithHistory(history))
	defer cl.Close()
	var wg sync.WaitGroup
	for _, rw := range waits {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[rw.i]
			res, err := cl.AwaitCommand(ctx, rw.ack)
			var o Outcome
			if err == nil {
				o, err = OutcomeOf(res)
			}
			switch {
			case errors.Is(err, client.ErrNoOutcome):
				r.Status = ReplayTimedOut
				r.Detail = fmt.Sprintf("no outcome within %s: is a worker running? follow it with `publisher events --key %s`", d, r.Key)
			case err != nil:
				r.Status, r.Detail = ReplayTimedOut, "no outcome: "+err.Error()
			default:
				r.Outcome = &o
				r.Status, r.Detail = replayStatusOf(o, r.CommandID, r.Republished)
			}
		}()
	}
	wg.Wait()
}

// clockSkew is the slack given to the server's store times, which the
// client's history compares with this clock.
const clockSkew = time.Minute

// duplicateWindow is the commands stream's duplicate window: how long
// before a publication JetStream dropped as a duplicate the first copy may
// have been stored.
func (c *Client) duplicateWindow(ctx context.Context) time.Duration {
	s, err := c.js.Stream(ctx, c.streams.Commands)
	if err != nil || s.CachedInfo().Config.Duplicates <= 0 {
		return 2 * time.Minute // JetStream's default
	}
	return s.CachedInfo().Config.Duplicates
}

// replayStatusOf maps the event that answered the replayed command id to
// its status. republished: the answer is that of an earlier replay's
// publication of the same command. A terminal event of another command
// (two DLQ entries of one key) means the key was done without this one.
func replayStatusOf(o Outcome, id string, republished bool) (ReplayStatus, string) {
	d := o.Event.Data
	switch {
	case o.Kind.Terminal() && d.CommandID != "" && d.CommandID != id:
		return ReplayAlreadyDone, fmt.Sprintf("the key reached its outcome through command %s: not executed again", d.CommandID)
	case o.Kind == events.Duplicate:
		return ReplayAlreadyDone, fmt.Sprintf("the key already had its outcome (event %s): not executed again", d.OriginalEventID)
	case o.Kind == events.DeadLettered:
		return ReplayDeadLettered, errorText(d.Error) + dlqText(d)
	case o.Kind == events.Rejected:
		return ReplayRejected, errorText(d.Error) + dlqText(d)
	case republished && o.Succeeded():
		return ReplayAlreadyDone, "succeeded when an earlier, interrupted replay published it: not executed again"
	case o.Succeeded():
		detail := "gateway_code=" + d.GatewayCode
		if d.Reconciled {
			detail = "reconciled through the status call: the earlier attempt had taken effect"
		}
		return ReplaySucceeded, detail
	}
	return ReplayFailed, errorText(d.Error)
}

func errorText(e *events.Error) string {
	if e == nil {
		return ""
	}
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

func dlqText(d events.Data) string {
	if d.DLQSubject == "" {
		return ""
	}
	return fmt.Sprintf(" (now %s#%d)", d.DLQSubject, d.DLQSequence)
}

// replayMessage builds the command that replays d, and the Match of its
// answers. The body keeps every field but command_id (the replay's) and,
// when it had none, idempotency_key (set to the original command_id). The
// command type is the body's, or the original subject's; a dead-lettered
// command must still decode, a rejected message is sent as it is.
func (c *Client) replayMessage(d DeadLetter) (*nats.Msg, Match, error) {
	id := ReplayCommandID(d.Stream, d.Seq)
	m := Match{MerchantID: d.MerchantID, IdempotencyKey: d.Key(), CommandID: id}
	typ := d.CommandType
	if !isCommandType(typ) {
		typ = d.Kind
	}
	if !isCommandType(typ) && d.OriginalSubject != "" {
		typ = d.OriginalSubject[strings.LastIndexByte(d.OriginalSubject, '.')+1:]
	}
	if !isCommandType(typ) {
		return nil, m, fmt.Errorf("DLQ entry %d: neither its body nor its original subject %q names capture or void: %w", d.Seq, d.OriginalSubject, ErrNotReplayable)
	}
	body := d.Body
	var obj map[string]json.RawMessage
	if json.Unmarshal(d.Body, &obj) == nil && obj != nil {
		if _, ok := obj["idempotency_key"]; !ok {
			if orig, ok := obj["command_id"]; ok {
				obj["idempotency_key"] = orig
			}
		}
		obj["command_id"], _ = json.Marshal(id)
		var err error
		if body, err = json.Marshal(obj); err != nil {
			return nil, m, fmt.Errorf("DLQ entry %d: encode: %w", d.Seq, err)
		}
		m = answerMatch(body)
	} else if !d.Invalid() {
		return nil, m, fmt.Errorf("DLQ entry %d: body is not a JSON object: %w", d.Seq, ErrNotReplayable)
	}
	if !d.Invalid() {
		if err := command.Validate(typ, body); err != nil {
			return nil, m, fmt.Errorf("DLQ entry %d: %w: %w", d.Seq, ErrNotReplayable, err)
		}
	}
	msg := &nats.Msg{Subject: c.streams.CommandSubject(typ), Header: nats.Header{}, Data: body}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set(HeaderReplayOf, d.Stream+":"+strconv.FormatUint(d.Seq, 10))
	if d.Uncertain {
		msg.Header.Set(hdrUncertain, "true")
	}
	return msg, m, nil
}

// answerMatch is the Match of the events the worker publishes about body,
// read as the worker reads a body it may reject: string fields within their
// schema sizes, the key defaulting to command_id.
func answerMatch(body []byte) Match {
	var obj map[string]any
	_ = json.Unmarshal(body, &obj)
	str := func(k string, max int) string {
		s, _ := obj[k].(string)
		if len(s) > max {
			return ""
		}
		return s
	}
	m := Match{MerchantID: str("merchant_id", 10), IdempotencyKey: str("idempotency_key", 255), CommandID: str("command_id", 64)}
	if m.IdempotencyKey == "" {
		m.IdempotencyKey = m.CommandID
	}
	return m
}

func isCommandType(t string) bool {
	return t == string(command.Capture) || t == string(command.Void)
}
