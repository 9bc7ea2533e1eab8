// Package encoded lets the publisher's batch hand the public client (package
// client, which owns the wire form of commands) rows that the batch's first
// pass checked against the command schema, without the client checking them
// again: the second pass proves each run of rows identical to the checked
// one (publish.BatchDigest). Encoding and checking each row again would add
// about 1 µs (command.Command.Encode) to the 13 – 16 µs a row costs the
// batch; it cost a fifth of the batch's throughput when the check ran the
// schema validator. Package client installs Checked when it is initialised;
// nothing else may set it.
package encoded

import "github.com/payworker/payworker/internal/command"

// Checked returns cmd, whose JSON is data as cmd.AppendJSON writes it and
// was checked (command.Command.Check) before, as a *client.Encoded, without
// checking it again.
var Checked func(cmd *command.Command, data []byte) any
