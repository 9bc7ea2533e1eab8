package client

import (
	"context"
	"strings"
)

// Trace context headers (W3C Trace Context): the worker continues the trace
// they name into every event it publishes for the command (SPEC §8).
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

type traceKey struct{}

type traceContext struct{ parent, state string }

// ContextWithTraceparent returns a copy of ctx that carries a W3C
// traceparent (and optional tracestate) for Publish to send with the
// command. It is for callers without OpenTelemetry; with OpenTelemetry, use
// WithTraceContext once instead. A malformed traceparent is not sent.
func ContextWithTraceparent(ctx context.Context, traceparent, tracestate string) context.Context {
	return context.WithValue(ctx, traceKey{}, traceContext{traceparent, tracestate})
}

// WithTraceContext sets how Publish finds the trace context of a call: f
// returns the W3C traceparent and tracestate of ctx's current span, or
// empty strings for none. With OpenTelemetry (not a dependency of this
// package):
//
//	client.WithTraceContext(func(ctx context.Context) (string, string) {
//		sc := trace.SpanContextFromContext(ctx)
//		if !sc.IsValid() {
//			return "", ""
//		}
//		return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags()), sc.TraceState().String()
//	})
//
// Without it, Publish sends what ContextWithTraceparent put in ctx.
func WithTraceContext(f func(ctx context.Context) (traceparent, tracestate string)) Option {
	return func(c *Client) { c.trace = f }
}

// traceOf returns the trace context to send for ctx, or empty strings.
func (c *Client) traceOf(ctx context.Context) (parent, state string) {
	if c.trace != nil {
		parent, state = c.trace(ctx)
	}
	if parent == "" {
		if tc, ok := ctx.Value(traceKey{}).(traceContext); ok {
			parent, state = tc.parent, tc.state
		}
	}
	if !validTraceparent(parent) {
		return "", ""
	}
	return parent, strings.TrimSpace(state)
}

// validTraceparent reports whether s is a W3C traceparent of version 00:
// 00-<32 hex trace id, not all zero>-<16 hex span id, not all zero>-<2 hex flags>.
func validTraceparent(s string) bool {
	if len(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || s[:2] != "00" {
		return false
	}
	hex := func(part string) bool {
		zero := true
		for i := 0; i < len(part); i++ {
			c := part[i]
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			default:
				return false
			}
			if c != '0' {
				zero = false
			}
		}
		return !zero
	}
	flags := s[53:]
	return hex(s[3:35]) && hex(s[36:52]) && (hex(flags) || flags == "00")
}
