package exercises

// The workshop's pages, checked against the repository.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestWorkshopCommandsExist: every make target, scenario, file, test and page a
// lab names exists, so a student following the pages never hits a gap.
// liveScenarios is the scenarios file the services watch; git ignores it.
const liveScenarios = "deploy/scenarios/scenarios.json"

func TestWorkshopCommandsExist(t *testing.T) {
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`).FindAllStringSubmatch(string(makefile), -1) {
		targets[m[1]] = true
	}
	var scenarios struct{ Flags map[string]json.RawMessage }
	raw, err := os.ReadFile("../deploy/scenarios/defaults.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &scenarios); err != nil {
		t.Fatal(err)
	}
	scenarioTests, err := os.ReadFile("../e2e/scenarios_test.go")
	if err != nil {
		t.Fatal(err)
	}

	pages, _ := filepath.Glob("../docs/workshop/*.md")
	if len(pages) < 20 {
		t.Fatalf("%d workshop pages, want the index, the guide and 18 labs", len(pages))
	}
	var (
		makeCmd  = regexp.MustCompile(`make ([a-z][a-z0-9-]*)`)
		scenario = regexp.MustCompile(`NAME=([a-z0-9-]+)`)
		path     = regexp.MustCompile("`((?:services|pkg|deploy|exercises|loadtest|e2e|scripts|docs)/[A-Za-z0-9_./-]+)`")
		testName = regexp.MustCompile(`(TestScenario[A-Za-z]+)`)
		link     = regexp.MustCompile(`\]\(([^)#:]+\.md)\)`)
	)
	for _, page := range pages {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		text, name := string(raw), filepath.Base(page)
		for _, m := range makeCmd.FindAllStringSubmatch(text, -1) {
			if !targets[m[1]] {
				t.Errorf("%s: `make %s` is not a Makefile target", name, m[1])
			}
		}
		for _, m := range scenario.FindAllStringSubmatch(text, -1) {
			if _, ok := scenarios.Flags[m[1]]; !ok && m[1] != "..." {
				t.Errorf("%s: scenario %s is not in deploy/scenarios/defaults.json", name, m[1])
			}
		}
		for _, m := range path.FindAllStringSubmatch(text, -1) {
			if m[1] == liveScenarios {
				continue // untracked: the first make scenario writes it
			}
			if _, err := os.Stat(filepath.Join("..", strings.TrimSuffix(m[1], "/"))); err != nil {
				t.Errorf("%s: %s does not exist", name, m[1])
			}
		}
		for _, m := range testName.FindAllStringSubmatch(text, -1) {
			if !strings.Contains(string(scenarioTests), "func "+m[1]+"(") {
				t.Errorf("%s: %s is not a test in e2e/scenarios_test.go", name, m[1])
			}
		}
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			if _, err := os.Stat(filepath.Join(filepath.Dir(page), m[1])); err != nil {
				t.Errorf("%s: links to %s, which does not exist", name, m[1])
			}
		}
	}
	// Every scenario has its lab.
	all := ""
	for _, page := range pages {
		raw, _ := os.ReadFile(page)
		all += string(raw)
	}
	for flag := range scenarios.Flags {
		if !strings.Contains(all, "NAME="+flag) {
			t.Errorf("scenario %s has no lab that switches it", flag)
		}
	}
}
