//go:build stack

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

var prometheusProgram program

// prometheusBinary builds (or finds in the cache) Prometheus at the version
// of tools/prometheus/go.mod: 3.14.0, the compose image's.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	return prometheusProgram.get(t, "bash", "../scripts/build-tool.sh", "prometheus")
}

// startPrometheus runs Prometheus on deploy/prometheus/prometheus.yml, as the
// stack does (its OTLP settings, its rule files), but for what a test needs:
// rules evaluated every second, nothing scraped, a port and a data
// directory of its own. It returns the base URL; SIGTERM stops it when t
// ends (startBackend).
func startPrometheus(t *testing.T) string {
	t.Helper()
	bin := prometheusBinary(t)
	cfg := map[string]any{}
	raw, err := os.ReadFile("../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["global"].(map[string]any)["evaluation_interval"] = "1s"
	cfg["scrape_configs"] = []any{} // the metrics arrive over OTLP
	var rules []any
	for _, f := range cfg["rule_files"].([]any) { // relative to the stack's file
		abs, _ := filepath.Abs(filepath.Join("../deploy/prometheus", f.(string)))
		rules = append(rules, abs)
	}
	cfg["rule_files"] = rules
	dir := t.TempDir()
	out, _ := yaml.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), out, 0o644); err != nil {
		t.Fatal(err)
	}

	addr := freePort(t)
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		// The compose file's flags that matter here.
		"--web.enable-otlp-receiver", "--enable-feature=exemplar-storage")
	url := "http://" + addr
	startBackend(t, "prometheus", cmd, url+"/-/ready")
	return url
}

// promAlert is an alert as Prometheus's /api/v1/alerts lists it.
type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"` // pending or firing
}

func prometheusAlerts(url string) ([]promAlert, error) {
	resp, err := testClient.Get(url + "/api/v1/alerts")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct{ Alerts []promAlert } `json:"data"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/api/v1/alerts: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Data.Alerts, nil
}

// blackHole accepts connections and never answers: an OTLP endpoint that
// hangs, the worst case for an exporter (a refused connection fails fast).
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// TestStackAlertSDKSpansDropped proves the alert on lost spans end to end:
// the gateway's span exporter hangs, so its one-span queue overflows and the
// SDK counts the drops; its metrics reach a real Prometheus 3.14.0 over
// OTLP, which evaluates the stack's own rule files until SDKSpansDropped
// fires. In the stack the collector sits between the two; on the metrics'
// path it only adds resource attributes, so the names and labels the rule
// reads are the same.
func TestStackAlertSDKSpansDropped(t *testing.T) {
	t.Parallel()
	prom := startPrometheus(t)

	// The rules evaluated are the repository's own file.
	waitUntil(t, patience, "the stack's rule groups loaded", func() (bool, error) {
		resp, err := testClient.Get(prom + "/api/v1/rules")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var body struct {
			Data struct{ Groups []struct{ Name, File string } }
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return false, err
		}
		for _, g := range body.Data.Groups {
			if g.Name == "telemetry" && strings.HasSuffix(g.File, "deploy/prometheus/rules/telemetry.yml") {
				return true, nil
			}
		}
		return false, fmt.Errorf("groups loaded: %+v", body.Data.Groups)
	})

	// Orders is not needed: each request still makes the gateway's SERVER
	// and CLIENT spans, and answers 503.
	gw := start(t, "gateway", map[string]string{
		"ORDERS_URL":                          "http://" + freePort(t),
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":  blackHole(t) + "/v1/traces",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": prom + "/api/v1/otlp/v1/metrics",
		"OTEL_LOGS_EXPORTER":                  "none",
		"OTEL_BSP_MAX_QUEUE_SIZE":             "1",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE":      "1",
		"OTEL_BSP_SCHEDULE_DELAY":             "100",
		"OTEL_METRIC_EXPORT_INTERVAL":         "1000",
	})

	// Traffic throughout, as a service under load would have.
	stop := make(chan struct{})
	var traffic sync.WaitGroup
	traffic.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if resp, err := testClient.Get(gw.URL() + "/api/products"); err == nil {
				resp.Body.Close()
			}
		}
	})
	t.Cleanup(func() { close(stop); traffic.Wait() })

	// pending first (the rule's for: 1m), then firing.
	began := time.Now()
	var pendingAt time.Duration
	var fired promAlert
	waitUntil(t, 3*time.Minute, "SDKSpansDropped firing in Prometheus", func() (bool, error) {
		alerts, err := prometheusAlerts(prom)
		if err != nil {
			return false, err
		}
		for _, a := range alerts {
			if a.Labels["alertname"] != "SDKSpansDropped" {
				continue
			}
			if a.State == "pending" && pendingAt == 0 {
				pendingAt = time.Since(began)
			}
			if a.State == "firing" {
				fired = a
				return true, nil
			}
		}
		return false, fmt.Errorf("alerts: %+v", alerts)
	})
	firedAt := time.Since(began)
	if pendingAt == 0 {
		t.Error("SDKSpansDropped fired without being pending first: its for: did not hold")
	}
	if fired.Labels["service_name"] != "gateway" || fired.Labels["severity"] != "warning" {
		t.Errorf("firing alert's labels = %v, want service_name=gateway, severity=warning", fired.Labels)
	}
	if fired.Annotations["summary"] != "gateway drops spans before export" || fired.Annotations["runbook"] == "" {
		t.Errorf("firing alert's annotations = %v", fired.Annotations)
	}
	t.Logf("SDKSpansDropped: pending after %s, firing after %s; %s", pendingAt.Round(time.Second), firedAt.Round(time.Second), fired.Annotations["description"])
}

// promValue asks Prometheus for one instant value of query; ok is false
// while the query returns nothing.
func promValue(base, query string) (v float64, ok bool, err error) {
	resp, err := testClient.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"` // [timestamp, "value"]
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, false, err
	}
	switch n := len(body.Data.Result); n {
	case 0:
		return 0, false, nil
	case 1:
		s, _ := body.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		return v, err == nil, err
	default:
		return 0, false, fmt.Errorf("%s: %d series, want one", query, n)
	}
}

// TestStackOutboxMetrics checks the outbox gauges the OutboxLagging alert
// reads, under the names Prometheus gives them: with the broker out of
// reach, an order waits in the outbox, and Prometheus sees one message
// pending and its age growing.
func TestStackOutboxMetrics(t *testing.T) {
	t.Parallel()
	prom := startPrometheus(t)
	e := newEnv(t)
	vars := map[string]string{
		"DATABASE_URL":                        e.DatabaseURL,
		"REDIS_URL":                           redisURL,
		"AMQP_URL":                            "amqp://guest:guest@" + freePort(t) + "/", // nothing listens
		"OTEL_TRACES_EXPORTER":                "none",
		"OTEL_LOGS_EXPORTER":                  "none",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": prom + "/api/v1/otlp/v1/metrics",
		"OTEL_METRIC_EXPORT_INTERVAL":         "1000",
	}
	orders := start(t, "orders", vars)
	vars["ORDERS_URL"] = orders.URL()
	gw := start(t, "gateway", vars)

	resp, err := testClient.Post(gw.URL()+"/api/orders", "application/json",
		strings.NewReader(`{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/orders: %s, want 201 with the broker away", resp.Status)
	}

	const pending = `ordertrace_outbox_pending{service_name="orders"}`
	waitUntil(t, patience, "one message pending in Prometheus", func() (bool, error) {
		v, ok, err := promValue(prom, pending)
		if err != nil || !ok {
			return false, err
		}
		if v == 1 {
			return true, nil
		}
		return false, fmt.Errorf("%s = %v", pending, v)
	})
	// The order's message waits: its age, as Prometheus last saw it, grows
	// past a few seconds (the relay would have sent it within one or two).
	const lag = `ordertrace_outbox_lag_seconds{service_name="orders"}`
	waitUntil(t, patience, "the outbox lag to pass 3 s in Prometheus", func() (bool, error) {
		v, ok, err := promValue(prom, lag)
		if err != nil || !ok {
			return false, err
		}
		if v > 3 {
			return true, nil
		}
		return false, fmt.Errorf("%s = %v", lag, v)
	})
	if n := e.queryInt(t, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"); n != 1 {
		t.Errorf("%d unsent outbox rows, want 1", n)
	}
}
