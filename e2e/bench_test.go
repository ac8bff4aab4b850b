//go:build bench

package e2e

// The benchmark of the whole suite: `make bench`. It builds the services
// without the race detector, runs them as processes against the machine's
// PostgreSQL, Redis and RabbitMQ, exporting through the stack's real
// collector to an in-test backend, and drives the order journey at fixed
// arrival rates (an open model: arrivals do not wait for answers, so latency
// is not hidden by coordinated omission). It measures, in one run:
//   (a) tracing on, 100% sampling: saturation throughput;
//   (a') tracing on, exporting straight to the backend: saturation, to
//        separate the SDKs' cost from the collector's on the same CPUs;
//   (b) every signal off (OTEL_*_EXPORTER=none): saturation throughput;
//   (c) tracing on, at half of (a)'s saturation for 60 s: latency, CPU, peak
//       RSS, spans created/exported/dropped, complete traces;
//   and (b) at the same rate, for its latency.
// It prints a table and writes bench/results/<date>.json and .md.

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

var buildFlags = []string{"-trimpath"}

const (
	benchStep      = 4 * time.Second // each rate of the saturation search
	benchSustained = 60 * time.Second
	benchReps      = 3
)

func okShare(shots []shot) float64 {
	n := 0
	for _, s := range shots {
		if s.ok() {
			n++
		}
	}
	return float64(n) / float64(max(1, len(shots)))
}

// benchOrder is the journey's order: two products and a tenant.
func benchOrder(i int) string {
	return fmt.Sprintf(`{"customer_id":"bench-%d","items":[{"sku":"COFFEE-BEANS-1KG","quantity":1},{"sku":"MUG-CERAMIC","quantity":2}]}`, i)
}

// saturation raises the rate until the suite stops keeping up: fewer than
// 99% of requests answered 201, or a p99 over one second. It returns the
// highest rate it kept up with. The rate rises by a quarter at a time to find
// the neighbourhood, then by 5% from the last rate that held, so the result
// is within 5% of the limit without stepping 5% at a time from the start.
func saturation(t *testing.T, s *stack) int {
	holds := func(rate int) bool {
		shots := drive(s, rate, benchStep, benchOrder)
		return okShare(shots) >= 0.99 && quantile(shots, 0.99) <= time.Second
	}
	best := 0
	for rate := 40; rate <= 2000 && holds(rate); rate = rate * 5 / 4 {
		best = rate
	}
	drain(t, s) // the backlog of the rate that failed
	for rate := best * 21 / 20; best > 0 && rate < best*5/4 && holds(rate); rate = rate * 21 / 20 {
		best = rate
	}
	return best
}

// drain waits until no order is pending: the backlog of a load is
// fulfilled, and the next measure starts from an idle suite.
func drain(t *testing.T, s *stack) {
	t.Helper()
	waitUntil(t, 2*patience, "every order fulfilled", func() (bool, error) {
		pending, err := s.env.tryQueryInt("SELECT count(*) FROM orders WHERE status = 'pending'")
		if err == nil && pending > 0 {
			err = fmt.Errorf("%d orders pending", pending)
		}
		return err == nil, err
	})
}

// sdkSpans sums the SDK's own span counters the services exported.
func sdkSpans(r *receiver) (started, processed, dropped int) {
	latest := map[string]point{}
	for _, name := range []string{"otel.sdk.span.started", "otel.sdk.processor.span.processed"} {
		for _, p := range r.Points(name) {
			latest[name+p.Instance+fmt.Sprint(p.Attrs)] = p
		}
	}
	for k, p := range latest {
		switch {
		case strings.HasPrefix(k, "otel.sdk.span.started"):
			started += int(p.Value)
		case p.Attrs["error.type"] != "":
			dropped += int(p.Value)
		default:
			processed += int(p.Value)
		}
	}
	return
}

type benchResult struct {
	Date    string         `json:"date"`
	Machine map[string]any `json:"machine"`

	SaturationOn     []int   `json:"saturation_on_per_s"`
	SaturationDirect []int   `json:"saturation_on_without_collector_per_s"`
	SaturationOff    []int   `json:"saturation_off_per_s"`
	Ratio            float64 `json:"saturation_ratio_on_over_off"`

	SustainedRate int                `json:"sustained_rate_per_s"`
	LatencyOn     map[string]string  `json:"latency_on"`
	LatencyOff    map[string]string  `json:"latency_off"`
	Usage         map[string]usageMB `json:"usage_per_service"`
	SpansStarted  int                `json:"spans_started"`
	SpansExported int                `json:"spans_exported"`
	SpansDropped  int                `json:"spans_dropped"`
	Complete      string             `json:"complete_traces"`
}

type usageMB struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

func latencies(shots []shot) map[string]string {
	return map[string]string{
		"p50": quantile(shots, 0.50).Round(100 * time.Microsecond).String(),
		"p95": quantile(shots, 0.95).Round(100 * time.Microsecond).String(),
		"p99": quantile(shots, 0.99).Round(100 * time.Microsecond).String(),
		"ok":  fmt.Sprintf("%.2f%%", okShare(shots)*100),
	}
}

func TestBench(t *testing.T) {
	on := func(t *testing.T) (*stack, *collector) {
		col := startCollector(t, nil)
		s := startStack(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP, "LOG_LEVEL": "info"})
		s.otlp = col.backends // what reached the backend, through the collector
		return s, col
	}
	// Tracing on, exporting straight to the in-test backend: the SDKs' cost
	// without the collector's CPU on the same two cores.
	direct := func(t *testing.T) *stack {
		return startStack(t, map[string]string{"LOG_LEVEL": "info", "OTEL_BSP_SCHEDULE_DELAY": "5000",
			"OTEL_BLRP_SCHEDULE_DELAY": "1000", "OTEL_METRIC_EXPORT_INTERVAL": "60000"})
	}
	off := func(t *testing.T) *stack {
		return startStack(t, map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
			"OTEL_LOGS_EXPORTER": "none", "LOG_LEVEL": "info"})
	}
	res := benchResult{Date: time.Now().UTC().Format("2006-01-02"), Usage: map[string]usageMB{}}
	cpu := "unknown"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	res.Machine = map[string]any{"cpus": runtime.NumCPU(), "cpu": cpu, "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}

	for rep := range benchReps {
		t.Run(fmt.Sprintf("saturation-%d", rep+1), func(t *testing.T) {
			t.Run("on", func(t *testing.T) {
				s, _ := on(t)
				res.SaturationOn = append(res.SaturationOn, saturation(t, s))
			})
			t.Run("direct", func(t *testing.T) { res.SaturationDirect = append(res.SaturationDirect, saturation(t, direct(t))) })
			t.Run("off", func(t *testing.T) { res.SaturationOff = append(res.SaturationOff, saturation(t, off(t))) })
		})
	}
	res.Ratio = median(res.SaturationOn) / median(res.SaturationOff)
	res.SustainedRate = int(median(res.SaturationOn)) / 2

	t.Run("sustained-on", func(t *testing.T) {
		s, col := on(t)
		shots := drive(s, res.SustainedRate, benchSustained, benchOrder)
		res.LatencyOn = latencies(shots)
		for _, p := range []*process{s.gateway, s.orders, s.fulfillment} {
			u := processUsage(p)
			res.Usage[p.name] = usageMB{CPUSeconds: u.CPU.Seconds(), PeakRSSMiB: float64(u.PeakKB) / 1024}
		}
		// Drain: every order fulfilled; then the services stop, handing the
		// collector their last spans and metrics; the marker, sent after
		// them, arrives once the sampler has decided every trace before it;
		// and the collector stops, exporting all it holds.
		drain(t, s)
		s.stop(t)
		sendMarker(t, col.OTLPHTTP, markerTrace)
		waitFor(t, patience, "the marker trace at the backend", func() bool { return len(s.otlp.Trace(markerTrace)) > 0 })
		col.stop(t)
		// What reached the backend, by trace: one pass over half a million spans.
		seen := map[string]map[string]bool{}
		for _, sp := range s.otlp.Spans() {
			if seen[sp.TraceID] == nil {
				seen[sp.TraceID] = map[string]bool{}
			}
			seen[sp.TraceID][sp.Service+"/"+sp.Kind.String()] = true
		}
		complete, fulfilled := 0, 0
		for _, sh := range shots {
			if !sh.ok() {
				continue
			}
			fulfilled++
			if has := seen[sh.traceID]; has["gateway/SPAN_KIND_SERVER"] && has["orders/SPAN_KIND_PRODUCER"] && has["fulfillment/SPAN_KIND_CONSUMER"] {
				complete++
			}
		}
		res.Complete = fmt.Sprintf("%d/%d (%.1f%%)", complete, fulfilled, 100*float64(complete)/float64(max(1, fulfilled)))
		res.SpansStarted, res.SpansExported, res.SpansDropped = sdkSpans(s.otlp)
	})
	t.Run("sustained-off", func(t *testing.T) {
		res.LatencyOff = latencies(drive(off(t), res.SustainedRate, benchSustained, benchOrder))
	})

	md := report(res)
	t.Logf("\n%s", md)
	if err := os.MkdirAll("../bench/results", 0o755); err != nil {
		t.Fatal(err)
	}
	j, _ := json.MarshalIndent(res, "", "  ")
	base := "../bench/results/" + res.Date
	if err := os.WriteFile(base+".json", append(j, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".md", []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
}

func median(v []int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return float64(s[len(s)/2])
}

func report(r benchResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmark %s\n\nMachine: %d CPUs (%s), %s, %s. Open-model load of the order journey (POST /api/orders, two items, a tenant).\n\n",
		r.Date, r.Machine["cpus"], r.Machine["cpu"], r.Machine["go"], r.Machine["os"])
	fmt.Fprintf(&b, "| measure | tracing on (100%%, through the collector) | every signal off |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| saturation, orders/s (runs) | %v | %v |\n", r.SaturationOn, r.SaturationOff)
	fmt.Fprintf(&b, "| saturation without the collector (SDKs export straight to the backend), runs | %v (median %.0f, ratio %.2f) | |\n",
		r.SaturationDirect, median(r.SaturationDirect), median(r.SaturationDirect)/median(r.SaturationOff))
	fmt.Fprintf(&b, "| saturation, median | %.0f | %.0f |\n", median(r.SaturationOn), median(r.SaturationOff))
	fmt.Fprintf(&b, "| ratio on/off | %.2f | |\n", r.Ratio)
	fmt.Fprintf(&b, "| at %d orders/s for %s: p50 / p95 / p99 | %s / %s / %s | %s / %s / %s |\n", r.SustainedRate, benchSustained,
		r.LatencyOn["p50"], r.LatencyOn["p95"], r.LatencyOn["p99"], r.LatencyOff["p50"], r.LatencyOff["p95"], r.LatencyOff["p99"])
	fmt.Fprintf(&b, "| answered 201 | %s | %s |\n\n", r.LatencyOn["ok"], r.LatencyOff["ok"])
	fmt.Fprintf(&b, "Tracing on, at %d orders/s for %s:\n\n| service | CPU seconds | peak RSS (MiB) |\n|---|---|---|\n", r.SustainedRate, benchSustained)
	for _, name := range []string{"gateway", "orders", "fulfillment"} {
		u := r.Usage[name]
		fmt.Fprintf(&b, "| %s | %.1f | %.1f |\n", name, u.CPUSeconds, u.PeakRSSMiB)
	}
	fmt.Fprintf(&b, "\nSpans (the SDKs' own counters): %d started, %d exported, %d dropped. Complete traces in the backend (gateway, orders PRODUCER, fulfillment CONSUMER): %s.\n",
		r.SpansStarted, r.SpansExported, r.SpansDropped, r.Complete)
	return b.String()
}

// TestBenchSQLComments measures what SQL_COMMENTS costs the whole suite:
// saturation with tracing on, exporting straight to the backend (as "direct"
// above), comments off then on, benchReps times, alternated so that a shared
// machine's drift weighs on both. It runs in `make bench`; alone:
//
//	go test -tags bench -run TestBenchSQLComments -count=1 -v -timeout 30m ./e2e
func TestBenchSQLComments(t *testing.T) {
	with := func(t *testing.T, comments string) *stack {
		return startStack(t, map[string]string{"LOG_LEVEL": "info", "OTEL_BSP_SCHEDULE_DELAY": "5000",
			"OTEL_BLRP_SCHEDULE_DELAY": "1000", "OTEL_METRIC_EXPORT_INTERVAL": "60000", "SQL_COMMENTS": comments})
	}
	var off, on []int
	for rep := range benchReps {
		t.Run(fmt.Sprintf("saturation-%d", rep+1), func(t *testing.T) {
			t.Run("comments-off", func(t *testing.T) { off = append(off, saturation(t, with(t, "false"))) })
			t.Run("comments-on", func(t *testing.T) { on = append(on, saturation(t, with(t, "true"))) })
		})
	}
	t.Logf("\n| SQL_COMMENTS | saturation, orders/s (runs) | median |\n|---|---|---|\n| false | %v | %.0f |\n| true | %v | %.0f |\n\nratio on/off: %.2f",
		off, median(off), on, median(on), median(on)/median(off))
}
