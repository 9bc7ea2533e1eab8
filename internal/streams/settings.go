package streams

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Setting is one environment variable of the stream configuration: the
// worker and `publisher provision` read the same names with the same rules,
// so both provision the same streams.
type Setting struct {
	// Name is the environment variable, e.g. STREAM_REPLICAS.
	Name string
	// Default is its value when unset, from Default.
	Default string
	Desc    string
	// Set parses v into c; its error does not name the variable.
	Set func(c *Config, v string) error
}

// Settings lists the stream settings in the order the worker's usage prints
// them: STREAM_PREFIX, STREAM_COMMANDS, STREAM_EVENTS, STREAM_DLQ,
// STREAM_REPLICAS, COMMANDS_MAX_AGE, EVENTS_MAX_AGE, EVENTS_MAX_BYTES,
// DLQ_MAX_AGE, DLQ_MAX_BYTES, DUPLICATE_WINDOW and CONSUMER_NAME.
func Settings() []Setting {
	d := Default()
	return []Setting{
		{Name: "STREAM_PREFIX", Default: d.Prefix, Desc: "first subject token",
			Set: func(c *Config, v string) (err error) { c.Prefix, err = token(v); return err }},
		{Name: "STREAM_COMMANDS", Default: d.Commands, Desc: "commands stream",
			Set: func(c *Config, v string) (err error) { c.Commands, err = token(v); return err }},
		{Name: "STREAM_EVENTS", Default: d.Events, Desc: "events stream",
			Set: func(c *Config, v string) (err error) { c.Events, err = token(v); return err }},
		{Name: "STREAM_DLQ", Default: d.DLQ, Desc: "dead-letter stream",
			Set: func(c *Config, v string) (err error) { c.DLQ, err = token(v); return err }},
		{Name: "STREAM_REPLICAS", Default: strconv.Itoa(d.Replicas), Desc: "replicas of each stream and key-value bucket (1..5); raised on existing ones, never lowered",
			Set: func(c *Config, v string) (err error) { c.Replicas, err = intIn(v, 1, 5); return err }},
		{Name: "COMMANDS_MAX_AGE", Default: shortDuration(d.CommandsMaxAge), Desc: "retention of the commands stream",
			Set: func(c *Config, v string) (err error) { c.CommandsMaxAge, err = positiveDuration(v); return err }},
		{Name: "EVENTS_MAX_AGE", Default: shortDuration(d.EventsMaxAge), Desc: "retention of the events stream, at least DUPLICATE_WINDOW",
			Set: func(c *Config, v string) (err error) { c.EventsMaxAge, err = positiveDuration(v); return err }},
		{Name: "EVENTS_MAX_BYTES", Default: "10GiB", Desc: "size bound of the events stream (bytes, or KiB, MiB, GiB, TiB); the oldest events go first",
			Set: func(c *Config, v string) (err error) { c.EventsMaxBytes, err = ParseBytes(v); return err }},
		{Name: "DLQ_MAX_AGE", Default: shortDuration(d.DLQMaxAge), Desc: "retention of the dead-letter stream",
			Set: func(c *Config, v string) (err error) { c.DLQMaxAge, err = positiveDuration(v); return err }},
		{Name: "DLQ_MAX_BYTES", Default: "1GiB", Desc: "size bound of the dead-letter stream; when full it refuses dead letters",
			Set: func(c *Config, v string) (err error) { c.DLQMaxBytes, err = ParseBytes(v); return err }},
		{Name: "DUPLICATE_WINDOW", Default: shortDuration(d.DuplicateWindow), Desc: "JetStream de-duplication window of each stream",
			Set: func(c *Config, v string) (err error) { c.DuplicateWindow, err = positiveDuration(v); return err }},
		{Name: "CONSUMER_NAME", Default: d.Consumer, Desc: "durable name of the workers' shared consumer",
			Set: func(c *Config, v string) (err error) { c.Consumer, err = token(v); return err }},
	}
}

// SettingError is a problem with one stream setting.
type SettingError struct {
	// Var is the environment variable's name, e.g. "STREAM_REPLICAS".
	Var string
	Err error
}

// Error returns "VAR: problem".
func (e *SettingError) Error() string { return e.Var + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *SettingError) Unwrap() error { return e.Err }

// Validate checks what JetStream needs of the settings together: the
// duplicate window within the commands' and the events' max age. Each
// problem is a *SettingError; they are joined.
func (c Config) Validate() error {
	var errs []error
	if c.DuplicateWindow > c.CommandsMaxAge {
		errs = append(errs, &SettingError{Var: "DUPLICATE_WINDOW", Err: fmt.Errorf("%s is longer than COMMANDS_MAX_AGE %s; JetStream needs the window within the max age",
			c.DuplicateWindow, c.CommandsMaxAge)})
	}
	if c.EventsMaxAge < c.DuplicateWindow {
		errs = append(errs, &SettingError{Var: "EVENTS_MAX_AGE", Err: fmt.Errorf("%s is shorter than DUPLICATE_WINDOW %s; JetStream needs the window within the max age",
			c.EventsMaxAge, c.DuplicateWindow)})
	}
	return errors.Join(errs...)
}

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// token accepts a NATS subject token or stream name: [A-Za-z0-9_-]+.
func token(v string) (string, error) {
	if !tokenRE.MatchString(v) {
		return "", fmt.Errorf("%q must be letters, digits, '_' or '-' only", v)
	}
	return v, nil
}

func intIn(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", v)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("must be between %d and %d, got %d", lo, hi, n)
	}
	return n, nil
}

func positiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 500ms, 30s, 2m or 168h", v)
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be > 0, got %s", v)
	}
	return d, nil
}

// byteUnits are the suffixes ParseBytes accepts, binary multiples all.
var byteUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}}

// MinBytes is the least byte bound of a stream: the largest message a
// server takes by default, so a bound can never refuse every message.
const MinBytes = 1 << 20

// ParseBytes parses a stream's byte bound: a whole number of bytes,
// optionally with a binary suffix (512MiB, 10GiB; the suffix's case is
// ignored). It is at least MinBytes: there is no "unlimited".
func ParseBytes(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range byteUnits {
		if len(s) > len(u.suffix) && strings.EqualFold(s[len(s)-len(u.suffix):], u.suffix) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) || err == nil && n > math.MaxInt64/mult:
		return 0, fmt.Errorf("%q is out of range", v)
	case err != nil:
		return 0, fmt.Errorf("%q is not a size such as 1073741824, 512MiB or 10GiB", v)
	case n < 0 || n*mult < MinBytes:
		return 0, fmt.Errorf("must be at least 1MiB (streams are always bounded), got %s", v)
	}
	return n * mult, nil
}

// shortDuration spells d as people write it: 168h, 10m, 1h30m, not
// 168h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
