package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestWorkshopCommands runs the shell commands the workshop's labs tell
// students to type against the gateway (every code block that calls curl,
// and `make order`'s script), against a stack of real services. The make
// targets the labs name are checked in exercises/workshop_test.go.
func TestWorkshopCommands(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		needService(t, "curl", err)
	}
	s := startStack(t, nil)
	pages, _ := filepath.Glob("../docs/workshop/*.md")
	block := regexp.MustCompile("(?s)```sh\n(.*?)```")
	// What each page's commands must answer, beyond a trace_id.
	want := map[string][]string{
		"01-first-trace.md":     {"201 Created", "traceresponse: 00-"},
		"02-reading-a-trace.md": {`"status":409`, "items[0].quantity"},
		"05-baggage.md":         {`"order_id"`},
		"06-logs-and-traces.md": {`"status":422`, "items[0].sku"},
	}
	ran := map[string]bool{}
	for _, page := range pages {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(page)
		if labPages[name] {
			continue // its TestLab test runs every block, in one shell (labs_test.go)
		}
		for _, m := range block.FindAllStringSubmatch(string(raw), -1) {
			if !strings.Contains(m[1], "curl ") {
				continue
			}
			script := strings.ReplaceAll(m[1], "localhost:8080", strings.TrimPrefix(s.gateway.URL(), "http://"))
			out, err := exec.Command("bash", "-euo", "pipefail", "-c", script).CombinedOutput()
			if err != nil {
				t.Errorf("%s: the commands\n%s\nfailed: %v\n%s", name, m[1], err, out)
				continue
			}
			text := strings.ToLower(string(out))
			for _, w := range append([]string{`"trace_id"`}, want[name]...) {
				if !strings.Contains(text, strings.ToLower(w)) {
					t.Errorf("%s: the commands\n%s\nanswered\n%s\nwithout %q", name, m[1], out, w)
				}
			}
			ran[name] = true
		}
	}
	for name := range want {
		if !ran[name] {
			t.Errorf("%s has no curl commands any more; update this test", name)
		}
	}

	// make order runs scripts/order.sh.
	cmd := exec.Command("bash", "../scripts/order.sh")
	// No trace UI here (a port where nothing listens): the script says so
	// and still prints the trace ID.
	cmd.Env = append(os.Environ(), "GATEWAY_URL="+s.gateway.URL(), "GRAFANA_URL=http://127.0.0.1:1", "JAEGER_URL=http://127.0.0.1:1")
	out, err := cmd.CombinedOutput()
	if err != nil || !regexp.MustCompile(`trace [0-9a-f]{32}:`).Match(out) {
		t.Errorf("make order's script: %v\n%s", err, out)
	}
}
