package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// sendMarker sends, straight to the collector, a one-span trace with an
// error (which the sampler always keeps). Sent after everything else, it
// reaches the backend once the sampler has decided every trace that came
// before it: the end of a test that nothing else arrives.
func sendMarker(t *testing.T, collectorURL, traceID string) {
	t.Helper()
	id, _ := hexBytes(traceID)
	now := uint64(time.Now().UnixNano())
	msg := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{strAttr("service.name", "marker")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: id, SpanId: []byte{8, 7, 6, 5, 4, 3, 2, 1}, Name: "marker", Kind: tracepb.Span_SPAN_KIND_INTERNAL,
			StartTimeUnixNano: now - 1e6, EndTimeUnixNano: now,
			Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR},
		}}}},
	}}}
	b, _ := proto.Marshal(msg)
	resp, err := testClient.Post(collectorURL+"/v1/traces", "application/x-protobuf", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/traces: %s", resp.Status)
	}
}

// TestCollectorPipeline runs the stack's collector configuration with the
// probabilistic share at 0%, between the real services and a receiver
// standing in for Tempo, Loki and Prometheus.
func TestCollectorPipeline(t *testing.T) {
	t.Parallel()
	// A trace's latency runs to its last span, fulfillment's, after the relay
	// and the broker: on a busy machine a fast order's trace can take several
	// hundred milliseconds. The threshold is far above that, the slow orders
	// far above the threshold, and the sampler waits until they are done.
	col := startCollector(t, map[string]string{
		"TRACE_SAMPLING_PERCENTAGE": "0", "TRACE_SLOW_THRESHOLD_MS": "3000", "TRACE_DECISION_WAIT": "6s",
	})
	s := startStack(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP,
		"PAYMENT_LATENCY":             "1ms",
		"FULFILLMENT_RETRY_BACKOFF":   "10ms",
	})
	// A second orders and gateway with a slow payment provider: their orders
	// take longer than the slow-trace threshold.
	slowVars := map[string]string{
		"DATABASE_URL": s.env.DatabaseURL, "REDIS_URL": redisURL, "AMQP_URL": s.env.AMQPURL,
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP, "OTEL_BSP_SCHEDULE_DELAY": "100",
		"PAYMENT_LATENCY": "3500ms", "PAYMENT_TIMEOUT": "10s",
	}
	slowOrders := start(t, "orders", slowVars)
	slowVars["ORDERS_URL"] = slowOrders.URL()
	slowGateway := start(t, "gateway", slowVars)

	const fast = 10
	order := `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`
	var fastTraces []string
	for range fast {
		status, h, _ := s.placeOrder(t, order, nil)
		if status != http.StatusCreated {
			t.Fatalf("fast order: status %d", status)
		}
		fastTraces = append(fastTraces, traceIDFromHeader(t, h))
	}

	// The slow order carries a card number in its User-Agent, which otelhttp
	// records: the collector must mask it.
	req, _ := http.NewRequest(http.MethodPost, slowGateway.URL()+"/api/orders", strings.NewReader(order))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "shop-client/1.0 (card "+plantedCard+")")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("slow order: status %d", resp.StatusCode)
	}
	slowTrace := traceIDFromHeader(t, resp.Header)

	// An error trace that is fast: a message fulfillment cannot apply.
	errorTrace := "5bf92f3577b34da6a3ce929d0e0e4736"
	publishPoison(t, s.env, errorTrace, "poison-"+errorTrace, "")

	// A misbehaving client of the collector sends secrets directly.
	sendSecrets(t, col.OTLPHTTP)

	backends := col.backends
	waitFor(t, patience, "the slow, the error and the direct traces at the backend", func() bool {
		return len(backends.Trace(slowTrace)) > 0 && len(backends.Trace(errorTrace)) > 0 && len(backends.Trace(directTrace)) > 0
	})
	find(t, backends.Trace(slowTrace), "gateway", server, "POST /api/orders")
	consume := find(t, backends.Trace(errorTrace), "fulfillment", consumer, "process orders:order.created:fulfillment.order-created")
	if consume.Status != statusError {
		t.Errorf("error trace's CONSUMER span status = %v, want ERROR", consume.Status)
	}

	// Span metrics count every request, sampled or not.
	waitFor(t, patience, fmt.Sprintf("span metrics counting %d POST /api/orders", fast+1), func() bool {
		return calls(backends, "gateway", "POST /api/orders") == fast+1
	})
	if n := calls(backends, "fulfillment", "process orders:order.created:fulfillment.order-created"); n < fast+1 {
		t.Errorf("span metrics count %d CONSUMER spans, want at least %d", n, fast+1)
	}

	// What follows is about what never reaches the backends. Stopped, the
	// services have handed every span and log record to the collector; the
	// marker, sent after them, arrives once the sampler has decided every
	// trace before it; stopped in turn, the collector has exported all it kept.
	s.stop(t)
	slowGateway.Stop(t)
	slowOrders.Stop(t)
	sendMarker(t, col.OTLPHTTP, markerTrace)
	waitFor(t, patience, "the marker trace at the backend", func() bool { return len(backends.Trace(markerTrace)) > 0 })
	checkDashboards(t, col) // it scrapes the running collector's own metrics
	col.stop(t)

	// The fast, successful traces are gone.
	for _, id := range fastTraces {
		if n := len(backends.Trace(id)); n != 0 {
			t.Errorf("fast trace %s: %d spans exported, want 0 at a 0%% share", id, n)
		}
	}

	// No planted secret reaches any exported span or log.
	for _, sp := range backends.Spans() {
		for _, v := range allValues(sp) {
			if strings.Contains(v, plantedCard) || strings.Contains(v, "hunter2") {
				t.Errorf("%s %q exported a secret: %s", sp.Service, sp.Name, v)
			}
		}
	}
	if ua := find(t, backends.Trace(slowTrace), "gateway", server, "POST /api/orders").Attrs["user_agent.original"]; !strings.Contains(ua, "****") {
		t.Errorf("user_agent.original = %q, want the card number masked", ua)
	}
	if !slices.ContainsFunc(backends.Logs(), func(l logRecord) bool { return l.Service == "direct-client" }) {
		t.Error("the direct log record never reached the backend")
	}
	for _, l := range backends.Logs() {
		if strings.Contains(fmt.Sprint(l), plantedCard) || strings.Contains(fmt.Sprint(l), "hunter2") {
			t.Errorf("exported log carries a secret: %+v", l)
		}
	}
	t.Logf("span metrics: %d calls of gateway POST /api/orders (%d traces kept of %d orders)", calls(backends, "gateway", "POST /api/orders"), 1, fast+1)
}

// calls returns the latest span-metrics call count of one service's span.
func calls(r *receiver, service, spanName string) int {
	total := 0.0
	latest := map[string]float64{}
	for _, p := range r.Points("traces.span.metrics.calls") {
		if p.Service == service && p.Attrs["span.name"] == spanName {
			key := p.Instance + fmt.Sprint(p.Attrs) // one series per service instance
			latest[key] = p.Value                   // cumulative: the last point is the total
		}
	}
	for _, v := range latest {
		total += v
	}
	return int(total)
}

const (
	directTrace = "6cf92f3577b34da6a3ce929d0e0e4736"
	markerTrace = "7df92f3577b34da6a3ce929d0e0e4736"
)

// sendSecrets plays a client that puts secrets where they do not belong: an
// ERROR span (so it is kept) and a log record, both with a password attribute
// and a card number.
func sendSecrets(t *testing.T, collectorURL string) {
	t.Helper()
	res := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{strAttr("service.name", "direct-client")}}
	traceID, _ := hexBytes(directTrace)
	now := uint64(time.Now().UnixNano())
	spans := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: res,
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: traceID, SpanId: []byte{1, 2, 3, 4, 5, 6, 7, 8}, Name: "checkout", Kind: tracepb.Span_SPAN_KIND_SERVER,
			StartTimeUnixNano: now - 1e6, EndTimeUnixNano: now,
			Attributes: []*commonpb.KeyValue{strAttr("db.password", "hunter2"), strAttr("note", "paid with "+plantedCard)},
			Status:     &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR},
		}}}},
	}}}
	logs := &collogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: res,
		ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{{
			TimeUnixNano: now,
			Body:         &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "charged card " + plantedCard}},
			Attributes:   []*commonpb.KeyValue{strAttr("password", "hunter2")},
		}}}},
	}}}
	for path, msg := range map[string]proto.Message{"/v1/traces": spans, "/v1/logs": logs} {
		b, _ := proto.Marshal(msg)
		resp, err := http.Post(collectorURL+path, "application/x-protobuf", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func hexBytes(s string) ([]byte, error) {
	b := make([]byte, len(s)/2)
	_, err := fmt.Sscanf(s, "%x", &b)
	return b, err
}

// prometheusNames returns the names a metric gets in Prometheus when it
// arrives over OTLP (Prometheus 3's default translation: dots become
// underscores, the unit is spelled out, counters end in _total, histograms
// become _bucket, _sum and _count series).
func prometheusNames(name string, shape metricShape) []string {
	base := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == ':' {
			return r
		}
		return '_'
	}, name)
	units := map[string]string{"ms": "milliseconds", "s": "seconds", "By": "bytes", "%": "percent"}
	if u, ok := units[shape.Unit]; ok && !strings.HasSuffix(base, "_"+u) {
		base += "_" + u
	}
	if shape.Unit == "1" && shape.Type == "gauge" {
		base += "_ratio"
	}
	switch shape.Type {
	case "counter":
		return []string{base + "_total"}
	case "histogram":
		return []string{base + "_bucket", base + "_sum", base + "_count"}
	default:
		return []string{base}
	}
}

// scrapeNames returns the sample names of a Prometheus text endpoint.
func scrapeNames(url string) (map[string]bool, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Prometheus asks for OpenMetrics first and takes the classic text
	// format from endpoints that refuse it (RabbitMQ 3.x answers 406).
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err == nil && resp.StatusCode == http.StatusNotAcceptable {
		resp.Body.Close()
		req.Header.Del("Accept")
		resp, err = http.DefaultClient.Do(req)
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, line := range strings.Split(body.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names, nil
}

// tempoServiceGraphMetrics are written by Tempo's metrics generator, which
// does not run here; the names are those of Tempo's service-graph docs
// (grafana.com/docs/tempo/latest/metrics-from-traces/service_graphs/).
var tempoServiceGraphMetrics = []string{
	"traces_service_graph_request_total",
	"traces_service_graph_request_failed_total",
	"traces_service_graph_request_server_seconds_bucket",
	"traces_service_graph_request_client_seconds_bucket",
	"traces_service_graph_request_messaging_system_seconds_bucket",
	"traces_service_graph_unpaired_spans_total",
	"traces_service_graph_dropped_spans_total",
}

// k6Metrics are written by k6's Prometheus remote-write output during
// `make load`, which does not run here; the names are those of k6's docs
// (grafana.com/docs/k6/latest/results-output/real-time/prometheus-remote-write/)
// for the trend stats the compose file asks for, plus the suite's own counter.
var k6Metrics = []string{
	"k6_http_reqs_total", "k6_http_req_duration_p95", "k6_http_req_duration_p99", "k6_http_req_duration_avg",
	"k6_http_req_failed_rate", "k6_checks_rate", "k6_vus", "k6_dropped_iterations_total",
	"k6_ordertrace_failed_checks_total",
}

// checkDashboards checks that every Prometheus query of every dashboard
// names only metrics that exist: the services' and the span metrics as they
// arrived here through the collector, the collector's own, RabbitMQ's (from
// the machine's broker) and Tempo's service graph.
func checkDashboards(t *testing.T, col *collector) {
	t.Helper()
	known := map[string]bool{}
	for name, shape := range col.backends.Shapes() {
		for _, n := range prometheusNames(name, shape) {
			known[n] = true
		}
	}
	sources := []string{col.Metrics, rabbitMetrics + "/metrics", rabbitMetrics + "/metrics/per-object"}
	for _, src := range sources {
		names, err := scrapeNames(src)
		if err != nil {
			needService(t, "metrics endpoint "+src, err)
		}
		maps.Copy(known, names)
	}
	for _, n := range slices.Concat(tempoServiceGraphMetrics, k6Metrics) {
		known[n] = true
	}
	// Prometheus's own series of its alerts' states (the pipeline dashboard
	// lists the telemetry alerts with it).
	known["ALERTS"] = true
	// The collector registers its failure counters next to its success ones,
	// but they only appear once something fails: derive them from the pairs.
	for n := range maps.Clone(known) {
		if item, ok := strings.CutPrefix(n, "otelcol_exporter_sent_"); ok {
			known["otelcol_exporter_send_failed_"+item] = true
			known["otelcol_exporter_enqueue_failed_"+item] = true
		}
		if item, ok := strings.CutPrefix(n, "otelcol_receiver_accepted_"); ok {
			known["otelcol_receiver_refused_"+item] = true
		}
	}

	files, _ := filepath.Glob("../deploy/grafana/dashboards/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards found")
	}
	checked := 0
	for _, f := range files {
		for _, expr := range dashboardExprs(t, f) {
			for _, name := range promQLMetrics(expr) {
				checked++
				if !known[name] {
					t.Errorf("%s: query names %s, which nothing emits: %s", filepath.Base(f), name, expr)
				}
			}
		}
	}
	t.Logf("dashboards: %d metric references checked against %d known metric names", checked, len(known))
	checkRules(t, known) // the alerts query the same metrics
}

var rabbitMetrics = envOr("TEST_RABBITMQ_METRICS", "http://127.0.0.1:15692")

// dashboardExprs returns the Prometheus queries of a dashboard file.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Datasource struct{ UID string } `json:"datasource"`
				Expr       string               `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if tg.Datasource.UID == "prometheus" && tg.Expr != "" {
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	return exprs
}
