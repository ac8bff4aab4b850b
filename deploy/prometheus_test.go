//go:build stack

package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// promtool builds (or finds in the cache) promtool at the version of
// tools/prometheus/go.mod: Prometheus 3.14.0, the compose image's.
func promtool(t *testing.T) string {
	t.Helper()
	return built(t, "build-tool.sh", "prometheus", "promtool")
}

// TestStackPromtool runs promtool on the stack's Prometheus files: the
// configuration (with the rule files it lists), each rule file, and each
// rule file's unit tests. promtool's output names the failing rule, test
// group and alert.
func TestStackPromtool(t *testing.T) {
	bin := promtool(t)
	run := func(t *testing.T, args ...string) {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s: exit 0\n%s", strings.Join(args, " "), bytes.TrimSpace(out))
	}
	// The compose hostnames in its targets are only names to check config.
	t.Run("check config", func(t *testing.T) { run(t, "check", "config", "prometheus/prometheus.yml") })
	rules, tests := ruleFiles(t)
	for _, f := range rules {
		t.Run("check rules "+filepath.Base(f), func(t *testing.T) { run(t, "check", "rules", f) })
	}
	for _, f := range tests {
		t.Run("test rules "+filepath.Base(f), func(t *testing.T) { run(t, "test", "rules", f) })
	}

	// And promtool fails where it should, so the passes above mean something:
	// an expression that does not parse, an expectation that does not hold.
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.yml")
	writeRuleFile(t, broken, "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m])\n")
	if out, err := exec.Command(bin, "check", "rules", broken).CombinedOutput(); err == nil {
		t.Errorf("promtool check rules accepted an unbalanced expression:\n%s", out)
	}
	writeRuleFile(t, filepath.Join(dir, "a.yml"), "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n")
	wrong := filepath.Join(dir, "a_test.yml")
	writeRuleFile(t, wrong, "rule_files: [a.yml]\ntests:\n  - interval: 1m\n    input_series:\n      - series: x\n        values: '0x5'\n"+
		"    alert_rule_test:\n      - eval_time: 5m\n        alertname: A\n        exp_alerts: [{exp_labels: {}}]\n")
	if out, err := exec.Command(bin, "test", "rules", wrong).CombinedOutput(); err == nil {
		t.Errorf("promtool test rules passed a test expecting an alert that cannot fire:\n%s", out)
	}
}

func writeRuleFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
