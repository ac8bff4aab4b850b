package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
)

// client starts a provider on its own OpenFeature API (no global state), so
// the tests run in parallel.
func client(t *testing.T, path string) (*openfeature.Client, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(t.Context(), NewFileProvider(path, 10*time.Millisecond, slog.New(slog.NewJSONHandler(logs, nil)))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Shutdown(context.Background()) })
	return api.NewClient(), logs
}

// syncBuffer is the provider's log, written by its watcher and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestSwitchWithoutRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "scenarios.json")
	if err := WriteFile(path, Defaults()); err != nil {
		t.Fatal(err)
	}
	c, logs := client(t, path)
	ctx := t.Context()
	rate := func() float64 {
		v, _ := c.FloatValue(ctx, PaymentFailures, -1, openfeature.EvaluationContext{})
		return v
	}
	if got := rate(); got != 0 {
		t.Fatalf("payment-failures = %v with every scenario off, want 0", got)
	}

	if err := Set(path, PaymentFailures, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the switch to on", func() bool { return rate() == 0.3 })
	if !strings.Contains(logs.String(), `"flag":"payment-failures","variant":"on"`) {
		t.Errorf("no log line says the scenario was switched: %s", logs)
	}

	if err := WriteFile(path, Defaults()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the switch back to off", func() bool { return rate() == 0 })
}

func TestTypesAndStates(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "scenarios.json")
	raw, _ := json.Marshal(File{Flags: map[string]Flag{
		"whole":    {State: "ENABLED", Variants: map[string]any{"on": 300.0}, DefaultVariant: "on"},
		"fraction": {State: "ENABLED", Variants: map[string]any{"on": 0.5}, DefaultVariant: "on"},
		"tenant":   {State: "ENABLED", Variants: map[string]any{"on": "globex"}, DefaultVariant: "on"},
		"switch":   {State: "ENABLED", Variants: map[string]any{"on": true}, DefaultVariant: "on"},
		"disabled": {State: "DISABLED", Variants: map[string]any{"on": true}, DefaultVariant: "on"},
	}})
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	c, _ := client(t, path)
	ctx, none := t.Context(), openfeature.EvaluationContext{}

	if v, err := c.IntValue(ctx, "whole", 0, none); v != 300 || err != nil {
		t.Errorf("whole = %v, %v; want 300", v, err)
	}
	if v, err := c.IntValue(ctx, "fraction", 7, none); v != 7 || err == nil {
		t.Errorf("fraction as a whole number = %v, %v; want the default and a type error", v, err)
	}
	if v, _ := c.StringValue(ctx, "tenant", "", none); v != "globex" {
		t.Errorf("tenant = %q", v)
	}
	if v, err := c.BooleanValue(ctx, "tenant", false, none); v || err == nil {
		t.Errorf("a string read as a boolean = %v, %v; want false and a type error", v, err)
	}
	if v, _ := c.BooleanValue(ctx, "switch", false, none); !v {
		t.Error("switch = false")
	}
	if d, _ := c.BooleanValueDetails(ctx, "disabled", false, none); d.Value || d.Reason != openfeature.DisabledReason {
		t.Errorf("disabled = %v (%s), want the default, reason DISABLED", d.Value, d.Reason)
	}
	if d, _ := c.BooleanValueDetails(ctx, "absent", false, none); d.Value || d.ErrorCode != openfeature.FlagNotFoundCode {
		t.Errorf("absent = %v (%s), want the default, FLAG_NOT_FOUND", d.Value, d.ErrorCode)
	}
}

// A file that goes missing or is half written keeps the last good flags.
func TestBadFileKeepsLastGoodFlags(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "scenarios.json")
	if err := Set(path, CacheBypass, true); err != nil { // a missing file starts from the defaults
		t.Fatal(err)
	}
	c, logs := client(t, path)
	on := func() bool {
		v, _ := c.BooleanValue(t.Context(), CacheBypass, false, openfeature.EvaluationContext{})
		return v
	}
	if !on() {
		t.Fatal("cache-bypass is not on")
	}
	for _, bad := range []string{`{"flags": {"cache-bypass": {"state": "ENABLED", "variants": {"on": tru`, `{"flags": {}, "extra": 1}`,
		`{"flags": {"cache-bypass": {"state": "ON", "variants": {"on": true}, "defaultVariant": "on"}}}`,
		`{"flags": {"cache-bypass": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "maybe"}}}`} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the warning about "+bad, func() bool { return strings.Contains(logs.String(), "scenarios file unusable") })
		if !on() {
			t.Errorf("after %s, cache-bypass went off; want the last good flags kept", bad)
		}
		logs.Reset()
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the warning about the missing file", func() bool { return strings.Contains(logs.String(), "scenarios file unusable") })
	if !on() {
		t.Error("with the file gone, cache-bypass went off; want the last good flags kept")
	}
}

// The tracked file in deploy/ is the defaults: every scenario off. The live
// file beside it (scenarios.json, untracked) is what make scenario edits.
func TestDeployedFileIsTheDefaults(t *testing.T) {
	t.Parallel()
	got, err := ReadFile("../../deploy/scenarios/defaults.json")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(Defaults())
	have, _ := json.Marshal(got)
	if !bytes.Equal(want, have) {
		t.Errorf("deploy/scenarios/defaults.json is not scenario.Defaults()\n got %s\nwant %s", have, want)
	}
}

func TestNoFileMeansEveryScenarioOff(t *testing.T) {
	t.Parallel()
	var s Switches
	if s.On(t.Context(), CacheBypass) || s.Number(t.Context(), PaymentFailures) != 0 || s.Text(t.Context(), SlowInventory) != "" {
		t.Error("the zero Switches reads a scenario as on")
	}
}

// A fresh checkout has no live file: every scenario is off, and the service
// says so once, as news rather than a warning.
func TestMissingFileAtStartIsNoWarning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scenarios.json")
	c, logs := client(t, path)
	if on, _ := c.BooleanValue(t.Context(), CacheBypass, false, openfeature.EvaluationContext{}); on {
		t.Error("cache-bypass is on without a file")
	}
	if got := logs.String(); !strings.Contains(got, `"level":"INFO","msg":"no scenarios file yet`) || strings.Contains(got, "WARN") {
		t.Errorf("logs %s, want one INFO line about the missing file and no warning", got)
	}
	if err := Set(path, CacheBypass, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cache-bypass on once the file appears", func() bool {
		on, _ := c.BooleanValue(t.Context(), CacheBypass, false, openfeature.EvaluationContext{})
		return on
	})
}

// GET /scenarios reports each scenario as the service reads it: the "off"
// values, then the "on" value of the one switched on.
func TestHandlerReportsLoadedValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scenarios.json")
	c, _ := client(t, path)
	s := Switches{client: c}
	read := func() map[string]any {
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/scenarios", nil))
		var got map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("body %q (%s): %v", w.Body, w.Header().Get("Content-Type"), err)
		}
		return got
	}
	if got := read(); got[PaymentFailures] != 0.0 || got[CacheBypass] != false || got[SlowInventory] != "" || len(got) != len(Defaults().Flags) {
		t.Errorf("with every scenario off: %v", got)
	}
	if err := Set(path, PaymentFailures, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "payment-failures reported at 0.3", func() bool { return read()[PaymentFailures] == 0.3 })
}
