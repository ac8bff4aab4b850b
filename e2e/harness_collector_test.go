package e2e

// The programs a test builds once per run, the stack's collector among them:
// collectorBinary builds it, startCollector runs it against an in-test
// receiver (freePort and healthy place and probe it), and promQLMetrics
// reads the metric names that the dashboards' and rules' PromQL selects.

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// program is a binary a test needs, built (or found in the cache) once per
// test run by a command that prints its path, such as scripts/build-tool.sh.
type program struct {
	once sync.Once
	path string
	err  error
}

// get runs the build the first time and returns the path it printed.
func (p *program) get(t *testing.T, name string, args ...string) string {
	t.Helper()
	p.once.Do(func() {
		var out, stderr bytes.Buffer
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			p.err = fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
			return
		}
		p.path = strings.TrimSpace(out.String())
	})
	if p.err != nil {
		t.Fatal(p.err)
	}
	return p.path
}

var collectorProgram program

// collectorBinary builds (or finds in the cache) the collector of
// deploy/otel-collector/builder.yaml: the compose image's components and version.
func collectorBinary(t *testing.T) string {
	t.Helper()
	return collectorProgram.get(t, "bash", "../scripts/build-collector.sh")
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// collector is a running collector with deploy/otel-collector/config.yaml,
// its backends pointed at an in-test receiver.
type collector struct {
	OTLPHTTP string // URL of its OTLP/HTTP receiver
	Metrics  string // URL of its own Prometheus metrics
	backends *receiver

	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

func startCollector(t *testing.T, vars map[string]string) *collector {
	t.Helper()
	bin := collectorBinary(t)
	backends := newReceiver(t)
	httpAddr, healthAddr, metricsAddr := freePort(t), freePort(t), freePort(t)
	_, metricsPort, _ := net.SplitHostPort(metricsAddr)
	env := map[string]string{
		"COLLECTOR_OTLP_GRPC_ENDPOINT": freePort(t),
		"COLLECTOR_OTLP_HTTP_ENDPOINT": httpAddr,
		"COLLECTOR_HEALTH_ENDPOINT":    healthAddr,
		"COLLECTOR_PPROF_ENDPOINT":     freePort(t), // collectors of tests running in parallel
		"COLLECTOR_METRICS_HOST":       "127.0.0.1",
		"COLLECTOR_METRICS_PORT":       metricsPort,
		"TEMPO_OTLP_ENDPOINT":          backends.URL,
		"LOKI_OTLP_ENDPOINT":           backends.URL,
		"PROMETHEUS_OTLP_ENDPOINT":     backends.URL,
		"TRACE_DECISION_WAIT":          "1s",
		"SPANMETRICS_FLUSH_INTERVAL":   "1s",
	}
	maps.Copy(env, vars)
	cmd := exec.Command(bin, "--config=../deploy/otel-collector/config.yaml", "--config=../deploy/otel-collector/none.yaml")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var logs bytes.Buffer // read only once it has exited
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &collector{
		OTLPHTTP: "http://" + httpAddr, Metrics: "http://" + metricsAddr + "/metrics", backends: backends,
		cmd: cmd, done: make(chan struct{}),
	}
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.stop(t)
		// OTTL paths without their context prefix (attributes, not
		// span.attributes) still work, rewritten at start with a notice:
		// config.yaml writes them whole.
		if strings.Contains(logs.String(), "paths were modified to include their context prefix") {
			t.Error("the collector rewrote OTTL paths of config.yaml: give each its context prefix (span., spanevent., log.)")
		}
		if t.Failed() {
			t.Logf("collector output:\n%s", logs.String())
		}
	})
	// Started means its health check answers 200: its pipelines are running.
	deadline := time.Now().Add(startTimeout)
	for {
		err := healthy("http://" + healthAddr + "/")
		if err == nil {
			return c
		}
		select {
		case <-c.done:
			t.Fatalf("the collector exited before its health check answered: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector's health check did not answer 200 within %s: %v", startTimeout, err)
		}
	}
}

// healthy asks a health check once: nil means 200.
func healthy(url string) error {
	resp, err := testClient.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// stop stops the collector with SIGTERM and waits until it has exited: its
// batches flushed and its exporters' queues drained into the backends.
func (c *collector) stop(t *testing.T) {
	t.Helper()
	terminate(t, "collector", c.cmd, c.done)
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*\s*\(?`)
	promOperators = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}
)

// promQLMetrics returns the metric names a PromQL expression selects: what
// is left once strings, label matchers, groupings, ranges and function
// calls are taken out.
func promQLMetrics(expr string) []string {
	e := promStrings.ReplaceAllString(expr, "")
	e = promMatchers.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	var names []string
	for _, m := range promIdent.FindAllString(e, -1) {
		m = strings.TrimSpace(m)
		if strings.HasSuffix(m, "(") || promOperators[m] {
			continue // a function, or an operator
		}
		names = append(names, m)
	}
	return names
}
