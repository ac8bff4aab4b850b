//go:build bench

package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// The services, in the order their figures are reported.
var benchServices = []string{"gateway", "orders", "fulfillment"}

// fixedRun is one fixed-rate run: the CPU each service used in its measured
// window, per order fulfilled in it, and what the load saw.
type fixedRun struct {
	Mode       string             `json:"mode"` // on or off
	Rate       int                `json:"rate_per_s"`
	Window     float64            `json:"window_s"` // from the first order to the last one fulfilled
	Orders     int                `json:"orders"`   // fulfilled in the window
	CPUSeconds map[string]float64 `json:"cpu_seconds"`
	// Per service and "total" (the three services' CPU over the same orders).
	CPUPerOrder map[string]float64 `json:"cpu_per_order_us"`
	Latency     map[string]string  `json:"latency"`
	PeakRSSMiB  map[string]float64 `json:"peak_rss_mib"`

	// Tracing on only.
	CollectorCPUPerOrder float64            `json:"collector_cpu_per_order_us,omitempty"`
	SpansPerOrder        map[string]float64 `json:"spans_per_order,omitempty"` // per service and "total"
	SpansStarted         int                `json:"spans_started,omitempty"`
	SpansExported        int                `json:"spans_exported,omitempty"`
	SpansDropped         int                `json:"spans_dropped,omitempty"`
	Answered             int                `json:"answered_201,omitempty"`
	Complete             int                `json:"complete_traces,omitempty"` // of Answered
	shots                []shot
}

// fixedRate runs the stack tracing on (through the collector) or off at rate
// orders per second: warmup first, drained, then the measured window,
// drained too, so the window's CPU is the work of exactly its own orders.
// With tracing on it then stops the services, which flush, and the
// collector, and reads what arrived. extra adds variables for the services
// (make bench-compare's variants).
func fixedRate(t *testing.T, on bool, rate int, warmup, window time.Duration, extra map[string]string) fixedRun {
	run := fixedRun{Mode: "off", Rate: rate, CPUSeconds: map[string]float64{}, CPUPerOrder: map[string]float64{}, PeakRSSMiB: map[string]float64{}}
	var (
		s      *stack
		col    *collector
		traces *traceIndex
	)
	if on {
		run.Mode = "on"
		// Traces go to an index that keeps only which hops each trace had:
		// a stand-in for Tempo, which runs elsewhere in production, light
		// enough not to weigh on the services' CPUs.
		traces = newTraceIndex(t)
		colVars := maps.Clone(collectorProduction)
		colVars["TEMPO_OTLP_ENDPOINT"] = traces.URL
		col = startCollector(t, colVars)
		vars := tracingOn(col)
		maps.Copy(vars, extra)
		s = startStack(t, vars)
		s.otlp = col.backends // metrics and logs
	} else {
		vars := maps.Clone(tracingOff)
		maps.Copy(vars, extra)
		s = startStack(t, vars)
	}
	procs := []*process{s.gateway, s.orders, s.fulfillment}
	fulfilled := func() int {
		return s.env.queryInt(t, "SELECT count(*) FROM orders WHERE status = 'fulfilled'")
	}

	checkpoint(t)
	drive(s, rate, warmup, benchOrder)
	drain(t, s)
	cpu0 := make([]time.Duration, len(procs))
	for i, p := range procs {
		cpu0[i] = processCPU(t, p.cmd.Process.Pid)
	}
	var col0 time.Duration
	if on {
		col0 = processCPU(t, col.cmd.Process.Pid)
	}
	orders0, began := fulfilled(), time.Now()

	run.shots = drive(s, rate, window, benchOrder)
	drain(t, s)
	run.Window = time.Since(began).Seconds()
	run.Orders = fulfilled() - orders0
	if run.Orders == 0 {
		t.Fatal("no order was fulfilled in the window")
	}
	perOrder := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(run.Orders) }
	var total time.Duration
	for i, p := range procs {
		used := processCPU(t, p.cmd.Process.Pid) - cpu0[i]
		total += used
		run.CPUSeconds[p.name] = used.Seconds()
		run.CPUPerOrder[p.name] = perOrder(used)
		run.PeakRSSMiB[p.name] = float64(processUsage(p).PeakKB) / 1024
	}
	run.CPUPerOrder["total"] = perOrder(total)
	run.Latency = latencies(run.shots)
	if !on {
		return run
	}
	run.CollectorCPUPerOrder = perOrder(processCPU(t, col.cmd.Process.Pid) - col0)

	// The services stop first, handing the collector their last spans and
	// metrics; the marker, sent after them, arrives once the sampler has
	// decided every trace before it; the collector stops, exporting all it holds.
	s.stop(t)
	sendMarker(t, col.OTLPHTTP, markerTrace)
	waitFor(t, patience, "the marker trace at the backend", func() bool { return traces.seen(markerTrace) })
	col.stop(t)
	for _, sh := range run.shots {
		if sh.ok() {
			run.Answered++
			if traces.complete(sh.traceID) {
				run.Complete++
			}
		}
	}
	// The SDKs count every span they start over the services' whole life,
	// and an idle stack starts none: divided by every order of that life
	// (warm-up and window), the spans per order.
	started, exported, dropped := sdkSpans(s.otlp)
	all := fulfilled()
	run.SpansPerOrder = map[string]float64{}
	for _, name := range benchServices {
		run.SpansPerOrder[name] = float64(started[name]) / float64(all)
		run.SpansStarted += started[name]
		run.SpansExported += exported[name]
		run.SpansDropped += dropped[name]
	}
	run.SpansPerOrder["total"] = float64(run.SpansStarted) / float64(all)
	return run
}

// checkpoint has PostgreSQL write out what the runs before left dirty, so
// a run does not pay for its predecessor's writes (without it, in one
// comparison, the second run of each pair used about 5% more CPU per order,
// whichever side it was; the sides' order is alternated as well).
func checkpoint(t *testing.T) {
	c, err := pgx.Connect(t.Context(), adminDatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(t.Context(), "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
}

// sdkSpans reads, per service, the SDK's own counters of spans started,
// exported and dropped (their last, cumulative values).
func sdkSpans(r *receiver) (started, exported, dropped map[string]int) {
	started, exported, dropped = map[string]int{}, map[string]int{}, map[string]int{}
	latest := map[string]point{}
	for _, name := range []string{"otel.sdk.span.started", "otel.sdk.processor.span.processed"} {
		for _, p := range r.Points(name) {
			latest[name+p.Instance+fmt.Sprint(p.Attrs)] = p
		}
	}
	for _, p := range latest {
		switch {
		case p.Metric == "otel.sdk.span.started":
			started[p.Service] += int(p.Value)
		case p.Attrs["error.type"] != "":
			dropped[p.Service] += int(p.Value)
		default:
			exported[p.Service] += int(p.Value)
		}
	}
	return
}

// traceIndex is an OTLP/HTTP trace endpoint that keeps, per trace, only
// which of the journey's three hops arrived.
type traceIndex struct {
	URL string

	mu   sync.Mutex
	hops map[[16]byte]uint8
}

// The hops of a complete trace.
const (
	hopGatewayServer = 1 << iota
	hopOrdersProducer
	hopFulfillmentConsumer
	hopsAll = hopGatewayServer | hopOrdersProducer | hopFulfillmentConsumer
)

func newTraceIndex(t *testing.T) *traceIndex {
	x := &traceIndex{hops: map[[16]byte]uint8{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var msg coltrace.ExportTraceServiceRequest
		if !decode(w, req, &msg) {
			return
		}
		x.add(&msg)
		reply(w, &coltrace.ExportTraceServiceResponse{})
	}))
	t.Cleanup(srv.Close)
	x.URL = srv.URL
	return x
}

func (x *traceIndex) add(msg *coltrace.ExportTraceServiceRequest) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, rs := range msg.ResourceSpans {
		service := attrs(rs.Resource.GetAttributes())["service.name"]
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				var hop uint8
				switch {
				case service == "gateway" && s.Kind == tracepb.Span_SPAN_KIND_SERVER:
					hop = hopGatewayServer
				case service == "orders" && s.Kind == tracepb.Span_SPAN_KIND_PRODUCER:
					hop = hopOrdersProducer
				case service == "fulfillment" && s.Kind == tracepb.Span_SPAN_KIND_CONSUMER:
					hop = hopFulfillmentConsumer
				}
				if len(s.TraceId) == 16 {
					x.hops[[16]byte(s.TraceId)] |= hop
				}
			}
		}
	}
}

func (x *traceIndex) get(traceID string) (uint8, bool) {
	b, err := hex.DecodeString(traceID)
	if err != nil || len(b) != 16 {
		return 0, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	hops, ok := x.hops[[16]byte(b)]
	return hops, ok
}

// seen says whether any span of the trace arrived.
func (x *traceIndex) seen(traceID string) bool {
	_, ok := x.get(traceID)
	return ok
}

// complete says whether the trace has the gateway's SERVER span, orders'
// PRODUCER span and fulfillment's CONSUMER span.
func (x *traceIndex) complete(traceID string) bool {
	hops, _ := x.get(traceID)
	return hops == hopsAll
}
