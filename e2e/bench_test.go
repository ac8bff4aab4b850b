//go:build bench

package e2e

// The benchmark of the whole suite: `make bench`. It builds the services
// without the race detector, runs them as processes against the machine's
// PostgreSQL, Redis and RabbitMQ and drives the order journey at fixed
// arrival rates (an open model: arrivals do not wait for answers, so latency
// is not hidden by coordinated omission). "On" is every signal on at the
// settings of a production deployment (productionTelemetry), through the
// stack's real collector; "off" is every signal off (OTEL_*_EXPORTER=none).
// It measures, in one run:
//   (a) saturation throughput, on and off, repeated and interleaved;
//   (b) the services' CPU per order fulfilled at half of off's saturation,
//       on and off interleaved (bench_cpu_test.go), and the spans per order;
//   (c) the SDK's own floor per span in this process (bench_floor_test.go),
//       beside the suite's cost per span: (b)'s CPU on minus off, per span.
// It prints a table and writes bench/results/<date>.json and .md.

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

var buildFlags = []string{"-trimpath"}

// productionTelemetry is how the services are deployed: the Helm chart sets
// the log level, the protocol and the sampler's share, and leaves the rest
// to the SDK's defaults (docs/design.md). Spelled out, they override the
// harness's fast test settings (startStack), and the results state them.
var productionTelemetry = map[string]string{
	"LOG_LEVEL":                      "info",
	"OTEL_EXPORTER_OTLP_PROTOCOL":    "http/protobuf",
	"OTEL_TRACES_SAMPLER_ARG":        "1",
	"OTEL_BSP_SCHEDULE_DELAY":        "5000",
	"OTEL_BSP_EXPORT_TIMEOUT":        "30000",
	"OTEL_BSP_MAX_QUEUE_SIZE":        "2048",
	"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
	"OTEL_BLRP_SCHEDULE_DELAY":       "1000",
	"OTEL_METRIC_EXPORT_INTERVAL":    "60000",
	"OTEL_GO_X_OBSERVABILITY":        "true", // what the suite's Setup turns on when unset
}

// collectorProduction restores config.yaml's own defaults where
// startCollector shortens them for the tests.
var collectorProduction = map[string]string{
	"TRACE_DECISION_WAIT":        "5s",
	"SPANMETRICS_FLUSH_INTERVAL": "15s",
}

var tracingOff = map[string]string{
	"LOG_LEVEL":             "info",
	"OTEL_TRACES_EXPORTER":  "none",
	"OTEL_METRICS_EXPORTER": "none",
	"OTEL_LOGS_EXPORTER":    "none",
}

// tracingOn is productionTelemetry, exporting to col.
func tracingOn(col *collector) map[string]string {
	vars := maps.Clone(productionTelemetry)
	vars["OTEL_EXPORTER_OTLP_ENDPOINT"] = col.OTLPHTTP
	return vars
}

// benchPlan is how much `make bench` measures.
type benchPlan struct {
	Quick          bool
	Step           time.Duration // each rate of the saturation search
	SaturationReps int
	FixedReps      int // each of on and off
	Warmup, Window time.Duration
	FloorSpans     int
	FloorReps      int
}

// plan is the full benchmark (about 25 minutes with the other TestBench*
// tests), or with BENCH_QUICK=1 a short one that checks the benchmark end to
// end while it is being changed: its figures are not results, and its files
// are named <date>-quick.
var plan = func() benchPlan {
	if os.Getenv("BENCH_QUICK") == "1" {
		return benchPlan{Quick: true, Step: 2 * time.Second, SaturationReps: 1, FixedReps: 2,
			Warmup: 3 * time.Second, Window: 10 * time.Second, FloorSpans: 50_000, FloorReps: 3}
	}
	return benchPlan{Step: 4 * time.Second, SaturationReps: 3, FixedReps: 3,
		Warmup: 10 * time.Second, Window: 45 * time.Second, FloorSpans: 200_000, FloorReps: 3}
}()

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
		shots := drive(s, rate, plan.Step, benchOrder)
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

// spread is the median of some figures and their range.
type spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spreadOf(v []float64) spread {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return spread{}
	}
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return spread{Median: m, Min: s[0], Max: s[len(s)-1]}
}

func (s spread) String() string {
	return fmt.Sprintf("%s (%s–%s)", figure(s.Median), figure(s.Min), figure(s.Max))
}

// figure prints a figure with three significant digits or so.
func figure(v float64) string {
	switch {
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

type benchResult struct {
	Date     string         `json:"date"`
	Quick    bool           `json:"quick,omitempty"` // BENCH_QUICK=1: not a result
	Machine  map[string]any `json:"machine"`
	Settings map[string]any `json:"settings"`
	Method   map[string]any `json:"method"`

	SaturationOn  []int   `json:"saturation_on_per_s"`
	SaturationOff []int   `json:"saturation_off_per_s"`
	Ratio         float64 `json:"saturation_ratio_on_over_off"`

	// At FixedRate, per pair of interleaved runs (on, then off): medians, and
	// in the spreads their ranges; per service and "total".
	FixedRate          int                `json:"fixed_rate_per_s"`
	CPURatio           float64            `json:"cpu_per_order_ratio_on_over_off"`
	CPURatioPerService map[string]float64 `json:"cpu_per_order_ratio_per_service"`
	CPURatioSpread     map[string]spread  `json:"cpu_per_order_ratio_spread"`
	CPUPerOrderOn      map[string]spread  `json:"cpu_per_order_on_us"`
	CPUPerOrderOff     map[string]spread  `json:"cpu_per_order_off_us"`
	SpansPerOrder      map[string]float64 `json:"spans_per_order"`

	Floor         float64            `json:"sdk_floor_us_per_span"`
	FloorRuns     []float64          `json:"sdk_floor_runs_us_per_span"`
	CostPerSpan   map[string]spread  `json:"suite_cost_per_span_us"` // (CPU per order on − off) / spans per order
	DistanceToSDK float64            `json:"distance_to_floor"`      // the total's median cost per span over the floor
	LatencyOn     map[string]string  `json:"latency_on"`
	LatencyOff    map[string]string  `json:"latency_off"`
	P99Ratio      spread             `json:"p99_ratio_on_over_off"` // within each pair
	PeakRSSOn     map[string]float64 `json:"peak_rss_mib_on"`
	SpansStarted  int                `json:"spans_started"`
	SpansExported int                `json:"spans_exported"`
	SpansDropped  int                `json:"spans_dropped"`
	Complete      string             `json:"complete_traces"`
	Runs          []fixedRun         `json:"fixed_rate_runs"`
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
	res := benchResult{Date: time.Now().UTC().Format("2006-01-02"), Quick: plan.Quick, Machine: machine(),
		Settings: map[string]any{
			"on":        productionTelemetry,
			"collector": collectorProduction,
			"off":       tracingOff,
			"source":    "on: the SDK's defaults, as the Helm chart deploys the services (it sets only LOG_LEVEL, OTEL_EXPORTER_OTLP_PROTOCOL and OTEL_TRACES_SAMPLER_ARG); collector: deploy/otel-collector/config.yaml with its own defaults",
		},
		Method: map[string]any{
			"saturation_step_s": plan.Step.Seconds(), "saturation_repetitions": plan.SaturationReps,
			"fixed_rate_repetitions": plan.FixedReps, "fixed_rate_warmup_s": plan.Warmup.Seconds(),
			"fixed_rate_window_s": plan.Window.Seconds(), "sdk_floor_spans": plan.FloorSpans,
			"sdk_floor_repetitions": plan.FloorReps,
		},
	}

	// First, while this process is idle: the floor is its own CPU.
	t.Run("sdk-floor", func(t *testing.T) {
		res.FloorRuns = sdkFloor(t, plan.FloorSpans, plan.FloorReps)
		res.Floor = spreadOf(res.FloorRuns).Median
		t.Logf("SDK floor: %s µs per span", spreadOf(res.FloorRuns))
	})

	on := func(t *testing.T) *stack {
		// The backend keeps only which hops each trace had: Tempo runs
		// elsewhere in production, and storing every span here would take
		// the services' CPUs.
		vars := maps.Clone(collectorProduction)
		vars["TEMPO_OTLP_ENDPOINT"] = newTraceIndex(t).URL
		col := startCollector(t, vars)
		return startStack(t, tracingOn(col))
	}
	off := func(t *testing.T) *stack { return startStack(t, tracingOff) }
	for rep := range plan.SaturationReps {
		t.Run(fmt.Sprintf("saturation-%d", rep+1), func(t *testing.T) {
			t.Run("on", func(t *testing.T) { res.SaturationOn = append(res.SaturationOn, saturation(t, on(t))) })
			t.Run("off", func(t *testing.T) { res.SaturationOff = append(res.SaturationOff, saturation(t, off(t))) })
			t.Logf("saturation, orders/s: on %v, off %v", res.SaturationOn, res.SaturationOff)
		})
	}
	res.Ratio = median(res.SaturationOn) / median(res.SaturationOff)
	res.FixedRate = int(median(res.SaturationOff)) / 2
	if res.FixedRate == 0 {
		t.Fatal("the suite held no rate with every signal off")
	}

	var runsOn, runsOff []fixedRun
	for rep := range plan.FixedReps {
		// Each ratio is taken within a pair: a run lost would unpair the rest.
		ok := t.Run(fmt.Sprintf("fixed-rate-%d", rep+1), func(t *testing.T) {
			// Each side first in turn (on-off, off-on, ...): the order
			// within a pair moved CPU per order by a few percent.
			order := []bool{true, false}
			if rep%2 == 1 {
				order = []bool{false, true}
			}
			for _, traced := range order {
				var r fixedRun
				if !t.Run(map[bool]string{true: "on", false: "off"}[traced], func(t *testing.T) {
					r = fixedRate(t, traced, res.FixedRate, plan.Warmup, plan.Window, nil)
				}) {
					t.FailNow()
				}
				t.Logf("%s at %d/s: %d orders in %.1f s, CPU per order %.0f µs (gateway %.0f, orders %.0f, fulfillment %.0f)",
					r.Mode, r.Rate, r.Orders, r.Window, r.CPUPerOrder["total"], r.CPUPerOrder["gateway"], r.CPUPerOrder["orders"], r.CPUPerOrder["fulfillment"])
				if traced {
					runsOn = append(runsOn, r)
				} else {
					runsOff = append(runsOff, r)
				}
			}
		})
		if !ok {
			t.FailNow()
		}
	}
	summarize(&res, runsOn, runsOff)

	md := report(res)
	t.Logf("\n%s", md)
	if err := os.MkdirAll("../bench/results", 0o755); err != nil {
		t.Fatal(err)
	}
	j, _ := json.MarshalIndent(res, "", "  ")
	base := "../bench/results/" + res.Date
	if plan.Quick {
		base += "-quick"
	}
	if err := os.WriteFile(base+".json", append(j, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".md", []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
}

func machine() map[string]any {
	cpu := "unknown"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	return map[string]any{"cpus": runtime.NumCPU(), "cpu": cpu, "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
}

// summarize fills in the figures of the fixed-rate runs. Run i on and run i
// off ran one after the other: each ratio, and each cost per span, is taken
// within such a pair, so a drift of a shared machine weighs on both sides.
func summarize(res *benchResult, on, off []fixedRun) {
	res.Runs = nil
	for i := range on { // in the order they ran
		if i%2 == 1 {
			res.Runs = append(res.Runs, off[i], on[i])
			continue
		}
		res.Runs = append(res.Runs, on[i], off[i])
	}
	keys := append(slices.Clone(benchServices), "total")
	collect := func(f func(on, off fixedRun) float64) []float64 {
		v := make([]float64, len(on))
		for i := range on {
			v[i] = f(on[i], off[i])
		}
		return v
	}
	res.CPURatioPerService, res.CPURatioSpread, res.CPUPerOrderOn, res.CPUPerOrderOff = map[string]float64{}, map[string]spread{}, map[string]spread{}, map[string]spread{}
	res.SpansPerOrder, res.CostPerSpan = map[string]float64{}, map[string]spread{}
	for _, k := range keys {
		ratio := spreadOf(collect(func(on, off fixedRun) float64 { return on.CPUPerOrder[k] / off.CPUPerOrder[k] }))
		res.CPURatioSpread[k] = ratio
		if k != "total" {
			res.CPURatioPerService[k] = ratio.Median
		}
		res.CPUPerOrderOn[k] = spreadOf(collect(func(on, _ fixedRun) float64 { return on.CPUPerOrder[k] }))
		res.CPUPerOrderOff[k] = spreadOf(collect(func(_, off fixedRun) float64 { return off.CPUPerOrder[k] }))
		res.SpansPerOrder[k] = spreadOf(collect(func(on, _ fixedRun) float64 { return on.SpansPerOrder[k] })).Median
		res.CostPerSpan[k] = spreadOf(collect(func(on, off fixedRun) float64 {
			return (on.CPUPerOrder[k] - off.CPUPerOrder[k]) / on.SpansPerOrder[k]
		}))
	}
	res.CPURatio = res.CPURatioSpread["total"].Median
	res.DistanceToSDK = res.CostPerSpan["total"].Median / res.Floor

	var shotsOn, shotsOff []shot
	res.PeakRSSOn = map[string]float64{}
	complete, answered := 0, 0
	for i := range on {
		shotsOn, shotsOff = append(shotsOn, on[i].shots...), append(shotsOff, off[i].shots...)
		for _, name := range benchServices {
			res.PeakRSSOn[name] = max(res.PeakRSSOn[name], on[i].PeakRSSMiB[name])
		}
		res.SpansStarted += on[i].SpansStarted
		res.SpansExported += on[i].SpansExported
		res.SpansDropped += on[i].SpansDropped
		complete += on[i].Complete
		answered += on[i].Answered
	}
	res.LatencyOn, res.LatencyOff = latencies(shotsOn), latencies(shotsOff)
	res.P99Ratio = spreadOf(collect(func(on, off fixedRun) float64 {
		return float64(quantile(on.shots, 0.99)) / float64(quantile(off.shots, 0.99))
	}))
	res.Complete = fmt.Sprintf("%d/%d (%.1f%%)", complete, answered, 100*float64(complete)/float64(max(1, answered)))
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
	fmt.Fprintf(&b, "# Benchmark %s\n\n", r.Date)
	if r.Quick {
		fmt.Fprintf(&b, "**BENCH_QUICK=1: shortened to check the benchmark works; these figures are not results.**\n\n")
	}
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s, %s. Open-model load of the order journey (POST /api/orders, two items, a tenant).\n\n",
		r.Machine["cpus"], r.Machine["cpu"], r.Machine["go"], r.Machine["os"])
	fmt.Fprintf(&b, "Tracing on: every signal, 100%% head sampling, at the settings of a production deployment (below), "+
		"through the stack's collector to an in-test backend. Off: `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER` and `OTEL_LOGS_EXPORTER` set to `none`.\n\n")

	n := len(r.Runs) / 2
	fmt.Fprintf(&b, "| measure | tracing on | every signal off | on/off |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| saturation, orders/s (runs) | %v | %v | |\n", r.SaturationOn, r.SaturationOff)
	fmt.Fprintf(&b, "| saturation, median | %.0f | %.0f | **%.2f** |\n", median(r.SaturationOn), median(r.SaturationOff), r.Ratio)
	fmt.Fprintf(&b, "| CPU per order at %d orders/s, µs, all three services (median of %d, min–max) | %s | %s | **%s** |\n",
		r.FixedRate, n, r.CPUPerOrderOn["total"], r.CPUPerOrderOff["total"], r.CPURatioSpread["total"])
	for _, name := range benchServices {
		fmt.Fprintf(&b, "| CPU per order, %s | %s | %s | %s |\n", name, r.CPUPerOrderOn[name], r.CPUPerOrderOff[name], r.CPURatioSpread[name])
	}
	fmt.Fprintf(&b, "| p50 / p95 / p99 at %d orders/s (all runs) | %s / %s / %s | %s / %s / %s | |\n", r.FixedRate,
		r.LatencyOn["p50"], r.LatencyOn["p95"], r.LatencyOn["p99"], r.LatencyOff["p50"], r.LatencyOff["p95"], r.LatencyOff["p99"])
	fmt.Fprintf(&b, "| p99, on/off within each pair (median, min–max) | | | **%s** |\n", r.P99Ratio)
	fmt.Fprintf(&b, "| answered 201 | %s | %s | |\n\n", r.LatencyOn["ok"], r.LatencyOff["ok"])

	fmt.Fprintf(&b, "The cost per span, in CPU µs (median, min–max):\n\n| | spans per order | µs per span | × the SDK's floor |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| the SDK's floor: a span with five attributes, batch processor, OTLP/HTTP exporter (%d × %d spans) | | %s | 1 |\n",
		len(r.FloorRuns), r.Method["sdk_floor_spans"], spreadOf(r.FloorRuns))
	fmt.Fprintf(&b, "| the suite: (CPU per order on − off) / spans per order | %.1f | %s | **%.1f** |\n",
		r.SpansPerOrder["total"], r.CostPerSpan["total"], r.DistanceToSDK)
	for _, name := range benchServices {
		fmt.Fprintf(&b, "| %s | %.1f | %s | %.1f |\n", name, r.SpansPerOrder[name], r.CostPerSpan[name], r.CostPerSpan[name].Median/r.Floor)
	}
	fmt.Fprintf(&b, "\nThe suite's cost is all that tracing on adds (spans, metrics, OTLP logs, propagation), counted per span it makes.\n\n")

	fmt.Fprintf(&b, "Settings with tracing on (%s):\n\n| variable | value |\n|---|---|\n", r.Settings["source"])
	for _, vars := range []map[string]string{productionTelemetry, collectorProduction} {
		for _, k := range slices.Sorted(maps.Keys(vars)) {
			fmt.Fprintf(&b, "| `%s` | %s |\n", k, vars[k])
		}
	}

	fmt.Fprintf(&b, "\nThe fixed-rate runs, in the order they ran (%s warm-up, drained, then the window: %s of load, drained):\n\n", plan.Warmup, plan.Window)
	fmt.Fprintf(&b, "| run | orders | window, s | CPU µs per order: gateway / orders / fulfillment / total | collector, µs per order | spans per order | p99 |\n|---|---|---|---|---|---|---|\n")
	for i, run := range r.Runs {
		collector, spans := "", ""
		if run.Mode == "on" {
			collector, spans = fmt.Sprintf("%.0f", run.CollectorCPUPerOrder), fmt.Sprintf("%.1f", run.SpansPerOrder["total"])
		}
		fmt.Fprintf(&b, "| %d %s | %d | %.1f | %.0f / %.0f / %.0f / %.0f | %s | %s | %s |\n", i/2+1, run.Mode, run.Orders, run.Window,
			run.CPUPerOrder["gateway"], run.CPUPerOrder["orders"], run.CPUPerOrder["fulfillment"], run.CPUPerOrder["total"], collector, spans, run.Latency["p99"])
	}
	fmt.Fprintf(&b, "\nPeak RSS with tracing on: gateway %.1f, orders %.1f, fulfillment %.1f MiB. ", r.PeakRSSOn["gateway"], r.PeakRSSOn["orders"], r.PeakRSSOn["fulfillment"])
	fmt.Fprintf(&b, "Spans (the SDKs' own counters, all runs on): %d started, %d exported, %d dropped. "+
		"Complete traces in the backend (gateway SERVER, orders PRODUCER, fulfillment CONSUMER): %s.\n",
		r.SpansStarted, r.SpansExported, r.SpansDropped, r.Complete)
	return b.String()
}

// TestBenchSQLComments measures what SQL_COMMENTS costs the whole suite:
// saturation with tracing on at production settings, exporting straight to
// the in-test backend, comments off then on, alternated so that a shared
// machine's drift weighs on both. It runs in `make bench`; alone:
//
//	go test -tags bench -run TestBenchSQLComments -count=1 -v -timeout 30m ./e2e
func TestBenchSQLComments(t *testing.T) {
	with := func(t *testing.T, comments string) *stack {
		vars := maps.Clone(productionTelemetry)
		vars["SQL_COMMENTS"] = comments
		return startStack(t, vars)
	}
	var off, on []int
	for rep := range plan.SaturationReps {
		t.Run(fmt.Sprintf("saturation-%d", rep+1), func(t *testing.T) {
			t.Run("comments-off", func(t *testing.T) { off = append(off, saturation(t, with(t, "false"))) })
			t.Run("comments-on", func(t *testing.T) { on = append(on, saturation(t, with(t, "true"))) })
		})
	}
	t.Logf("\n| SQL_COMMENTS | saturation, orders/s (runs) | median |\n|---|---|---|\n| false | %v | %.0f |\n| true | %v | %.0f |\n\nratio on/off: %.2f",
		off, median(off), on, median(on), median(on)/median(off))
}
