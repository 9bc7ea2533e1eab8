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
	// EventsMaxAge and DLQMaxAge bound the other streams; 0 keeps forever.
	EventsMaxAge time.Duration
	DLQMaxAge    time.Duration
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
		EventsMaxAge:    0,
		DLQMaxAge:       0,
		DuplicateWindow: 10 * time.Minute,
		Consumer:        "payworker",
	}
}

// CommandSubject is the subject of a command type: payments.cmd.capture.
func (c Config) CommandSubject(typ string) string { return c.Prefix + ".cmd." + typ }

// CommandWildcard matches every command subject: payments.cmd.>.
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
