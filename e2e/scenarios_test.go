package e2e

// The workshop's scenarios (docs/workshop), each switched on at run time
// against the real services, PostgreSQL, Redis and RabbitMQ: the signature
// its lab tells students to find must show in the telemetry, and be gone
// once it is switched off again.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/scenario/signature"
	amqp "github.com/rabbitmq/amqp091-go"
)

// scenarioStack is a stack that watches a scenarios file of its own, every
// scenario off.
func scenarioStack(t *testing.T, extra map[string]string) (*stack, func(name string, on bool)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "scenarios.json")
	if err := scenario.WriteFile(path, scenario.Defaults()); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"SCENARIOS_FILE": path, "SCENARIOS_POLL": "50ms"}
	for k, v := range extra {
		vars[k] = v
	}
	s := startStack(t, vars)
	// switchTo sets a scenario as `make scenario` does, and waits until
	// orders and fulfillment report the new value as the one they have loaded.
	switchTo := func(name string, on bool) {
		t.Helper()
		variant := map[bool]string{true: "on", false: "off"}[on]
		want := scenario.Defaults().Flags[name].Variants[variant]
		if err := scenario.Set(path, name, on); err != nil {
			t.Fatal(err)
		}
		for _, p := range []*process{s.orders, s.fulfillment} {
			waitUntil(t, patience, fmt.Sprintf("%s to load %s=%v", p.name, name, want), func() (bool, error) {
				loaded, err := p.tryScenarios()
				if err == nil && loaded[name] != want {
					err = fmt.Errorf("%s has %s=%v", p.name, name, loaded[name])
				}
				return err == nil, err
			})
		}
	}
	return s, switchTo
}

// tryScenarios returns the scenario values the service has loaded, from its
// GET /scenarios (orders and fulfillment).
func (p *process) tryScenarios() (map[string]any, error) {
	resp, err := testClient.Get(p.URL() + "/scenarios")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s GET /scenarios: %s", p.name, resp.Status)
	}
	var loaded map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&loaded); err != nil {
		return nil, fmt.Errorf("%s GET /scenarios: %w", p.name, err)
	}
	return loaded, nil
}

// orderTrace places an order and returns its status and the spans of its
// trace, once the SERVER spans of the gateway and orders have arrived.
func (s *stack) orderTrace(t *testing.T, header map[string]string) (int, placed, []span) {
	t.Helper()
	status, h, p := s.placeOrder(t, scenarioOrder, header)
	traceID := traceIDFromHeader(t, h)
	// The SERVER spans end last in each service: their children have arrived with them.
	spans := waitTrace(t, s.otlp, traceID, spanKey{"gateway", server, "POST /api/orders"}, spanKey{"orders", server, "POST /orders"})
	return status, p, spans
}

// sigTrace turns received spans into the neutral trace that the incidents'
// signatures read (pkg/scenario/signature): the one definition of each
// signature, shared with the grader of make grade.
func sigTrace(spans []span) signature.Trace {
	out := make(signature.Trace, 0, len(spans))
	for _, s := range spans {
		out = append(out, signature.Span{
			TraceID: s.TraceID, SpanID: s.SpanID, ParentID: s.ParentID,
			Service: s.Service, Name: s.Name, Kind: signature.Kind(strings.ToLower(strings.TrimPrefix(s.Kind.String(), "SPAN_KIND_"))),
			Error: s.Status == statusError, Attrs: s.Attrs,
			Start: time.Unix(0, int64(s.Start)), End: time.Unix(0, int64(s.End)),
		})
	}
	return out
}

// incident returns the signature of an incident's lab.
func incident(t *testing.T, lab int) signature.Signature {
	t.Helper()
	sig, ok := signature.For(lab)
	if !ok {
		t.Fatalf("no signature for lab %d", lab)
	}
	return sig
}

// Payment failures: a share of order.charge_payment spans is ERROR, and the
// orders are answered 402.
func TestScenarioPaymentFailures(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, nil)
	sig := incident(t, 10)
	share := func() (failed, all int) {
		for range 30 {
			status, _, spans := s.orderTrace(t, nil)
			charge := named(spans, "orders", "order.charge_payment")
			if len(charge) != 1 {
				t.Fatalf("%d order.charge_payment spans, want 1", len(charge))
			}
			if charge[0].Status == statusError {
				failed++
				if status != http.StatusPaymentRequired {
					t.Errorf("a declined charge answered %d, want 402", status)
				}
				if got := charge[0].Attrs["error.type"]; got != "payment_declined" {
					t.Errorf("a declined charge's error.type = %q, want payment_declined", got)
				}
			}
			if matched, declined := sig.Match(sigTrace(spans)), charge[0].Status == statusError; matched != declined {
				t.Errorf("incident 10's signature matched %v a trace whose charge is ERROR %v; want both or neither", matched, declined)
			}
			all++
		}
		return failed, all
	}
	switchTo(scenario.PaymentFailures, true)
	// About 9 of 30; the bounds are wide enough that chance crosses them in
	// fewer than 1 run in 30,000 (fewer than 3 happened in 1 run in 475).
	if failed, all := share(); failed < 1 || failed > 20 {
		t.Errorf("scenario on (30%%): %d of %d charges ERROR, want about 9", failed, all)
	}
	switchTo(scenario.PaymentFailures, false)
	if failed, _ := share(); failed != 0 {
		t.Errorf("scenario off: %d charges ERROR, want none", failed)
	}
}

// Slow inventory for one tenant: order.validate_inventory takes 600 ms for
// globex only, whose spans carry tenant.id=globex.
func TestScenarioSlowInventory(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, nil)
	sig := incident(t, 11)
	if signature.SlowTenant() != "globex" {
		t.Fatalf("the slow tenant is %q, want globex (the lab names it)", signature.SlowTenant())
	}
	// inventory returns the order's inventory check, and whether its trace
	// matches incident 11's signature.
	inventory := func(tenant string) (span, bool) {
		status, _, spans := s.orderTrace(t, map[string]string{"X-Tenant-ID": tenant})
		if status != http.StatusCreated {
			t.Fatalf("order of %s: %d", tenant, status)
		}
		return find(t, spans, "orders", internal, "order.validate_inventory"), sig.Match(sigTrace(spans))
	}
	switchTo(scenario.SlowInventory, true)
	for range 3 {
		if sp, matched := inventory("globex"); sp.Duration() < signature.SlowInventoryAtLeast || !matched {
			t.Errorf("scenario on: globex's order.validate_inventory took %v (signature matched: %v), want about 600 ms and a match", sp.Duration(), matched)
		}
		if sp, matched := inventory("acme"); sp.Duration() > 300*time.Millisecond || matched {
			t.Errorf("scenario on: acme's order.validate_inventory took %v (signature matched: %v), want it fast and no match", sp.Duration(), matched)
		}
	}
	status, _, spans := s.orderTrace(t, map[string]string{"X-Tenant-ID": "globex"})
	if process := find(t, spans, "orders", internal, "order.process"); status != http.StatusCreated || process.Attrs["tenant.id"] != "globex" {
		t.Errorf("globex's order.process: status %d tenant.id %q; want the tenant on the span", status, process.Attrs["tenant.id"])
	}
	switchTo(scenario.SlowInventory, false)
	if sp, matched := inventory("globex"); sp.Duration() > 300*time.Millisecond || matched {
		t.Errorf("scenario off: globex's order.validate_inventory took %v (signature matched: %v), want it fast and no match", sp.Duration(), matched)
	}
}

// N+1: a fan of database spans under order.calculate_pricing, one per
// product of the catalogue and one to list it.
func TestScenarioPricingNPlusOne(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, nil)
	sig := incident(t, 12)
	queries := func() (int, bool) {
		_, _, spans := s.orderTrace(t, nil)
		find(t, spans, "orders", internal, "order.calculate_pricing")
		return signature.PricingQueries(sigTrace(spans)), sig.Match(sigTrace(spans))
	}
	switchTo(scenario.PricingNPlusOne, true)
	products := s.env.queryInt(t, "SELECT count(*) FROM products")
	if n, matched := queries(); n != products+1 || !matched {
		t.Errorf("scenario on: %d SELECT products spans under order.calculate_pricing (signature matched: %v), want %d (the list, then each of %d products) and a match", n, matched, products+1, products)
	}
	switchTo(scenario.PricingNPlusOne, false)
	queries() // the price cache may be cold
	if n, matched := queries(); n > 1 || matched {
		t.Errorf("scenario off: %d SELECT products spans under order.calculate_pricing (signature matched: %v), want at most 1 and no match", n, matched)
	}
}

// Cache bypass: no Redis span under the lookups, cache.hits 0, and a SELECT
// for every lookup.
func TestScenarioCacheBypass(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, nil)
	sig := incident(t, 13)
	lookups := func() (redisSpans, selects int, hits string, matched bool) {
		_, _, spans := s.orderTrace(t, nil)
		for _, name := range []string{"order.validate_inventory", "order.calculate_pricing"} {
			find(t, spans, "orders", internal, name)
		}
		redisSpans, selects, hits, _ = signature.Lookups(sigTrace(spans))
		return redisSpans, selects, hits, sig.Match(sigTrace(spans))
	}
	switchTo(scenario.CacheBypass, true)
	for range 3 {
		if r, q, hits, matched := lookups(); r != 0 || q != 2 || hits != "00" || !matched {
			t.Errorf("scenario on: %d Redis spans, %d SQL spans, cache.hits %s, signature matched %v; want 0, 2 and 0 for both lookups, and a match", r, q, hits, matched)
		}
	}
	switchTo(scenario.CacheBypass, false)
	lookups() // warms the cache
	if r, q, hits, matched := lookups(); r != 2 || q != 0 || hits != "22" || matched {
		t.Errorf("scenario off: %d Redis spans, %d SQL spans, cache.hits %s, signature matched %v; want 2, 0 and 2 for both lookups, and no match", r, q, hits, matched)
	}
}

// A lock serialises orders: concurrent orders' charge spans form a
// staircase, each waiting for the ones before it (as in HotROD).
func TestScenarioOrderLock(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, map[string]string{"PAYMENT_LATENCY": "100ms"})
	var traces []signature.Trace // of the last six orders
	charges := func() []span {
		var (
			mu  sync.Mutex
			out []span
			wg  sync.WaitGroup
		)
		traces = nil
		for range 6 {
			wg.Go(func() {
				_, _, spans := s.orderTrace(t, nil)
				mu.Lock()
				out = append(out, named(spans, "orders", "order.charge_payment")...)
				traces = append(traces, sigTrace(spans))
				mu.Unlock()
			})
		}
		wg.Wait()
		return out
	}
	durations := func(spans []span) []time.Duration {
		var d []time.Duration
		for _, sp := range spans {
			d = append(d, sp.Duration())
		}
		slices.Sort(d)
		return d
	}
	switchTo(scenario.OrderLock, true)
	// Six orders at once, 100 ms each: one charges, the others wait. However
	// far apart they reached the lock (a busy machine staggers them), the
	// charges end at least 100 ms apart, one holder after the other; and the
	// orders that came while another held the lock waited, their spans
	// overlapping the one before: the staircase.
	staircase := charges()
	slices.SortFunc(staircase, func(a, b span) int { return cmp.Compare(a.End, b.End) })
	var gaps []time.Duration
	waited := 0
	for i := 1; i < len(staircase); i++ {
		prev, sp := staircase[i-1], staircase[i]
		gaps = append(gaps, time.Duration(sp.End-prev.End))
		if sp.Start < prev.End {
			waited++
		}
	}
	// Each gap is 100 ms less the moment between an unlock and the end of
	// its span (a busy machine may stretch that moment, not the whole run).
	if first, last := staircase[0], staircase[len(staircase)-1]; slices.Min(gaps) < 50*time.Millisecond ||
		time.Duration(last.End-first.End) < time.Duration(len(gaps))*90*time.Millisecond {
		t.Errorf("scenario on: charge spans ended %v apart; want about 100 ms each, one charge at a time (durations %v)", gaps, durations(staircase))
	}
	if waited == 0 {
		t.Errorf("scenario on: no charge span overlaps the one before (durations %v); want orders waiting for the lock", durations(staircase))
	}
	if n := len(incident(t, 14).Matching(traces)); n == 0 {
		t.Errorf("scenario on: incident 14's signature matches none of the six orders (durations %v); want the ones that waited", durations(staircase))
	}
	switchTo(scenario.OrderLock, false)
	if d := durations(charges()); d[len(d)-1] > 300*time.Millisecond {
		t.Errorf("scenario off: charge spans took %v; want every one about 100 ms", d)
	}
}

// Fulfillment falls behind: orders wait in the queue, and the CONSUMER
// span starts long after the PRODUCER span.
func TestScenarioSlowFulfillment(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, nil)
	sig := incident(t, 15)
	burst := func() (maxDepth int, lag time.Duration, matched bool) {
		// 48 orders, 8 at a time: faster than 4 workers at 300 ms each.
		var (
			mu   sync.Mutex
			last string
			wg   sync.WaitGroup
		)
		for range 8 {
			wg.Go(func() {
				for range 6 {
					status, _, p := s.placeOrder(t, scenarioOrder, nil)
					if status != http.StatusCreated {
						t.Errorf("order: %d", status)
						return
					}
					depth, _ := s.env.tryQueueDepth(orderevents.Queue) // only reported: a failed look counts as 0
					mu.Lock()
					last, maxDepth = p.TraceID, max(maxDepth, depth)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		spans := waitTrace(t, s.otlp, last, spanKey{"orders", producer, "create orders:order.created"}, spanKey{"fulfillment", consumer, "process orders:order.created:fulfillment.order-created"})
		find(t, spans, "orders", producer, "create orders:order.created")
		find(t, spans, "fulfillment", consumer, "process orders:order.created:fulfillment.order-created")
		lag, _ = signature.QueueLag(sigTrace(spans))
		return maxDepth, lag, sig.Match(sigTrace(spans))
	}
	switchTo(scenario.SlowFulfillment, true)
	depth, slowLag, matched := burst()
	if slowLag < time.Second {
		t.Errorf("scenario on: the last of 48 orders reached fulfillment %v after it was published (queue depth up to %d); want over 1 s", slowLag, depth)
	}
	if !matched {
		t.Errorf("scenario on: incident 15's signature does not match the last order's trace; want its CONSUMER span %v or more outside any child", signature.SlowFulfillmentAtLeast)
	}
	waitUntil(t, patience, "the queue to drain", func() (bool, error) {
		depth, err := s.env.tryQueueDepth(orderevents.Queue)
		return depth == 0, err
	})
	switchTo(scenario.SlowFulfillment, false)
	// Off, the queue does not build up: the lag is the hop through the relay
	// and the broker, which a busy machine stretches, but not to seconds.
	if _, lag, matched := burst(); lag > slowLag/3 || matched {
		t.Errorf("scenario off: the last order reached fulfillment %v after it was published (%v with the scenario on), signature matched %v; want a fraction of that, and no match", lag, slowLag, matched)
	}
}

// Poison messages: an order whose event fulfillment cannot read lands in
// the dead-letter queue with its trace context, and stays pending.
func TestScenarioPoisonMessages(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, map[string]string{"FULFILLMENT_RETRY_BACKOFF": "10ms"})
	orders := map[string]string{} // trace ID → order ID
	place := func(n int) map[string]string {
		placed := map[string]string{}
		for range n {
			status, _, p := s.placeOrder(t, scenarioOrder, nil)
			if status != http.StatusCreated {
				t.Fatalf("order: %d", status)
			}
			orders[p.TraceID], placed[p.TraceID] = p.OrderID, p.OrderID
		}
		return placed
	}
	switchTo(scenario.PoisonMessages, true)
	// 20% poisoned: 40 orders have one but for 1 in 7,000 runs, so a round
	// without any is followed by another. Each round ends when every order is
	// accounted for: fulfilled (or failed for stock), or its dead letter taken.
	var dead []amqp.Delivery
	for round := 1; len(dead) == 0; round++ {
		if round > 5 {
			t.Fatalf("no dead letter among %d orders with 20%% poisoned", len(orders))
		}
		place(40)
		waitUntil(t, patience, "every order fulfilled or dead-lettered", func() (bool, error) {
			d, ok, err := s.env.tryGet(orderevents.DeadLetterQueue)
			if err != nil {
				return false, err
			}
			if ok {
				dead = append(dead, d)
				return false, nil // perhaps more
			}
			settled, err := s.env.tryQueryInt("SELECT count(*) FROM orders WHERE status <> 'pending'")
			if err == nil && settled+len(dead) != len(orders) {
				err = fmt.Errorf("%d of %d orders settled and %d dead-lettered", settled, len(orders), len(dead))
			}
			return err == nil, err
		})
	}
	for _, d := range dead {
		tp, _ := d.Headers["traceparent"].(string)
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || orders[parts[1]] == "" {
			t.Errorf("dead letter with traceparent %q, want one of the scenario's orders", tp)
			continue
		}
		traceID, orderID := parts[1], orders[parts[1]]
		if !strings.Contains(string(d.Body), `"lines"`) || !strings.Contains(fmt.Sprint(d.Headers["x-fulfillment-error"]), "not an order.created event") {
			t.Errorf("dead letter %s: body %s, error %v; want the renamed lines and the reason", d.MessageId, d.Body, d.Headers["x-fulfillment-error"])
		}
		if status := s.env.queryInt(t, "SELECT count(*) FROM orders WHERE id = $1 AND status = 'pending'", orderID); status != 1 {
			t.Errorf("order %s of a dead letter is not pending", orderID)
		}
		spans := waitTrace(t, s.otlp, traceID, spanKey{"fulfillment", consumer, "process orders:order.created:fulfillment.order-created"})
		consume := find(t, spans, "fulfillment", consumer, "process orders:order.created:fulfillment.order-created")
		if consume.Status != statusError || consume.Attrs["fulfillment.dead_lettered"] != "true" || !incident(t, 16).Match(sigTrace(spans)) {
			t.Errorf("poisoned order's CONSUMER span: status %v attrs %v; want ERROR, dead_lettered and error.type invalid_message (incident 16's signature)", consume.Status, consume.Attrs)
		}
	}
	t.Logf("%d of %d orders dead-lettered", len(dead), len(orders))

	switchTo(scenario.PoisonMessages, false)
	for traceID, orderID := range place(10) {
		if got := s.waitStatus(t, orderID); got != "fulfilled" {
			t.Errorf("scenario off: order %s is %s, want fulfilled", orderID, got)
		}
		spans := waitTrace(t, s.otlp, traceID, spanKey{"fulfillment", consumer, "process orders:order.created:fulfillment.order-created"})
		if incident(t, 16).Match(sigTrace(spans)) {
			t.Errorf("scenario off: order %s matches incident 16's signature", orderID)
		}
	}
	if n := s.env.queueDepth(t, orderevents.DeadLetterQueue); n != 0 {
		t.Errorf("scenario off: %d new dead letters, want none", n)
	}
}

// Payment timeouts: the provider hangs, each attempt times out, orders tries
// three times and answers 502 after all of them.
func TestScenarioPaymentTimeouts(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, map[string]string{"PAYMENT_TIMEOUT": "300ms"})
	switchTo(scenario.PaymentTimeouts, true)
	began := time.Now()
	status, _, spans := s.orderTrace(t, nil)
	took := time.Since(began)
	attempts := named(spans, "orders", "order.charge_payment")
	if status != http.StatusBadGateway || len(attempts) != 3 || took < 900*time.Millisecond {
		t.Fatalf("scenario on: %d after %v with %d charge attempts; want 502 after 3 attempts of 300 ms", status, took, len(attempts))
	}
	slices.SortFunc(attempts, func(a, b span) int { return strings.Compare(a.Attrs["payment.attempt"], b.Attrs["payment.attempt"]) })
	for i, a := range attempts {
		if a.Attrs["payment.attempt"] != fmt.Sprint(i+1) || a.Status != statusError || a.Attrs["error.type"] != "timeout" || a.Duration() < 290*time.Millisecond {
			t.Errorf("attempt %d: attrs %v status %v took %v; want ERROR after the 300 ms timeout", i+1, a.Attrs, a.Status, a.Duration())
		}
	}
	gateway := find(t, spans, "gateway", server, "POST /api/orders")
	if gateway.Status != statusError || gateway.Attrs["error.type"] != "502" || gateway.Duration() < 900*time.Millisecond {
		t.Errorf("gateway SERVER span: status %v, error.type %q, took %v; want ERROR, error.type 502, as long as the three attempts",
			gateway.Status, gateway.Attrs["error.type"], gateway.Duration())
	}
	if process := find(t, spans, "orders", internal, "order.process"); process.Attrs["error.type"] != "timeout" {
		t.Errorf("order.process error.type = %q, want timeout (every failed operation says its class)", process.Attrs["error.type"])
	}
	sig := incident(t, 17)
	if n := signature.TimedOutAttempts(sigTrace(spans)); n != signature.PaymentAttempts || !sig.Match(sigTrace(spans)) {
		t.Errorf("scenario on: %d timed-out attempts, signature matched %v; want %d and a match", n, sig.Match(sigTrace(spans)), signature.PaymentAttempts)
	}
	switchTo(scenario.PaymentTimeouts, false)
	if status, _, spans := s.orderTrace(t, nil); status != http.StatusCreated || len(named(spans, "orders", "order.charge_payment")) != 1 || sig.Match(sigTrace(spans)) {
		t.Errorf("scenario off: %d with %d charge attempts, signature matched %v; want 201 after one, and no match", status, len(named(spans, "orders", "order.charge_payment")), sig.Match(sigTrace(spans)))
	}
}

// Span names per order: every order.process span is named after its order,
// one span-metrics series each; the collector, with REPAIR_SPAN_NAMES=true,
// cuts the ID off before the span metrics count it.
func TestScenarioSpanNamePerOrder(t *testing.T) {
	t.Parallel()
	// seriesOf places three orders with the scenario on, through a collector
	// repairing or not, and returns the span names the span metrics count.
	seriesOf := func(repair string) (map[string]bool, *stack, *collector, func(string, bool)) {
		col := startCollector(t, map[string]string{"REPAIR_SPAN_NAMES": repair})
		col.backends.idsInSpanNames.Store(true) // the IDs are this lesson
		s, switchTo := scenarioStack(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.OTLPHTTP})
		switchTo(scenario.SpanNamePerOrder, true)
		for range 3 {
			status, h, _ := s.placeOrder(t, scenarioOrder, nil)
			if status != http.StatusCreated {
				t.Fatalf("order: %d", status)
			}
			if repair == "false" {
				// Its trace carries the span named after the order: incident 18's signature.
				traceID := traceIDFromHeader(t, h)
				waitFor(t, patience, "a trace matching incident 18's signature", func() bool {
					return incident(t, 18).Match(sigTrace(col.backends.Trace(traceID)))
				})
			}
		}
		names := map[string]bool{}
		waitFor(t, patience, "span metrics of three order.process spans", func() bool {
			n := 0
			for _, p := range col.backends.Points("traces.span.metrics.calls") {
				if p.Service == "orders" && strings.HasPrefix(p.Attrs["span.name"], "order.process") {
					names[p.Attrs["span.name"]] = true
					n = max(n, int(p.Value))
				}
			}
			return len(names) >= 3 || n >= 3
		})
		return names, s, col, switchTo
	}

	raw, s, col, switchTo := seriesOf("false")
	for name := range raw {
		if !strings.HasPrefix(name, "order.process ") {
			t.Errorf("without the repair, span metrics count %q; want one order.process <order id> per order", name)
		}
	}
	if len(raw) != 3 {
		t.Errorf("without the repair: %d span-metrics series of order.process, want 3 (one per order): %v", len(raw), raw)
	}
	switchTo(scenario.SpanNamePerOrder, false)
	status, h, _ := s.placeOrder(t, scenarioOrder, nil)
	traceID := traceIDFromHeader(t, h)
	waitFor(t, patience, "order.process of the order after the switch", func() bool {
		return len(named(col.backends.Trace(traceID), "orders", "order.process")) == 1
	})
	if status != http.StatusCreated || incident(t, 18).Match(sigTrace(col.backends.Trace(traceID))) {
		t.Errorf("scenario off: %d, signature matched %v; want 201 and no match", status, incident(t, 18).Match(sigTrace(col.backends.Trace(traceID))))
	}

	repaired, _, _, _ := seriesOf("true")
	if len(repaired) != 1 || !repaired["order.process"] {
		t.Errorf("with the repair: span-metrics span names %v, want only order.process", repaired)
	}
}

// Propagation off: the message leaves without trace headers, and the
// consumer starts a trace of its own: the order's trace breaks in two.
func TestScenarioPropagationOff(t *testing.T) {
	t.Parallel()
	s, switchTo := scenarioStack(t, nil)
	// consumerOf places an order and returns its trace and the CONSUMER span
	// of its message, found by the order ID wherever its trace is.
	consumerOf := func() (string, span) {
		status, h, p := s.placeOrder(t, scenarioOrder, map[string]string{"X-Tenant-ID": "acme"})
		if status != http.StatusCreated {
			t.Fatalf("order: %d", status)
		}
		var c span
		waitFor(t, patience, "the order's CONSUMER span", func() bool {
			for _, sp := range s.otlp.Spans() {
				if sp.Kind == consumer && sp.Attrs["order.id"] == p.OrderID {
					c = sp
					return true
				}
			}
			return false
		})
		return traceIDFromHeader(t, h), c
	}
	switchTo(scenario.PropagationOff, true)
	traceID, c := consumerOf()
	if c.TraceID == traceID || c.ParentID != "" || c.Attrs["tenant.id"] != "" {
		t.Errorf("scenario on: CONSUMER span in trace %s (order's %s), parent %q, tenant %q; want a new root without baggage",
			c.TraceID, traceID, c.ParentID, c.Attrs["tenant.id"])
	}
	switchTo(scenario.PropagationOff, false)
	traceID, c = consumerOf()
	publish := find(t, waitTrace(t, s.otlp, traceID, spanKey{"orders", producer, "create orders:order.created"}), "orders", producer, "create orders:order.created")
	if c.TraceID != traceID || c.ParentID != publish.SpanID || c.Attrs["tenant.id"] != "acme" {
		t.Errorf("scenario off: CONSUMER span in trace %s (order's %s), parent %q (PRODUCER %s), tenant %q; want the order's trace",
			c.TraceID, traceID, c.ParentID, publish.SpanID, c.Attrs["tenant.id"])
	}
}
