package events

import (
	"encoding/json"
	"strconv"

	"github.com/payworker/payworker/internal/jsontext"
)

// Marshal encodes the event as JSON: byte for byte what json.Marshal writes
// for an Event (field order, omitempty rules, sorted metadata keys,
// HTML-safe string escaping, the time as time.Time.MarshalJSON writes it),
// without reflection: it runs once per command on the hot path. FuzzMarshal
// holds it to json.Marshal. For a time RFC 3339 cannot represent (a year
// outside 0–9999, a zone offset of 24 hours or more), where json.Marshal
// fails, it is json.Marshal, error included.
func (e Event) Marshal() ([]byte, error) {
	if out, ok := e.appendJSON(make([]byte, 0, e.sizeHint())); ok {
		return out, nil
	}
	return json.Marshal(e)
}

// sizeHint is about the length of the JSON of e, so that Marshal's buffer
// rarely grows: the members' texts plus room for the names and numbers.
func (e *Event) sizeHint() int {
	d := &e.Data
	n := 512 + len(e.SpecVersion) + len(e.ID) + len(e.Source) + len(e.Type) + len(e.Subject) +
		len(e.DataContentType) + len(e.TraceParent) + len(e.TraceState) +
		len(d.CommandID) + len(d.IdempotencyKey) + len(d.MerchantID) + len(d.TransactionID) +
		len(d.CommandType) + len(d.Gateway) + len(d.Currency) + len(d.GatewayCode) +
		len(d.GatewayMessage) + len(d.GatewayResponseCode) + len(d.GatewayTransactionID) +
		len(d.GatewayRef) + len(d.AuthCode) + len(d.Scheme) + len(d.MaskedCardNumber) +
		len(d.OriginalEventID) + len(d.OriginalCommandID) + len(d.DLQSubject)
	if d.Error != nil {
		n += len(d.Error.Code) + len(d.Error.Message) + len(d.Error.Field)
	}
	for k, v := range d.Metadata {
		n += len(k) + len(v) + 6
	}
	return n
}

// appendJSON appends the JSON of e to dst; ok is false, and the result
// meaningless, when e.Time cannot be written as RFC 3339, where json.Marshal
// fails.
func (e *Event) appendJSON(dst []byte) (out []byte, ok bool) {
	dst = append(dst, `{"specversion":`...)
	dst = jsontext.AppendString(dst, e.SpecVersion)
	dst = append(dst, `,"id":`...)
	dst = jsontext.AppendString(dst, e.ID)
	dst = append(dst, `,"source":`...)
	dst = jsontext.AppendString(dst, e.Source)
	dst = append(dst, `,"type":`...)
	dst = jsontext.AppendString(dst, e.Type)
	if e.Subject != "" {
		dst = append(dst, `,"subject":`...)
		dst = jsontext.AppendString(dst, e.Subject)
	}
	dst = append(dst, `,"time":"`...)
	// AppendText and MarshalJSON write the same strict RFC 3339 text and
	// refuse the same times; its characters need no escaping.
	dst, err := e.Time.AppendText(dst)
	if err != nil {
		return nil, false
	}
	dst = append(dst, `","datacontenttype":`...)
	dst = jsontext.AppendString(dst, e.DataContentType)
	if e.TraceParent != "" {
		dst = append(dst, `,"traceparent":`...)
		dst = jsontext.AppendString(dst, e.TraceParent)
	}
	if e.TraceState != "" {
		dst = append(dst, `,"tracestate":`...)
		dst = jsontext.AppendString(dst, e.TraceState)
	}
	dst = append(dst, `,"data":`...)
	dst = e.Data.appendJSON(dst)
	return append(dst, '}'), true
}

// appendJSON appends the JSON of d to dst as json.Marshal writes it.
func (d *Data) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	dst = appendString(dst, `"command_id":`, d.CommandID)
	dst = appendString(dst, `"idempotency_key":`, d.IdempotencyKey)
	dst = appendString(dst, `"merchant_id":`, d.MerchantID)
	dst = appendString(dst, `"transaction_id":`, d.TransactionID)
	dst = appendString(dst, `"command_type":`, d.CommandType)
	dst = appendString(dst, `"gateway":`, d.Gateway)
	if d.Amount != nil {
		dst = appendComma(dst)
		dst = append(dst, `"amount":`...)
		dst = strconv.AppendInt(dst, *d.Amount, 10)
	}
	dst = appendString(dst, `"currency":`, d.Currency)
	dst = appendComma(dst)
	dst = append(dst, `"attempts":`...)
	dst = strconv.AppendInt(dst, int64(d.Attempts), 10)
	dst = appendString(dst, `"gateway_code":`, d.GatewayCode)
	dst = appendString(dst, `"gateway_message":`, d.GatewayMessage)
	dst = appendString(dst, `"gateway_response_code":`, d.GatewayResponseCode)
	dst = appendString(dst, `"gateway_transaction_id":`, d.GatewayTransactionID)
	dst = appendString(dst, `"gateway_ref":`, d.GatewayRef)
	dst = appendString(dst, `"auth_code":`, d.AuthCode)
	dst = appendString(dst, `"scheme":`, d.Scheme)
	dst = appendString(dst, `"masked_card_number":`, d.MaskedCardNumber)
	if d.Reconciled {
		dst = append(dst, `,"reconciled":true`...)
	}
	if d.Error != nil {
		dst = append(dst, `,"error":`...)
		dst = d.Error.appendJSON(dst)
	}
	dst = appendString(dst, `"original_event_id":`, d.OriginalEventID)
	dst = appendString(dst, `"original_command_id":`, d.OriginalCommandID)
	dst = appendString(dst, `"dlq_subject":`, d.DLQSubject)
	if d.DLQSequence != 0 {
		dst = append(dst, `,"dlq_sequence":`...)
		dst = strconv.AppendUint(dst, d.DLQSequence, 10)
	}
	if len(d.Metadata) > 0 {
		dst = append(dst, `,"metadata":`...)
		dst = jsontext.AppendStringMap(dst, d.Metadata)
	}
	return append(dst, '}')
}

// appendJSON appends the JSON of e to dst as json.Marshal writes it.
func (e *Error) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"code":`...)
	dst = jsontext.AppendString(dst, e.Code)
	dst = append(dst, `,"message":`...)
	dst = jsontext.AppendString(dst, e.Message)
	if e.Field != "" {
		dst = append(dst, `,"field":`...)
		dst = jsontext.AppendString(dst, e.Field)
	}
	if e.Retryable {
		return append(dst, `,"retryable":true}`...)
	}
	return append(dst, `,"retryable":false}`...)
}

// appendString appends the member name (quoted, with its colon) and the
// string s, after a comma unless it opens the object; an empty s is left
// out (omitempty).
func appendString(dst []byte, name, s string) []byte {
	if s == "" {
		return dst
	}
	dst = appendComma(dst)
	dst = append(dst, name...)
	return jsontext.AppendString(dst, s)
}

// appendComma appends the comma that separates a member from the one
// before it, unless dst ends with the object's opening brace.
func appendComma(dst []byte) []byte {
	if dst[len(dst)-1] == '{' {
		return dst
	}
	return append(dst, ',')
}
