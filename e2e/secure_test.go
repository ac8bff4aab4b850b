package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestSecureTelemetry runs the secure telemetry path for real: certificates
// and credentials from deploy/cmd/certs, the collector on config.yaml with
// secure.yaml merged over it (OTLP only over mutual TLS, with a basicauth
// credential), its backends served over TLS, and the services configured by
// the SDK's standard variables only. A service with the right certificate
// and credential gets its trace through; a wrong credential, a missing
// client certificate or a plaintext endpoint is refused, while the service
// goes on taking orders and its SDK counts what it could not export. No
// credential or key appears in any log line, and the refusals as the SDK and
// the collector log them are written to bin/secure-refusals.txt.
func TestSecureTelemetry(t *testing.T) {
	t.Parallel()
	certs := makeCerts(t)
	col := startSecureCollector(t, certs)

	// refusal is what the service's SDK says when its export is refused, and
	// what the collector logs about it ("" for nothing). A refused handshake
	// reaches the SDK as whatever broke first on its side (the HTTP/2
	// connection, a reset), so there the collector's line names the reason.
	type refusal struct{ sdk, collector string }
	cases := []struct {
		name    string
		vars    func(service string) map[string]string
		refused *refusal
	}{
		{
			name: "right certificate and credential, OTLP/HTTP",
			vars: func(service string) map[string]string { return exportVars(certs, col.HTTP, service) },
		},
		{
			name: "right certificate and credential, OTLP/gRPC",
			vars: func(service string) map[string]string {
				v := exportVars(certs, col.GRPC, service)
				v["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
				return v
			},
		},
		{
			name: "wrong credential",
			vars: func(service string) map[string]string {
				v := exportVars(certs, col.HTTP, service)
				v["OTEL_EXPORTER_OTLP_HEADERS"] = "Authorization=Basic%20" + base64.StdEncoding.EncodeToString([]byte(service+":"+wrongPassword))
				return v
			},
			refused: &refusal{sdk: "401 Unauthorized"},
		},
		{
			name: "no client certificate",
			vars: func(service string) map[string]string {
				v := exportVars(certs, col.HTTP, service)
				delete(v, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
				delete(v, "OTEL_EXPORTER_OTLP_CLIENT_KEY")
				return v
			},
			refused: &refusal{sdk: "traces export: ", collector: "client didn't provide a certificate"},
		},
		{
			name: "plaintext endpoint",
			// With its credential, but no TLS at all: with TLS files and an
			// http:// endpoint, the SDK would refuse to start ("insecure
			// HTTP endpoint cannot use TLS client configuration").
			vars: func(service string) map[string]string {
				v := exportVars(certs, strings.Replace(col.HTTP, "https://", "http://", 1), service)
				return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": v["OTEL_EXPORTER_OTLP_ENDPOINT"], "OTEL_EXPORTER_OTLP_HEADERS": v["OTEL_EXPORTER_OTLP_HEADERS"]}
			},
			refused: &refusal{sdk: "traces export: ", collector: "client sent an HTTP request to an HTTPS server"},
		},
	}

	var (
		transcript strings.Builder
		refusedIDs []string // trace IDs of orders whose export was refused
		processes  []*process
	)
	order := `{"customer_id":"c-secure","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The SDK's own counters go straight to a receiver of their own,
			// so they arrive whatever happens to the spans. Over TLS: the SDK
			// refuses TLS files with an http:// endpoint.
			metrics := newTLSReceiver(t, filepath.Join(certs, "prometheus.crt"), filepath.Join(certs, "prometheus.key"))
			collectorBefore := len(col.Lines())
			s := startSecureStack(t, certs, metrics, tc.refused == nil, tc.vars)
			processes = append(processes, s.gateway, s.orders)

			var traceIDs []string
			for range 3 {
				status, h, _ := s.placeOrder(t, order, nil)
				if status != http.StatusCreated {
					t.Fatalf("place an order: status %d, want 201", status)
				}
				traceIDs = append(traceIDs, traceIDFromHeader(t, h))
			}

			if tc.refused == nil {
				waitTrace(t, col.backends, traceIDs[0],
					spanKey{"gateway", server, "POST /api/orders"},
					spanKey{"orders", server, "POST /orders"},
					spanKey{"fulfillment", consumer, "process orders:order.created:fulfillment.order-created"})
				for _, service := range []string{"gateway", "orders", "fulfillment"} {
					waitFor(t, patience, service+"'s log records at the backend", func() bool {
						return slices.ContainsFunc(col.backends.Logs(), func(l logRecord) bool { return l.Service == service })
					})
					waitUntil(t, patience, service+"'s SDK counting exported spans", func() (bool, error) {
						ok, failed := exportedSpans(metrics, service)
						if failed > 0 {
							return false, fmt.Errorf("%d spans failed to export", failed)
						}
						return ok > 0, nil
					})
				}
				processes = append(processes, s.fulfillment)
				return
			}

			refusedIDs = append(refusedIDs, traceIDs...)
			for _, service := range []string{"gateway", "orders"} {
				waitUntil(t, patience, service+"'s SDK counting spans that failed to export", func() (bool, error) {
					ok, failed := exportedSpans(metrics, service)
					if ok > 0 {
						return false, fmt.Errorf("%d spans exported, want none", ok)
					}
					return failed > 0, nil
				})
			}
			var sdkLine string
			waitFor(t, patience, "the gateway's SDK logging the refused export", func() bool {
				sdkLine = sdkWarning(s.gateway, "traces")
				return sdkLine != ""
			})
			if !strings.Contains(sdkLine, tc.refused.sdk) {
				t.Errorf("the SDK logged\n%s\nwant it to say %q", sdkLine, tc.refused.sdk)
			}
			var collectorLines []string // its refusals, without the stack trace it logs under each
			if tc.refused.collector != "" {
				waitFor(t, patience, "the collector logging the refusal", func() bool {
					collectorLines = slices.DeleteFunc(col.Lines()[collectorBefore:], func(l string) bool { return !strings.Contains(l, tc.refused.collector) })
					return len(collectorLines) > 0
				})
			}
			collectorLog := "(nothing: the 401 answer is the whole refusal)"
			if len(collectorLines) > 0 {
				collectorLog = fmt.Sprintf("%s\n(and %d more like it, one per refused connection)", collectorLines[0], len(collectorLines)-1)
			}
			// Refused, and still taking orders.
			status, h, _ := s.placeOrder(t, order, nil)
			if status != http.StatusCreated {
				t.Fatalf("an order after the refusals: status %d, want 201", status)
			}
			refusedIDs = append(refusedIDs, traceIDFromHeader(t, h))
			fmt.Fprintf(&transcript, "## %s\n\nservice (gateway) SDK:\n%s\n\ncollector:\n%s\n\n", tc.name, sdkLine, collectorLog)
			t.Logf("the gateway's SDK: %s", sdkLine)
			t.Logf("the collector: %s", collectorLog)
		})
	}

	// Each case's services stopped, flushing what they could, when its
	// subtest ended; stopped in turn, the collector has exported all it
	// accepted. Only now does "no span of a refused order arrived" hold.
	col.stop(t)
	for _, id := range refusedIDs {
		if spans := col.backends.Trace(id); len(spans) > 0 {
			t.Errorf("a refused export reached the backend: trace %s:\n%s", id, tree(spans))
		}
	}

	// No credential, and no private key, in any log line.
	secrets := certSecrets(t, certs)
	logs := col.Lines()
	for _, p := range processes {
		logs = append(logs, p.Lines()...)
	}
	for _, line := range logs {
		for _, secret := range secrets {
			if strings.Contains(line, secret) {
				t.Errorf("a log line holds a secret (%d characters of it): %s", len(secret), strings.ReplaceAll(line, secret, "<SECRET>"))
			}
		}
	}
	t.Logf("%d log lines of %d services and the collector checked for %d secrets", len(logs), len(processes), len(secrets))

	if err := os.MkdirAll("../bin", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("../bin/secure-refusals.txt", []byte(transcript.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// wrongPassword is a credential no htpasswd line accepts.
const wrongPassword = "not-the-password-of-this-service"

// exportVars are the variables a service needs for the secure path, all of
// them the SDK's own: the collector's address, the CA that signed its
// certificate, the service's certificate and key, and its credential.
func exportVars(certs, endpoint, service string) map[string]string {
	headers, _ := os.ReadFile(filepath.Join(certs, service+".headers"))
	return map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":           endpoint,
		"OTEL_EXPORTER_OTLP_CERTIFICATE":        filepath.Join(certs, "ca.crt"),
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": filepath.Join(certs, service+".crt"),
		"OTEL_EXPORTER_OTLP_CLIENT_KEY":         filepath.Join(certs, service+".key"),
		"OTEL_EXPORTER_OTLP_HEADERS":            string(headers),
	}
}

// startSecureStack starts orders, fulfillment (when asked) and the gateway
// on a fresh env, each with its own exporter variables from vars, and sends
// their metrics to metrics, a receiver with a certificate of the CA.
func startSecureStack(t *testing.T, certs string, metrics *receiver, withFulfillment bool, vars func(service string) map[string]string) *stack {
	t.Helper()
	e := newEnv(t)
	s := &stack{env: e, otlp: metrics}
	common := map[string]string{
		"DATABASE_URL": e.DatabaseURL,
		"REDIS_URL":    redisURL,
		"AMQP_URL":     e.AMQPURL,
		"LOG_LEVEL":    "debug", // the most a service ever logs, for the secrets check

		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT":    metrics.URL + "/v1/metrics",
		"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL":    "http/protobuf",
		"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE": filepath.Join(certs, "ca.crt"),
		"OTEL_BSP_SCHEDULE_DELAY":                "100",
		"OTEL_BLRP_SCHEDULE_DELAY":               "100",
		"OTEL_METRIC_EXPORT_INTERVAL":            "1000",
		"OTEL_RESOURCE_ATTRIBUTES":               "deployment.environment.name=e2e",
	}
	with := func(service string, extra map[string]string) map[string]string {
		v := maps.Clone(common)
		maps.Copy(v, vars(service))
		maps.Copy(v, extra)
		return v
	}
	s.vars = with("orders", nil)
	s.orders = start(t, "orders", s.vars)
	if withFulfillment {
		s.fulfillment = start(t, "fulfillment", with("fulfillment", nil))
	}
	s.gateway = start(t, "gateway", with("gateway", map[string]string{"ORDERS_URL": s.orders.URL()}))
	return s
}

// exportedSpans reads a service's otel.sdk.exporter.span.exported: the
// spans its exporter delivered, and those it failed to (the series with an
// error.type). Each series is cumulative: its highest point is its total.
func exportedSpans(r *receiver, service string) (ok, failed int) {
	type series struct {
		failed bool
		total  float64
	}
	all := map[string]series{}
	for _, p := range r.Points("otel.sdk.exporter.span.exported") {
		if p.Service == service {
			key := fmt.Sprint(p.Instance, p.Attrs)
			all[key] = series{failed: p.Attrs["error.type"] != "", total: max(all[key].total, p.Value)}
		}
	}
	for _, s := range all {
		if s.failed {
			failed += int(s.total)
		} else {
			ok += int(s.total)
		}
	}
	return ok, failed
}

// sdkWarning returns the first "opentelemetry sdk" line a service logged
// whose error mentions about, or "".
func sdkWarning(p *process, about string) string {
	for _, line := range p.Lines() {
		if strings.Contains(line, `"msg":"opentelemetry sdk"`) && strings.Contains(line, about) {
			return line
		}
	}
	return ""
}

// certSecrets returns what must never be logged: each credential as a
// password, as its base64 value and as the header, and each private key's
// PEM lines.
func certSecrets(t *testing.T, certs string) []string {
	t.Helper()
	var secrets []string
	for _, service := range []string{"gateway", "orders", "fulfillment"} {
		headers, err := os.ReadFile(filepath.Join(certs, service+".headers"))
		if err != nil {
			t.Fatal(err)
		}
		encoded := strings.TrimPrefix(string(headers), "Authorization=Basic%20")
		decoded, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			t.Fatalf("%s.headers: %v", service, err)
		}
		_, password, _ := strings.Cut(string(decoded), ":")
		wrong := base64.StdEncoding.EncodeToString([]byte(service + ":" + wrongPassword))
		secrets = append(secrets, string(headers), encoded, password, wrong, wrongPassword)
	}
	keys, _ := filepath.Glob(filepath.Join(certs, "*.key"))
	for _, key := range keys {
		raw, err := os.ReadFile(key)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				secrets = append(secrets, line)
			}
		}
	}
	return secrets
}

var certsProgram program

// makeCerts runs deploy/cmd/certs (built once) into a directory of the
// test's own, as make certs does into deploy/certs.
func makeCerts(t *testing.T) string {
	t.Helper()
	// go build prints nothing; the echo hands program the binary's path.
	certsBin := certsProgram.get(t, "sh", "-c", `go build -o "$0" ../deploy/cmd/certs && echo "$0"`, filepath.Join(binDir, "certs"))
	dir := t.TempDir()
	if out, err := exec.Command(certsBin, "-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("certs: %v\n%s", err, out)
	}
	return dir
}

// secureCollector is the collector on config.yaml with secure.yaml merged
// over it, its three backends one in-test receiver served over TLS with
// tempo.crt.
type secureCollector struct {
	HTTP, GRPC string // https:// URLs of its OTLP receivers
	backends   *receiver

	cmd  *exec.Cmd
	done chan struct{}
	logs lockedBuffer
}

func startSecureCollector(t *testing.T, certs string) *secureCollector {
	t.Helper()
	bin := collectorBinary(t)
	backends := newTLSReceiver(t, filepath.Join(certs, "tempo.crt"), filepath.Join(certs, "tempo.key"))
	httpAddr, grpcAddr, healthAddr, metricsAddr := freePort(t), freePort(t), freePort(t), freePort(t)
	_, metricsPort, _ := net.SplitHostPort(metricsAddr)
	env := map[string]string{
		"CERTS_DIR":                    certs,
		"COLLECTOR_OTLP_GRPC_ENDPOINT": grpcAddr,
		"COLLECTOR_OTLP_HTTP_ENDPOINT": httpAddr,
		"COLLECTOR_HEALTH_ENDPOINT":    healthAddr,
		"COLLECTOR_PPROF_ENDPOINT":     freePort(t),
		"COLLECTOR_METRICS_HOST":       "127.0.0.1",
		"COLLECTOR_METRICS_PORT":       metricsPort,
		"TEMPO_OTLP_ENDPOINT":          backends.URL,
		"LOKI_OTLP_ENDPOINT":           backends.URL,
		"PROMETHEUS_OTLP_ENDPOINT":     backends.URL,
		"TRACE_DECISION_WAIT":          "1s",
		"SPANMETRICS_FLUSH_INTERVAL":   "1s",
	}
	c := &secureCollector{HTTP: "https://" + httpAddr, GRPC: "https://" + grpcAddr, backends: backends, done: make(chan struct{})}
	c.cmd = exec.Command(bin, "--config=../deploy/otel-collector/config.yaml", "--config=../deploy/otel-collector/secure.yaml")
	c.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		c.cmd.Env = append(c.cmd.Env, k+"="+v)
	}
	c.cmd.Stdout, c.cmd.Stderr = &c.logs, &c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			t.Logf("collector output:\n%s", strings.Join(c.Lines(), "\n"))
		}
	})
	waitUntil(t, startTimeout, "the secure collector's health check", func() (bool, error) {
		select {
		case <-c.done:
			return false, fmt.Errorf("the collector exited:\n%s", strings.Join(c.Lines(), "\n"))
		default:
		}
		err := healthy("http://" + healthAddr + "/")
		return err == nil, err
	})
	return c
}

// Lines returns what the collector has logged so far.
func (c *secureCollector) Lines() []string { return c.logs.Lines() }

func (c *secureCollector) stop(t *testing.T) {
	t.Helper()
	terminate(t, "collector", c.cmd, c.done)
}

// lockedBuffer collects a program's output while the test reads it (String,
// or Lines for the complete lines).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the complete lines written so far.
func (b *lockedBuffer) Lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	text := b.buf.String()
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		return strings.Split(text[:i], "\n")
	}
	return nil
}
