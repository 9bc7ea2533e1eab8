package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// The files whose queries must name only what a worker exposes.
const (
	alertRulesFile = "../../deploy/prometheus/alerts.yml"
	dashboardFile  = "../../deploy/grafana/payworker.json"
)

// targetLabels are the labels Prometheus adds to every scraped series (the
// scrape config's job and the target's instance): a query may match or
// group by them though /metrics does not show them.
var targetLabels = map[string]bool{"job": true, "instance": true}

// query is one PromQL expression and where it was found.
type query struct {
	where string
	expr  string
}

// alertQueries returns the expr of every rule of an alerting or recording
// rule file (Prometheus's rule file format).
func alertQueries(t *testing.T, path string) []query {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var qs []query
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: rule %q has no expr", path, name)
				continue
			}
			qs = append(qs, query{where: fmt.Sprintf("%s: rule %s", path, name), expr: r.Expr})
		}
	}
	return qs
}

// grafanaRange replaces Grafana's built-in interval variables, which are
// not PromQL, by durations, so that a panel's query parses as Prometheus
// will see it. Other variables ($job, $instance) are only used inside label
// matchers' strings, where the parser takes them as they are.
var grafanaRange = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// labelValuesQuery is a Grafana template variable query such as
// label_values(payworker_ready{job=~"$job"}, instance).
var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// dashboardQueries returns every PromQL query of a Grafana dashboard: each
// panel's targets (rows' nested panels too) and each query variable's
// label_values series selector, with the label it reads.
func dashboardQueries(t *testing.T, path string) (qs []query, variableLabels map[string][]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		ID      int     `json:"id"`
		Title   string  `json:"title"`
		Type    string  `json:"type"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %d %q has no query", path, p.ID, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %d %q target %s has no expr", path, p.ID, p.Title, tg.RefID)
					continue
				}
				qs = append(qs, query{where: fmt.Sprintf("%s: panel %q target %s", path, p.Title, tg.RefID), expr: grafanaRange.Replace(tg.Expr)})
			}
		}
	}
	walk(d.Panels)
	variableLabels = map[string][]string{}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// The query is a string in older dashboards, an object with a
		// "query" string in newer ones.
		var s string
		if json.Unmarshal(v.Query, &s) != nil {
			var o struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &o); err != nil {
				t.Errorf("%s: variable %s: query %s: %v", path, v.Name, v.Query, err)
				continue
			}
			s = o.Query
		}
		m := labelValuesQuery.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("%s: variable %s: query %q is not label_values(selector, label)", path, v.Name, s)
			continue
		}
		where := fmt.Sprintf("%s: variable %s", path, v.Name)
		qs = append(qs, query{where: where, expr: m[1]})
		variableLabels[where] = append(variableLabels[where], m[2])
	}
	return qs, variableLabels
}

// exposition is what one scrape of /metrics showed: each series name (a
// histogram's _bucket, _sum and _count, a summary's _sum and _count, by
// their own names) with the label names its samples carry.
type exposition map[string]map[string]bool

// parseExposition reads the Prometheus text format.
func parseExposition(t *testing.T, body string) exposition {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	e := exposition{}
	add := func(name string, m *dto.Metric, extra ...string) {
		if e[name] == nil {
			e[name] = map[string]bool{}
		}
		for _, l := range m.GetLabel() {
			e[name][l.GetName()] = true
		}
		for _, l := range extra {
			e[name][l] = true
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return e
}

// missingFrom checks one query against a scrape: each series selector must
// name a metric by its name (no {__name__=~...}: a rename would go
// unnoticed), the metric must have been exposed, each label a selector
// matches on must be one the metric's samples carry, and each label an
// aggregation groups by (by or without) or a vector match names (on or
// ignoring) must be carried by a metric under it. It returns the problems,
// and fails the test for a query that does not parse.
func missingFrom(t *testing.T, q query, exposed exposition) []string {
	t.Helper()
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr)
	if err != nil {
		t.Errorf("%s: PromQL %q does not parse: %v", q.where, q.expr, err)
		return nil
	}
	var problems []string
	// names returns the exposed metrics selected under n (one that is not
	// exposed is reported once, as such).
	names := func(n parser.Node) []string {
		var out []string
		parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && exposed[vs.Name] != nil {
				out = append(out, vs.Name)
			}
			return nil
		})
		return out
	}
	// carried reports whether label is a target label or on a sample of
	// one of the metrics.
	carried := func(label string, metrics []string) bool {
		if targetLabels[label] {
			return true
		}
		for _, m := range metrics {
			if exposed[m][label] {
				return true
			}
		}
		return false
	}
	selectors := 0
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			selectors++
			if n.Name == "" {
				problems = append(problems, fmt.Sprintf("%s selects no metric by name: %s", q.where, n))
				return nil
			}
			labels, ok := exposed[n.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s queries %s, which /metrics does not expose", q.where, n.Name))
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel && !labels[m.Name] && !targetLabels[m.Name] {
					problems = append(problems, fmt.Sprintf("%s matches label %q of %s, which its samples do not carry", q.where, m.Name, n.Name))
				}
			}
		case *parser.AggregateExpr:
			ms := names(n.Expr)
			for _, l := range n.Grouping {
				if len(ms) > 0 && !carried(l, ms) {
					problems = append(problems, fmt.Sprintf("%s aggregates by label %q, which none of %v carries", q.where, l, ms))
				}
			}
		case *parser.BinaryExpr:
			if n.VectorMatching == nil {
				return nil
			}
			ms := append(names(n.LHS), names(n.RHS)...)
			for _, l := range append(append([]string(nil), n.VectorMatching.MatchingLabels...), n.VectorMatching.Include...) {
				if len(ms) > 0 && !carried(l, ms) {
					problems = append(problems, fmt.Sprintf("%s matches on label %q, which none of %v carries", q.where, l, ms))
				}
			}
		}
		return nil
	})
	if selectors == 0 {
		problems = append(problems, fmt.Sprintf("%s queries no metric: %q", q.where, q.expr))
	}
	return problems
}

// TestQueriesUseExposedMetrics starts the worker from run(), moves commands
// through it so that every labelled series exists (a capture, a reconciled
// capture, a retried capture, a duplicate, a failed void, a rejected
// message), scrapes /metrics and checks every PromQL query of the alert
// rules and of the Grafana dashboard against it: each metric a query names
// is exposed (a histogram's _bucket, _sum and _count by their family), and
// each label it matches or groups by is carried. So renaming a metric or a
// label breaks the build, not the alerts or the dashboard.
func TestQueriesUseExposedMetrics(t *testing.T) {
	queries := alertQueries(t, alertRulesFile)
	if len(queries) < 6 {
		t.Fatalf("found %d rules in %s, want at least 6", len(queries), alertRulesFile)
	}
	dash, variableLabels := dashboardQueries(t, dashboardFile)
	if len(dash) < 20 {
		t.Fatalf("found %d queries in %s, want at least 20", len(dash), dashboardFile)
	}
	queries = append(queries, dash...)

	old := probeInterval
	probeInterval = 50 * time.Millisecond
	t.Cleanup(func() { probeInterval = old })
	e := env{
		"EMBEDDED_NATS_ADDR":          freeAddr(t),
		"SANDBOX_ADDR":                freeAddr(t),
		"HTTP_ADDR":                   freeAddr(t),
		"DATA_DIR":                    t.TempDir(),
		"LOG_FORMAT":                  "json",
		"WORKER_ID":                   "queries",
		"PAYMENTOPTIONS_SETTLE_DELAY": "0",
		"RETRY_INITIAL_INTERVAL":      "100ms",
		"RETRY_MAX_INTERVAL":          "200ms",
	}
	w := startRun(t, e)
	w.waitReady(t)
	sandboxAddr := e["SANDBOX_ADDR"]
	js := connect(t, "nats://"+e["EMBEDDED_NATS_ADDR"])
	metricsURL := "http://" + e["HTTP_ADDR"] + "/metrics"
	scrape := func() string {
		code, body := get(metricsURL)
		if code != 200 {
			t.Fatalf("GET /metrics = %d %s", code, body)
		}
		return body
	}
	// waitFor polls /metrics until the counter with these labels is at
	// least want, for 15 s at most: a metric renamed never gets there, and
	// the check at the end says which names are missing.
	waitFor := func(what, name string, want float64, labels ...string) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			v, ok := metricValue(scrape(), name, labels...)
			var f float64
			fmt.Sscan(v, &f)
			if ok && f >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Logf("no %s after 15 s: %s%v = %q", what, name, labels, v)
				return
			}
		}
	}
	const merchant = "M0001"
	capture := func(id, txn string) {
		publishCommand(t, js, "capture", map[string]any{"command_id": id, "type": "capture", "merchant_id": merchant,
			"transaction_id": txn, "amount": 1000, "currency": "JPY", "idempotency_key": "key-" + id})
	}

	// A capture that succeeds at once.
	auth1 := authoriseOverHTTP(t, sandboxAddr, merchant, 1000, "JPY")
	capture("queries-1", auth1)
	waitFor("a succeeded capture", "payworker_commands_total", 1, `type="capture"`, `outcome="succeeded"`)

	// A capture applied but not answered: reconciled by a status call.
	auth2 := authoriseOverHTTP(t, sandboxAddr, merchant, 1000, "JPY")
	setFaults(t, sandboxAddr, `{"apply_then_drop_rate":1,"gateway":"paymentoptions"}`)
	capture("queries-2", auth2)
	waitFor("a reconciliation", "payworker_reconciliations_total", 1, `gateway="paymentoptions"`)
	setFaults(t, sandboxAddr, `{}`)

	// A capture answered 503 until a retry has been counted.
	auth3 := authoriseOverHTTP(t, sandboxAddr, merchant, 1000, "JPY")
	setFaults(t, sandboxAddr, `{"error_rate":1,"error_status":503,"gateway":"paymentoptions"}`)
	capture("queries-3", auth3)
	waitFor("a retry", "payworker_gateway_retries_total", 1, `gateway="paymentoptions"`)
	setFaults(t, sandboxAddr, `{}`)
	waitFor("three succeeded captures", "payworker_commands_total", 3, `type="capture"`, `outcome="succeeded"`)

	// The first capture's key again: a duplicate. A void of a transaction
	// the gateway does not know: failed. A message that is no command:
	// rejected.
	publishCommand(t, js, "capture", map[string]any{"command_id": "queries-4", "type": "capture", "merchant_id": merchant,
		"transaction_id": auth1, "amount": 1000, "currency": "JPY", "idempotency_key": "key-queries-1"})
	publishCommand(t, js, "void", map[string]any{"command_id": "queries-5", "type": "void", "merchant_id": merchant,
		"transaction_id": "00000000-0000-4000-8000-000000000000"})
	if _, err := js.Publish(t.Context(), "payments.cmd.capture", []byte(`{"not":"a command"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor("a rejected message", "payworker_commands_total", 1, `outcome="rejected"`)
	waitFor("a failed void", "payworker_commands_total", 1, `type="void"`, `outcome="failed"`)

	var problems []string
	poll(t, 10*time.Second, "every metric and label the queries use", func() (bool, string) {
		exposed := parseExposition(t, scrape())
		problems = problems[:0]
		for _, q := range queries {
			problems = append(problems, missingFrom(t, q, exposed)...)
		}
		for where, labels := range variableLabels {
			for _, q := range queries {
				if q.where != where {
					continue
				}
				for _, l := range labels {
					if !carried(exposed, q.expr, l) {
						problems = append(problems, fmt.Sprintf("%s reads label %q, which %s does not carry", where, l, q.expr))
					}
				}
			}
		}
		sort.Strings(problems)
		return len(problems) == 0, "\n" + strings.Join(problems, "\n")
	})
	if _, err := w.stop(); err != nil {
		t.Errorf("run after SIGTERM = %v, want nil", err)
	}
}

// carried reports whether label is a target label or carried by the metric
// a label_values selector names.
func carried(exposed exposition, selector, label string) bool {
	if targetLabels[label] {
		return true
	}
	m, err := parser.NewParser(parser.Options{}).ParseMetricSelector(selector)
	if err != nil {
		return false
	}
	for _, mt := range m {
		if mt.Name == model.MetricNameLabel {
			return exposed[mt.Value][label]
		}
	}
	return false
}

// TestDashboardShape checks what Grafana needs of the dashboard to import
// and provision it as it is: a schema version, a uid, every panel on the
// DS_PROMETHEUS data source variable (so it follows whichever Prometheus is
// chosen), unique panel ids, and panels inside the 24-column grid that do
// not overlap.
func TestDashboardShape(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type gridPos struct{ H, W, X, Y int }
	type datasource struct{ Type, UID string }
	type panel struct {
		ID         int
		Title      string
		Type       string
		GridPos    gridPos
		Datasource *datasource
		Panels     []json.RawMessage
		Targets    []struct{ Datasource *datasource }
	}
	var d struct {
		UID           string
		Title         string
		SchemaVersion int
		Panels        []panel
		Templating    struct {
			List []struct {
				Name, Type string
				Query      json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d; want a uid, a title and schemaVersion ≥ 36", d.UID, d.Title, d.SchemaVersion)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		hasDS = hasDS || v.Name == "DS_PROMETHEUS" && v.Type == "datasource" && string(v.Query) == `"prometheus"`
	}
	if !hasDS {
		t.Errorf("no DS_PROMETHEUS variable of type datasource for prometheus")
	}
	const dsUID = "${DS_PROMETHEUS}"
	ids := map[int]string{}
	var placed []panel
	for _, p := range d.Panels {
		if other, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("panel %q has id %d, as %q", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("panel %q at %+v is outside the 24-column grid", p.Title, g)
		}
		for _, q := range placed {
			o := q.GridPos
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("panels %q %+v and %q %+v overlap", p.Title, g, q.Title, o)
			}
		}
		placed = append(placed, p)
		if p.Type == "row" {
			if len(p.Panels) > 0 {
				t.Errorf("row %q is collapsed (holds its panels): keep rows open so every panel is checked here", p.Title)
			}
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != dsUID {
			t.Errorf("panel %q data source %+v, want prometheus %s", p.Title, p.Datasource, dsUID)
		}
		for i, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != dsUID {
				t.Errorf("panel %q target %d data source %+v, want %s", p.Title, i, tg.Datasource, dsUID)
			}
		}
	}
}
