package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustParse(t *testing.T, s ChaosSettings) Chaos {
	t.Helper()
	c, err := ParseChaos(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The same seed, the same rounds: a class can be run again as it was.
func TestChaosSeedGivesTheSameRounds(t *testing.T) {
	settings := ChaosSettings{Every: "2m-5m", Hold: "1m-3m", Seed: "42"}
	a, b := mustParse(t, settings).Plan(50), mustParse(t, settings).Plan(50)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("seed 42 twice gave two schedules:\n%v\n%v", a, b)
	}
	settings.Seed = "43"
	if c := mustParse(t, settings).Plan(50); reflect.DeepEqual(a, c) {
		t.Error("seeds 42 and 43 gave the same 50 rounds")
	}
	// The schedule is drawn round by round: a longer plan starts with the shorter one.
	if long := mustParse(t, ChaosSettings{Seed: "42", Every: "2m-5m", Hold: "1m-3m"}).Plan(80); !reflect.DeepEqual(long[:50], a) {
		t.Error("the first 50 of 80 rounds differ from a plan of 50")
	}
}

func TestChaosRoundsStayInBounds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings ChaosSettings
	}{
		{"ranges", ChaosSettings{Every: "2m-5m", Hold: "3m-6m"}},
		{"fixed", ChaosSettings{Every: "90s", Hold: "3m"}},
		{"tiny", ChaosSettings{Every: "200ms-400ms", Hold: "300ms"}},
		{"named", ChaosSettings{Scenarios: "propagation-off, cache-bypass"}},
		{"one scenario", ChaosSettings{Scenarios: SlowInventory}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range 20 {
				tc.settings.Seed = strconv.Itoa(seed)
				c := mustParse(t, tc.settings)
				picked := map[string]bool{}
				for i, r := range c.Plan(200) {
					if r.N != i+1 {
						t.Fatalf("round %d is numbered %d", i+1, r.N)
					}
					if r.Pause < c.Every.Min || r.Pause > c.Every.Max {
						t.Errorf("round %d pauses %s, outside EVERY %s", r.N, r.Pause, c.Every)
					}
					if r.Hold < c.Hold.Min || r.Hold > c.Hold.Max {
						t.Errorf("round %d holds %s, outside HOLD %s", r.N, r.Hold, c.Hold)
					}
					if !slices.Contains(c.Scenarios, r.Scenario) {
						t.Errorf("round %d picks %s, not one of %v", r.N, r.Scenario, c.Scenarios)
					}
					picked[r.Scenario] = true
				}
				if len(picked) != len(c.Scenarios) {
					t.Errorf("200 rounds picked %d of the %d scenarios", len(picked), len(c.Scenarios))
				}
			}
		})
	}
}

// With a choice, a round never picks the scenario of the round before: a
// class would see one long incident instead of two.
func TestChaosNeverRepeatsAScenario(t *testing.T) {
	rounds := mustParse(t, ChaosSettings{Seed: "7", Scenarios: "cache-bypass,order-lock"}).Plan(100)
	for i := 1; i < len(rounds); i++ {
		if rounds[i].Scenario == rounds[i-1].Scenario {
			t.Fatalf("rounds %d and %d both pick %s", i, i+1, rounds[i].Scenario)
		}
	}
}

func TestParseChaosDefaults(t *testing.T) {
	c := mustParse(t, ChaosSettings{})
	if c.Every != (Bounds{2 * time.Minute, 5 * time.Minute}) || c.Hold != (Bounds{3 * time.Minute, 6 * time.Minute}) || c.Rounds != 0 {
		t.Errorf("defaults: EVERY %s, HOLD %s, ROUNDS %d; want 2m-5m, 3m-6m, 0", c.Every, c.Hold, c.Rounds)
	}
	if c.Seed < 0 || c.Seed >= 1_000_000 {
		t.Errorf("random seed %d, want a short one to type again", c.Seed)
	}
	if !reflect.DeepEqual(c.Scenarios, ChaosScenarios()) {
		t.Errorf("default scenarios %v, want %v", c.Scenarios, ChaosScenarios())
	}
	for _, confusing := range []string{SpanNamePerOrder, PropagationOff} {
		if slices.Contains(c.Scenarios, confusing) {
			t.Errorf("%s is picked without being named", confusing)
		}
	}
	for _, name := range c.Scenarios {
		if _, ok := Defaults().Flags[name]; !ok {
			t.Errorf("default scenario %s does not exist", name)
		}
	}
}

// Every wrong value is refused with the name of its variable, all of them
// at once.
func TestParseChaosNamesTheVariable(t *testing.T) {
	for _, tc := range []struct {
		settings ChaosSettings
		want     string
	}{
		{ChaosSettings{Every: "5m-2m"}, `EVERY (-every) "5m-2m": the shortest (5m0s) is longer`},
		{ChaosSettings{Every: "often"}, `EVERY (-every) "often"`},
		{ChaosSettings{Every: "0s-1m"}, `EVERY (-every) "0s-1m": the shortest must be more than 0`},
		{ChaosSettings{Every: "-1m"}, `EVERY (-every) "-1m"`},
		{ChaosSettings{Every: "2m-"}, `EVERY (-every) "2m-"`},
		{ChaosSettings{Hold: "3"}, `HOLD (-hold) "3"`},
		{ChaosSettings{Hold: "4m-3m"}, `HOLD (-hold) "4m-3m"`},
		{ChaosSettings{Scenarios: "payment-failure"}, `SCENARIOS (-scenarios) "payment-failure": no scenario "payment-failure"`},
		{ChaosSettings{Scenarios: "cache-bypass,,order-lock"}, `SCENARIOS (-scenarios) "cache-bypass,,order-lock": no scenario ""`},
		{ChaosSettings{Scenarios: "cache-bypass,cache-bypass"}, `SCENARIOS (-scenarios) "cache-bypass,cache-bypass": cache-bypass is named twice`},
		{ChaosSettings{Seed: "seven"}, `SEED (-seed) "seven"`},
		{ChaosSettings{Rounds: "-1"}, `ROUNDS (-rounds) "-1"`},
		{ChaosSettings{Rounds: "3.5"}, `ROUNDS (-rounds) "3.5"`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if _, err := ParseChaos(tc.settings); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%+v: error %v, want %q", tc.settings, err, tc.want)
			}
		})
	}
	_, err := ParseChaos(ChaosSettings{Every: "x", Hold: "y", Scenarios: "z", Seed: "s", Rounds: "r"})
	for _, variable := range []string{"EVERY", "HOLD", "SCENARIOS", "SEED", "ROUNDS"} {
		if err == nil || !strings.Contains(err.Error(), variable+" (") {
			t.Errorf("five wrong values: error %v does not name %s", err, variable)
		}
	}
}

// annotations records what a fake Grafana is sent.
type annotations struct {
	mu   sync.Mutex
	got  []string // "user:password tag,tag text"
	fail bool
}

func (a *annotations) serve(t *testing.T) *Grafana {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Time int64
			Tags []string
			Text string
		}
		raw, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/api/annotations" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s (%s), want POST /api/annotations, JSON", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		if err := json.Unmarshal(raw, &body); err != nil || body.Time == 0 {
			t.Errorf("annotation %s: %v, want time, tags and text", raw, err)
		}
		user, pass, _ := r.BasicAuth()
		a.mu.Lock()
		defer a.mu.Unlock()
		a.got = append(a.got, user+":"+pass+" "+strings.Join(body.Tags, ",")+" "+body.Text)
		if a.fail {
			http.Error(w, "grafana is down", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	return &Grafana{URL: srv.URL + "/", User: "admin", Password: "admin"}
}

func (a *annotations) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.got)
}

// fileOn lists the scenarios of the file that are on.
func fileOn(t *testing.T, path string) []string {
	t.Helper()
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var on []string
	for name, fl := range f.Flags {
		if fl.DefaultVariant != "off" {
			on = append(on, name)
		}
	}
	slices.Sort(on)
	return on
}

// switches reads the scheduler's log: "round scenario state" per switch.
func switches(t *testing.T, log string) []string {
	t.Helper()
	var got []string
	for line := range strings.Lines(log) {
		var rec struct {
			Msg, Scenario, State string
			Round                int
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == "chaos switch" {
			got = append(got, fmt.Sprint(rec.Round, " ", rec.Scenario, " ", rec.State))
		}
	}
	return got
}

// A run of three rounds, without waiting: the scheduler asks to wait each
// planned pause and hold, the file has exactly the round's scenario on
// during its hold, each switch is logged and annotated, and the run ends
// with every scenario off.
func TestSchedulerRunsThePlan(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scenarios.json")
	if err := Set(path, OrderLock, true); err != nil { // left on by hand: switched off first
		t.Fatal(err)
	}
	c := mustParse(t, ChaosSettings{Every: "2m-5m", Hold: "3m", Seed: "5", Rounds: "3"})
	plan := c.Plan(3)
	var (
		ann   annotations
		logs  syncBuffer
		waits []time.Duration
	)
	s := &Scheduler{Chaos: c, File: path, Log: slog.New(slog.NewJSONHandler(&logs, nil)), Grafana: ann.serve(t)}
	s.sleep = func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		r := plan[(len(waits)-1)/2]
		want := []string(nil) // in a pause, none
		if len(waits)%2 == 0 {
			want = []string{r.Scenario} // in a hold, the round's own
		}
		if got := fileOn(t, path); !slices.Equal(got, want) {
			t.Errorf("wait %d (round %d): %v on, want %v", len(waits), r.N, got, want)
		}
		return nil
	}
	if err := s.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	var wantWaits []time.Duration
	wantSwitches := []string{"0 order-lock off"}
	wantAnnotations := []string{"admin:admin chaos,order-lock chaos: order-lock off"}
	for _, r := range plan {
		wantWaits = append(wantWaits, r.Pause, r.Hold)
		n := strconv.Itoa(r.N)
		wantSwitches = append(wantSwitches, n+" "+r.Scenario+" on", n+" "+r.Scenario+" off")
		wantAnnotations = append(wantAnnotations,
			"admin:admin chaos,"+r.Scenario+" chaos: "+r.Scenario+" on",
			"admin:admin chaos,"+r.Scenario+" chaos: "+r.Scenario+" off")
	}
	if !slices.Equal(waits, wantWaits) {
		t.Errorf("waited %v, want the plan's pauses and holds %v", waits, wantWaits)
	}
	if got := switches(t, logs.String()); !slices.Equal(got, wantSwitches) {
		t.Errorf("logged switches %q, want %q", got, wantSwitches)
	}
	if got := ann.list(); !slices.Equal(got, wantAnnotations) {
		t.Errorf("annotations %q, want %q", got, wantAnnotations)
	}
	if on := fileOn(t, path); len(on) != 0 {
		t.Errorf("after the run, %v still on", on)
	}
	if !strings.Contains(logs.String(), `"msg":"chaos stopped: every scenario off","reason":"rounds done"`) {
		t.Errorf("no stop line in the log:\n%s", logs.String())
	}
}

// A signal in the middle of a hold: the scenario goes off, is logged and
// annotated, and Run returns nil. A Grafana that fails costs a warning,
// never the schedule.
func TestSchedulerStopsInAHold(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scenarios.json")
	c := mustParse(t, ChaosSettings{Seed: "9"})
	plan := c.Plan(2)
	ann := annotations{fail: true}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	waits := 0
	s := &Scheduler{Chaos: c, File: path, Log: slog.New(slog.NewJSONHandler(&logs, nil)), Grafana: ann.serve(t)}
	s.sleep = func(ctx context.Context, _ time.Duration) error {
		if waits++; waits == 4 { // round 2's hold: the signal
			cancel()
			return ctx.Err()
		}
		return nil
	}
	if err := s.Run(ctx); err != nil {
		t.Fatalf("a stop by signal: %v, want nil", err)
	}
	if on := fileOn(t, path); len(on) != 0 {
		t.Errorf("after the stop, %v still on", on)
	}
	r1, r2 := plan[0].Scenario, plan[1].Scenario
	want := []string{"1 " + r1 + " on", "1 " + r1 + " off", "2 " + r2 + " on", "2 " + r2 + " off"}
	if got := switches(t, logs.String()); !slices.Equal(got, want) {
		t.Errorf("logged switches %q, want %q", got, want)
	}
	if got := ann.list(); len(got) != 4 || got[3] != "admin:admin chaos,"+r2+" chaos: "+r2+" off" {
		t.Errorf("annotations %q, want four, the last %s off", got, r2)
	}
	if n := strings.Count(logs.String(), `"msg":"chaos annotation failed; the schedule goes on"`); n != 4 {
		t.Errorf("%d warnings about the failing Grafana, want one per switch (4):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"reason":"stopped by a signal","rounds":2`) {
		t.Errorf("no stop line in the log:\n%s", logs.String())
	}
}
