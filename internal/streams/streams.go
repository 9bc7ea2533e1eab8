// Package streams names the JetStream streams and subjects of SPEC §3.1 and
// provisions them. The worker and the publisher share it so both agree on
// every name.
package streams

import "time"

// Config names the streams and the subject prefix. The zero value is not
// usable; start from Default.
type Config struct {
	// Prefix is the first subject token, "payments" by default.
	Prefix string
	// Commands, Events and DLQ are the stream names.
	Commands string
	Events   string
	DLQ      string
	// Replicas is the replica count of each stream (1 on one server, 3 in a cluster).
	Replicas int
	// CommandsMaxAge is the retention of the commands stream (7 days by default);
	// idempotency keys must be kept at least as long.
	CommandsMaxAge time.Duration
	// EventsMaxAge and EventsMaxBytes bound the events stream (30 days, 10 GiB
	// by default). It discards its oldest events at either limit, so a burst
	// can never fill the server's disk and stop commands being stored. The
	// byte bound is a safety net, not the retention policy: stored, an event
	// takes about 1 KiB, so 10 GiB is 30 days at about 4 commands a second.
	// Raise it for more; consumers of events must keep up within both bounds.
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	// DLQMaxAge and DLQMaxBytes bound the dead-letter stream (30 days, 1 GiB
	// by default). The age must exceed the idempotency keys' TTL (7 days by
	// default): a dead letter then stays replayable for as long as its key
	// lives and beyond, and a replay after the key has expired still carries
	// the uncertain mark of the entry, so it reconciles before any resend. The
	// DLQ discards new messages at its byte bound: a full DLQ refuses further
	// dead letters (the worker then leaves the command unacked, nothing is
	// lost) rather than deleting old ones nobody has looked at. 1 GiB holds
	// hundreds of thousands of dead letters, far more than anyone inspects.
	// JetStream reserves each byte bound on the server and in the account at
	// creation, so the server's store (75% of free disk by default) must be
	// larger than their sum.
	DLQMaxAge   time.Duration
	DLQMaxBytes int64
	// DuplicateWindow is the Nats-Msg-Id de-duplication window of every stream.
	DuplicateWindow time.Duration
	// Consumer is the durable name of the workers' shared pull consumer.
	Consumer string
}

// Default returns the names of SPEC §3.1.
func Default() Config {
	return Config{
		Prefix:          "payments",
		Commands:        "PAYMENT_COMMANDS",
		Events:          "PAYMENT_EVENTS",
		DLQ:             "PAYMENT_DLQ",
		Replicas:        1,
		CommandsMaxAge:  7 * 24 * time.Hour,
		EventsMaxAge:    30 * 24 * time.Hour,
		EventsMaxBytes:  10 << 30,
		DLQMaxAge:       30 * 24 * time.Hour,
		DLQMaxBytes:     1 << 30,
		DuplicateWindow: 10 * time.Minute,
		Consumer:        "payworker",
	}
}

// CommandSubject is the subject of a command type: payments.cmd.capture.
func (c Config) CommandSubject(typ string) string { return c.Prefix + ".cmd." + typ }

// CommandSubjects are the subjects of the commands stream, the only ones it
// accepts: payments.cmd.capture and payments.cmd.void. A publication to any
// other payments.cmd.X finds no stream and fails.
func (c Config) CommandSubjects() []string {
	return []string{c.CommandSubject("capture"), c.CommandSubject("void")}
}

// CommandWildcard matches every command subject: payments.cmd.>. The
// consumer filters on it; the stream holds only CommandSubjects.
func (c Config) CommandWildcard() string { return c.Prefix + ".cmd.>" }

// EventSubject is the subject of an event kind, e.g. "capture.succeeded" or
// "command.rejected": payments.evt.capture.succeeded.
func (c Config) EventSubject(kind string) string { return c.Prefix + ".evt." + kind }

// EventWildcard matches every event subject: payments.evt.>.
func (c Config) EventWildcard() string { return c.Prefix + ".evt.>" }

// DLQSubject is the dead-letter subject of a command type or of "invalid":
// payments.dlq.capture.
func (c Config) DLQSubject(kind string) string { return c.Prefix + ".dlq." + kind }

// DLQWildcard matches every dead-letter subject: payments.dlq.>.
func (c Config) DLQWildcard() string { return c.Prefix + ".dlq.>" }
