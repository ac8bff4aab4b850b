package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
	amqp "github.com/rabbitmq/amqp091-go"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

var (
	collectorOnce sync.Once
	collectorPath string
	collectorErr  error
)

// collectorBinary builds (or finds in the cache) the collector of
// deploy/otel-collector/builder.yaml: the compose image's components and version.
func collectorBinary(t *testing.T) string {
	t.Helper()
	collectorOnce.Do(func() {
		var out, stderr bytes.Buffer
		cmd := exec.Command("bash", "../scripts/build-collector.sh")
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			collectorErr = fmt.Errorf("build the collector: %v\n%s", err, stderr.String())
			return
		}
		collectorPath = strings.TrimSpace(out.String())
	})
	if collectorErr != nil {
		t.Fatal(collectorErr)
	}
	return collectorPath
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
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("collector ignored SIGTERM")
		}
		if t.Failed() {
			t.Logf("collector output:\n%s", logs.String())
		}
	})
	waitFor(t, 30*time.Second, "the collector's health check", func() bool {
		resp, err := http.Get("http://" + healthAddr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return &collector{OTLPHTTP: "http://" + httpAddr, Metrics: "http://" + metricsAddr + "/metrics", backends: backends}
}

// TestCollectorPipeline runs the stack's collector configuration with the
// probabilistic share at 0%, between the real services and a receiver
// standing in for Tempo, Loki and Prometheus.
func TestCollectorPipeline(t *testing.T) {
	t.Parallel()
	col := startCollector(t, map[string]string{"TRACE_SAMPLING_PERCENTAGE": "0", "TRACE_SLOW_THRESHOLD_MS": "300"})
	s := startStack(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP,
		"PAYMENT_LATENCY":             "1ms",
		"FULFILLMENT_RETRY_BACKOFF":   "10ms",
	})
	// A second orders and gateway with a slow payment provider: their orders
	// take longer than the slow-trace threshold.
	slowVars := map[string]string{
		"DATABASE_URL": s.env.DatabaseURL, "REDIS_URL": redisURL, "AMQP_URL": s.env.AMQPURL,
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP, "OTEL_BSP_SCHEDULE_DELAY": "100", "PAYMENT_LATENCY": "400ms",
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
	publishPoison(t, s.env.AMQPURL, errorTrace)

	// A misbehaving client of the collector sends secrets directly.
	sendSecrets(t, col.OTLPHTTP)

	backends := col.backends
	waitFor(t, 20*time.Second, "the slow, the error and the direct traces at the backend", func() bool {
		return len(backends.Trace(slowTrace)) > 0 && len(backends.Trace(errorTrace)) > 0 && len(backends.Trace(directTrace)) > 0
	})
	find(t, backends.Trace(slowTrace), "gateway", server, "POST /api/orders")
	consume := find(t, backends.Trace(errorTrace), "fulfillment", consumer, "process fulfillment.order-created")
	if consume.Status != statusError {
		t.Errorf("error trace's CONSUMER span status = %v, want ERROR", consume.Status)
	}

	// Span metrics count every request, sampled or not.
	waitFor(t, 20*time.Second, fmt.Sprintf("span metrics counting %d POST /api/orders", fast+1), func() bool {
		return calls(backends, "gateway", "POST /api/orders") == fast+1
	})
	if n := calls(backends, "fulfillment", "process fulfillment.order-created"); n < fast+1 {
		t.Errorf("span metrics count %d CONSUMER spans, want at least %d", n, fast+1)
	}

	// By now every decision has been taken: the fast, successful traces are gone.
	time.Sleep(1500 * time.Millisecond)
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
	waitFor(t, 10*time.Second, "the direct log record", func() bool {
		for _, l := range backends.Logs() {
			if l.Service == "direct-client" {
				return true
			}
		}
		return false
	})
	for _, l := range backends.Logs() {
		if strings.Contains(fmt.Sprint(l), plantedCard) || strings.Contains(fmt.Sprint(l), "hunter2") {
			t.Errorf("exported log carries a secret: %+v", l)
		}
	}
	t.Logf("span metrics: %d calls of gateway POST /api/orders (%d traces kept of %d orders)", calls(backends, "gateway", "POST /api/orders"), 1, fast+1)
	writeSeenMetrics(t, s, col)
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

// publishPoison publishes an order.created message for an order that does
// not exist, carrying traceID: fulfillment retries, then dead-letters it,
// with an ERROR span in that trace.
func publishPoison(t *testing.T, amqpURL, traceID string) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(orderevents.OrderCreated{
		OrderID: "0190b5c4-0000-7000-8000-00000000beef", Items: []orderevents.Item{{SKU: "MUG-CERAMIC", Quantity: 1}},
		TotalCents: 1490, Currency: "EUR", CreatedAt: time.Now(),
	})
	err = ch.PublishWithContext(t.Context(), orderevents.Exchange, orderevents.RoutingKeyCreated, true, false, amqp.Publishing{
		Headers:     amqp.Table{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"},
		ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: "poison-" + traceID, Body: body,
	})
	if err != nil {
		t.Fatal(err)
	}
}

const directTrace = "6cf92f3577b34da6a3ce929d0e0e4736"

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

// writeSeenMetrics records the metric names this run saw, from the services
// (through the collector) and from the collector itself, for the dashboard
// test in deploy/ to check its queries against.
func writeSeenMetrics(t *testing.T, s *stack, col *collector) {
	t.Helper()
	names := map[string]bool{}
	for n := range col.backends.MetricNames() {
		names[n] = true
	}
	resp, err := http.Get(col.Metrics)
	if err != nil {
		t.Fatalf("collector metrics: %v", err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	for _, line := range strings.Split(body.String(), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			names["prometheus:"+strings.Fields(line)[2]] = true
		}
	}
	path := os.Getenv("ORDERTRACE_SEEN_METRICS")
	if path == "" {
		return
	}
	var list []string
	for n := range names {
		list = append(list, n)
	}
	b, _ := json.MarshalIndent(list, "", "  ")
	if err := os.WriteFile(filepath.Clean(path), b, 0o644); err != nil {
		t.Errorf("write %s: %v", path, err)
	}
	_ = s
}
