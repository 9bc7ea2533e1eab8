package publish

import "github.com/payworker/payworker/internal/command"

// appendCommand appends the JSON of cmd to dst, byte for byte what
// json.Marshal writes for a command.Command, without reflection: the
// worker's own encoding (command.Command.AppendJSON), which the public
// client publishes. TestAppendCommandMatchesMarshal holds it to
// json.Marshal.
func appendCommand(dst []byte, cmd *command.Command) []byte { return cmd.AppendJSON(dst) }
