package main

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestAlertRulesQueryExposedMetrics starts the worker, moves one capture
// through it, scrapes /metrics and checks that every payworker_ metric the
// alert rules query is exposed (a histogram's _count, _sum and _bucket by
// its family), so that renaming a metric breaks the build, not the alerts.
func TestAlertRulesQueryExposedMetrics(t *testing.T) {
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	queried := map[string]bool{}
	for _, name := range regexp.MustCompile(`\bpayworker_[a-z_]+`).FindAllString(string(rules), -1) {
		queried[name] = true
	}
	if len(queried) < 5 {
		t.Fatalf("found only %d metric names in alerts.yml: %v", len(queried), queried)
	}

	old := probeInterval
	probeInterval = 50 * time.Millisecond
	t.Cleanup(func() { probeInterval = old })
	e := env{
		"EMBEDDED_NATS_ADDR": freeAddr(t),
		"SANDBOX_ADDR":       freeAddr(t),
		"HTTP_ADDR":          freeAddr(t),
		"DATA_DIR":           t.TempDir(),
		"LOG_FORMAT":         "json",
		"WORKER_ID":          "alerts",
	}
	w := startRun(t, e)
	w.waitReady(t)
	const merchant = "M0001"
	auth := authoriseOverHTTP(t, e["SANDBOX_ADDR"], merchant, 1000, "JPY")
	js := connect(t, "nats://"+e["EMBEDDED_NATS_ADDR"])
	publishCommand(t, js, "capture", map[string]any{"command_id": "alerts-1", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth, "amount": 1000, "currency": "JPY"})

	metricsURL := "http://" + e["HTTP_ADDR"] + "/metrics"
	var missing []string
	poll(t, 30*time.Second, "every metric the alert rules query", func() (bool, string) {
		_, body := get(metricsURL)
		exposed := map[string]bool{}
		for _, line := range strings.Split(body, "\n") {
			if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
				name, typ, _ := strings.Cut(rest, " ")
				exposed[name] = true
				if typ == "histogram" || typ == "summary" {
					for _, s := range []string{"_count", "_sum", "_bucket"} {
						exposed[name+s] = true
					}
				}
			}
		}
		missing = missing[:0]
		for name := range queried {
			if !exposed[name] {
				missing = append(missing, name)
			}
		}
		sort.Strings(missing)
		return len(missing) == 0, "missing " + strings.Join(missing, ", ")
	})
	if _, err := w.stop(); err != nil {
		t.Errorf("run after SIGTERM = %v, want nil", err)
	}
}
