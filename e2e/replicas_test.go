//go:build faults

package e2e

// The replica suite: `make test-replicas`. Two orders instances share one
// database (two relays claim one outbox, FOR UPDATE SKIP LOCKED), three
// fulfillment consumers share one queue, and a round-robin balancer in the
// test stands in for the Kubernetes Service in front of orders. Under the
// fault suite's load, one orders instance and one consumer are killed
// (SIGKILL) and restarted on the same address 3 s later, as Kubernetes
// restarts a pod's container; the suite reconciles as the fault suite does,
// checks the traces, and checks every instance did a share of the work.
// Then it measures throughput with one instance of each and with 2 + 3.
// It shares the fault suite's build tag for its load and reconciliation.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)

const (
	// unflushed bounds the spans a SIGKILL may cost: those a process ended in
	// its last moments and had not exported yet. It exports every 100 ms
	// (OTEL_BSP_SCHEDULE_DELAY); the bound leaves room for a busy machine,
	// and stays below faultLength, so the restarted instance's work is never
	// mistaken for the killed one's.
	unflushed = 2 * time.Second

	saturationClients = 32 // enough to keep 2 cores busy
	saturationWarmUp  = 2 * time.Second
	saturationRun     = 10 * time.Second
)

// replicas is a stack with several orders and fulfillment instances: the
// gateway calls orders through a balancer, and every process exports to one
// receiver that tells instances apart.
type replicas struct {
	stack       *stack // env, receiver and gateway: what the load and account use
	orders      []*process
	fulfillment []*process
	lb          *balancer
	spans       *instanceSpans
	vars        map[string]string // what every service starts with
}

// startReplicas starts nOrders orders instances (the first migrates the
// schema), nFulfillment consumers and a gateway, on a fresh env.
func startReplicas(t *testing.T, nOrders, nFulfillment int) *replicas {
	t.Helper()
	e := newEnv(t)
	otlp, spans := newInstanceReceiver(t)
	rs := &replicas{spans: spans, vars: map[string]string{ // as startStack's
		"DATABASE_URL": e.DatabaseURL,
		"REDIS_URL":    redisURL,
		"AMQP_URL":     e.AMQPURL,
		"LOG_LEVEL":    "debug",

		"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
		"OTEL_BLRP_SCHEDULE_DELAY":    "100",
		"OTEL_METRIC_EXPORT_INTERVAL": "1000",
		"OTEL_RESOURCE_ATTRIBUTES":    "deployment.environment.name=e2e",
	}}
	var addrs []string
	for n := range nOrders {
		p := rs.start(t, "orders", n+1, "127.0.0.1:0")
		rs.orders = append(rs.orders, p)
		addrs = append(addrs, p.addr)
	}
	rs.lb = newBalancer(t, addrs)
	for n := range nFulfillment {
		rs.fulfillment = append(rs.fulfillment, rs.start(t, "fulfillment", n+1, "127.0.0.1:0"))
	}
	rs.stack = &stack{env: e, otlp: otlp, gateway: rs.start(t, "gateway", 1, "127.0.0.1:0")}
	return rs
}

// instance names the nth instance of a service: its service.instance.id,
// kept across restarts as a pod keeps its name.
func instance(service string, n int) string { return fmt.Sprintf("%s-%d", service, n) }

// start starts the nth instance of a service on addr.
func (rs *replicas) start(t *testing.T, service string, n int, addr string) *process {
	t.Helper()
	v := maps.Clone(rs.vars)
	v["HTTP_ADDR"] = addr
	v["OTEL_RESOURCE_ATTRIBUTES"] += ",service.instance.id=" + instance(service, n)
	if service == "gateway" {
		v["ORDERS_URL"] = rs.lb.URL
	}
	return start(t, service, v)
}

// stop stops every process with SIGTERM, the gateway first: afterwards,
// every span the living processes made has arrived.
func (rs *replicas) stop(t *testing.T) {
	t.Helper()
	for _, p := range slices.Concat([]*process{rs.stack.gateway}, rs.orders, rs.fulfillment) {
		p.Stop(t)
	}
}

// balancer is a round-robin HTTP load balancer in front of the orders
// instances, standing in for a Kubernetes Service: it skips an instance
// that refuses the connection (killed, not yet back), so losing one costs
// only the requests in flight to it. It remembers where each trace's
// request went.
type balancer struct {
	URL       string
	backends  []string // host:port
	next      atomic.Uint64
	transport http.RoundTripper

	mu     sync.Mutex
	routes map[string]route // by trace ID
}

// route is where one request went and how it ended.
type route struct {
	backend int       // index into backends
	ended   time.Time // when its answer's head arrived, or the call failed
	failed  bool      // the instance accepted the connection, then died
}

func newBalancer(t *testing.T, backends []string) *balancer {
	b := &balancer{
		backends:  backends,
		transport: &http.Transport{MaxIdleConnsPerHost: 64},
		routes:    map[string]route{},
	}
	srv := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.URL.Scheme = "http" }, // the host is chosen per attempt
		Transport: b,
		// A Service is a TCP balancer: a broken connection reaches the
		// gateway as one, and it answers as it would with no balancer.
		ErrorHandler: func(http.ResponseWriter, *http.Request, error) { panic(http.ErrAbortHandler) },
	})
	t.Cleanup(srv.Close)
	b.URL = srv.URL
	return b
}

// RoundTrip sends req to the next instance, or to the one after it when the
// connection is refused: nothing was sent, so trying another is safe.
func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
	}
	first := int(b.next.Add(1))
	var err error
	for i := range b.backends {
		n := (first + i) % len(b.backends)
		out := req.Clone(req.Context())
		out.URL.Host = b.backends[n]
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		var resp *http.Response
		resp, err = b.transport.RoundTrip(out)
		if errors.Is(err, syscall.ECONNREFUSED) {
			continue
		}
		if parts := strings.Split(req.Header.Get("traceparent"), "-"); len(parts) == 4 {
			b.mu.Lock()
			b.routes[parts[1]] = route{backend: n, ended: time.Now(), failed: err != nil}
			b.mu.Unlock()
		}
		return resp, err
	}
	return nil, err
}

// route returns where the request of a trace went.
func (b *balancer) route(traceID string) (route, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.routes[traceID]
	return r, ok
}

// routed returns how many requests went to each backend.
func (b *balancer) routed() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := make([]int, len(b.backends))
	for _, r := range b.routes {
		n[r.backend]++
	}
	return n
}

// instanceSpans counts the spans each service instance exported, by name,
// from the resource's service.instance.id: how a backend tells the replicas
// of one service apart.
type instanceSpans struct {
	mu sync.Mutex
	n  map[string]int // "<instance> <span name>"
}

func (c *instanceSpans) count(instance, spanName string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[instance+" "+spanName]
}

// newInstanceReceiver is newReceiver, counting spans by instance too.
func newInstanceReceiver(t *testing.T) (*receiver, *instanceSpans) {
	r, c := &receiver{}, &instanceSpans{n: map[string]int{}}
	mux := http.NewServeMux()
	mux.Handle("/", r.handler())
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		var msg coltrace.ExportTraceServiceRequest
		if !decode(w, req, &msg) {
			return
		}
		c.mu.Lock()
		for _, rs := range msg.ResourceSpans {
			id := attrs(rs.Resource.GetAttributes())["service.instance.id"]
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.n[id+" "+s.Name]++
				}
			}
		}
		c.mu.Unlock()
		r.addSpans(&msg)
		reply(w, &coltrace.ExportTraceServiceResponse{})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r, c
}

// The spans that show whose work a message was: the relay's PRODUCER span
// when it sends, the consumer's CONSUMER span when it applies.
var (
	relaySend    = "publish " + orderevents.Exchange + ":" + orderevents.RoutingKeyCreated
	consumerSpan = "process " + orderevents.Exchange + ":" + orderevents.RoutingKeyCreated + ":" + orderevents.Queue
)

func TestReplicas(t *testing.T) {
	var tables []string
	t.Run("orders and fulfillment instance killed", func(t *testing.T) {
		tables = append(tables, replicasKilled(t))
	})
	var rates []throughput
	for _, size := range [][2]int{{1, 1}, {2, 3}} {
		t.Run(fmt.Sprintf("throughput %d orders %d fulfillment", size[0], size[1]), func(t *testing.T) {
			rates = append(rates, measureThroughput(t, size[0], size[1]))
		})
	}
	if len(rates) == 2 {
		tables = append(tables, throughputTable(rates))
		t.Logf("\n%s", tables[len(tables)-1])
	}
	out := strings.Join(tables, "\n")
	if path := os.Getenv("ORDERTRACE_REPLICA_TABLE"); path != "" {
		_ = os.WriteFile(path, []byte(out), 0o644)
	}
}

// replicasKilled runs the fault suite's load against 2 orders and 3
// fulfillment instances, kills orders-1 and fulfillment-1 mid-run, and
// returns the reconciliation and work-sharing tables.
func replicasKilled(t *testing.T) string {
	const name = "orders-1, fulfillment-1 killed (-9)"
	rs := startReplicas(t, 2, 3)
	var killedOrders, killedConsumer time.Time
	results, from, to := load(rs.stack, func() {
		killedOrders = kill(rs.orders[0])
		killedConsumer = kill(rs.fulfillment[0])
	}, func() {
		rs.orders[0] = rs.start(t, "orders", 1, rs.orders[0].addr)
		rs.fulfillment[0] = rs.start(t, "fulfillment", 1, rs.fulfillment[0].addr)
	})
	r := account(t, rs.stack, name, results, from, to)

	// The balancer skips a refused connection, so the only requests the kill
	// may cost are those orders-1 had accepted when it died.
	inFlight := 0
	for _, res := range results {
		if res.ok() {
			continue
		}
		if rt, ok := rs.lb.route(res.traceID); ok && rt.backend == 0 && rt.failed {
			inFlight++
			continue
		}
		t.Errorf("a request (trace %q) was answered %d and was not in flight to the killed orders-1", res.traceID, res.status)
	}

	rs.stop(t) // only the killed processes' last spans may be missing now
	fulfilled := fulfilledOrders(t, rs.stack.env)
	complete := 0
	var allowed []string
	for id, f := range fulfilled {
		trace := rs.stack.otlp.Trace(f.traceID)
		if whole(trace) {
			complete++
			continue
		}
		why := rs.unflushed(trace, f, killedOrders, killedConsumer)
		if why == "" {
			t.Errorf("order %s: trace %s is not whole, and no kill explains it:\n%s", id, f.traceID, tree(trace))
			continue
		}
		allowed = append(allowed, fmt.Sprintf("order %s, trace %s: %s", id, f.traceID, why))
	}
	r.completeTraces = fmt.Sprintf("%d/%d", complete, len(fulfilled))

	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n\n", tableHeader, r)
	fmt.Fprintf(&b, "Requests not answered 201: %d, each in flight to orders-1 when it died.\n", inFlight)
	fmt.Fprintf(&b, "Incomplete traces: %d, each missing only spans a killed instance made within %s of its death:\n", len(allowed), unflushed)
	slices.Sort(allowed)
	for _, a := range allowed {
		fmt.Fprintf(&b, "- %s\n", a)
	}
	// Every instance did a share of the work, the killed ones before and
	// after their restart.
	b.WriteString("\n| instance | requests routed to it | messages it sent (relay) | messages it applied |\n|---|---|---|---|\n")
	routed, sent := rs.lb.routed(), 0
	for n := range rs.orders {
		id := instance("orders", n+1)
		sends := rs.spans.count(id, relaySend)
		if routed[n] == 0 || sends == 0 {
			t.Errorf("%s handled %d requests and sent %d messages: want some of each", id, routed[n], sends)
		}
		sent += sends
		fmt.Fprintf(&b, "| %s | %d | %d | - |\n", id, routed[n], sends)
	}
	duplicates := map[string]int{}
	for _, sp := range rs.stack.otlp.Spans() {
		if sp.Kind == consumer && sp.Attrs["fulfillment.outcome"] == "duplicate" {
			duplicates[sp.Attrs["messaging.message.id"]]++
		}
	}
	for n := range rs.fulfillment {
		id := instance("fulfillment", n+1)
		applied := rs.spans.count(id, consumerSpan)
		if applied == 0 {
			t.Errorf("%s applied no message", id)
		}
		fmt.Fprintf(&b, "| %s | - | - | %d |\n", id, applied)
	}
	fmt.Fprintf(&b, "\nThe relays' PRODUCER spans: %d for %d rows published (more: a row sent twice; fewer: a span lost with orders-1). "+
		"Messages delivered again and applied once (fulfillment.outcome=duplicate): %d.\n", sent, r.published, len(duplicates))
	t.Logf("\n%s", b.String())
	return b.String()
}

// unflushed says why a fulfilled order's trace may lack its spans: each
// missing span was the killed instance's, made at most unflushed before it
// died. It returns "" when the kills do not explain the gap.
func (rs *replicas) unflushed(trace []span, f fulfilment, killedOrders, killedConsumer time.Time) string {
	seen := kinds(trace)
	if !seen["gateway/SPAN_KIND_SERVER"] {
		return "" // the gateway was never killed
	}
	var why []string
	if !seen["orders/SPAN_KIND_PRODUCER"] {
		rt, ok := rs.lb.route(f.traceID)
		if d := rt.ended.Sub(killedOrders); !ok || rt.backend != 0 || d < -unflushed || d > unflushed {
			return ""
		}
		why = append(why, "no orders PRODUCER span: orders-1 handled the request, which ended "+relative(rt.ended, killedOrders))
	}
	if !seen["fulfillment/SPAN_KIND_CONSUMER"] {
		// A living consumer flushed at SIGTERM: the one that applied this
		// order died, so it did so before the kill.
		if d := killedConsumer.Sub(f.at); d < 0 || d > unflushed {
			return ""
		}
		why = append(why, "no fulfillment CONSUMER span: applied "+relative(f.at, killedConsumer))
	}
	return strings.Join(why, "; ")
}

// relative says when at was, from the kill.
func relative(at, kill time.Time) string {
	if d := at.Sub(kill).Round(time.Millisecond); d > 0 {
		return d.String() + " after the kill"
	}
	return kill.Sub(at).Round(time.Millisecond).String() + " before the kill"
}

// throughput is what one stack sustained under a closed-loop load.
type throughput struct {
	orders, fulfillment            int
	accepted, published, fulfilled float64 // per second
	p50, p99                       time.Duration
	busy                           float64            // share of the machine's CPU time in use
	cpu                            map[string]float64 // CPU seconds per second, by service
}

// measureThroughput starts a stack with nOrders and nFulfillment instances
// and drives it at saturation for saturationRun, after a warm-up.
func measureThroughput(t *testing.T, nOrders, nFulfillment int) throughput {
	rs := startReplicas(t, nOrders, nFulfillment)
	url := rs.stack.gateway.URL() + "/api/orders"
	closedLoop(url, saturationClients, saturationWarmUp)
	procs := slices.Concat([]*process{rs.stack.gateway}, rs.orders, rs.fulfillment)
	cpu0 := make([]time.Duration, len(procs))
	for i, p := range procs {
		cpu0[i] = processUsage(p).CPU
	}
	busy0, total0 := machineCPU()
	began := time.Now()
	shots := closedLoop(url, saturationClients, saturationRun)
	ended := time.Now()
	busy1, total1 := machineCPU()
	took := ended.Sub(began).Seconds()

	res := throughput{orders: nOrders, fulfillment: nFulfillment, p50: quantile(shots, 0.5), p99: quantile(shots, 0.99), cpu: map[string]float64{}}
	for i, p := range procs {
		res.cpu[p.name] += (processUsage(p).CPU - cpu0[i]).Seconds() / took
	}
	for _, s := range shots {
		if s.ok() {
			res.accepted++
		}
	}
	res.accepted /= took
	res.published = float64(rs.stack.env.queryInt(t,
		"SELECT count(*) FROM outbox WHERE sent_at >= $1 AND sent_at < $2", began, ended)) / took
	res.fulfilled = float64(rs.stack.env.queryInt(t,
		"SELECT count(*) FROM orders WHERE status = 'fulfilled' AND updated_at >= $1 AND updated_at < $2", began, ended)) / took
	res.busy = float64(busy1-busy0) / float64(max(1, total1-total0))
	if res.accepted == 0 {
		t.Errorf("%d orders + %d fulfillment accepted no order", nOrders, nFulfillment)
	}
	return res
}

// catalogue is the products with deep stock (migrations/0002_catalogue.sql).
// The saturation load spreads its orders over them: orders of one product
// all update its one stock row, and would measure that row's lock, not the
// instances.
var catalogue = []string{"COFFEE-BEANS-1KG", "GRINDER-BURR", "KETTLE-GOOSENECK", "FILTER-PAPER-100", "MUG-CERAMIC", "SCALE-DIGITAL", "DRIPPER-V60"}

// closedLoop posts orders from clients loops for d, each sending its next
// order when the last is answered: a closed model, so the rate is as high
// as the stack will take.
func closedLoop(url string, clients int, d time.Duration) []shot {
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		shots []shot
	)
	stop := time.Now().Add(d)
	for c := range clients {
		wg.Go(func() {
			for i := c; time.Now().Before(stop); i += clients {
				body := fmt.Sprintf(`{"customer_id":"saturate-%d","items":[{"sku":%q,"quantity":1}]}`, i, catalogue[i%len(catalogue)])
				sh := shot{start: time.Now()}
				resp, err := client.Post(url, "application/json", strings.NewReader(body))
				sh.latency = time.Since(sh.start)
				if err == nil {
					sh.status = resp.StatusCode
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				shots = append(shots, sh)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return shots
}

// machineCPU returns the machine's busy and total CPU time so far, in clock
// ticks, from the first line of /proc/stat (idle and iowait are not busy;
// guest time is counted in user already).
func machineCPU() (busy, total int64) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	fields := strings.Fields(line)[1:]
	for i, f := range fields[:min(8, len(fields))] {
		n, _ := strconv.ParseInt(f, 10, 64)
		total += n
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy, total
}

func throughputTable(rates []throughput) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| instances | clients | 201/s | published/s | fulfilled/s | p50 | p99 | machine CPU busy | cores used: gateway, orders, fulfillment |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rates {
		fmt.Fprintf(&b, "| %d orders + %d fulfillment | %d | %.1f | %.1f | %.1f | %s | %s | %.0f%% | %.2f, %.2f, %.2f |\n",
			r.orders, r.fulfillment, saturationClients, r.accepted, r.published, r.fulfilled,
			r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.busy*100, r.cpu["gateway"], r.cpu["orders"], r.cpu["fulfillment"])
	}
	one, many := rates[0], rates[len(rates)-1]
	fmt.Fprintf(&b, "\n%d + %d over 1 + 1: 201/s x%.2f, fulfilled/s x%.2f (closed loop, %s each, services built with -race; the instances share this machine's %d CPUs).\n",
		many.orders, many.fulfillment, many.accepted/max(one.accepted, 1e-9), many.fulfilled/max(one.fulfilled, 1e-9), saturationRun, runtime.NumCPU())
	return b.String()
}
