package e2e

import (
	"compress/gzip"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// span is a received span, flattened for assertions.
type span struct {
	Service  string
	Name     string
	Kind     tracepb.Span_SpanKind
	TraceID  string
	SpanID   string
	ParentID string
	Attrs    map[string]string
	Status   tracepb.Status_StatusCode
	Events   []event
	Links    []string // span IDs
	Start    uint64   // unix nanoseconds
	End      uint64
}

// Duration is how long the span took.
func (s span) Duration() time.Duration { return time.Duration(s.End - s.Start) }

type event struct {
	Name  string
	Attrs map[string]string
}

// logRecord is a received OTLP log record.
type logRecord struct {
	Service  string
	Severity string // WARN, ERROR, ...
	Body     string
	TraceID  string
	SpanID   string
	Attrs    map[string]string
}

// receiver is a minimal OTLP/HTTP endpoint that keeps what it is sent.
type receiver struct {
	URL string

	// idsInSpanNames exempts this receiver's span names from the
	// conventions gate: set where IDs in names are the lesson.
	idsInSpanNames atomic.Bool

	mu      sync.Mutex
	spans   []span
	logs    []logRecord
	metrics []string // metric names
	points  []point
	shapes  map[string]metricShape
}

// metricShape is what decides a metric's name in Prometheus.
type metricShape struct {
	Type string // counter, updowncounter, gauge, histogram, exphistogram
	Unit string
}

// point is one data point of a sum, gauge or histogram.
type point struct {
	Metric   string
	Service  string // the resource's service.name
	Instance string // and its service.instance.id
	Attrs    map[string]string
	Value    float64 // sums and gauges; the count for histograms
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	srv := httptest.NewServer(r.handler())
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// newTLSReceiver is newReceiver served over TLS with a certificate and its
// key (PEM files), as the backends of the secure stack serve the collector.
func newTLSReceiver(t *testing.T, certFile, keyFile string) *receiver {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{}
	srv := httptest.NewUnstartedServer(r.handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// handler serves the OTLP/HTTP paths of the three signals.
func (r *receiver) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		var msg coltrace.ExportTraceServiceRequest
		if !decode(w, req, &msg) {
			return
		}
		r.addSpans(&msg)
		reply(w, &coltrace.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST /v1/logs", func(w http.ResponseWriter, req *http.Request) {
		var msg collogs.ExportLogsServiceRequest
		if !decode(w, req, &msg) {
			return
		}
		r.addLogs(&msg)
		reply(w, &collogs.ExportLogsServiceResponse{})
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, req *http.Request) {
		var msg colmetrics.ExportMetricsServiceRequest
		if !decode(w, req, &msg) {
			return
		}
		r.addMetrics(&msg)
		reply(w, &colmetrics.ExportMetricsServiceResponse{})
	})
	return mux
}

func decode(w http.ResponseWriter, req *http.Request, msg proto.Message) bool {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return false
		}
		body = gz
	}
	b, err := io.ReadAll(body)
	if err == nil {
		err = proto.Unmarshal(b, msg)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func reply(w http.ResponseWriter, msg proto.Message) {
	b, _ := proto.Marshal(msg)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

func (r *receiver) addSpans(msg *coltrace.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range msg.ResourceSpans {
		resource := attrs(rs.Resource.GetAttributes())
		service := resource["service.name"]
		noteKeys(service, "resource", resource)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := span{
					Service: service, Name: s.Name, Kind: s.Kind,
					TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
					ParentID: hex.EncodeToString(s.ParentSpanId),
					Attrs:    attrs(s.Attributes), Status: s.GetStatus().GetCode(),
					Start: s.StartTimeUnixNano, End: s.EndTimeUnixNano,
				}
				for _, e := range s.Events {
					sp.Events = append(sp.Events, event{Name: e.Name, Attrs: attrs(e.Attributes)})
					noteKeys(service, fmt.Sprintf("%q event of %s span %q", e.Name, sp.Kind, sp.Name), sp.Events[len(sp.Events)-1].Attrs)
				}
				noteKeys(service, fmt.Sprintf("%s span %q", sp.Kind, sp.Name), sp.Attrs)
				noteSpanName(r, service, sp.Name)
				for _, l := range s.Links {
					sp.Links = append(sp.Links, hex.EncodeToString(l.SpanId))
				}
				r.spans = append(r.spans, sp)
			}
		}
	}
}

func (r *receiver) addMetrics(msg *colmetrics.ExportMetricsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rm := range msg.ResourceMetrics {
		res := attrs(rm.Resource.GetAttributes())
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				r.metrics = append(r.metrics, m.Name)
				if r.shapes == nil {
					r.shapes = map[string]metricShape{}
				}
				r.shapes[m.Name] = shapeOf(m)
				add := func(a []*commonpb.KeyValue, v float64) {
					p := point{Metric: m.Name, Service: res["service.name"], Instance: res["service.instance.id"], Attrs: attrs(a), Value: v}
					r.points = append(r.points, p)
					if !collectorMade(sm.Scope.GetName()) {
						noteKeys(p.Service, "metric "+m.Name, p.Attrs)
					}
				}
				for _, dp := range m.GetSum().GetDataPoints() {
					add(dp.Attributes, dp.GetAsDouble()+float64(dp.GetAsInt()))
				}
				for _, dp := range m.GetGauge().GetDataPoints() {
					add(dp.Attributes, dp.GetAsDouble()+float64(dp.GetAsInt()))
				}
				for _, dp := range m.GetHistogram().GetDataPoints() {
					add(dp.Attributes, float64(dp.Count))
				}
			}
		}
	}
}

// collectorMade reports whether a metric's scope is one of the collector's
// (span metrics, service graph): the collector's dimensions, not the suite's.
func collectorMade(scope string) bool {
	return strings.Contains(scope, "opentelemetry-collector") || strings.HasSuffix(scope, "connector")
}

func shapeOf(m *metricspb.Metric) metricShape {
	shape := metricShape{Unit: m.Unit}
	switch {
	case m.GetSum() != nil && m.GetSum().IsMonotonic:
		shape.Type = "counter"
	case m.GetSum() != nil:
		shape.Type = "updowncounter"
	case m.GetGauge() != nil:
		shape.Type = "gauge"
	case m.GetHistogram() != nil:
		shape.Type = "histogram"
	case m.GetExponentialHistogram() != nil:
		shape.Type = "exphistogram"
	}
	return shape
}

// Shapes returns the type and unit of every metric received so far.
func (r *receiver) Shapes() map[string]metricShape {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]metricShape, len(r.shapes))
	for k, v := range r.shapes {
		out[k] = v
	}
	return out
}

// Points returns the data points of metric received so far.
func (r *receiver) Points(metric string) []point {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []point
	for _, p := range r.points {
		if p.Metric == metric {
			out = append(out, p)
		}
	}
	return out
}

func (r *receiver) addLogs(msg *collogs.ExportLogsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rl := range msg.ResourceLogs {
		service := attrs(rl.Resource.GetAttributes())["service.name"]
		for _, sl := range rl.ScopeLogs {
			for _, l := range sl.LogRecords {
				r.logs = append(r.logs, logRecord{
					Service: service, Severity: l.SeverityText, Body: value(l.Body),
					TraceID: hex.EncodeToString(l.TraceId), SpanID: hex.EncodeToString(l.SpanId),
					Attrs: attrs(l.Attributes),
				})
				noteKeys(service, fmt.Sprintf("log %q", r.logs[len(r.logs)-1].Body), r.logs[len(r.logs)-1].Attrs)
			}
		}
	}
}

// Spans returns the spans received so far.
func (r *receiver) Spans() []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]span(nil), r.spans...)
}

// Trace returns the received spans of one trace.
func (r *receiver) Trace(traceID string) []span {
	var out []span
	for _, s := range r.Spans() {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// Logs returns the log records received so far.
func (r *receiver) Logs() []logRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]logRecord(nil), r.logs...)
}

// MetricNames returns the names of the metrics received so far.
func (r *receiver) MetricNames() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := map[string]bool{}
	for _, n := range r.metrics {
		names[n] = true
	}
	return names
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = value(kv.Value)
	}
	return m
}

func value(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	case *commonpb.AnyValue_BytesValue:
		return string(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		var parts []string
		for _, e := range x.ArrayValue.Values {
			parts = append(parts, value(e))
		}
		return "[" + strings.Join(parts, ",") + "]"
	case *commonpb.AnyValue_KvlistValue:
		var parts []string
		for _, kv := range x.KvlistValue.Values {
			parts = append(parts, kv.Key+"="+value(kv.Value))
		}
		return "{" + strings.Join(parts, ",") + "}"
	default:
		return ""
	}
}

// tree renders spans as an indented tree: service, kind, name, and the
// attributes worth reading, children under their parent.
func tree(spans []span) string {
	children := map[string][]span{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	var roots []span
	for _, s := range spans {
		if s.ParentID == "" || s.ParentID == "0000000000000000" || !ids[s.ParentID] {
			roots = append(roots, s)
			continue
		}
		children[s.ParentID] = append(children[s.ParentID], s)
	}
	var b strings.Builder
	var walk func(s span, depth int)
	walk = func(s span, depth int) {
		kind := strings.TrimPrefix(s.Kind.String(), "SPAN_KIND_")
		status := ""
		if s.Status == tracepb.Status_STATUS_CODE_ERROR {
			status = " [ERROR]"
		}
		fmt.Fprintf(&b, "%-12s %-9s %s%s (span %s, parent %s)%s\n", s.Service, kind, strings.Repeat("  ", depth), s.Name, s.SpanID, s.ParentID, status)
		kids := children[s.SpanID]
		sort.SliceStable(kids, func(i, j int) bool { return kids[i].Start < kids[j].Start })
		for _, c := range kids {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
