package e2e

// make chaos against the real services: the scheduler runs as its own
// process, switches the scenarios file that orders and fulfillment watch,
// and annotates a Grafana that records what it is sent.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ordertrace/ordertrace/pkg/scenario"
)

// chaosStopBound is how long the scheduler may take to leave every scenario
// off and exit after SIGTERM: its own budget (5 s, a Grafana that hangs)
// and room for a busy machine.
const chaosStopBound = 10 * time.Second

func TestChaos(t *testing.T) {
	t.Parallel()
	command := buildScenarioCommand(t)
	e := newEnv(t)
	otlp := newReceiver(t)
	path := filepath.Join(t.TempDir(), "scenarios.json")
	if err := scenario.WriteFile(path, scenario.Defaults()); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"DATABASE_URL": e.DatabaseURL, "REDIS_URL": redisURL, "AMQP_URL": e.AMQPURL,
		"SCENARIOS_FILE": path, "SCENARIOS_POLL": "50ms",
		"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BLRP_SCHEDULE_DELAY": "100",
	}
	services := []*process{start(t, "orders", vars), start(t, "fulfillment", vars)}

	t.Run("rounds", func(t *testing.T) {
		// Holds long enough that a service polling every 50 ms on a busy
		// machine cannot miss one.
		settings := scenario.ChaosSettings{Every: "200ms-400ms", Hold: "1s", Seed: "1", Rounds: "3"}
		c, err := scenario.ParseChaos(settings)
		if err != nil {
			t.Fatal(err)
		}
		plan := c.Plan(3)
		grafana := newFakeGrafana(t)
		run := startChaos(t, command, path, grafana.URL, settings)
		select {
		case <-run.done:
		case <-time.After(patience):
			t.Fatalf("three rounds still running after %s:\n%s", patience, strings.Join(run.Lines(), "\n"))
		}
		if run.err != nil {
			t.Fatalf("the scheduler exited with %v:\n%s", run.err, strings.Join(run.Lines(), "\n"))
		}

		var wantLog, wantAnnotations, wantLoaded []string
		for _, r := range plan {
			wantLog = append(wantLog, fmt.Sprint(r.N, " ", r.Scenario, " on"), fmt.Sprint(r.N, " ", r.Scenario, " off"))
			wantAnnotations = append(wantAnnotations, "chaos,"+r.Scenario+" chaos: "+r.Scenario+" on", "chaos,"+r.Scenario+" chaos: "+r.Scenario+" off")
			wantLoaded = append(wantLoaded, r.Scenario+" on", r.Scenario+" off")
		}
		if got := chaosSwitches(t, run.Lines()); !slices.Equal(got, wantLog) {
			t.Errorf("the scheduler logged %q, want the plan of seed 1: %q", got, wantLog)
		}
		// Each annotation is posted before the scheduler goes on: all have arrived.
		if got := grafana.list(); !slices.Equal(got, wantAnnotations) {
			t.Errorf("Grafana received %q, want %q", got, wantAnnotations)
		}
		// Each service logs every switch as it loads it, through OTLP (to
		// Loki): the line a student finds.
		for _, p := range services {
			waitUntil(t, patience, p.name+" to log every switch", func() (bool, error) {
				got := switchedLogs(otlp, p.name)
				if !slices.Equal(got, wantLoaded) {
					return false, fmt.Errorf("%s logged %q, want %q", p.name, got, wantLoaded)
				}
				return true, nil
			})
		}
		assertAllOff(t, path, services)
	})

	t.Run("SIGTERM in a hold", func(t *testing.T) {
		settings := scenario.ChaosSettings{Every: "100ms", Hold: "1h", Seed: "2"}
		c, err := scenario.ParseChaos(settings)
		if err != nil {
			t.Fatal(err)
		}
		name := c.Plan(1)[0].Scenario
		grafana := newFakeGrafana(t)
		run := startChaos(t, command, path, grafana.URL, settings)
		waitFor(t, patience, "the scheduler to switch "+name+" on", func() bool {
			return slices.Contains(chaosSwitches(t, run.Lines()), "1 "+name+" on")
		})
		want := scenario.Defaults().Flags[name].Variants["on"]
		for _, p := range services {
			waitUntil(t, patience, fmt.Sprintf("%s to load %s=%v", p.name, name, want), func() (bool, error) {
				loaded, err := p.tryScenarios()
				if err == nil && loaded[name] != want {
					err = fmt.Errorf("%s has %s=%v", p.name, name, loaded[name])
				}
				return err == nil, err
			})
		}

		began := time.Now()
		if err := run.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-run.done:
		case <-time.After(chaosStopBound):
			t.Fatalf("the scheduler still runs %s after SIGTERM:\n%s", chaosStopBound, strings.Join(run.Lines(), "\n"))
		}
		t.Logf("stopped in %s", time.Since(began).Round(time.Millisecond))
		if run.err != nil {
			t.Errorf("after SIGTERM the scheduler exited with %v, want 0", run.err)
		}
		if got, want := chaosSwitches(t, run.Lines()), []string{"1 " + name + " on", "1 " + name + " off"}; !slices.Equal(got, want) {
			t.Errorf("the scheduler logged %q, want %q", got, want)
		}
		if lines := run.Lines(); len(lines) == 0 || !strings.Contains(lines[len(lines)-1], `"msg":"chaos stopped: every scenario off","reason":"stopped by a signal"`) {
			t.Errorf("the scheduler's last line is not its stop:\n%s", strings.Join(lines, "\n"))
		}
		if got, want := grafana.list(), []string{"chaos," + name + " chaos: " + name + " on", "chaos," + name + " chaos: " + name + " off"}; !slices.Equal(got, want) {
			t.Errorf("Grafana received %q, want %q", got, want)
		}
		for _, p := range services {
			waitUntil(t, patience, p.name+" to log the switch off", func() (bool, error) {
				got := switchedLogs(otlp, p.name)
				if !slices.Equal(got[max(len(got)-2, 0):], []string{name + " on", name + " off"}) {
					return false, fmt.Errorf("%s logged %q, want %s on, then off", p.name, got, name)
				}
				return true, nil
			})
		}
		assertAllOff(t, path, services)
	})
}

// buildScenarioCommand builds the command make chaos runs, as TestMain
// builds the services.
func buildScenarioCommand(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "scenario")
	args := append([]string{"build"}, buildFlags...)
	out, err := exec.Command("go", append(args, "-o", bin, "../pkg/scenario/cmd/scenario")...).CombinedOutput()
	if err != nil {
		t.Fatalf("build the scenario command: %v\n%s", err, out)
	}
	return bin
}

// startChaos runs `scenario -file path chaos` with settings, annotating the
// Grafana at grafanaURL. It is killed, if still running, when t ends.
func startChaos(t *testing.T, command, path, grafanaURL string, s scenario.ChaosSettings) *process {
	t.Helper()
	cmd := exec.Command(command, "-file", path, "chaos",
		"-every="+s.Every, "-hold="+s.Hold, "-scenarios="+s.Scenarios, "-seed="+s.Seed, "-rounds="+s.Rounds)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "GORACE=atexit_sleep_ms=0",
		"GRAFANA_URL=" + grafanaURL, "GRAFANA_USER=admin", "GRAFANA_PASSWORD=admin",
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{name: "chaos", cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the scheduler has a data race:\n%s", stderr.String())
		} else if t.Failed() {
			t.Logf("the scheduler's stderr:\n%s", stderr.String())
		}
	})
	return p
}

// chaosSwitches reads the scheduler's log: "round scenario state" per switch.
func chaosSwitches(t *testing.T, lines []string) []string {
	t.Helper()
	var got []string
	for _, line := range lines {
		var rec struct {
			Msg, Scenario, State string
			Round                int
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("the scheduler wrote %q, not a JSON log line: %v", line, err)
			continue
		}
		if rec.Msg == "chaos switch" {
			got = append(got, fmt.Sprint(rec.Round, " ", rec.Scenario, " ", rec.State))
		}
	}
	return got
}

// switchedLogs are a service's `scenario switched` records, received over
// OTLP: "flag variant" each.
func switchedLogs(otlp *receiver, service string) []string {
	var got []string
	for _, l := range otlp.Logs() {
		if l.Service == service && l.Body == "scenario switched" {
			got = append(got, l.Attrs["flag"]+" "+l.Attrs["variant"])
		}
	}
	return got
}

// assertAllOff checks that the file has every scenario off and that each
// service reports every scenario off.
func assertAllOff(t *testing.T, path string, services []*process) {
	t.Helper()
	f, err := scenario.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := map[string]any{}
	for name, fl := range f.Flags {
		if fl.DefaultVariant != "off" {
			t.Errorf("the scheduler left %s %s in the file", name, fl.DefaultVariant)
		}
		off[name] = fl.Variants["off"]
	}
	for _, p := range services {
		waitUntil(t, patience, p.name+" to report every scenario off", func() (bool, error) {
			loaded, err := p.tryScenarios()
			if err == nil && !reflect.DeepEqual(loaded, off) {
				err = fmt.Errorf("%s reports %v", p.name, loaded)
			}
			return err == nil, err
		})
	}
}

// fakeGrafana records the annotations it is posted, in order: "tags text".
type fakeGrafana struct {
	URL string
	mu  sync.Mutex
	got []string
}

func newFakeGrafana(t *testing.T) *fakeGrafana {
	g := &fakeGrafana{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Time int64
			Tags []string
			Text string
		}
		user, pass, _ := r.BasicAuth()
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Time == 0 || r.Method != http.MethodPost ||
			r.URL.Path != "/api/annotations" || user+":"+pass != "admin:admin" {
			t.Errorf("Grafana got %s %s as %q: %+v (%v), want a POST to /api/annotations as admin, with a time", r.Method, r.URL.Path, user, body, err)
			http.Error(w, "bad annotation", http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.got = append(g.got, strings.Join(body.Tags, ",")+" "+body.Text)
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"message":"Annotation added"}`))
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

func (g *fakeGrafana) list() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.got)
}
