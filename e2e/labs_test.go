package e2e

// The production labs (docs/workshop/20-*.md and up) tell students to type
// more than curl: psql against pg_stat_activity, queries of the collector's
// own metrics. Each lab's test starts the real services the page starts,
// then types the page's ```sh blocks, in order, into one bash session, as a
// student types them into one terminal (a variable set in one block is
// there in the next). Only addresses are replaced. Between blocks, where a
// student would look before typing on, the test waits for a real condition.
// TestWorkshopCommands leaves these pages to them.

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// labPages are the pages whose every ```sh block a TestLab test runs.
var labPages = map[string]bool{
	"19-secure-telemetry.md": true,
	"20-sql-comments.md":     true,
	"21-profiles.md":         true,
	"22-dropped-spans.md":    true,
	"23-sampling-layers.md":  true,
	"24-scale-out.md":        true,
}

var shBlock = regexp.MustCompile("(?s)```sh\n(.*?)```")

// labPage reads a page of the workshop and returns its text and its ```sh
// blocks, in order.
func labPage(t *testing.T, name string) (string, []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("../docs/workshop", name))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range shBlock.FindAllStringSubmatch(string(raw), -1) {
		blocks = append(blocks, m[1])
	}
	return string(raw), blocks
}

// labShell is one bash session fed a page's blocks.
type labShell struct {
	page   string
	blocks []string
	next   int // the next block to type
	subst  *strings.Replacer

	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{}

	mu  sync.Mutex
	out strings.Builder // everything the session has printed
	saw chan struct{}   // a nudge on every line printed
}

const blockEnd = "@@lab-block-end@@"

// newLabShell starts bash for page's blocks; addresses maps each address
// the page writes to the one the test's services listen on (longest first
// where one is the start of another).
func newLabShell(t *testing.T, page string, blocks []string, addresses ...string) *labShell {
	t.Helper()
	return newLabShellIn(t, "", page, blocks, addresses...)
}

// newLabShellIn is newLabShell started in dir, for a page whose commands
// run from the repository's root ("..").
func newLabShellIn(t *testing.T, dir, page string, blocks []string, addresses ...string) *labShell {
	t.Helper()
	sh := &labShell{page: page, blocks: blocks, subst: strings.NewReplacer(addresses...), done: make(chan struct{}), saw: make(chan struct{}, 1)}
	sh.cmd = exec.Command("bash", "--noprofile", "--norc", "-euo", "pipefail")
	sh.cmd.Dir = dir
	// Its own process group: a block's background job goes with it.
	sh.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := sh.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	sh.in = in
	r, w := io.Pipe()
	sh.cmd.Stdout, sh.cmd.Stderr = w, w
	if err := sh.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = sh.cmd.Wait()
		w.Close()
		close(sh.done)
	}()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			sh.mu.Lock()
			sh.out.WriteString(sc.Text() + "\n")
			sh.mu.Unlock()
			select {
			case sh.saw <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		in.Close()
		_ = syscall.Kill(-sh.cmd.Process.Pid, syscall.SIGKILL)
		<-sh.done
	})
	return sh
}

// output is what the session printed so far.
func (sh *labShell) output() string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.out.String()
}

// run types the page's next block and returns what it printed, once it has
// finished; a block that fails, or leaves the shell, fails the test.
func (sh *labShell) run(t *testing.T) string {
	t.Helper()
	if sh.next >= len(sh.blocks) {
		t.Fatalf("%s: the test runs block %d, but the page has %d ```sh blocks", sh.page, sh.next+1, len(sh.blocks))
	}
	block := sh.blocks[sh.next]
	sh.next++
	from := len(sh.output())
	marker := fmt.Sprintf("%s %d", blockEnd, sh.next)
	if _, err := io.WriteString(sh.in, sh.subst.Replace(block)+"\necho '"+marker+"'\n"); err != nil {
		t.Fatalf("%s: typing block %d: %v", sh.page, sh.next, err)
	}
	deadline := time.After(patience)
	for {
		out := sh.output()[from:]
		if i := strings.Index(out, marker); i >= 0 {
			t.Logf("%s, block %d:\n%s\n%s", sh.page, sh.next, block, out[:i])
			return out[:i]
		}
		select {
		case <-sh.saw:
		case <-sh.done:
			t.Fatalf("%s: the commands\n%s\nfailed: %v\n%s", sh.page, block, sh.cmd.ProcessState, sh.output()[from:])
		case <-deadline:
			t.Fatalf("%s: the commands\n%s\ndid not finish within %s\n%s", sh.page, block, patience, out)
		}
	}
}

// finish checks that the test ran every block of the page.
func (sh *labShell) finish(t *testing.T) {
	t.Helper()
	if sh.next != len(sh.blocks) {
		t.Errorf("%s has %d ```sh blocks, the test ran %d: update the test", sh.page, len(sh.blocks), sh.next)
	}
}

// wantIn fails the test unless out holds every one of want.
func wantIn(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s printed\n%s\nwithout %q", what, out, w)
		}
	}
}

// pageSays fails the test unless the page writes each of the commands the
// test mirrors (how it starts the stack, in a ```text block).
func pageSays(t *testing.T, name, page string, commands ...string) {
	t.Helper()
	for _, c := range commands {
		if !strings.Contains(page, c) {
			t.Errorf("%s no longer says %q, which its test mirrors: update the test", name, c)
		}
	}
}

// postgresAddress is host:port of the test's PostgreSQL.
func postgresAddress(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(adminDatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

var (
	traceIDField    = regexp.MustCompile(`"trace_id":"([0-9a-f]{32})"`)
	orderIDField    = regexp.MustCompile(`"order_id":"([0-9a-f-]{36})"`)
	traceresponse   = regexp.MustCompile(`(?i)traceresponse: 00-([0-9a-f]{32})-([0-9a-f]{16})-01`)
	sqlTraceparent  = regexp.MustCompile(`/\*traceparent='00-([0-9a-f]{32})-([0-9a-f]{16})-01'\*/`)
	sessionsWaiting = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%traceparent=%'`
)

// TestLabSQLComments runs lab 20: with SQL_COMMENTS=true, a statement of
// fulfillment stuck behind a lock shows in pg_stat_activity with the
// traceparent of its own span, in the trace of the order that caused it.
func TestLabSQLComments(t *testing.T) {
	t.Parallel()
	const name = "20-sql-comments.md"
	if _, err := exec.LookPath("psql"); err != nil {
		needService(t, "psql", err)
	}
	page, blocks := labPage(t, name)
	pageSays(t, name, page, "SQL_COMMENTS=true make up", "SQL_COMMENTS=true make demo")
	s := startStack(t, map[string]string{"SQL_COMMENTS": "true"})
	pg := postgresAddress(t)
	sh := newLabShell(t, name, blocks,
		"localhost:8080", strings.TrimPrefix(s.gateway.URL(), "http://"),
		"localhost:5432/orders", pg+"/"+s.env.Database, // the orders database is the test's own
		"localhost:5432", pg)

	// 2. The culprit, in the background: wait until it holds the row.
	sh.run(t)
	waitUntil(t, patience, "the culprit's session to hold the lock", func() (bool, error) {
		n, err := s.env.tryQueryInt(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'SELECT pg_sleep(25)'`)
		return n == 1, err
	})

	// 3. The order is placed; fulfillment's statement then waits.
	out := sh.run(t)
	wantIn(t, "step 3", out, `"status":"pending"`)
	m := traceIDField.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("step 3 printed no trace_id:\n%s", out)
	}
	traceID := m[1]
	o := orderIDField.FindStringSubmatch(out)
	if o == nil {
		t.Fatalf("step 3 printed no order_id:\n%s", out)
	}
	waitUntil(t, patience, "fulfillment's statement to wait on the lock", func() (bool, error) {
		n, err := s.env.tryQueryInt(sessionsWaiting)
		return n == 1, err
	})

	// 4. pg_stat_activity names the order's trace and a span of it.
	out = sh.run(t)
	wantIn(t, "step 4", out, "wait_event_type | Lock", "UPDATE products SET stock", "datname         | "+s.env.Database)
	c := sqlTraceparent.FindStringSubmatch(out)
	if c == nil || c[1] != traceID {
		t.Fatalf("step 4 printed\n%s\nwithout the traceparent of the order's trace %s", out, traceID)
	}
	spanID := c[2]

	// 6. The culprit's session ends, the order is fulfilled.
	out = sh.run(t)
	wantIn(t, "step 6 (pg_terminate_backend)", out, " t\n")
	if status := s.waitStatus(t, o[1]); status != "fulfilled" {
		t.Fatalf("order %s is %s once the lock is gone, want fulfilled", o[1], status)
	}
	wantIn(t, "step 6 (the order)", sh.run(t), `"status":"fulfilled"`, o[1])
	sh.finish(t)

	// 7. The comment's span ID is the statement's own CLIENT span.
	var stmt span
	waitFor(t, patience, "the span the comment names", func() bool {
		for _, sp := range s.otlp.Trace(traceID) {
			if sp.SpanID == spanID {
				stmt = sp
				return true
			}
		}
		return false
	})
	if stmt.Service != "fulfillment" || !strings.HasPrefix(stmt.Name, "UPDATE products") {
		t.Errorf("the comment names %s's span %q, want fulfillment's UPDATE products", stmt.Service, stmt.Name)
	}
	var parent span
	for _, sp := range s.otlp.Trace(traceID) {
		if sp.SpanID == stmt.ParentID {
			parent = sp
		}
	}
	if parent.Name != "fulfillment.reserve_stock" {
		t.Errorf("the statement's span is under %q, want fulfillment.reserve_stock", parent.Name)
	}
}

// TestLabProfiles runs lab 21 against services pushing their profiles to a
// stand-in for Pyroscope: the span of the traceresponse header, and each
// service's first span of the order, carry pyroscope.profile.id (their own
// span ID), no other span does, and after the burst orders' CPU profile
// holds samples labelled with span_name POST.
func TestLabProfiles(t *testing.T) {
	t.Parallel()
	const name = "21-profiles.md"
	page, blocks := labPage(t, name)
	pageSays(t, name, page, "`make up`")
	pyro := newPyroscope(t)
	s := startStack(t, profilingVars(pyro))
	sh := newLabShell(t, name, blocks, "localhost:8080", strings.TrimPrefix(s.gateway.URL(), "http://"))

	// 2. The header's span is the gateway's SERVER span, and names its profile.
	out := sh.run(t)
	m := traceresponse.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("step 2 printed\n%s\nwithout a traceresponse header", out)
	}
	wantIn(t, "step 2", out, `"trace_id":"`+m[1]+`"`)
	spans := waitWholeOrder(t, s.otlp, m[1])
	checkProfileIDs(t, spans) // 3. only each service's first span
	gw := find(t, spans, "gateway", server, "POST /api/orders")
	if gw.SpanID != m[2] || gw.Attrs["pyroscope.profile.id"] != m[2] {
		t.Errorf("the header names span %s; the gateway's SERVER span is %s with pyroscope.profile.id %q", m[2], gw.SpanID, gw.Attrs["pyroscope.profile.id"])
	}

	// 5. The burst: 200 orders placed, and orders' CPU samples named POST.
	burst := time.Now()
	out = sh.run(t)
	if !regexp.MustCompile(`(?m)^\s*200 201$`).MatchString(out) {
		t.Errorf("step 5 printed\n%s\nwant 200 answers 201", out)
	}
	pyro.waitCovered(t, "orders", "cpu", time.Now())
	names := map[string]int{}
	for _, u := range pyro.Uploads("orders", "cpu") {
		if u.Until.Before(burst) {
			continue
		}
		for _, smp := range u.Profile.Sample {
			for _, v := range smp.Label["span_name"] {
				names[v]++
			}
		}
	}
	if names["POST"] == 0 {
		t.Errorf("orders' CPU samples during the burst, by span_name: %v; want some of POST", names)
	}
	t.Logf("orders' CPU samples during the burst, by span_name: %v", names)
	sh.finish(t)
}

// sdkDrops reads the SDK's otel.sdk.processor.span.processed of each
// service as r received it: the spans dropped (with an error.type) and all
// spans processed, the latest cumulative value of each series summed. Over
// a run shorter than 5 minutes, dropped/processed is what the rule's
// rate(...[5m]) ratio computes.
func sdkDrops(r *receiver) (dropped, processed map[string]float64) {
	latest := map[string]point{}
	for _, p := range r.Points("otel.sdk.processor.span.processed") {
		latest[p.Service+p.Instance+fmt.Sprint(p.Attrs)] = p
	}
	dropped, processed = map[string]float64{}, map[string]float64{}
	for _, p := range latest {
		processed[p.Service] += p.Value
		if p.Attrs["error.type"] != "" {
			dropped[p.Service] += p.Value
		}
	}
	return dropped, processed
}

var metricLine = regexp.MustCompile(`(?m)^(otelcol_receiver_(?:accepted|refused)_spans[a-z_]*)\{[^}]*\} ([0-9.e+]+)$`)

// TestLabDroppedSpans runs lab 22 against the real services exporting
// through the real collector, with a batch queue of 16 spans: the burst's
// orders are all placed, the SDK's counters (as the collector forwards them
// to Prometheus) put the rule's expression above 1% for orders, the
// collector's own counters show nothing refused, and the orders' traces
// have gaps, some spans under a parent that never arrived.
func TestLabDroppedSpans(t *testing.T) {
	t.Parallel()
	const name = "22-dropped-spans.md"
	page, blocks := labPage(t, name)
	pageSays(t, name, page, `OTEL_BSP_MAX_QUEUE_SIZE: "16"`, "OTEL_BSP_MAX_QUEUE_SIZE=16 make demo")
	col := startCollector(t, nil)
	s := startStack(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP,
		"OTEL_BSP_MAX_QUEUE_SIZE":     "16",
		"OTEL_BSP_SCHEDULE_DELAY":     "1000", // compose's
	})
	colMetrics := strings.TrimSuffix(strings.TrimPrefix(col.Metrics, "http://"), "/metrics")
	sh := newLabShellIn(t, "..", name, blocks,
		"localhost:8080", strings.TrimPrefix(s.gateway.URL(), "http://"),
		"localhost:8888", colMetrics)

	// 1. The rule, read from the repository.
	wantIn(t, "step 1", sh.run(t), "alert: SDKSpansDropped", `otel_sdk_processor_span_processed_total{error_type!=""}`, "> 0.01", "for: 1m")

	// 3. The burst: every order placed.
	out := sh.run(t)
	wantIn(t, "step 3", out, "placed: 200")
	if n := len(regexp.MustCompile(`(?m)^[0-9a-f]{32}$`).FindAllString(out, -1)); n != 5 {
		t.Errorf("step 3 printed %d trace IDs, want 5:\n%s", n, out)
	}
	waitUntil(t, patience, "fulfillment to settle every order of the burst", func() (bool, error) {
		n, err := s.env.tryQueryInt(`SELECT count(*) FROM orders WHERE status = 'pending'`)
		return n == 0, err
	})

	// 4. The expression's value, from what the collector forwards to Prometheus.
	waitUntil(t, patience, "orders' dropped spans at the metrics backend", func() (bool, error) {
		if dropped, processed := sdkDrops(col.backends); dropped["orders"] == 0 {
			return false, fmt.Errorf("dropped %v of %v", dropped, processed)
		}
		return true, nil
	})

	// 5. The collector accepted spans, and refused none.
	out = sh.run(t)
	sh.finish(t)
	wantSpansAccepted(t, "step 5", out)

	// Stopped, the services have flushed their spans and metrics; the
	// marker arrives once the collector has decided every trace before it.
	s.stop(t)
	sendMarker(t, col.OTLPHTTP, markerTrace)
	waitFor(t, patience, "the marker trace at the backend", func() bool { return len(col.backends.Trace(markerTrace)) > 0 })
	dropped, processed := sdkDrops(col.backends)
	t.Logf("spans dropped / processed by the SDK: %v / %v", dropped, processed)
	for _, svc := range []string{"orders", "fulfillment"} {
		if r := dropped[svc] / processed[svc]; !(r > 0.01) {
			t.Errorf("%s dropped %v of %v spans (%.3f), want above the rule's 0.01", svc, dropped[svc], processed[svc], r)
		}
	}

	// 6. Gaps: some traces whole, some not, spans whose parent is missing.
	whole, partial, orphans := 0, 0, 0
	for id, spans := range byTrace(col.backends.Spans()) {
		if id == markerTrace || len(missing(spans)) == len(completeTrace) {
			continue // not an order's: the relay's polls, the marker
		}
		ids := map[string]bool{}
		for _, sp := range spans {
			ids[sp.SpanID] = true
		}
		gap := len(missing(spans)) > 0
		for _, sp := range spans {
			if sp.ParentID != "" && !ids[sp.ParentID] {
				orphans++
				gap = true
			}
		}
		if gap {
			partial++
		} else {
			whole++
		}
	}
	t.Logf("the orders' traces at the backend: %d whole, %d with gaps; %d spans under a parent that never arrived", whole, partial, orphans)
	if whole == 0 || partial == 0 || orphans == 0 {
		t.Errorf("want some whole traces, some with gaps, and spans whose parent is missing")
	}
	// The span metrics count only what arrived.
	if n := calls(col.backends, "orders", "POST /orders"); n >= 200 {
		t.Errorf("span metrics count %d of orders' POST /orders, want fewer than the 200 orders", n)
	} else {
		t.Logf("span metrics count %d of orders' POST /orders for 200 orders", n)
	}
}

// latestSum sums the latest value of each series of metric that service
// sent r (for a histogram, its count).
func latestSum(r *receiver, metric, service string) float64 {
	latest := map[string]float64{}
	for _, p := range r.Points(metric) {
		if p.Service == service {
			latest[p.Instance+fmt.Sprint(p.Attrs)] = p.Value
		}
	}
	total := 0.0
	for _, v := range latest {
		total += v
	}
	return total
}

var flagCount = regexp.MustCompile(`(?m)^\s*(\d+) (globex|acme) flags (0[01])$`)

// TestLabSamplingLayers runs lab 23: head sampling at 0.1 with globex a
// priority tenant, through the real collector keeping 10% at the tail.
// Every globex order is sampled at the head, a few acme orders are; the
// span metrics count exactly the orders the head kept, the services'
// http.server.request.duration all of them; the tail passes on some of
// globex's traces, not all.
func TestLabSamplingLayers(t *testing.T) {
	t.Parallel()
	const name = "23-sampling-layers.md"
	page, blocks := labPage(t, name)
	pageSays(t, name, page, "OTEL_TRACES_SAMPLER_ARG=0.1 PRIORITY_TENANTS=globex TRACE_SAMPLING_PERCENTAGE=10 make up")
	col := startCollector(t, map[string]string{
		"TRACE_SAMPLING_PERCENTAGE": "10",
		// Services built with the race detector, in a burst, are slower than
		// the stack's: only a trace slower than this is kept for being slow.
		"TRACE_SLOW_THRESHOLD_MS": "5000",
	})
	s := startStack(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP,
		"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     "0.1",
		"PRIORITY_TENANTS":            "globex",
		"OTEL_BSP_MAX_QUEUE_SIZE":     "16384", // no span lost to a full queue (lab 22)
	})
	sh := newLabShell(t, name, blocks, "localhost:8080", strings.TrimPrefix(s.gateway.URL(), "http://"))

	// 2. The flags of each tenant's traceresponse headers.
	out := sh.run(t)
	sh.finish(t)
	flags := map[string]int{}
	for _, m := range flagCount.FindAllStringSubmatch(out, -1) {
		var n int
		fmt.Sscan(m[1], &n)
		flags[m[2]+" "+m[3]] = n
	}
	t.Logf("traceresponse flags by tenant: %v", flags)
	if flags["globex 01"] != 100 || flags["globex 00"] != 0 {
		t.Errorf("step 2 printed\n%s\nwant all 100 globex orders sampled", out)
	}
	acmeKept := flags["acme 01"]
	if acmeKept+flags["acme 00"] != 100 || acmeKept < 1 || acmeKept > 30 {
		t.Errorf("step 2 printed\n%s\nwant 100 acme orders, about 10 of them sampled", out)
	}

	// 3. The span metrics count what the head kept; the services' own
	// request metric counts every request.
	kept := 100 + acmeKept
	waitUntil(t, patience, "the span metrics and the services' request metric", func() (bool, error) {
		calls, requests := calls(col.backends, "gateway", "POST /api/orders"), latestSum(col.backends, "http.server.request.duration", "gateway")
		if calls != kept || requests != 200 {
			return false, fmt.Errorf("span metrics count %d of the gateway's POST /api/orders (want %d), http.server.request.duration %v (want 200)", calls, kept, requests)
		}
		return true, nil
	})
	t.Logf("span metrics: %d calls of the gateway's POST /api/orders for 200 orders; http.server.request.duration: 200", kept)

	// 4. The tail passes on a share of the kept traces, globex's too.
	s.stop(t)
	sendMarker(t, col.OTLPHTTP, markerTrace)
	waitFor(t, patience, "the marker trace at the backend", func() bool { return len(col.backends.Trace(markerTrace)) > 0 })
	tenants := map[string]int{}
	for _, sp := range col.backends.Spans() {
		if sp.Service == "gateway" && sp.Kind == server && sp.Name == "POST /api/orders" {
			tenants[sp.Attrs["tenant.id"]]++
		}
	}
	t.Logf("gateway SERVER spans past the tail sampler, by tenant: %v", tenants)
	if tenants["globex"] == 0 || tenants["globex"] >= 50 || tenants["acme"] > acmeKept {
		t.Errorf("past the tail sampler: %v; want some of globex's 100 and at most %d of acme's", tenants, acmeKept)
	}
}

// secureMetrics is host:port of the secure collector's own metrics.
func secureMetrics(t *testing.T, c *secureCollector) string {
	t.Helper()
	for _, kv := range c.cmd.Env {
		if port, ok := strings.CutPrefix(kv, "COLLECTOR_METRICS_PORT="); ok {
			return "127.0.0.1:" + port
		}
	}
	t.Fatal("the secure collector was started without COLLECTOR_METRICS_PORT")
	return ""
}

var status401 = regexp.MustCompile(`(?m)^http_server_request_duration_count\{[^}]*http_response_status_code="401"[^}]*\} ([0-9.e+]+)$`)

// TestLabSecureTelemetry runs lab 19's exercise against the secure
// collector (config.yaml with secure.yaml over it) and services exporting
// to it as the secure profile's do: a second gateway, started from the
// page with the gateway's certificate and a wrong credential, takes an
// order; its SDK logs the 401, the collector's HTTP server counts it while
// its receiver counts nothing refused, and the order's trace reaches the
// backend without one span of the gateway. The page's commands run in a
// directory laid out as the repository: bin/gateway the tests' build,
// deploy/certs the test's certificates.
func TestLabSecureTelemetry(t *testing.T) {
	t.Parallel()
	const name = "19-secure-telemetry.md"
	page, blocks := labPage(t, name)
	pageSays(t, name, page, "make certs\n   make up SECURE=1", "SECURE=1 make demo")
	certs := makeCerts(t)
	col := startSecureCollector(t, certs)
	metrics := newTLSReceiver(t, filepath.Join(certs, "prometheus.crt"), filepath.Join(certs, "prometheus.key"))
	s := startSecureStack(t, certs, metrics, true, func(service string) map[string]string {
		return exportVars(certs, col.HTTP, service)
	})
	root := t.TempDir()
	for _, dir := range []string{"bin", "deploy"} {
		if err := os.Mkdir(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(binDir, "gateway"), filepath.Join(root, "bin/gateway")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(certs, filepath.Join(root, "deploy/certs")); err != nil {
		t.Fatal(err)
	}
	impostor := freePort(t)
	sh := newLabShellIn(t, root, name, blocks,
		"localhost:4318", strings.TrimPrefix(col.HTTP, "https://"),
		"localhost:8081", strings.TrimPrefix(s.orders.URL(), "http://"),
		"localhost:8090", impostor,
		"localhost:8888", secureMetrics(t, col))

	// 4. The second gateway, with a wrong credential, until it is ready.
	sh.run(t)
	waitUntil(t, startTimeout, "the second gateway's /readyz", func() (bool, error) {
		err := healthy("http://" + impostor + "/readyz")
		return err == nil, err
	})

	// 5. An order through it: taken.
	out := sh.run(t)
	wantIn(t, "step 5", out, `"status":"pending"`)
	m := traceIDField.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("step 5 printed no trace_id:\n%s", out)
	}
	traceID := m[1]
	logFile := filepath.Join(root, "bin/gateway-8090.log")
	waitUntil(t, patience, "the second gateway's SDK logging the refused export", func() (bool, error) {
		raw, err := os.ReadFile(logFile)
		return strings.Contains(string(raw), "traces export"), err
	})
	waitFor(t, patience, "orders' SERVER span of the order at the backend", func() bool {
		for _, sp := range col.backends.Trace(traceID) {
			if sp.Service == "orders" && sp.Kind == server {
				return true
			}
		}
		return false
	})

	// 6. The service's own log line.
	out = sh.run(t)
	wantIn(t, "step 6", out, `"msg":"opentelemetry sdk"`, `"level":"WARN"`, "traces export: failed to send to https://"+strings.TrimPrefix(col.HTTP, "https://")+"/v1/traces: 401 Unauthorized", "invalid credentials")

	// 7. The collector's counters: 401 answers, nothing refused.
	out = sh.run(t)
	counters := wantSpansAccepted(t, "step 7", out)
	refused := 0.0
	for _, m := range status401.FindAllStringSubmatch(out, -1) {
		var v float64
		fmt.Sscan(m[1], &v)
		refused += v
	}
	if refused == 0 {
		t.Errorf("step 7 printed\n%s\nwithout a count of 401 answers", out)
	}
	t.Logf("the collector: %v accepted spans, %v refused; %v answers 401", counters["otelcol_receiver_accepted_spans"], counters["otelcol_receiver_refused_spans"], refused)

	// 9. The second gateway stopped: it flushes what it can, refused again.
	sh.run(t)
	sh.finish(t)

	// 8. Stopped in turn, the services and the collector have delivered
	// everything: the trace has orders' and fulfillment's spans, none of the
	// gateway's, and orders' SERVER span's parent is missing.
	s.stop(t)
	col.stop(t)
	spans := col.backends.Trace(traceID)
	ids := map[string]bool{}
	services := map[string]int{}
	for _, sp := range spans {
		ids[sp.SpanID] = true
		services[sp.Service]++
	}
	t.Logf("the order's trace at the backend, spans by service: %v", services)
	if services["gateway"] > 0 || services["orders"] == 0 || services["fulfillment"] == 0 {
		t.Errorf("the order's trace at the backend:\n%s\nwant orders' and fulfillment's spans, none of the gateway's", tree(spans))
	}
	ordersServer := find(t, spans, "orders", server, "POST /orders")
	if ordersServer.ParentID == "" || ids[ordersServer.ParentID] {
		t.Errorf("orders' POST /orders has parent %q, want one that is not in the trace", ordersServer.ParentID)
	}
}

// TestLabScaleOut runs lab 24 from the repository's root: the chart's files
// it reads print the agent tier's trace-ID load balancer on the gateway
// tier's headless Service, traces alone routed through it, the gateway
// tier's tail sampler with its span metrics before it, and the chart's
// values for the tier.
func TestLabScaleOut(t *testing.T) {
	t.Parallel()
	const name = "24-scale-out.md"
	_, blocks := labPage(t, name)
	sh := newLabShellIn(t, "..", name, blocks)

	// 1. The agent's traces exporter.
	wantIn(t, "step 1", sh.run(t), "routing_key: traceID", "protocol:\n      otlp:", "k8s:\n        service: ${env:COLLECTOR_GATEWAY_HEADLESS}", "ports: [4317]")

	// 2. Only traces go through the load balancer.
	out := sh.run(t)
	if n := strings.Count(out, "exporters: [loadbalancing]"); n != 1 {
		t.Errorf("step 2 printed\n%s\nwant exactly one pipeline exporting to loadbalancing", out)
	}
	wantIn(t, "step 2", out, "traces:\n      receivers: [otlp]\n      processors: [memory_limiter, resource/node, batch]\n      exporters: [loadbalancing]",
		"metrics:", "logs:", "exporters: [otlp_grpc/gateway]")

	// 3. The gateway tier's sampler, and span metrics before it.
	wantIn(t, "step 3", sh.run(t), "decision_wait: ${env:TRACE_DECISION_WAIT:-5s}", "name: errors", "name: slow", "name: share",
		"threshold_ms: ${env:TRACE_SLOW_THRESHOLD_MS:-500}", "sampling_percentage: ${env:TRACE_SAMPLING_PERCENTAGE:-100}",
		"traces/in:", "exporters: [span_metrics, forward]")

	// 4. The chart's values for the tier.
	wantIn(t, "step 4", sh.run(t), "replicas: 2", "enabled: false", "traceDecisionWait: 5s", "traceSamplingPercentage: 100")
	sh.finish(t)

	// The answer's claim on the span metrics: the pod's name labels each
	// collector's series.
	raw, err := os.ReadFile("../deploy/chart/ordertrace/files/collector-gateway-k8s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "collector.instance.id: ${env:POD_NAME}") {
		t.Errorf("collector-gateway-k8s.yaml no longer sets collector.instance.id to the pod's name, which lab 24's answer says")
	}
}

// wantSpansAccepted reads the collector's counters from a scrape of its own
// metrics (step names the page's step), wants spans accepted and none
// refused, and returns the counters, each summed over its labels.
func wantSpansAccepted(t *testing.T, step, out string) map[string]float64 {
	t.Helper()
	counters := map[string]float64{}
	for _, m := range metricLine.FindAllStringSubmatch(out, -1) {
		var v float64
		fmt.Sscan(m[2], &v)
		counters[strings.TrimSuffix(m[1], "_total")] += v
	}
	if counters["otelcol_receiver_accepted_spans"] == 0 {
		t.Errorf("%s printed\n%s\nwithout accepted spans", step, out)
	}
	if !strings.Contains(out, "otelcol_receiver_refused_spans") || counters["otelcol_receiver_refused_spans"] != 0 {
		t.Errorf("%s printed\n%s\nwant otelcol_receiver_refused_spans at 0", step, out)
	}
	return counters
}
