//go:build stack

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordertrace/ordertrace/pkg/scenario"
	"go.yaml.in/yaml/v3"
)

// The walk a user of make up takes, with the real programs on the
// repository's own files: the services, the collector on config.yaml, Loki
// on deploy/loki/loki.yaml, Prometheus on deploy/prometheus/prometheus.yml
// with the flags compose gives it, and k6 running loadtest/k6/smoke.js. No
// file is changed: addresses and data directories are given by variables
// and flags only.
//
// Jaeger v2 stands in for Tempo as the trace store: Tempo (AGPL) is not
// served by the Go module proxy, so Tempo's configuration is checked against
// its documented keys instead (deploy/configs_test.go), and the panels that
// read Tempo's service graph are checked by name (tempoServiceGraphMetrics).
//
// prometheus.yml scrapes the stack by its compose names (otel-collector:8888,
// loki:3100, ...). Prometheus runs in a mount namespace of its own, where
// /etc/hosts gives each name a loopback address of this test's: the file is
// read as it is, and nothing clashes with the machine's ports.

var (
	lokiProgram   program
	jaegerProgram program
	k6Program     program
)

// stackHosts are the compose names Prometheus scrapes, each on a loopback
// address of this run's (127.x.y.z is all loopback on Linux).
type stackHosts struct {
	file string            // the hosts file Prometheus sees as /etc/hosts
	addr map[string]string // compose name: address
}

func newStackHosts(t *testing.T) stackHosts {
	t.Helper()
	base := fmt.Sprintf("127.%d.%d.", 100+rand.IntN(100), 1+rand.IntN(250))
	h := stackHosts{file: filepath.Join(t.TempDir(), "hosts"), addr: map[string]string{
		"localhost":      base + "9", // Prometheus scrapes itself at localhost:9090
		"otel-collector": base + "2",
		"tempo":          base + "3", // nothing listens: Tempo does not run here
		"loki":           base + "4",
		"rabbitmq":       "127.0.0.1", // the machine's broker and its Prometheus plugin
	}}
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(h.addr)) {
		fmt.Fprintf(&b, "%s %s\n", h.addr[name], name)
	}
	if err := os.WriteFile(h.file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

// backend is a program of the stack run by the walk.
type backend struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	logs *bytes.Buffer // read only once it has exited
}

// startBackend starts a program, waits until ready answers 200, and stops
// it with SIGTERM when t ends.
func startBackend(t *testing.T, name string, cmd *exec.Cmd, ready string) *backend {
	t.Helper()
	b := &backend{name: name, cmd: cmd, done: make(chan struct{}), logs: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = b.logs, b.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			t.Logf("%s output (last 4 KiB):\n%s", name, tail(b.logs.String(), 4<<10))
		}
	})
	waitUntil(t, 3*time.Minute, name+" ready", func() (bool, error) {
		select {
		case <-b.done:
			return false, fmt.Errorf("%s exited:\n%s", name, tail(b.logs.String(), 4<<10))
		default:
		}
		return healthy(ready) == nil, nil
	})
	return b
}

func (b *backend) stop(t *testing.T) time.Duration {
	return terminate(t, b.name, b.cmd, b.done)
}

// stopQuerying stops the program with a query in flight, as docker compose
// stop finds it under Grafana's refreshes: the request is written to the
// program's socket before SIGTERM, and must not hold it past its grace.
func (b *backend) stopQuerying(t *testing.T, rawURL string) time.Duration {
	t.Helper()
	u, _ := url.Parse(rawURL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", u.RequestURI(), u.Host); err != nil {
		t.Fatal(err)
	}
	return b.stop(t)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// traceRecorder forwards k6's requests to the gateway unchanged and notes
// the trace ID of each traceparent k6 sent: the traces the store must hold.
type traceRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *traceRecorder) proxy(t *testing.T, target string) string {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if parts := strings.Split(req.Header.Get("traceparent"), "-"); len(parts) == 4 {
			r.mu.Lock()
			r.ids = append(r.ids, parts[1])
			r.mu.Unlock()
		}
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (r *traceRecorder) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

// composeService is a service of docker-compose.yml, as far as the walk
// reads it.
type composeService struct {
	Command         []string `yaml:"command"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
}

func readComposeService(t *testing.T, name string) composeService {
	t.Helper()
	raw, err := os.ReadFile("../deploy/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	s, ok := f.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yml has no service %s", name)
	}
	return s
}

// composeGrace is the stop grace period compose gives a service: its
// stop_grace_period, else Docker's 10 s.
func composeGrace(t *testing.T, service string) time.Duration {
	t.Helper()
	s := readComposeService(t, service)
	if s.StopGracePeriod == "" {
		return 10 * time.Second
	}
	d, err := time.ParseDuration(s.StopGracePeriod)
	if err != nil {
		t.Fatalf("%s stop_grace_period: %v", service, err)
	}
	return d
}

// composeArgs is the command compose runs a service with, its paths in the
// container swapped for the repository's files and the test's directories.
// A path the walk does not know fails the test: a new flag must be seen.
func composeArgs(t *testing.T, service string, paths map[string]string) []string {
	t.Helper()
	var args []string
	for _, a := range readComposeService(t, service).Command {
		if name, value, ok := strings.Cut(a, "="); ok && strings.HasPrefix(value, "/") {
			local, known := paths[value]
			if !known {
				t.Fatalf("compose runs %s with %s: the walk does not know where that is", service, a)
			}
			a = name + "=" + local
		}
		args = append(args, a)
	}
	if len(args) == 0 {
		t.Fatalf("compose gives %s no command", service)
	}
	return args
}

// provisioned is what the walk reads from Grafana's provisioning: the
// traces-to-logs query of the Tempo datasource and Loki's derived fields,
// with Grafana's $$ expanded to $.
type provisioned struct {
	tracesToLogs  string
	derivedFields []derivedField
}

type derivedField struct {
	Name, MatcherType, MatcherRegex string
}

func readProvisioning(t *testing.T) provisioned {
	t.Helper()
	raw, err := os.ReadFile("../deploy/grafana/provisioning/datasources/datasources.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Datasources []struct {
			UID      string `yaml:"uid"`
			JSONData struct {
				TracesToLogs struct {
					Query string `yaml:"query"`
				} `yaml:"tracesToLogsV2"`
				DerivedFields []struct {
					Name         string `yaml:"name"`
					MatcherType  string `yaml:"matcherType"`
					MatcherRegex string `yaml:"matcherRegex"`
				} `yaml:"derivedFields"`
			} `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	var p provisioned
	unescape := func(s string) string { return strings.ReplaceAll(s, "$$", "$") }
	for _, ds := range file.Datasources {
		switch ds.UID {
		case "tempo":
			p.tracesToLogs = unescape(ds.JSONData.TracesToLogs.Query)
		case "loki":
			for _, f := range ds.JSONData.DerivedFields {
				p.derivedFields = append(p.derivedFields, derivedField{f.Name, f.MatcherType, unescape(f.MatcherRegex)})
			}
		}
	}
	if p.tracesToLogs == "" || len(p.derivedFields) == 0 {
		t.Fatalf("datasources.yaml: no traces-to-logs query on Tempo or no derived field on Loki: %+v", p)
	}
	return p
}

// lokiRecord is one log record as Loki's query API answers it: the labels
// of its stream (structured metadata included, which Loki merges in) and
// its line.
type lokiRecord struct {
	Labels map[string]string
	Line   string
}

func lokiQuery(base, query string, since time.Time) ([]lokiRecord, error) {
	q := url.Values{"query": {query}, "start": {strconv.FormatInt(since.UnixNano(), 10)},
		"end": {strconv.FormatInt(time.Now().Add(time.Minute).UnixNano(), 10)}, "limit": {"1000"}}
	resp, err := testClient.Get(base + "/loki/api/v1/query_range?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return nil, fmt.Errorf("Loki %s: %s: %s", query, resp.Status, b.String())
	}
	var body struct {
		Data struct {
			Result []struct {
				Stream map[string]string `json:"stream"`
				Values [][]string        `json:"values"` // [ns, line]
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	var out []lokiRecord
	for _, s := range body.Data.Result {
		for _, v := range s.Values {
			out = append(out, lokiRecord{Labels: s.Stream, Line: v[1]})
		}
	}
	return out, nil
}

// extract applies a Grafana derived field to a record as Grafana does: a
// label matcher reads the label (or structured metadata) of that name, a
// regex matcher the first group of its match in the line.
func (f derivedField) extract(r lokiRecord) string {
	switch f.MatcherType {
	case "label":
		return r.Labels[f.MatcherRegex]
	default:
		if m := regexp.MustCompile(f.MatcherRegex).FindStringSubmatch(r.Line); len(m) > 1 {
			return m[1]
		}
		return ""
	}
}

// grafanaVars gives the template variables of the dashboards the values
// Grafana would: every service, and a rate window of a minute (four of
// Prometheus's 15 s scrapes).
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "15s", "$__range", "5m", "$service", ".+")

// promResult runs an instant query and says how many series it returned.
func promResult(base, query string) (int, error) {
	resp, err := testClient.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   struct{ Result []json.RawMessage }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	if body.Status != "success" {
		return 0, fmt.Errorf("%s: %s", query, body.Error)
	}
	return len(body.Data.Result), nil
}

// exemplarTraceIDs asks Prometheus for the exemplars of a metric and returns
// their trace IDs.
func exemplarTraceIDs(base, metric string, since time.Time) ([]string, error) {
	q := url.Values{"query": {metric}, "start": {strconv.FormatInt(since.Unix(), 10)}, "end": {strconv.FormatInt(time.Now().Unix(), 10)}}
	resp, err := testClient.Get(base + "/api/v1/query_exemplars?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Data []struct {
			Exemplars []struct {
				Labels map[string]string `json:"labels"`
			} `json:"exemplars"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range body.Data {
		for _, e := range s.Exemplars {
			if id := e.Labels["trace_id"]; id != "" {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// jaegerHas reports whether the trace store holds a trace.
func jaegerHas(base, traceID string) bool {
	resp, err := testClient.Get(base + "/api/traces/" + traceID)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// walkOrder is an order the walk placed itself, and how it was answered.
type walkOrder struct {
	traceID string
	status  int
}

func TestStackWalk(t *testing.T) {
	t.Parallel()
	began := time.Now()
	hosts := newStackHosts(t)
	k6Scenario := envOr("STACK_K6_SCENARIO", "smoke")

	// The backends first, so they stop last (t.Cleanup runs in reverse).
	jaegerOTLP, jaegerQuery := freePort(t), freePort(t)
	jaegerHealth := freePort(t)
	jaegerCmd := exec.Command(jaegerProgram.get(t, "bash", "../scripts/build-tool.sh", "jaeger"), "--config=../deploy/jaeger/config.yaml")
	jaegerCmd.Env = append(os.Environ(), "JAEGER_OTLP_HTTP_ENDPOINT="+jaegerOTLP, "JAEGER_UI_ENDPOINT="+jaegerQuery,
		"JAEGER_HEALTH_ENDPOINT="+jaegerHealth, "JAEGER_QUERY_GRPC_ENDPOINT="+freePort(t))
	jaeger := startBackend(t, "jaeger", jaegerCmd, "http://"+jaegerHealth+"/status")
	store := "http://" + jaegerQuery

	lokiAddr := hosts.addr["loki"]
	lokiDir := t.TempDir()
	_, lokiGRPCPort, _ := net.SplitHostPort(freePort(t))
	lokiArgs := composeArgs(t, "loki", map[string]string{"/etc/loki/loki.yaml": "../deploy/loki/loki.yaml"})
	lokiCmd := exec.Command(lokiProgram.get(t, "bash", "../scripts/build-tool.sh", "loki"), append(lokiArgs,
		// gRPC, which only Loki's own components use, where loki.yaml's
		// instance_addr (127.0.0.1) says, on a port of this run's.
		"-server.http-listen-address="+lokiAddr, "-server.grpc-listen-address=127.0.0.1", "-server.grpc-listen-port="+lokiGRPCPort,
		"-common.path-prefix="+lokiDir,
		"-common.storage.filesystem.chunk-directory="+filepath.Join(lokiDir, "chunks"),
		"-common.storage.filesystem.rules-directory="+filepath.Join(lokiDir, "rules"))...)
	loki := startBackend(t, "loki", lokiCmd, "http://"+lokiAddr+":3100/ready")
	lokiURL := "http://" + lokiAddr + ":3100"

	// Prometheus with the compose file's command, but for where it listens
	// and keeps its data.
	promAddr := hosts.addr["localhost"] + ":9090"
	promArgs := composeArgs(t, "prometheus", map[string]string{
		"/etc/prometheus/prometheus.yml": "../deploy/prometheus/prometheus.yml", "/prometheus": t.TempDir()})
	promCmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /etc/hosts && exec "$@"`, hosts.file, prometheusBinary(t)},
		append(promArgs, "--web.listen-address="+promAddr)...)...)
	prom := startBackend(t, "prometheus", promCmd, "http://"+promAddr+"/-/ready")
	promURL := "http://" + promAddr

	col := startCollector(t, map[string]string{
		"COLLECTOR_METRICS_HOST":   hosts.addr["otel-collector"],
		"COLLECTOR_METRICS_PORT":   "8888",
		"TEMPO_OTLP_ENDPOINT":      "http://" + jaegerOTLP,
		"LOKI_OTLP_ENDPOINT":       lokiURL + "/otlp",
		"PROMETHEUS_OTLP_ENDPOINT": promURL + "/api/v1/otlp",
	})

	// The services, exporting to the collector as in compose.
	e := newEnv(t)
	scenarios := filepath.Join(t.TempDir(), "scenarios.json")
	if err := scenario.WriteFile(scenarios, scenario.Defaults()); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"DATABASE_URL": e.DatabaseURL, "REDIS_URL": redisURL, "AMQP_URL": e.AMQPURL,
		"SCENARIOS_FILE": scenarios, "SCENARIOS_POLL": "50ms", "PAYMENT_TIMEOUT": "300ms",
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_METRIC_EXPORT_INTERVAL": "5000",
	}
	orders := start(t, "orders", vars)
	fulfillment := start(t, "fulfillment", vars)
	gwVars := maps.Clone(vars)
	gwVars["ORDERS_URL"] = orders.URL()
	gateway := start(t, "gateway", gwVars)

	// Traffic: orders that succeed, are refused (4xx) and fail (5xx).
	var mine []walkOrder
	post := func(body string) walkOrder {
		resp, err := testClient.Post(gateway.URL()+"/api/orders", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		o := walkOrder{traceIDFromHeader(t, resp.Header), resp.StatusCode}
		mine = append(mine, o)
		return o
	}
	for range 3 {
		if o := post(scenarioOrder); o.status != http.StatusCreated {
			t.Fatalf("an order answered %d, want 201", o.status)
		}
	}
	for _, bad := range []string{`{"customer_id":"c","items":[{"sku":"NO-SUCH-SKU","quantity":1}]}`, `{"customer_id":`,
		`{"customer_id":"c","items":[{"sku":"LIMITED-ROAST","quantity":6}]}`} {
		if o := post(bad); o.status < 400 || o.status >= 500 {
			t.Fatalf("a bad order answered %d, want a 4xx", o.status)
		}
	}
	setScenario := func(on bool) {
		if err := scenario.Set(scenarios, scenario.PaymentTimeouts, on); err != nil {
			t.Fatal(err)
		}
		want := scenario.Defaults().Flags[scenario.PaymentTimeouts].Variants[map[bool]string{true: "on", false: "off"}[on]]
		waitUntil(t, patience, "orders to load payment-timeouts", func() (bool, error) {
			loaded, err := orders.tryScenarios()
			return err == nil && loaded[scenario.PaymentTimeouts] == want, err
		})
	}
	setScenario(true)
	for range 2 {
		if o := post(scenarioOrder); o.status < 500 {
			t.Fatalf("an order with the payment provider hanging answered %d, want a 5xx", o.status)
		}
	}
	setScenario(false)

	// k6's own script, unmodified, through a proxy that notes its trace IDs;
	// its thresholds fail the run (exit code 99) when crossed.
	var k6Traces traceRecorder
	results := t.TempDir()
	k6 := exec.Command(k6Program.get(t, "bash", "../scripts/build-tool.sh", "k6"),
		"run", "--quiet", "--out", "experimental-prometheus-rw", "../loadtest/k6/"+k6Scenario+".js")
	k6.Env = append(os.Environ(), "BASE_URL="+k6Traces.proxy(t, gateway.URL()), "RESULTS_DIR="+results,
		"K6_PROMETHEUS_RW_SERVER_URL="+promURL+"/api/v1/write", "K6_PROMETHEUS_RW_TREND_STATS=p(95),p(99),avg",
		// Every second, not compose's 5 s: smoke.js lasts a few seconds, and
		// a rate needs two samples.
		"K6_PROMETHEUS_RW_PUSH_INTERVAL=1s", "K6_NO_USAGE_REPORT=true")
	var k6Out bytes.Buffer
	k6.Stdout, k6.Stderr = &k6Out, &k6Out
	k6Began := time.Now()
	if err := k6.Run(); err != nil {
		t.Fatalf("k6 run %s.js: %v (exit code 99: a threshold was crossed)\n%s", k6Scenario, err, k6Out.String())
	}
	t.Logf("k6 %s.js: thresholds held, %d requests in %s", k6Scenario, len(k6Traces.IDs()), time.Since(k6Began).Round(time.Second))
	if _, err := os.Stat(filepath.Join(results, "summary-"+k6Scenario+".json")); err != nil {
		t.Errorf("k6 wrote no summary: %v", err)
	}
	if len(k6Traces.IDs()) < 10 {
		t.Fatalf("k6 sent %d traced requests, want its journeys' (10 or more)", len(k6Traces.IDs()))
	}

	// Every trace, ours and k6's, whole enough to be found in the store.
	var want []string
	for _, o := range mine {
		want = append(want, o.traceID)
	}
	want = append(want, k6Traces.IDs()...)
	waitUntil(t, 2*time.Minute, "every trace in the trace store", func() (bool, error) {
		var missing []string
		for _, id := range want {
			if !jaegerHas(store, id) {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return false, fmt.Errorf("%d of %d traces not in Jaeger, such as %s", len(missing), len(want), missing[0])
		}
		return true, nil
	})

	// Each order's log lines, found by the very query Grafana runs from a
	// span (traces to logs), and the derived fields finding its trace in
	// every record.
	prov := readProvisioning(t)
	for _, o := range mine {
		query := strings.ReplaceAll(prov.tracesToLogs, "${__trace.traceId}", o.traceID)
		var records []lokiRecord
		waitUntil(t, patience, fmt.Sprintf("the logs of a %d order's trace in Loki", o.status), func() (bool, error) {
			var err error
			records, err = lokiQuery(lokiURL, query, began)
			return err == nil && len(records) > 0, err
		})
		for _, f := range prov.derivedFields {
			for _, r := range records {
				if got := f.extract(r); got != o.traceID {
					t.Errorf("derived field %q extracts %q, want %s, from the record %q %v", f.Name, got, o.traceID, r.Line, r.Labels)
				}
			}
		}
		if o.status >= 400 && o.status < 500 && !slices.ContainsFunc(records, func(r lokiRecord) bool {
			return r.Line == "request refused" && r.Labels["severity_text"] == "WARN"
		}) {
			t.Errorf("the trace of a refused order (%d) has no warning in Loki: %+v", o.status, records)
		}
	}

	// Every Prometheus query of every dashboard panel returns data, but for
	// the metrics of Tempo's service graph, which only Tempo writes.
	files, _ := filepath.Glob("../deploy/grafana/dashboards/*.json")
	type panelQuery struct{ file, expr string }
	var queries, needTempo []panelQuery
	for _, f := range files {
		for _, expr := range dashboardExprs(t, f) {
			q := panelQuery{filepath.Base(f), expr}
			if slices.ContainsFunc(promQLMetrics(expr), func(m string) bool { return slices.Contains(tempoServiceGraphMetrics, m) }) {
				needTempo = append(needTempo, q)
				continue
			}
			queries = append(queries, q)
		}
	}
	// Alerts only have series while pending or firing, and none is on a
	// healthy walk: TestStackAlertSDKSpansDropped shows the states.
	queries = slices.DeleteFunc(queries, func(q panelQuery) bool { return strings.HasPrefix(q.expr, "ALERTS{") })
	waitUntil(t, 2*time.Minute, "every dashboard query to return data", func() (bool, error) {
		var empty []string
		for _, q := range queries {
			n, err := promResult(promURL, grafanaVars.Replace(q.expr))
			if err != nil {
				return false, err
			}
			if n == 0 {
				empty = append(empty, q.file+": "+q.expr)
			}
		}
		if len(empty) > 0 {
			return false, fmt.Errorf("%d of %d queries return nothing:\n  %s", len(empty), len(queries), strings.Join(empty, "\n  "))
		}
		return true, nil
	})
	for _, q := range needTempo {
		t.Logf("needs Tempo's service graph: %s: %s", q.file, q.expr)
	}
	t.Logf("dashboards: %d queries returned data; %d need Tempo's service graph", len(queries), len(needTempo))

	// Exemplars lead to traces the store holds.
	var exemplars []string
	waitUntil(t, patience, "exemplars of the span metrics", func() (bool, error) {
		var err error
		exemplars, err = exemplarTraceIDs(promURL, "traces_span_metrics_duration_milliseconds_bucket", began)
		return err == nil && len(exemplars) > 0, err
	})
	sort.Strings(exemplars)
	exemplars = slices.Compact(exemplars)
	for _, id := range exemplars[:min(len(exemplars), 20)] {
		if !jaegerHas(store, id) {
			t.Errorf("exemplar trace %s is not in the trace store", id)
		}
	}
	t.Logf("exemplars: %d traces, the first %d found in the store", len(exemplars), min(len(exemplars), 20))

	// Memory at its peak, for the limits of docker-compose.yml.
	peaks := map[string]int64{}
	for name, pid := range map[string]int{"jaeger": jaeger.cmd.Process.Pid, "loki": loki.cmd.Process.Pid,
		"prometheus": prom.cmd.Process.Pid, "otel-collector": col.cmd.Process.Pid, "gateway": gateway.cmd.Process.Pid,
		"orders": orders.cmd.Process.Pid, "fulfillment": fulfillment.cmd.Process.Pid} {
		peaks[name] = int64(pidUsage(pid).PeakKB) << 10
	}
	writePeaks(t, k6Scenario, peaks)

	// Each backend stops within the grace period compose gives it, a query
	// in flight, once the services and the collector have flushed to it.
	for _, p := range []*process{gateway, orders, fulfillment} {
		p.Stop(t)
	}
	col.stop(t)
	for _, b := range []struct {
		b       *backend
		service string
		query   string
	}{
		{loki, "loki", lokiURL + "/loki/api/v1/query_range?query=" + url.QueryEscape(`sum by (service_name) (count_over_time({service_name=~".+"}[1m]))`)},
		{prom, "prometheus", promURL + "/api/v1/query?query=" + url.QueryEscape(`count by (__name__) ({__name__=~".+"})`)},
		{jaeger, "jaeger", store + "/api/traces/" + want[0]},
	} {
		took := b.b.stopQuerying(t, b.query)
		if grace := composeGrace(t, b.service); took > grace {
			t.Errorf("%s took %s to stop, past the %s compose gives it: docker compose stop would kill it", b.service, took.Round(time.Millisecond), grace)
		} else {
			t.Logf("%s stopped in %s, a query in flight (compose gives it %s)", b.service, took.Round(time.Millisecond), grace)
		}
	}
}

// writePeaks logs the peak memory of each program and writes it to
// bin/stack-memory-SCENARIO.json, which make stack-memory reads.
func writePeaks(t *testing.T, scenario string, peaks map[string]int64) {
	t.Helper()
	var lines []string
	mib := map[string]float64{}
	for _, name := range slices.Sorted(maps.Keys(peaks)) {
		mib[name] = float64(peaks[name]) / (1 << 20)
		lines = append(lines, fmt.Sprintf("%s %.0f MiB", name, mib[name]))
	}
	t.Logf("peak memory (VmHWM) after k6 %s.js: %s", scenario, strings.Join(lines, ", "))
	out, _ := json.MarshalIndent(map[string]any{"scenario": scenario, "peak_mib": mib, "measured": time.Now().UTC().Format(time.RFC3339)}, "", "  ")
	if err := os.MkdirAll("../bin", 0o755); err == nil {
		_ = os.WriteFile("../bin/stack-memory-"+scenario+".json", append(out, '\n'), 0o644)
	}
}
