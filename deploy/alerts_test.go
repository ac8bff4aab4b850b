package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// ruleFile is a Prometheus rule file, as far as these tests read it.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTestFile is a promtool unit-test file.
type ruleTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name       string `yaml:"name"`
		AlertTests []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		ExprTests []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

func readRuleYAML(t *testing.T, path string, into any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// ruleFiles returns the rule files of prometheus/rules and their promtool
// unit tests (the *_test.yml files beside them).
func ruleFiles(t *testing.T) (rules, tests []string) {
	t.Helper()
	all, _ := filepath.Glob("prometheus/rules/*.yml")
	for _, f := range all {
		if strings.HasSuffix(f, "_test.yml") {
			tests = append(tests, f)
		} else {
			rules = append(rules, f)
		}
	}
	if len(rules) == 0 || len(tests) == 0 {
		t.Fatalf("prometheus/rules holds %d rule files and %d test files", len(rules), len(tests))
	}
	return rules, tests
}

// TestAlertRules checks what promtool does not: every alert has a severity
// and the annotations an on-call engineer reads, every rule is unit-tested
// (each alert both firing and not), and every alert is in docs/alerts.md.
// promtool itself checks and tests the files under make test-stack.
func TestAlertRules(t *testing.T) {
	rules, tests := ruleFiles(t)
	alerts := map[string]string{}  // alert name: its file
	records := map[string]string{} // recording rule: its file
	for _, f := range rules {
		var rf ruleFile
		readRuleYAML(t, f, &rf)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				switch {
				case r.Alert != "":
					if _, dup := alerts[r.Alert]; dup {
						t.Errorf("%s: alert %s is defined twice", f, r.Alert)
					}
					alerts[r.Alert] = f
					if s := r.Labels["severity"]; s != "critical" && s != "warning" {
						t.Errorf("%s: alert %s has severity %q, want critical (pages) or warning (a ticket)", f, r.Alert, s)
					}
					for _, a := range []string{"summary", "description", "runbook"} {
						if strings.TrimSpace(r.Annotations[a]) == "" {
							t.Errorf("%s: alert %s has no %s annotation", f, r.Alert, a)
						}
					}
				case r.Record != "":
					// level:metric:operations, the convention of recording rules.
					if strings.Count(r.Record, ":") != 2 {
						t.Errorf("%s: recording rule %s is not named level:metric:operations", f, r.Record)
					}
					records[r.Record] = f
				}
			}
		}
	}

	firing, quiet, recorded := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, f := range tests {
		var tf ruleTestFile
		readRuleYAML(t, f, &tf)
		for _, rf := range tf.RuleFiles {
			if _, err := os.Stat(filepath.Join(filepath.Dir(f), rf)); err != nil {
				t.Errorf("%s: rule file %s: %v", f, rf, err)
			}
		}
		for _, tc := range tf.Tests {
			for _, at := range tc.AlertTests {
				if _, ok := alerts[at.Alertname]; !ok {
					t.Errorf("%s: %q tests alert %s, which no rule file defines", f, tc.Name, at.Alertname)
				}
				if len(at.ExpAlerts) > 0 {
					firing[at.Alertname] = true
				} else {
					quiet[at.Alertname] = true
				}
			}
			for _, et := range tc.ExprTests {
				for r := range records {
					if strings.Contains(et.Expr, r) {
						recorded[r] = true
					}
				}
			}
		}
	}
	doc, err := os.ReadFile("../docs/alerts.md")
	if err != nil {
		t.Fatal(err)
	}
	for a, f := range alerts {
		if !firing[a] {
			t.Errorf("%s: alert %s has no promtool test where it fires", f, a)
		}
		if !quiet[a] {
			t.Errorf("%s: alert %s has no promtool test where it stays quiet", f, a)
		}
		if !strings.Contains(string(doc), "`"+a+"`") {
			t.Errorf("docs/alerts.md does not list alert %s", a)
		}
	}
	for r, f := range records {
		if !recorded[r] {
			t.Errorf("%s: recording rule %s has no promql_expr_test", f, r)
		}
	}
	t.Logf("%d alerts and %d recording rules, each unit-tested", len(alerts), len(records))
}

// TestPrometheusLoadsRules checks that the stack loads every rule file:
// listed in prometheus.yml (relative to it) and mounted beside it.
func TestPrometheusLoadsRules(t *testing.T) {
	rules, _ := ruleFiles(t)
	var cfg struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	readRuleYAML(t, "prometheus/prometheus.yml", &cfg)
	var want []string
	for _, f := range rules {
		want = append(want, strings.TrimPrefix(f, "prometheus/"))
	}
	got := slices.Sorted(slices.Values(cfg.RuleFiles))
	if !slices.Equal(got, want) {
		t.Errorf("prometheus.yml rule_files = %v, want %v (not the *_test.yml files, which are promtool's)", got, want)
	}
	var mounted bool
	for _, v := range loadCompose(t).Services["prometheus"].Volumes {
		mounted = mounted || (filepath.Base(v.Source) == "rules" && v.Target == "/etc/prometheus/rules")
	}
	if !mounted {
		t.Error("the prometheus service does not mount prometheus/rules at /etc/prometheus/rules")
	}
}
