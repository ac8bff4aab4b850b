package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ordertrace/ordertrace/pkg/catalogcache"
)

func childrenOf(spans []span, parent span) []span {
	var out []span
	for _, s := range spans {
		if s.ParentID == parent.SpanID {
			out = append(out, s)
		}
	}
	return out
}

func wantParent(t *testing.T, child, parent span) {
	t.Helper()
	if child.ParentID != parent.SpanID {
		t.Errorf("%s %q: parent = %s, want %s (%q)", child.Service, child.Name, child.ParentID, parent.SpanID, parent.Name)
	}
}

// wantClientChild checks that parent has a CLIENT child whose attribute
// db.system.name is system ("postgresql", "redis").
func wantClientChild(t *testing.T, spans []span, parent span, system string) {
	t.Helper()
	for _, c := range childrenOf(spans, parent) {
		if c.Kind == client && c.Attrs["db.system.name"] == system {
			return
		}
	}
	t.Errorf("%q has no %s CLIENT child; trace:\n%s", parent.Name, system, tree(spans))
}

func TestGoldenTrace(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)

	// Plant a stock level in the cache: orders must read it from Redis (a hit)
	// without it ever appearing in telemetry.
	stockKey := catalogcache.Key(s.env.Database, "stock", "FILTER-PAPER-100")
	if err := s.env.Redis.Set(t.Context(), stockKey, plantedRedisValue, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"customer_id":"cust-42","items":[{"sku":"FILTER-PAPER-100","quantity":%d},{"sku":"MUG-CERAMIC","quantity":1}]}`, plantedQuantity)
	status, h, order := s.placeOrder(t, body, map[string]string{"X-Tenant-ID": "acme", "Idempotency-Key": "golden-1", "X-Request-ID": "golden-req-1"})
	if status != http.StatusCreated {
		t.Fatalf("POST /api/orders = %d, want 201", status)
	}
	if got := h.Get("X-Request-ID"); got != "golden-req-1" {
		t.Errorf("X-Request-ID answered %q, want the caller's golden-req-1", got)
	}
	traceID := traceIDFromHeader(t, h)
	if order.TraceID != traceID {
		t.Errorf("body trace_id = %s, traceresponse trace = %s; want the same", order.TraceID, traceID)
	}
	if want := int64(plantedQuantity*690 + 1490); order.TotalCents != want || order.Status != "pending" {
		t.Errorf("answer = %+v, want total %d and status pending", order, want)
	}
	if got := s.waitStatus(t, order.OrderID); got != "fulfilled" {
		t.Fatalf("order status = %q, want fulfilled", got)
	}

	// The trace is complete once every span below has arrived, among them
	// the one that ends last in each service (the gateway's and orders'
	// SERVER spans, fulfillment's CONSUMER span), and so their children.
	spans := waitTrace(t, s.otlp, traceID,
		spanKey{"gateway", server, "POST /api/orders"}, spanKey{"gateway", client, "POST"},
		spanKey{"orders", server, "POST /orders"}, spanKey{"orders", internal, "order.process"},
		spanKey{"orders", internal, "order.validate_inventory"}, spanKey{"orders", internal, "order.calculate_pricing"},
		spanKey{"orders", client, "order.charge_payment"}, spanKey{"orders", producer, "create orders:order.created"},
		spanKey{"fulfillment", consumer, "process orders:order.created:fulfillment.order-created"},
		spanKey{"fulfillment", internal, "fulfillment.reserve_stock"}, spanKey{"fulfillment", internal, "fulfillment.complete_order"})
	t.Logf("the golden trace, as exported over OTLP:\n%s", tree(spans))

	gwServer := find(t, spans, "gateway", server, "POST /api/orders")
	gwClient := find(t, spans, "gateway", client, "POST")
	ordServer := find(t, spans, "orders", server, "POST /orders")
	orderProcess := find(t, spans, "orders", internal, "order.process")
	inventory := find(t, spans, "orders", internal, "order.validate_inventory")
	pricing := find(t, spans, "orders", internal, "order.calculate_pricing")
	payment := find(t, spans, "orders", client, "order.charge_payment")
	publish := find(t, spans, "orders", producer, "create orders:order.created")
	consume := find(t, spans, "fulfillment", consumer, "process orders:order.created:fulfillment.order-created")
	reserve := find(t, spans, "fulfillment", internal, "fulfillment.reserve_stock")
	complete := find(t, spans, "fulfillment", internal, "fulfillment.complete_order")

	if gwServer.ParentID != "" {
		t.Errorf("gateway SERVER span has parent %s, want it to be the root", gwServer.ParentID)
	}
	wantParent(t, gwClient, gwServer)
	wantParent(t, ordServer, gwClient)
	wantParent(t, orderProcess, ordServer)
	for _, step := range []span{inventory, pricing, payment, publish} {
		wantParent(t, step, orderProcess)
	}
	wantParent(t, consume, publish)
	wantParent(t, reserve, consume)
	wantParent(t, complete, consume)
	if len(consume.Links) != 1 || consume.Links[0] != publish.SpanID {
		t.Errorf("CONSUMER links = %v, want one link to the PRODUCER span %s", consume.Links, publish.SpanID)
	}

	wantAttrs(t, gwServer, map[string]string{"http.route": "/api/orders", "http.response.status_code": "201", "tenant.id": "acme",
		"http.request.header.x-request-id": "[golden-req-1]"})
	wantAttrs(t, ordServer, map[string]string{"http.route": "/orders"})
	wantAttrs(t, orderProcess, map[string]string{
		"order.id": order.OrderID, "customer.id": "cust-42", "order.item_count": "2", "tenant.id": "acme",
		"request.id": "golden-req-1",
	})
	wantAttrs(t, payment, map[string]string{
		"payment.provider": "simulated", "payment.amount_cents": fmt.Sprint(order.TotalCents), "payment.currency": "EUR",
	})
	wantAttrs(t, publish, map[string]string{
		"messaging.system": "rabbitmq", "messaging.destination.name": "orders:order.created",
		"messaging.rabbitmq.destination.routing_key": "order.created", "messaging.message.id": "*",
		"messaging.operation.type": "create", // stored in the outbox with the order; the relay sends it
	})
	wantClientChild(t, spans, publish, "postgresql") // the outbox row, in the order's transaction

	// The relay's send is a trace of its own, linked to the message's creation.
	waitFor(t, patience, "the relay's send span", func() bool {
		for _, sp := range s.otlp.Spans() {
			if sp.Name == "publish orders:order.created" && slices.Contains(sp.Links, publish.SpanID) {
				return true
			}
		}
		return false
	})
	for _, sp := range s.otlp.Spans() {
		if sp.Name == "publish orders:order.created" && slices.Contains(sp.Links, publish.SpanID) {
			if sp.Kind != producer || sp.ParentID != "" || sp.Attrs["messaging.message.id"] != publish.Attrs["messaging.message.id"] ||
				sp.Attrs["messaging.operation.type"] != "send" || sp.Attrs["messaging.destination.name"] != "orders:order.created" {
				t.Errorf("relay span %+v, want a root PRODUCER send of the same message", sp)
			}
		}
	}
	wantAttrs(t, consume, map[string]string{
		"messaging.system": "rabbitmq", "messaging.operation.type": "process",
		"messaging.destination.name":                 "orders:order.created:fulfillment.order-created",
		"messaging.destination.subscription.name":    "fulfillment.order-created",
		"messaging.rabbitmq.destination.routing_key": "order.created",
		"messaging.message.id":                       publish.Attrs["messaging.message.id"],
		"tenant.id":                                  "acme", // from the baggage header of the message
		"request.id":                                 "golden-req-1",
		"order.id":                                   order.OrderID,
		"fulfillment.outcome":                        "fulfilled",
	})
	// The message is acknowledged in a settle span of its own, after the work.
	ack := find(t, spans, "fulfillment", client, "ack orders:order.created:fulfillment.order-created")
	wantParent(t, ack, consume)
	wantAttrs(t, ack, map[string]string{
		"messaging.operation.type": "settle", "messaging.operation.name": "ack",
		"messaging.message.id": publish.Attrs["messaging.message.id"],
	})
	if ack.Start < complete.End {
		t.Errorf("the ack began before fulfillment.complete_order ended: acknowledged before the work was done")
	}
	// Database spans are named by their query summary, in the conventions.
	for _, sp := range spans {
		if sp.Kind == client && sp.Attrs["db.system.name"] == "postgresql" && sp.Attrs["db.query.summary"] != "" &&
			sp.Name != sp.Attrs["db.query.summary"] && sp.Name != "PREPARE "+sp.Attrs["db.query.summary"] {
			t.Errorf("postgres span %q has db.query.summary %q: want the summary as its name", sp.Name, sp.Attrs["db.query.summary"])
		}
	}
	find(t, spans, "orders", client, "INSERT orders")
	find(t, spans, "orders", client, "COPY order_items")
	if len(named(spans, "orders", "MGET")) == 0 {
		t.Errorf("no MGET span: Redis commands are named by their command, in the conventions")
	}

	// One SKU was a planted cache hit, the other a miss read from Postgres.
	wantAttrs(t, inventory, map[string]string{"cache.hits": "1", "cache.misses": "1"})
	wantClientChild(t, spans, inventory, "redis")
	wantClientChild(t, spans, inventory, "postgresql")
	wantClientChild(t, spans, pricing, "redis")
	wantClientChild(t, spans, pricing, "postgresql")
	wantClientChild(t, spans, orderProcess, "postgresql") // the order's INSERT and COPY
	wantClientChild(t, spans, reserve, "postgresql")
	wantClientChild(t, spans, complete, "postgresql")
	wantClientChild(t, spans, consume, "redis") // the stock cache invalidation

	// Metrics: request durations, the Go runtime, and the SDK's own counts of
	// spans started and processed (dropped ones carry error.type).
	wantMetrics := []string{"http.server.request.duration", "go.memory.used", "pgxpool.acquires",
		"go.goroutine.count", "otel.sdk.span.started", "otel.sdk.processor.span.processed", "otel.sdk.processor.span.queue.size"}
	waitFor(t, patience, fmt.Sprintf("metrics %v", wantMetrics), func() bool {
		got := s.otlp.MetricNames()
		for _, m := range wantMetrics {
			if !got[m] {
				return false
			}
		}
		return true
	})
	waitFor(t, patience, "OTLP log records of the order from orders and fulfillment", func() bool {
		seen := map[string]bool{}
		for _, l := range s.otlp.Logs() {
			if l.TraceID == traceID && l.SpanID != "" {
				seen[l.Service] = true
			}
		}
		return seen["orders"] && seen["fulfillment"]
	})

	// What follows is about everything the services made: stopped, they have
	// flushed it all (spans, log records, their stdout).
	s.stop(t)

	// What the collector derives from spans is not recorded twice
	// (telemetry.DuplicateInstruments).
	for name := range s.otlp.MetricNames() {
		if slices.Contains([]string{"http.client.request.duration", "db.client.operation.duration", "db.client.connections.use_time"}, name) {
			t.Errorf("metric %s reached the collector: the collector derives it from spans", name)
		}
	}

	// Every span of the order is in this one trace.
	for _, sp := range s.otlp.Spans() {
		if sp.Attrs["order.id"] == order.OrderID && sp.TraceID != traceID {
			t.Errorf("%s %q of this order is in trace %s, want %s", sp.Service, sp.Name, sp.TraceID, traceID)
		}
	}

	// Nothing planted leaks, into any span of any trace.
	for _, sp := range s.otlp.Spans() {
		for _, kv := range allValues(sp) {
			if strings.Contains(kv, fmt.Sprint(plantedQuantity)) || strings.Contains(kv, plantedRedisValue) {
				t.Errorf("%s %q carries a planted value: %s", sp.Service, sp.Name, kv)
			}
		}
		if sp.Attrs["db.system.name"] == "redis" && sp.Attrs["db.query.text"] != "" {
			t.Errorf("redis span %q records its statement", sp.Name)
		}
	}

	// Logs: each line that names this order carries its trace.
	for _, p := range []*process{s.orders, s.fulfillment} {
		n := 0
		for _, line := range p.Lines() {
			if !strings.Contains(line, order.OrderID) {
				continue
			}
			n++
			var rec struct {
				TraceID string `json:"trace_id"`
				SpanID  string `json:"span_id"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.TraceID != traceID || len(rec.SpanID) != 16 {
				t.Errorf("%s log line without this trace's IDs: %s", p.name, line)
			}
		}
		if n == 0 {
			t.Errorf("%s wrote no log line about order %s", p.name, order.OrderID)
		}
	}
}
