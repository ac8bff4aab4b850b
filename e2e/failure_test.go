package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
	amqp "github.com/rabbitmq/amqp091-go"
)

// wantNothingStored checks that no order row exists and no message was published.
func (s *stack) wantNothingStored(t *testing.T) {
	t.Helper()
	if n := s.env.queryInt(t, "SELECT count(*) FROM orders"); n != 0 {
		t.Errorf("%d orders stored, want 0", n)
	}
	for _, sp := range s.otlp.Spans() {
		if sp.Name == "create orders:order.created" || sp.Service == "fulfillment" && sp.Kind == consumer {
			t.Errorf("a message was published or consumed: %s %q", sp.Service, sp.Name)
		}
	}
	if n := s.env.queueDepth(t, orderevents.Queue); n != 0 {
		t.Errorf("%d messages in %s, want 0", n, orderevents.Queue)
	}
}

func TestPaymentDeclined(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"PAYMENT_FAILURE_RATE": "1"})

	status, h, body := s.call(t, http.MethodPost, "/api/orders", "application/json",
		[]byte(`{"customer_id":"cust-7","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`), nil)
	if status != http.StatusPaymentRequired {
		t.Fatalf("status = %d, want 402; body %s", status, body)
	}
	p := decodeProblem(t, h, body)
	traceID := traceIDFromHeader(t, h)
	if p.Title != "Payment declined" || p.TraceID != traceID {
		t.Errorf("problem = %+v, want title %q and trace_id %s", p, "Payment declined", traceID)
	}

	// The SERVER spans end last in each service: with them, their children
	// (exported in the order they ended) have arrived too.
	spans := waitTrace(t, s.otlp, traceID, spanKey{"gateway", server, "POST /api/orders"}, spanKey{"orders", server, "POST /orders"})
	t.Logf("declined payment trace:\n%s", tree(spans))
	payment := find(t, spans, "orders", client, "order.charge_payment")
	orderProcess := find(t, spans, "orders", internal, "order.process")
	for _, sp := range []span{payment, orderProcess, find(t, spans, "orders", server, "POST /orders"), find(t, spans, "gateway", server, "POST /api/orders")} {
		if sp.Status != statusError {
			t.Errorf("%s %q status = %v, want ERROR", sp.Service, sp.Name, sp.Status)
		}
	}
	ordServer := find(t, spans, "orders", server, "POST /orders")
	gwServer := find(t, spans, "gateway", server, "POST /api/orders")
	for _, sp := range []span{payment, orderProcess, ordServer} {
		if !hasException(sp, "payment declined") {
			t.Errorf("%q has no exception event about the declined payment: %+v", sp.Name, sp.Events)
		}
	}
	if !hasException(gwServer, "402") {
		t.Errorf("gateway SERVER span has no exception event for the failed call: %+v", gwServer.Events)
	}
	s.stop(t) // every span they made has arrived: none may be a publish
	s.wantNothingStored(t)
}

func TestRejectedRequests(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)

	tests := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int
		wantField   string
	}{
		{"unknown sku", "application/json", `{"customer_id":"c","items":[{"sku":"NO-SUCH-SKU","quantity":1}]}`, 422, "items[0].sku"},
		{"zero quantity", "application/json", `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":0}]}`, 422, "items[0].quantity"},
		{"negative quantity", "application/json", `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":-3}]}`, 422, "items[0].quantity"},
		{"no items", "application/json", `{"customer_id":"c","items":[]}`, 422, "items"},
		{"no customer", "application/json", `{"items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, 422, "customer_id"},
		{"more than in stock", "application/json", `{"customer_id":"c","items":[{"sku":"LIMITED-ROAST","quantity":6}]}`, 409, "items[0].quantity"},
		{"malformed JSON", "application/json", `{"customer_id":`, 400, ""},
		{"wrong type", "application/json", `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":"two"}]}`, 400, "items[0].quantity"},
		{"two JSON values", "application/json", `{"customer_id":"c","items":[]} {}`, 400, ""},
		{"card data in an unknown field", "application/json",
			`{"customer_id":"c","card_number":"` + plantedCard + `","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, 400, "card_number"},
		{"oversized body", "application/json", `{"customer_id":"` + strings.Repeat("x", 70<<10) + `","items":[]}`, 413, ""},
		{"huge quantity", "application/json", `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1000000000000}]}`, 422, "items[0].quantity"},
		{"number beyond any int", "application/json", `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1e400}]}`, 400, "items[0].quantity"},
		{"SQL in a sku", "application/json", `{"customer_id":"c","items":[{"sku":"x'; DROP TABLE orders;--","quantity":1}]}`, 422, "items[0].sku"},
		{"script in a customer id", "application/json", `{"customer_id":"<script>alert(1)</script>","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, 422, "customer_id"},
		{"wrong content type", "text/plain", `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, 415, "Content-Type"},
		{"no content type", "", `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, 415, "Content-Type"},
	}
	refused := map[string]int{} // trace ID: the status each refused order's warning must give
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := s.call(t, http.MethodPost, "/api/orders", tt.contentType, []byte(tt.body), nil)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", status, tt.wantStatus, body)
			}
			refused[traceIDFromHeader(t, h)] = tt.wantStatus
			p := decodeProblem(t, h, body)
			if p.Status != tt.wantStatus || p.Title == "" || p.TraceID == "" {
				t.Errorf("problem = %+v, want status %d, a title and a trace_id", p, tt.wantStatus)
			}
			if tt.wantField != "" && (len(p.Errors) == 0 || p.Errors[0].Field != tt.wantField || p.Errors[0].Reason == "") {
				t.Errorf("problem errors = %+v, want field %q with a reason", p.Errors, tt.wantField)
			}
		})
	}

	t.Run("bad tenant header", func(t *testing.T) {
		status, h, body := s.call(t, http.MethodPost, "/api/orders", "application/json",
			[]byte(`{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`), map[string]string{"X-Tenant-ID": "no spaces allowed"})
		if p := decodeProblem(t, h, body); status != 400 || len(p.Errors) == 0 || p.Errors[0].Field != "X-Tenant-ID" {
			t.Errorf("status %d, problem %+v; want 400 naming X-Tenant-ID", status, p)
		}
	})
	t.Run("baggage over the W3C limit", func(t *testing.T) {
		status, h, body := s.call(t, http.MethodPost, "/api/orders", "application/json",
			[]byte(`{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`), map[string]string{"baggage": "k=" + strings.Repeat("v", 9000)})
		if p := decodeProblem(t, h, body); status != http.StatusRequestHeaderFieldsTooLarge || len(p.Errors) == 0 || p.Errors[0].Field != "baggage" {
			t.Errorf("status %d, problem %+v; want 431 naming baggage", status, p)
		}
	})
	t.Run("unknown order", func(t *testing.T) {
		status, h, body := s.call(t, http.MethodGet, "/api/orders/0190b5c4-0000-7000-8000-000000000000", "", nil, nil)
		if p := decodeProblem(t, h, body); status != 404 || p.Status != 404 {
			t.Errorf("status %d, problem %+v; want 404", status, p)
		}
	})
	t.Run("malformed order id", func(t *testing.T) {
		status, h, body := s.call(t, http.MethodGet, "/api/orders/not-a-uuid", "", nil, nil)
		if p := decodeProblem(t, h, body); status != 422 || len(p.Errors) == 0 || p.Errors[0].Field != "id" {
			t.Errorf("status %d, problem %+v; want 422 naming id", status, p)
		}
	})

	s.stop(t) // every span, log record and log line they made has arrived
	s.wantNothingStored(t)
	if n := s.env.queryInt(t, "SELECT count(*) FROM products"); n != 8 {
		t.Errorf("%d products left, want the 8 of the catalogue", n)
	}

	// The refused card number is nowhere: not in spans, OTLP logs or stdout.
	s.wantNowhere(t, plantedCard)

	// No span of a refused order is an error (a 4xx is the client's), so
	// each leaves one warning in its trace, from the service that refused it.
	warnings := map[string][]logRecord{}
	for _, l := range s.otlp.Logs() {
		if l.Body == "request refused" {
			warnings[l.TraceID] = append(warnings[l.TraceID], l)
		}
	}
	for traceID, status := range refused {
		w := warnings[traceID]
		if len(w) != 1 || w[0].Severity != "WARN" || w[0].Attrs["status"] != strconv.Itoa(status) || w[0].Attrs["reason"] == "" {
			t.Errorf("trace %s (a %d): warnings %+v, want one WARN \"request refused\" with its status and reason", traceID, status, w)
		}
	}
}

// wantNowhere checks that no planted value is in any exported span attribute
// or event, OTLP log record, or log line of the three services. Call it after
// stop, when everything they made has arrived.
func (s *stack) wantNowhere(t *testing.T, planted ...string) {
	t.Helper()
	for _, secret := range planted {
		for _, sp := range s.otlp.Spans() {
			for _, v := range allValues(sp) {
				if strings.Contains(v, secret) {
					t.Errorf("%s span %q carries a planted value: %.120s", sp.Service, sp.Name, v)
				}
			}
		}
		for _, l := range s.otlp.Logs() {
			if record := fmt.Sprint(l); strings.Contains(record, secret) {
				t.Errorf("an OTLP log record of %s carries a planted value: %.200s", l.Service, record)
			}
		}
		for _, p := range []*process{s.gateway, s.orders, s.fulfillment} {
			for _, line := range p.Lines() {
				if strings.Contains(line, secret) {
					t.Errorf("%s logged a planted value: %.200s", p.name, line)
				}
			}
		}
	}
}

// poisonParent is the span ID that publishPoison's messages name as parent.
const poisonParent = "00f067aa0ba902b7"

// publishPoison publishes, as some other producer might, an order.created
// message for an order that does not exist, in the trace traceID (and with
// the W3C baggage header baggage, if not empty): fulfillment retries it,
// then dead-letters it, with an ERROR CONSUMER span in that trace.
func publishPoison(t *testing.T, e *env, traceID, messageID, baggage string) {
	t.Helper()
	ch := e.channel(t)
	defer ch.Close()
	body, _ := json.Marshal(orderevents.OrderCreated{
		OrderID: "0190b5c4-0000-7000-8000-00000000dead", Items: []orderevents.Item{{SKU: "MUG-CERAMIC", Quantity: 1}},
		TotalCents: 1490, Currency: "EUR", CreatedAt: time.Now(),
	})
	headers := amqp.Table{"traceparent": "00-" + traceID + "-" + poisonParent + "-01"}
	if baggage != "" {
		headers["baggage"] = baggage
	}
	err := ch.PublishWithContext(t.Context(), orderevents.Exchange, orderevents.RoutingKeyCreated, true, false, amqp.Publishing{
		Headers: headers, ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: messageID, Body: body,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPoisonMessageDeadLettered publishes, as some other producer might, a
// message for an order that does not exist. Fulfillment tries it the bounded
// number of times, dead-letters it with the reason, continues the producer's
// trace throughout, and goes on consuming.
func TestPoisonMessageDeadLettered(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"FULFILLMENT_MAX_ATTEMPTS": "3", "FULFILLMENT_RETRY_BACKOFF": "20ms"})

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	publishPoison(t, s.env, traceID, "poison-1", "tenant.id=globex")

	var dead amqp.Delivery
	waitUntil(t, patience, "the message in the dead-letter queue", func() (bool, error) {
		d, ok, err := s.env.tryGet(orderevents.DeadLetterQueue)
		dead = d
		return ok, err
	})
	if dead.MessageId != "poison-1" || dead.Headers["x-fulfillment-attempts"] != int32(3) ||
		!strings.Contains(fmt.Sprint(dead.Headers["x-fulfillment-error"]), "order not found") ||
		dead.Headers["traceparent"] != "00-"+traceID+"-"+poisonParent+"-01" {
		t.Errorf("dead letter = id %q headers %v; want poison-1 with 3 attempts, the reason and the original traceparent", dead.MessageId, dead.Headers)
	}

	spans := waitTrace(t, s.otlp, traceID, spanKey{"fulfillment", consumer, "process orders:order.created:fulfillment.order-created"})
	t.Logf("poison message trace:\n%s", tree(spans))
	consume := find(t, spans, "fulfillment", consumer, "process orders:order.created:fulfillment.order-created")
	if consume.ParentID != poisonParent || len(consume.Links) != 1 || consume.Links[0] != poisonParent {
		t.Errorf("CONSUMER parent %s links %v; want the producer's span %s as both", consume.ParentID, consume.Links, poisonParent)
	}
	wantAttrs(t, consume, map[string]string{
		"fulfillment.attempts": "3", "fulfillment.dead_lettered": "true", "error.type": "order_not_found", "tenant.id": "globex",
	})
	if consume.Status != statusError || !hasException(consume, "order not found") {
		t.Errorf("CONSUMER status %v events %+v; want ERROR with the exception", consume.Status, consume.Events)
	}
	retries := 0
	for _, e := range consume.Events {
		if e.Name == "retry" {
			retries++
		}
	}
	if retries != 2 {
		t.Errorf("%d retry events, want 2 (3 attempts)", retries)
	}

	// The consumer is still consuming: a real order is fulfilled.
	status, _, order := s.placeOrder(t, `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, nil)
	if status != http.StatusCreated {
		t.Fatalf("order after the poison message: status %d", status)
	}
	if got := s.waitStatus(t, order.OrderID); got != "fulfilled" {
		t.Errorf("order after the poison message: status %q, want fulfilled", got)
	}
	if n := s.env.queueDepth(t, orderevents.Queue); n != 0 {
		t.Errorf("%d messages left in %s, want 0", n, orderevents.Queue)
	}
}

// TestSIGTERMFlushesTelemetry stops each service right after it served a
// request, with a batch delay so long that only the shutdown flush can have
// exported the request's spans.
func TestSIGTERMFlushesTelemetry(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_BLRP_SCHEDULE_DELAY": "600000"})

	status, h, order := s.placeOrder(t, `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, nil)
	if status != http.StatusCreated {
		t.Fatalf("status = %d, want 201", status)
	}
	traceID := traceIDFromHeader(t, h)
	waitUntil(t, patience, "fulfilment in the database", func() (bool, error) {
		n, err := s.env.tryQueryInt("SELECT count(*) FROM orders WHERE id = $1 AND status = 'fulfilled'", order.OrderID)
		return n == 1, err
	})
	if n := len(s.otlp.Trace(traceID)); n != 0 {
		t.Fatalf("%d spans exported before shutdown; the test needs the batch delay to hold them", n)
	}

	for _, p := range []*process{s.gateway, s.orders, s.fulfillment} {
		took := p.Stop(t)
		if p.err != nil {
			t.Errorf("%s exited with %v after SIGTERM, want a clean exit", p.name, p.err)
		}
		t.Logf("%s stopped %s after SIGTERM", p.name, took.Round(time.Millisecond))
		lines := p.Lines()
		t.Logf("last lines: %s", strings.Join(lines[max(0, len(lines)-3):], "\n"))
	}
	spans := s.otlp.Trace(traceID)
	find(t, spans, "gateway", server, "POST /api/orders")
	find(t, spans, "orders", producer, "create orders:order.created")
	find(t, spans, "fulfillment", consumer, "process orders:order.created:fulfillment.order-created")
	logged := map[string]bool{}
	for _, l := range s.otlp.Logs() {
		if l.TraceID == traceID {
			logged[l.Service] = true
		}
	}
	if !logged["orders"] || !logged["fulfillment"] {
		t.Errorf("log records of the trace flushed by %v, want orders and fulfillment", logged)
	}
}

// A traceparent from outside is a claim, not a fact: a malformed one is
// ignored (the gateway starts a new trace), a well-formed one is continued,
// which is what lets k6 make its requests the roots of their traces.
func TestInboundTraceparent(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	const body = `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`
	for _, tc := range []struct {
		name, header string
		continued    bool
	}{
		{"malformed", "00-zzzz-forged-01", false},
		{"all-zero trace ID", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"well-formed", "00-7bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, _ := s.call(t, http.MethodPost, "/api/orders", "application/json", []byte(body), map[string]string{"traceparent": tc.header})
			if status != http.StatusCreated {
				t.Fatalf("status %d, want 201", status)
			}
			got := traceIDFromHeader(t, h)
			if continued := strings.Contains(tc.header, got); continued != tc.continued || got == strings.Repeat("0", 32) {
				t.Errorf("trace %s for traceparent %q; continued = %v, want %v", got, tc.header, continued, tc.continued)
			}
		})
	}
}
