package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// checkRules checks that the stack's alert and recording rules
// (deploy/prometheus/rules) name only metrics that exist, as checkDashboards
// does for the dashboards: known holds the names something really emits. A
// rule on a name nothing emits never fires, and promtool cannot tell.
func checkRules(t *testing.T, known map[string]bool) {
	t.Helper()
	files, _ := filepath.Glob("../deploy/prometheus/rules/*.yml")
	type rule struct{ Record, Expr string }
	var rules []rule
	for _, f := range files {
		if strings.HasSuffix(f, "_test.yml") {
			continue // promtool's unit tests
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var file struct {
			Groups []struct{ Rules []rule }
		}
		if err := yaml.Unmarshal(raw, &file); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range file.Groups {
			rules = append(rules, g.Rules...)
		}
	}
	if len(rules) == 0 {
		t.Fatal("no rules found")
	}
	names := map[string]bool{}
	for _, r := range rules { // a rule may read what another records
		if r.Record != "" {
			names[r.Record] = true
		}
	}
	checked := 0
	for _, r := range rules {
		for _, name := range promQLMetrics(r.Expr) {
			checked++
			if !known[name] && !names[name] {
				t.Errorf("a rule names %s, which nothing emits: %s", name, r.Expr)
			}
		}
	}
	t.Logf("rules: %d metric references checked", checked)
}
