package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ordertrace/ordertrace/pkg/scenario"
)

func TestSetAcceptsOnlyTheDocumentedValues(t *testing.T) {
	for _, tc := range []struct {
		value  string
		wantOn bool
		ok     bool
	}{
		{"1", true, true}, {"on", true, true}, {"0", false, true}, {"off", false, true},
		{"", false, false}, {"yes", false, false}, {"true", false, false}, {"2", false, false}, {"ON", false, false},
	} {
		t.Run(tc.value, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "scenarios.json")
			err := run(path, []string{"set", scenario.PaymentFailures, tc.value})
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "use 1 or on, 0 or off") {
					t.Fatalf("set %q: error %v, want a refusal that lists the values", tc.value, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("set %q: %v", tc.value, err)
			}
			f, err := scenario.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := map[bool]string{true: "on", false: "off"}[tc.wantOn]
			if got := f.Flags[scenario.PaymentFailures].DefaultVariant; got != want {
				t.Errorf("set %q: payment-failures is %q, want %q", tc.value, got, want)
			}
		})
	}
}

func TestSetRefusesAnUnknownScenario(t *testing.T) {
	err := run(filepath.Join(t.TempDir(), "scenarios.json"), []string{"set", "payment-failure", "1"})
	if err == nil || !strings.Contains(err.Error(), scenario.PaymentFailures) {
		t.Errorf("error %v, want one that lists the scenarios", err)
	}
}

// A wrong make chaos variable stops the command before it switches
// anything, with the variable's name.
func TestChaosRefusesWrongValuesFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scenarios.json")
	err := run(path, []string{"chaos", "-every=5m-2m", "-rounds=3"})
	if err == nil || !strings.Contains(err.Error(), "EVERY (-every)") {
		t.Errorf("error %v, want one that names EVERY", err)
	}
	if _, statErr := os.Stat(path); !os.IsNotExist(statErr) {
		t.Errorf("the scenarios file was written (%v): a refused run must switch nothing", statErr)
	}
	if err := run(path, []string{"chaos", "extra"}); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("chaos with an argument: %v, want the usage", err)
	}
}
