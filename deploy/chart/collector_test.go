package chart

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// collectorBinary builds (or finds in the cache) the collector of
// deploy/otel-collector/builder.yaml: the compose image's version, with the
// components of the stack's configuration.
func collectorBinary(t *testing.T) string {
	t.Helper()
	var out, stderr bytes.Buffer
	cmd := exec.Command("bash", "../../scripts/build-collector.sh")
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build-collector.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(out.String())
}

// collectorRun is what one collector of the chart runs: its configuration
// files in --config order (from its ConfigMap) and its environment.
type collectorRun struct {
	workload workload
	names    []string
	files    [][]byte
	env      map[string]string
}

// collector returns the run of the collector workload of a component,
// collector-agent or collector-gateway. Values the cluster fills in (the
// pod's name, the node's, a Secret's) get stand-ins.
func (c chart) collector(t *testing.T, component string) collectorRun {
	t.Helper()
	w := c.component(t, component)
	ctr := w.Pod.Spec.Containers[0]
	var configMap string
	for _, v := range w.Pod.Spec.Volumes {
		if v.ConfigMap != nil && v.Name == "config" {
			configMap = v.ConfigMap.Name
		}
	}
	cm := c.configMap(t, configMap)
	run := collectorRun{workload: w, env: map[string]string{}}
	for _, arg := range ctr.Args {
		file, ok := strings.CutPrefix(arg, "--config=/etc/otelcol/")
		if !ok {
			t.Fatalf("%s: argument %q is not a file of its ConfigMap", w.Name, arg)
		}
		data, ok := cm.Data[file]
		if !ok {
			t.Fatalf("%s: --config %s is not in ConfigMap %s", w.Name, file, cm.Name)
		}
		run.names = append(run.names, file)
		run.files = append(run.files, []byte(data))
	}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			run.env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			run.env[e.Name] = w.Name + "-0"
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			run.env[e.Name] = "node-a"
		case e.ValueFrom.SecretKeyRef != nil:
			run.env[e.Name] = "from-the-secret"
		default:
			t.Fatalf("%s: %s comes from %+v, which this test cannot stand in for", w.Name, e.Name, e.ValueFrom)
		}
	}
	return run
}

// merged merges the run's files as the collector does: maps key by key,
// lists replaced.
func (r collectorRun) merged(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	for i, f := range r.files {
		var m map[string]any
		if err := yaml.Unmarshal(f, &m); err != nil {
			t.Fatalf("%s: %v", r.names[i], err)
		}
		out = mergeMaps(out, m)
	}
	return out
}

// environ is the run's environment for a collector process on this machine.
func (r collectorRun) environ() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range r.env {
		env = append(env, k+"="+v)
	}
	return env
}

var envRef = regexp.MustCompile(`\$\{env:([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// The chart and the configurations agree on the variables: each variable a
// configuration reads without a default is set, and each one the chart sets
// is read (GOMEMLIMIT is the Go runtime's).
func TestCollectorVariablesAgree(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		for _, component := range []string{"collector-agent", "collector-gateway"} {
			run := c.collector(t, component)
			read := map[string]bool{}
			for i, f := range run.files {
				for _, m := range envRef.FindAllStringSubmatch(string(f), -1) {
					read[m[1]] = true
					if _, set := run.env[m[1]]; m[2] == "" && !set {
						t.Errorf("%s: %s reads ${env:%s}, which the chart does not set", component, run.names[i], m[1])
					}
				}
			}
			for name := range run.env {
				if !read[name] && name != "GOMEMLIMIT" {
					t.Errorf("%s: the chart sets %s, which no configuration file reads", component, name)
				}
			}
		}
	})
}

// The gateway tier runs the stack's own configuration: the chart's copies of
// deploy/otel-collector/config.yaml and secure.yaml are those files.
func TestGatewayTierRunsTheStacksConfig(t *testing.T) {
	for copyName, original := range map[string]string{
		"collector-gateway.yaml":        "../otel-collector/config.yaml",
		"collector-gateway-secure.yaml": "../otel-collector/secure.yaml",
	} {
		want, err := os.ReadFile(original)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartDir, "files", copyName))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s: copy it again (cp %s deploy/chart/ordertrace/files/%s)", copyName, original, strings.TrimPrefix(original, "../"), copyName)
		}
	}
}

// Both tiers' configurations, as the chart renders them for each value set,
// pass `otelcol validate` of the collector the tests build. That collector
// lacks the loadbalancing exporter (the module proxy here does not serve it),
// so the agent's is validated as the OTLP exporter it builds for each
// backend, and its own settings are checked by the next test.
func TestCollectorConfigsValidate(t *testing.T) {
	bin := collectorBinary(t)
	t.Log("the loadbalancing exporter is not in the collector of deploy/otel-collector/builder.yaml, nor served by the module proxy here: " +
		"the agent is validated with it swapped for an otlp_grpc exporter to the same address, with its protocol.otlp, timeout, retry and queue settings; " +
		"its own keys are checked against its documented configuration (TestLoadBalancerRoutesByTraceIDToTheHeadlessService)")
	eachValueSet(t, func(t *testing.T, c chart) {
		gw := c.collector(t, "collector-gateway")
		dir := t.TempDir()
		var args []string
		for i, f := range gw.files {
			path := filepath.Join(dir, "gateway-"+gw.names[i])
			if err := os.WriteFile(path, f, 0o644); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--config="+path)
		}
		validate(t, bin, gw, "gateway tier "+strings.Join(gw.names, " + "), args...)

		agent := c.collector(t, "collector-agent")
		cfg := agent.merged(t)
		path := filepath.Join(dir, "agent.yaml")
		writeYAML(t, path, cfg)
		out, err := exec.Command(bin, "validate", "--config="+path).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "loadbalancing") {
			t.Errorf("the collector accepted the loadbalancing exporter, or refused something else: %v\n%s", err, out)
		}
		swapped := swapLoadBalancer(t, cfg)
		writeYAML(t, path, swapped)
		validate(t, bin, agent, "agent "+strings.Join(agent.names, " + ")+", loadbalancing as otlp_grpc", "--config="+path)
	})
}

func validate(t *testing.T, bin string, run collectorRun, what string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"validate"}, args...)...)
	cmd.Env = run.environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("otelcol validate, %s: %v\n%s", what, err, out)
		return
	}
	t.Logf("otelcol validate, %s: exit 0", what)
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// swapLoadBalancer returns cfg with the loadbalancing exporter replaced by
// the exporter it builds for each backend: an OTLP gRPC exporter with its
// protocol.otlp settings, its own timeout, retry and queue settings, and the
// first resolved address (the resolver's service, at its first port).
func swapLoadBalancer(t *testing.T, cfg map[string]any) map[string]any {
	t.Helper()
	exporters := cfg["exporters"].(map[string]any)
	lb := exporters["loadbalancing"].(map[string]any)
	otlp := mergeMaps(nil, lb["protocol"].(map[string]any)["otlp"].(map[string]any))
	for _, key := range []string{"timeout", "retry_on_failure", "sending_queue"} {
		if v, ok := lb[key]; ok {
			otlp[key] = v
		}
	}
	k8s := lb["resolver"].(map[string]any)["k8s"].(map[string]any)
	otlp["endpoint"] = fmt.Sprintf("%s:%v", k8s["service"], k8s["ports"].([]any)[0])
	delete(exporters, "loadbalancing")
	exporters["otlp_grpc/loadbalancing"] = otlp
	for _, p := range cfg["service"].(map[string]any)["pipelines"].(map[string]any) {
		list := p.(map[string]any)["exporters"].([]any)
		for i, e := range list {
			if e == "loadbalancing" {
				list[i] = "otlp_grpc/loadbalancing"
			}
		}
	}
	return cfg
}

// loadBalancingKeys are the settings of the loadbalancing exporter, as
// exporter/loadbalancingexporter/config.go of opentelemetry-collector-contrib
// declares them in the 0.15x releases: the routing key, the OTLP template,
// the resolvers and the exporter helper's timeout, retry and queue.
var loadBalancingKeys = map[string][]string{
	"":                       {"routing_key", "routing_attributes", "protocol", "resolver", "timeout", "retry_on_failure", "sending_queue"},
	"protocol":               {"otlp"},
	"resolver":               {"static", "dns", "k8s", "aws_cloud_map"},
	"resolver.k8s":           {"service", "ports", "timeout", "return_hostnames"},
	"resolver.dns":           {"hostname", "port", "interval", "timeout"},
	"resolver.static":        {"hostnames"},
	"resolver.aws_cloud_map": {"namespace", "service_name", "health_status", "interval", "timeout", "port"},
}

// The agent routes spans by trace ID, over OTLP, to the pods behind the
// gateway tier's headless Service, which the chart renders with the port the
// resolver dials.
func TestLoadBalancerRoutesByTraceIDToTheHeadlessService(t *testing.T) {
	eachValueSet(t, func(t *testing.T, c chart) {
		agent := c.collector(t, "collector-agent")
		lb, ok := agent.merged(t)["exporters"].(map[string]any)["loadbalancing"].(map[string]any)
		if !ok {
			t.Fatal("the agent has no loadbalancing exporter")
		}
		for section, keys := range loadBalancingKeys {
			m := lb
			for _, part := range strings.Split(section, ".") {
				if part != "" {
					m, _ = m[part].(map[string]any)
				}
			}
			for k := range m {
				if !slices.Contains(keys, k) {
					t.Errorf("loadbalancing %s: %q is not a setting of the exporter", section, k)
				}
			}
		}
		if lb["routing_key"] != "traceID" {
			t.Errorf("routing_key = %v, want traceID: a tail sampler needs every span of a trace", lb["routing_key"])
		}
		otlp, _ := lb["protocol"].(map[string]any)["otlp"].(map[string]any)
		if otlp == nil {
			t.Fatal("no protocol.otlp: the exporter has no template for its backends")
		}
		if _, set := otlp["endpoint"]; set {
			t.Error("protocol.otlp.endpoint is set: the exporter replaces it with each backend's address")
		}
		resolver := lb["resolver"].(map[string]any)
		if len(resolver) != 1 || resolver["k8s"] == nil {
			t.Fatalf("resolver %v, want the k8s resolver alone", resolver)
		}
		k8s := resolver["k8s"].(map[string]any)
		service := envRef.ReplaceAllStringFunc(k8s["service"].(string), func(ref string) string {
			return agent.env[envRef.FindStringSubmatch(ref)[1]]
		})
		name, ns, _ := strings.Cut(service, ".")
		if ns != namespace {
			t.Errorf("the resolver watches %q, outside the release's namespace %s", service, namespace)
		}
		svc := c.service(name)
		if svc == nil {
			t.Fatalf("the resolver watches Service %s, which the chart does not render", name)
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("Service %s is not headless", name)
		}
		gateway := c.component(t, "collector-gateway")
		if !subset(svc.Spec.Selector, gateway.Pod.Labels) {
			t.Errorf("Service %s selects %v, not the gateway tier's pods", name, svc.Spec.Selector)
		}
		for _, p := range k8s["ports"].([]any) {
			port := int32(p.(float64))
			i := slices.IndexFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == port })
			if i < 0 || !declares(gateway.Pod.Spec.Containers[0], svc.Spec.Ports[i].TargetPort) {
				t.Errorf("the resolver dials port %d, which Service %s does not lead to a gateway-tier container port", port, name)
			}
		}
	})
}

// The gateway tier's configuration, run by the collector the tests build:
// a span goes in, and out come the span and its span metrics, whose series
// carry the collector's pod name as collector.instance.id. That is what keeps
// the series of the tier's collectors apart in Prometheus.
func TestSpanMetricsNameTheirCollector(t *testing.T) {
	bin := collectorBinary(t)
	run := renderChart(t, "").collector(t, "collector-gateway")
	backends := newFakeBackends(t)
	backends.receive(run)
	p := listenOnFreePorts(t, run)
	instance := run.env["POD_NAME"]
	startCollector(t, bin, run)

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post("http://"+p.http+"/v1/traces", "application/json", strings.NewReader(testSpan("order.process")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the collector answered the span with %s", resp.Status)
	}
	backends.waitFor(t, "/prometheus/v1/metrics", "order.process", "collector.instance.id", instance)
	backends.waitFor(t, "/tempo/v1/traces", "order.process")
	t.Logf("span metrics of order.process carry collector.instance.id=%s; the span reached Tempo", instance)
}

// fakeBackends stands in for Tempo, Loki and Prometheus: it takes whatever a
// collector exports to them and keeps it, unpacked, by path.
type fakeBackends struct {
	url      string
	mu       sync.Mutex
	received map[string][]byte
}

func newFakeBackends(t *testing.T) *fakeBackends {
	t.Helper()
	b := &fakeBackends{received: map[string][]byte{}}
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, _ := io.ReadAll(body)
		b.mu.Lock()
		b.received[r.URL.Path] = append(b.received[r.URL.Path], raw...)
		b.mu.Unlock()
	}))
	t.Cleanup(server.Close)
	b.url = server.URL
	return b
}

// receive points a gateway-tier collector's exports here, and makes it flush
// span metrics and decide traces within a second.
func (b *fakeBackends) receive(run collectorRun) {
	run.env["TEMPO_OTLP_ENDPOINT"] = b.url + "/tempo"
	run.env["LOKI_OTLP_ENDPOINT"] = b.url + "/loki"
	run.env["PROMETHEUS_OTLP_ENDPOINT"] = b.url + "/prometheus"
	run.env["SPANMETRICS_FLUSH_INTERVAL"] = "1s"
	run.env["TRACE_DECISION_WAIT"] = "1s"
}

// waitFor waits until what arrived at path holds every one of want (OTLP's
// protobuf keeps strings as they are).
func (b *fakeBackends) waitFor(t *testing.T, path string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b.mu.Lock()
		got := b.received[path]
		missing := slices.IndexFunc(want, func(w string) bool { return !bytes.Contains(got, []byte(w)) })
		b.mu.Unlock()
		if missing < 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing at %s with %q within 30s (%d bytes arrived)", path, want[missing], len(got))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// freePorts returns n addresses on the loopback interface that were free a
// moment ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return addrs
}

// syncBuffer is a bytes.Buffer a process writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitFor(t *testing.T, limit time.Duration, what string, logs *syncBuffer, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s; the collector's log:\n%s", what, limit, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
