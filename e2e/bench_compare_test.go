//go:build bench

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCompare measures one change to the suite's telemetry: the services'
// CPU per order with tracing on, a baseline and the change run in
// interleaved pairs at a fixed rate, through the collector. make
// bench-compare sets it up:
//
//   - COMPARE_BASE_BIN, COMPARE_NEW_BIN: directories of each side's
//     binaries (make bench-compare BASE=<commit> NEW=<commit> builds them);
//     without them, a side runs this tree's;
//   - COMPARE_BASE_VARS, COMPARE_NEW_VARS: variables for each side, as
//     "K=V K=V" (to measure a switch such as GOGC=200);
//   - COMPARE_RATE (orders/s, default 200), COMPARE_PAIRS (default 4),
//     COMPARE_WINDOW (seconds of measured load per run, default 30, after
//     5 s of warm-up).
//
// It prints the ratio new/base per service and in total, median and range
// of the pairs, and writes the table to bin/bench-compare.md.
func TestCompare(t *testing.T) {
	rate := compareInt(t, "COMPARE_RATE", 200)
	pairs := compareInt(t, "COMPARE_PAIRS", 4)
	window := time.Duration(compareInt(t, "COMPARE_WINDOW", 30)) * time.Second
	base, change := compareVars(t, "COMPARE_BASE_VARS"), compareVars(t, "COMPARE_NEW_VARS")
	if dir := os.Getenv("COMPARE_BASE_BIN"); dir != "" {
		base[binDirVar] = dir
	}
	if dir := os.Getenv("COMPARE_NEW_BIN"); dir != "" {
		change[binDirVar] = dir
	}
	if len(base) == 0 && len(change) == 0 {
		t.Fatal("nothing to compare: set COMPARE_BASE_BIN, COMPARE_NEW_BIN, COMPARE_BASE_VARS or COMPARE_NEW_VARS (make bench-compare)")
	}

	// A pair counts only if both runs held the rate: a p99 over 1 s (the
	// saturation search's limit) means the machine stalled under the run
	// (another process, PostgreSQL writing out), and its CPU per order with
	// it. Such a pair is run again, up to as many times as pairs asked for.
	var runs [2][]fixedRun // base, new
	discarded := 0
	for i := 0; len(runs[0]) < pairs; i++ {
		if discarded > pairs {
			t.Fatalf("%d pairs discarded: the machine is too busy to compare on", discarded)
		}
		ok := t.Run(fmt.Sprintf("pair-%d", i+1), func(t *testing.T) {
			// Alternate which side runs first (base-new, new-base, ...),
			// so an even number of pairs favours neither.
			sides := []int{0, 1}
			if len(runs[0])%2 == 1 {
				sides = []int{1, 0}
			}
			var pair [2]fixedRun
			stalled := ""
			for _, side := range sides {
				vars := map[int]map[string]string{0: base, 1: change}[side]
				r := fixedRate(t, true, rate, 5*time.Second, window, vars)
				pair[side] = r
				t.Logf("%s: CPU per order %.0f µs (gateway %.0f, orders %.0f, fulfillment %.0f), %.1f spans per order, p99 %s, %d dropped",
					[]string{"base", "new"}[side], r.CPUPerOrder["total"], r.CPUPerOrder["gateway"], r.CPUPerOrder["orders"],
					r.CPUPerOrder["fulfillment"], r.SpansPerOrder["total"], r.Latency["p99"], r.SpansDropped)
				if p99, err := time.ParseDuration(r.Latency["p99"]); err != nil || p99 > time.Second {
					stalled = fmt.Sprintf("the %s run's p99 was %s", []string{"base", "new"}[side], r.Latency["p99"])
				}
			}
			if stalled != "" {
				discarded++
				t.Logf("pair discarded, to be run again: %s", stalled)
				return
			}
			runs[0], runs[1] = append(runs[0], pair[0]), append(runs[1], pair[1])
		})
		if !ok {
			t.FailNow()
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "base: %s\nnew:  %s\n%d pairs of %s at %d orders/s, tracing on (production settings) through the collector; %d pairs discarded (a p99 over 1 s)\n\n",
		describeSide(base), describeSide(change), pairs, window, rate, discarded)
	fmt.Fprintf(&b, "| CPU per order, µs | base | new | new/base |\n|---|---|---|---|\n")
	for _, name := range append(benchServices, "total", "collector") {
		var bv, nv, ratio []float64
		for i := range pairs {
			x, y := runs[0][i].CPUPerOrder[name], runs[1][i].CPUPerOrder[name]
			if name == "collector" {
				x, y = runs[0][i].CollectorCPUPerOrder, runs[1][i].CollectorCPUPerOrder
			}
			bv, nv, ratio = append(bv, x), append(nv, y), append(ratio, y/x)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | **%s** |\n", name, spreadOf(bv), spreadOf(nv), spreadOf(ratio))
	}
	side := func(rs []fixedRun) (spans, rss string, dropped int) {
		var s []float64
		var peak float64
		for _, r := range rs {
			s = append(s, r.SpansPerOrder["total"])
			for _, v := range r.PeakRSSMiB {
				peak = max(peak, v)
			}
			dropped += r.SpansDropped
		}
		return spreadOf(s).String(), figure(peak), dropped
	}
	bs, brss, bd := side(runs[0])
	ns, nrss, nd := side(runs[1])
	fmt.Fprintf(&b, "| spans per order | %s | %s | |\n| peak RSS of a service, MiB | %s | %s | |\n| spans dropped | %d | %d | |\n",
		bs, ns, brss, nrss, bd, nd)
	t.Logf("\n%s", b.String())
	if err := os.MkdirAll("../bin", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("../bin/bench-compare.md", []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func describeSide(vars map[string]string) string {
	if len(vars) == 0 {
		return "this tree"
	}
	var parts []string
	for k, v := range vars {
		if k == binDirVar {
			parts = append(parts, "binaries from "+v)
			continue
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ", ")
}

func compareInt(t *testing.T, name string, def int) int {
	raw := os.Getenv(name)
	if raw == "" {
		return def
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive whole number", name, raw)
	}
	return n
}

func compareVars(t *testing.T, name string) map[string]string {
	vars := map[string]string{}
	for _, kv := range strings.Fields(os.Getenv(name)) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			t.Fatalf("%s: %q is not K=V", name, kv)
		}
		vars[k] = v
	}
	return vars
}
