//go:build demo

package e2e

// The native demo as a new user meets it: `make up` on a machine without a
// Docker engine, `make demo` and `make run`, each started through a
// pseudo-terminal as from a shell, and stopped with Ctrl-C. A real browser
// (headless Chromium) opens the trace of an order in Jaeger's page and reads
// what a person would see; the scenarios switch while the services run.
//
// make test-demo runs it (.ci/run installs Debian's chromium when missing).
// The demo listens on the suite's fixed ports (8080-8082, 4317/4318, 16686),
// so this runs alone, like the fault suite; it uses its own database, vhost,
// Redis key space and scenarios file.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const (
	demoGateway = "http://127.0.0.1:8080"
	demoOrders  = "http://127.0.0.1:8081"
	demoJaeger  = "http://127.0.0.1:16686"
)

// The ports a stopped demo must have let go of.
var demoPorts = []string{"8080", "8081", "8082", "4317", "4318", "1777", "8888", "13133", "13134", "14318", "16685", "16686"}

// demoPortsFree fails the test if the demo's ports are taken.
func demoPortsFree(t *testing.T) {
	t.Helper()
	for _, port := range demoPorts {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			t.Fatalf("port %s is taken: stop whatever runs there (a make demo?) before this test", port)
		}
	}
}

func TestDemo(t *testing.T) {
	demoPortsFree(t)
	variants := []struct{ name, target string }{{"make up", "up"}, {"make demo", "demo"}, {"make run", "run"}}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t)
			scenarios := filepath.Join(t.TempDir(), "scenarios.json")
			began := time.Now()
			demo := startDemo(t, v.target, e, scenarios, "SECURE=")
			waitUntil(t, 5*time.Minute, "the gateway's /readyz (make "+v.target+")", func() (bool, error) {
				if demo.exited() {
					t.Fatalf("make %s exited (%v) before the gateway was ready", v.target, demo.err)
				}
				return httpOK(demoGateway + "/readyz")
			})
			t.Logf("make %s: ready in %s", v.target, time.Since(began).Round(100*time.Millisecond))
			if v.target == "up" {
				if !demo.hasDocker && !strings.Contains(demo.output(), "no working Docker engine") {
					t.Errorf("make up without a Docker engine did not say so:\n%s", demo.output())
				}
			}
			if v.target != "run" {
				traceInBrowser(t, v.target, began)
			}
			scenarioSwitches(t, scenarios)
			if v.target == "demo" {
				demo.terminate(t) // as a supervisor would stop it
			} else {
				demo.interrupt(t) // as a person would
			}
		})
	}
}

// TestDemoSecure: SECURE=1 make demo, as the README shows it. One order's
// trace reaches Jaeger through the secure path (services ─TLS, client
// certificate, credential─▶ collector ─TLS─▶ Jaeger), while the collector's
// OTLP/HTTP port refuses plain http, a TLS client without a certificate,
// and a certificate without a credential. No credential or key is in the
// demo's output or logs.
func TestDemoSecure(t *testing.T) {
	demoPortsFree(t)
	e := newEnv(t)
	certs := t.TempDir() // CERTS_DIR: the user's deploy/certs stays as it is
	began := time.Now()
	demo := startDemo(t, "demo", e, filepath.Join(t.TempDir(), "scenarios.json"), "SECURE=1", "CERTS_DIR="+certs)
	waitUntil(t, 5*time.Minute, "the gateway's /readyz (SECURE=1 make demo)", func() (bool, error) {
		if demo.exited() {
			t.Fatalf("SECURE=1 make demo exited (%v) before the gateway was ready", demo.err)
		}
		return httpOK(demoGateway + "/readyz")
	})
	t.Logf("SECURE=1 make demo: ready in %s", time.Since(began).Round(100*time.Millisecond))
	// The banner follows the gateway's readiness: the user is told the path is secure.
	waitUntil(t, time.Minute, "SECURE=1 make demo to say that the telemetry path is secure", func() (bool, error) {
		return strings.Contains(demo.output(), "the telemetry path is secure"), nil
	})

	status, traceID := demoOrder(t)
	if status != http.StatusCreated {
		t.Fatalf("order: status %d, want 201", status)
	}
	var spans int
	waitUntil(t, 2*time.Minute, "the order's trace from all three services in Jaeger", func() (bool, error) {
		n, services, err := jaegerTrace(traceID)
		spans = n
		return len(services) == 3 && n >= 15, err
	})
	t.Logf("the order's trace reached Jaeger over TLS: %d spans from gateway, orders and fulfillment", spans)

	collectorRefuses(t, certs)
	demo.terminate(t)

	logged := demo.output()
	for _, f := range []string{"gateway", "orders", "fulfillment", "collector", "jaeger"} {
		b, _ := os.ReadFile("../bin/demo/" + f + ".log")
		logged += string(b)
	}
	for _, secret := range certSecrets(t, certs) {
		if strings.Contains(logged, secret) {
			t.Error("a credential or a private key is in the demo's output or logs") // never the secret itself
			break
		}
	}
}

// collectorRefuses knocks on the demo collector's OTLP/HTTP port the wrong
// ways: plain http, TLS without a client certificate, and a client
// certificate without a credential. None gets its spans in.
func collectorRefuses(t *testing.T, certs string) {
	t.Helper()
	const traces = "127.0.0.1:4318/v1/traces"
	post := func(c *http.Client, url string) (int, error) {
		resp, err := c.Post(url, "application/x-protobuf", strings.NewReader(""))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if status, err := post(testClient, "http://"+traces); err == nil && status/100 == 2 {
		t.Errorf("plain http to the collector: %d, want a refusal", status)
	} else {
		t.Logf("plain http to the collector: refused (%d, %v)", status, err)
	}

	pem, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs},
		}}
	}
	if status, err := post(client(), "https://"+traces); err == nil {
		t.Errorf("https without a client certificate: %d, want the handshake refused", status)
	} else {
		t.Logf("https without a client certificate: refused (%v)", err)
	}
	orders, err := tls.LoadX509KeyPair(filepath.Join(certs, "orders.crt"), filepath.Join(certs, "orders.key"))
	if err != nil {
		t.Fatal(err)
	}
	if status, err := post(client(orders), "https://"+traces); err != nil || status != http.StatusUnauthorized {
		t.Errorf("orders' certificate without its credential: %d, %v; want 401", status, err)
	} else {
		t.Logf("a client certificate without a credential: refused (%d)", status)
	}
}

// demo is one `make <target>` running in a pseudo-terminal (script(1)), as
// if typed in a shell.
type demo struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	out       *lockedBuffer
	done      chan struct{} // closed when make has exited, with err set
	err       error
	hasDocker bool
}

// startDemo runs make target in a pseudo-terminal; vars are added to the
// environment it runs in.
func startDemo(t *testing.T, target string, e *env, scenarios string, vars ...string) *demo {
	t.Helper()
	d := &demo{out: &lockedBuffer{}, done: make(chan struct{})}
	d.hasDocker = exec.Command("docker", "info").Run() == nil
	if d.hasDocker && target == "up" {
		t.Log("this machine has a Docker engine: make up would start the compose stack, so it runs make demo instead")
		target = "demo"
	}
	d.cmd = exec.Command("script", "-qfec", "make --no-print-directory "+target, "/dev/null")
	d.cmd.Dir = ".."
	d.cmd.Env = append(os.Environ(),
		"DATABASE_URL="+e.DatabaseURL, "AMQP_URL="+e.AMQPURL, "REDIS_URL="+redisURL, "SCENARIOS_FILE="+scenarios,
		"OTEL_EXPORTER_OTLP_ENDPOINT=", // make run: export off, as for a user who set nothing
	)
	d.cmd.Env = append(d.cmd.Env, vars...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	var err error
	d.stdin, err = d.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("script -c make %s: %v", target, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			// Stopped as a supervisor would, so that no program of the demo
			// outlives the test and holds its ports.
			if pid := runLocalPID(); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
			select {
			case <-d.done:
			case <-time.After(time.Minute):
				_ = d.cmd.Process.Kill()
			}
			t.Errorf("make %s was still running at the end of the test; its output:\n%s", target, d.output())
		}
		if t.Failed() {
			t.Logf("make %s output:\n%s", target, d.output())
			for _, f := range []string{"gateway", "orders", "fulfillment", "collector", "jaeger"} {
				if b, err := os.ReadFile("../bin/demo/" + f + ".log"); err == nil && len(b) > 0 {
					t.Logf("bin/demo/%s.log (last 3000 bytes):\n%s", f, b[max(0, len(b)-3000):])
				}
			}
		}
	})
	return d
}

func (d *demo) output() string { return d.out.String() }

func (d *demo) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// interrupt types Ctrl-C into the terminal: everything stops, in order, and
// make exits 0, leaving no port taken.
func (d *demo) interrupt(t *testing.T) {
	t.Helper()
	if _, err := d.stdin.Write([]byte{3}); err != nil {
		t.Fatalf("Ctrl-C: %v", err)
	}
	d.stopped(t, "Ctrl-C")
}

// runLocalPID is the PID bin/run-local.pid holds, if it is run-local.sh's
// (a stale file may name another program by now), else 0.
func runLocalPID() int {
	raw, err := os.ReadFile("../bin/run-local.pid")
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("run-local.sh")) {
		return 0
	}
	return pid
}

// terminate sends SIGTERM to the script whose PID bin/run-local.pid holds:
// the same orderly stop, and make exits 0.
func (d *demo) terminate(t *testing.T) {
	t.Helper()
	pid := runLocalPID()
	if pid == 0 {
		t.Fatal("bin/run-local.pid names no running run-local.sh")
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to %d: %v", pid, err)
	}
	d.stopped(t, "SIGTERM")
}

func (d *demo) stopped(t *testing.T, how string) {
	t.Helper()
	began := time.Now()
	select {
	case <-d.done:
		if d.err != nil {
			t.Errorf("make exited with %v after %s, want 0", d.err, how)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("make still runs 2 minutes after %s", how)
	}
	took := time.Since(began)
	t.Logf("stopped %s after %s", took.Round(100*time.Millisecond), how)
	if took > 5*time.Second { // bounded, but slow: say which program held it up
		out := d.output()
		t.Logf("the end of make's output:\n%s", out[max(0, len(out)-600):])
	}
	for _, port := range demoPorts {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			t.Errorf("port %s is still taken after %s", port, how)
		}
	}
}

// traceInBrowser places an order and opens its trace in Jaeger's page in
// headless Chromium, until the page shows the whole trace: the three
// services, the span count Jaeger holds, and the PRODUCER → CONSUMER hop.
func traceInBrowser(t *testing.T, target string, began time.Time) {
	t.Helper()
	status, traceID := demoOrder(t)
	if status != http.StatusCreated {
		t.Fatalf("order: status %d, want 201", status)
	}
	ordered := time.Now()

	ctx := browser(t)
	url := demoJaeger + "/trace/" + traceID
	var summary, hop string
	var rows []pageRow
	var apiSpans int
	var page tracePage
	waitUntil(t, 2*time.Minute, "the whole trace on Jaeger's page", func() (bool, error) {
		n, services, err := jaegerTrace(traceID)
		if err != nil || n == 0 {
			return false, err
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#summary, p.err"))); err != nil {
			return false, err
		}
		page, err = chromedp.Run(ctx, chromedp.Evaluate[tracePage](`({
			summary: (document.getElementById("summary") || {}).innerText || "",
			rows: [...document.querySelectorAll("tr.span")].map(r => ({
				text: r.innerText, kind: r.querySelector(".kind").innerText, service: r.querySelector(".service").innerText, indent: r.querySelector("td.name").getBoundingClientRect().left + parseFloat(getComputedStyle(r.querySelector("td.name")).paddingLeft),
			})),
			hop: [...document.querySelectorAll("tr.span[data-kind=CONSUMER] .hop")].map(e => e.innerText).join("\n"),
		})`))
		if err != nil {
			return false, err
		}
		summary, rows, hop = page.Summary, page.Rows, page.Hop
		apiSpans = n
		// Complete: every service has reported, and the page shows what
		// Jaeger holds (no span arrived between the two reads).
		return len(services) == 3 && hop != "" && strings.Contains(summary, fmt.Sprintf(" %d spans ", n)), nil
	})
	t.Logf("make %s: order's trace complete on the page %s after the order, %s after make %s started",
		target, time.Since(ordered).Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond), target)
	t.Logf("page summary: %s", summary)

	if !strings.Contains(summary, "3 services") || !strings.Contains(summary, strconv.Itoa(apiSpans)+" spans") {
		t.Errorf("summary %q, want 3 services and the %d spans Jaeger holds", summary, apiSpans)
	}
	seen := map[string]bool{}
	producer, consumer := -1, -1
	for i, r := range rows {
		seen[r.Service] = true
		if r.Kind == "PRODUCER" && r.Service == "orders" && strings.Contains(r.Text, "create orders:order.created") {
			producer = i
		}
		if r.Kind == "CONSUMER" && r.Service == "fulfillment" && strings.Contains(r.Text, "process orders:order.created:fulfillment.order-created") {
			consumer = i
		}
	}
	// Exactly the three services, on as many rows as Jaeger has spans.
	if len(seen) != 3 || !seen["gateway"] || !seen["orders"] || !seen["fulfillment"] || len(rows) != apiSpans {
		t.Errorf("the page has %d rows with services %v; want %d rows of gateway, orders and fulfillment", len(rows), seen, apiSpans)
	}
	if apiSpans < 15 {
		t.Errorf("the trace has %d spans, want the golden trace's (at least 15)", apiSpans)
	}
	if !strings.Contains(hop, "PRODUCER → CONSUMER: message from orders (create orders:order.created)") {
		t.Errorf("the CONSUMER row says %q, want the hop from orders' PRODUCER span", hop)
	}
	// The CONSUMER row hangs under the PRODUCER row: below it, indented further.
	if producer < 0 || consumer < 0 || producer > consumer || rows[consumer].Indent <= rows[producer].Indent {
		t.Errorf("PRODUCER row %d, CONSUMER row %d (of %d); want the consumer's below the producer's and indented further", producer, consumer, len(rows))
	} else {
		t.Logf("PRODUCER row %d at %.0f px, CONSUMER row %d at %.0f px", producer, rows[producer].Indent, consumer, rows[consumer].Indent)
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 makes a PNG
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join("..", "bin", "demo-trace-"+target+".png")
	if err := os.MkdirAll(filepath.Dir(shot), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: bin/demo-trace-%s.png", target)
}

// tracePage is what the trace page shows, as text a person reads.
type tracePage struct {
	Summary string    `json:"summary"`
	Rows    []pageRow `json:"rows"`
	Hop     string    `json:"hop"`
}

// pageRow is one span's row: its text and how far it is indented.
type pageRow struct {
	Text    string  `json:"text"`
	Kind    string  `json:"kind"`    // the span kind's badge
	Service string  `json:"service"` // the service name shown on the row
	Indent  float64 `json:"indent"`
}

// browser starts headless Chromium for t: Debian's, with the flags a closed
// network needs (no background connections to Google's hosts).
func browser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no Chromium at %s (.ci/run installs Debian's chromium; or set CHROMIUM): %v", path, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// jaegerTrace asks Jaeger's query API for a trace: its span count and
// services (none yet: 0 and no error).
func jaegerTrace(traceID string) (int, map[string]bool, error) {
	spans, err := jaegerSpans(demoJaeger, traceID)
	services := map[string]bool{}
	for _, s := range spans {
		services[s.service] = true
	}
	return len(spans), services, err
}

// scenarioSwitches switches payment-failures on with make scenario, as a
// workshop instructor does, and back off: 30 orders placed while it is on
// get some 402s, and switching never touches a tracked file.
func scenarioSwitches(t *testing.T, file string) {
	t.Helper()
	makeScenario(t, file, "NAME=payment-failures", "ON=1")
	waitUntil(t, time.Minute, "orders to load payment-failures=0.3", func() (bool, error) {
		return loadedScenario(demoOrders+"/scenarios", "payment-failures", 0.3)
	})
	statuses := map[int]int{}
	for range 30 {
		status, _ := demoOrder(t)
		statuses[status]++
	}
	t.Logf("30 orders with payment-failures on: %v", statuses)
	if statuses[http.StatusPaymentRequired] == 0 || statuses[http.StatusCreated]+statuses[http.StatusPaymentRequired] != 30 {
		t.Errorf("statuses %v, want some 402s and only 201s and 402s", statuses)
	}

	makeScenario(t, file, "NAME=payment-failures", "ON=0")
	waitUntil(t, time.Minute, "orders to load payment-failures=0", func() (bool, error) {
		return loadedScenario(demoOrders+"/scenarios", "payment-failures", 0)
	})
	if status, _ := demoOrder(t); status != http.StatusCreated {
		t.Errorf("with payment-failures off, an order got %d, want 201", status)
	}
	// ON= takes only what make help documents.
	if out, err := makeCmd(file, "scenario", "NAME=payment-failures", "ON=yes").CombinedOutput(); err == nil || !strings.Contains(string(out), "use 1 or on, 0 or off") {
		t.Errorf("make scenario ON=yes: %v %s; want a refusal that lists the values", err, out)
	}
}

func makeCmd(file string, args ...string) *exec.Cmd {
	cmd := exec.Command("make", append([]string{"--no-print-directory"}, args...)...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "SCENARIOS_FILE="+file)
	return cmd
}

func makeScenario(t *testing.T, file string, args ...string) {
	t.Helper()
	if out, err := makeCmd(file, append([]string{"scenario"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("make scenario %v: %v\n%s", args, err, out)
	}
}

// loadedScenario reports whether a service's /scenarios shows name at want.
func loadedScenario(url, name string, want float64) (bool, error) {
	resp, err := testClient.Get(url)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var loaded map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&loaded); err != nil {
		return false, err
	}
	return loaded[name] == want, nil
}

// demoOrder places an order through the demo's gateway: its status and trace ID.
func demoOrder(t *testing.T) (int, string) {
	t.Helper()
	body := `{"customer_id":"demo-1","items":[{"sku":"COFFEE-BEANS-1KG","quantity":1},{"sku":"MUG-CERAMIC","quantity":1}]}`
	req, _ := http.NewRequest(http.MethodPost, demoGateway+"/api/orders", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("place an order: %v", err)
	}
	defer resp.Body.Close()
	var answer struct {
		TraceID string `json:"trace_id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(answer.TraceID) {
		t.Errorf("answer %d has trace_id %q, want 32 hex digits", resp.StatusCode, answer.TraceID)
	}
	return resp.StatusCode, answer.TraceID
}

func httpOK(url string) (bool, error) {
	resp, err := testClient.Get(url)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// TestScenarioFileUntracked: switching a scenario writes the live file,
// which git ignores; the defaults are the tracked file.
func TestScenarioFileUntracked(t *testing.T) {
	out, err := exec.Command("git", "-C", "..", "ls-files", "deploy/scenarios").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "deploy/scenarios/defaults.json" {
		t.Errorf("tracked under deploy/scenarios: %q, want only defaults.json", got)
	}
	if err := exec.Command("git", "-C", "..", "check-ignore", "-q", "deploy/scenarios/scenarios.json").Run(); err != nil {
		t.Errorf("deploy/scenarios/scenarios.json (the live file make scenario writes) is not ignored by git: %v", err)
	}
}
