package publish

import (
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/events"
)

func TestEventLineShowsTheTraceID(t *testing.T) {
	ev := events.New(events.CaptureSucceeded, "e1", "urn:test", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), events.Data{MerchantID: "M1"})
	ev.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if got, want := EventLine(ev), "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 event_id=e1"; !strings.HasSuffix(got, want) {
		t.Errorf("EventLine = %q, want it to end with %q", got, want)
	}
	ev.TraceParent = ""
	if got := EventLine(ev); strings.Contains(got, "trace_id") {
		t.Errorf("EventLine without traceparent = %q, want no trace_id", got)
	}
}
