package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/testenv"
)

// gaugeValue is the value of an unlabelled sample name in a Prometheus text
// exposition; ok is false when there is none.
func gaugeValue(exposition, name string) (string, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// TestProbeMetricsFollowRedis: payworker_ready and
// payworker_idempotency_store_up are 1 while Redis answers, 0 while it is
// down, 1 again once it is back; the consumer lag gauges are exposed.
func TestProbeMetricsFollowRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	if !r.Own {
		t.Skip("REDIS_URL is shared: the test stops Redis")
	}
	old := probeInterval
	probeInterval = 50 * time.Millisecond
	t.Cleanup(func() { probeInterval = old })
	n := testenv.StartNATS(t)
	e := env{
		"NATS_URL":     n.URL,
		"REDIS_URL":    r.URL,
		"SANDBOX_ADDR": freeAddr(t),
		"HTTP_ADDR":    freeAddr(t),
		"LOG_FORMAT":   "json",
		"WORKER_ID":    "probe",
	}
	w := startRun(t, e)
	w.waitReady(t)
	metricsURL := "http://" + e["HTTP_ADDR"] + "/metrics"
	want := func(what string, values map[string]string) {
		t.Helper()
		poll(t, 15*time.Second, what, func() (bool, string) {
			_, body := get(metricsURL)
			var got []string
			ok := true
			for name, v := range values {
				have, found := gaugeValue(body, name)
				got = append(got, fmt.Sprintf("%s=%s", name, have))
				ok = ok && found && have == v
			}
			return ok, strings.Join(got, " ")
		})
	}
	want("ready, store up, no lag", map[string]string{"payworker_ready": "1", "payworker_idempotency_store_up": "1",
		"payworker_consumer_pending": "0", "payworker_consumer_ack_pending": "0"})
	r.Stop()
	want("not ready, store down", map[string]string{"payworker_ready": "0", "payworker_idempotency_store_up": "0"})
	r.Start()
	want("ready again", map[string]string{"payworker_ready": "1", "payworker_idempotency_store_up": "1"})

	if _, err := w.stop(); err != nil {
		t.Errorf("run after SIGTERM = %v, want nil", err)
	}
}
