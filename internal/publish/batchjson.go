package publish

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/payworker/payworker/internal/command"
)

// appendCommand appends the JSON of cmd to dst, byte for byte what
// json.Marshal writes for a command.Command (field order, omitempty rules,
// sorted metadata keys, HTML-safe string escaping), without reflection: it
// is on the hot path of a batch. TestAppendCommandMatchesMarshal holds it to
// json.Marshal.
func appendCommand(dst []byte, cmd *command.Command) []byte {
	dst = append(dst, `{"command_id":`...)
	dst = appendJSONString(dst, cmd.CommandID)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, string(cmd.Type))
	if cmd.IdempotencyKey != "" {
		dst = append(dst, `,"idempotency_key":`...)
		dst = appendJSONString(dst, cmd.IdempotencyKey)
	}
	dst = append(dst, `,"merchant_id":`...)
	dst = appendJSONString(dst, cmd.MerchantID)
	dst = append(dst, `,"transaction_id":`...)
	dst = appendJSONString(dst, cmd.TransactionID)
	if cmd.Amount != nil {
		dst = append(dst, `,"amount":`...)
		dst = strconv.AppendInt(dst, *cmd.Amount, 10)
	}
	if cmd.Currency != "" {
		dst = append(dst, `,"currency":`...)
		dst = appendJSONString(dst, cmd.Currency)
	}
	if cmd.Gateway != "" {
		dst = append(dst, `,"gateway":`...)
		dst = appendJSONString(dst, cmd.Gateway)
	}
	if cmd.Notes != "" {
		dst = append(dst, `,"notes":`...)
		dst = appendJSONString(dst, cmd.Notes)
	}
	if len(cmd.Metadata) > 0 {
		dst = append(dst, `,"metadata":{`...)
		var small [8]string
		keys := small[:0]
		for k := range cmd.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, cmd.Metadata[k])
		}
		dst = append(dst, '}')
	}
	if cmd.OriginalTransactionTime != nil {
		dst = append(dst, `,"original_transaction_time":"`...)
		dst = cmd.OriginalTransactionTime.AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string the way encoding/json does
// with HTML escaping: <, > and & as \u003c..., control characters escaped,
// invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
