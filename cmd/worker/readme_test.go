package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeConfigTable checks the README's configuration table against
// settings(): every variable has a row with its default, and every row
// names a variable the worker reads (or the OpenTelemetry SDK's).
func TestReadmeConfigTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "\n## Configuration\n")
	if start < 0 {
		t.Fatal("README has no ## Configuration section")
	}
	section := readme[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	// A row's first cell names one variable or more (`A`, `B`), its
	// second their default.
	row := regexp.MustCompile("(?m)^\\| (`[A-Z0-9_]+`[^|]*) \\| ([^|]*) \\|")
	name := regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")
	rows := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		for _, n := range name.FindAllStringSubmatch(m[1], -1) {
			rows[n[1]] = strings.TrimSpace(m[2])
		}
	}
	known := map[string]bool{}
	for _, s := range settings() {
		known[s.name] = true
		def, ok := rows[s.name]
		if !ok {
			t.Errorf("README's configuration table has no row for %s", s.name)
			continue
		}
		want := "`" + s.def + "`"
		if s.def == "" {
			want = "`\"\"`"
		}
		if def != want {
			t.Errorf("README gives %s the default %s, want %s", s.name, def, want)
		}
	}
	for name := range rows {
		if !known[name] && !strings.HasPrefix(name, "OTEL_") {
			t.Errorf("README's configuration table has a row for %s, which the worker does not read", name)
		}
	}
}
