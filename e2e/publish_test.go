package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
)

// TestConcurrentOrders places orders in parallel, so publishes share the
// publisher's channel and their confirms interleave: each order must get its
// own confirm, its own trace, and be fulfilled exactly once.
func TestConcurrentOrders(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"PAYMENT_LATENCY": "5ms"})

	const n = 40
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		orders = map[string]string{} // order ID -> trace ID
	)
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"customer_id":"c-%d","items":[{"sku":"DRIPPER-V60","quantity":1}]}`, i)
			status, h, p := s.placeOrder(t, body, map[string]string{"X-Tenant-ID": fmt.Sprintf("tenant-%d", i%4)})
			if status != http.StatusCreated {
				t.Errorf("order %d: status %d", i, status)
				return
			}
			mu.Lock()
			orders[p.OrderID] = traceIDFromHeader(t, h)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(orders) != n {
		t.Fatalf("%d distinct orders placed, want %d", len(orders), n)
	}
	waitUntil(t, patience, "every order fulfilled", func() (bool, error) {
		fulfilled, err := s.env.tryQueryInt("SELECT count(*) FROM orders WHERE status = 'fulfilled'")
		if err == nil && fulfilled != n {
			err = fmt.Errorf("%d of %d orders fulfilled", fulfilled, n)
		}
		return err == nil, err
	})
	if got := s.env.queryInt(t, "SELECT 1000000 - stock FROM products WHERE sku = 'DRIPPER-V60'"); got != n {
		t.Errorf("stock taken = %d, want %d (once per order)", got, n)
	}
	waitFor(t, patience, "a CONSUMER span in every order's trace", func() bool {
		for _, traceID := range orders {
			found := false
			for _, sp := range s.otlp.Trace(traceID) {
				found = found || sp.Kind == consumer
			}
			if !found {
				return false
			}
		}
		return true
	})
	for id, traceID := range orders {
		spans := s.otlp.Trace(traceID)
		publish := find(t, spans, "orders", producer, "create orders:order.created")
		consume := find(t, spans, "fulfillment", consumer, "process orders:order.created:fulfillment.order-created")
		wantParent(t, consume, publish)
		if consume.Attrs["order.id"] != id || publish.Status == statusError {
			t.Errorf("trace %s: consumer order.id %q (want %s), publish status %v", traceID, consume.Attrs["order.id"], id, publish.Status)
		}
	}
}

// TestRelayRecoversFromUnroutableMessages removes the queue's binding while
// the relay is connected, so the broker returns the next order's message
// (mandatory). The order is still answered 201: it is committed with its
// message. The relay's send fails as "not routed" (an ERROR span), the row
// stays in the outbox, and the relay backs off, reconnects, declares the
// topology again (which restores the binding) and delivers it.
func TestRelayRecoversFromUnroutableMessages(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	const body = `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`

	status, _, first := s.placeOrder(t, body, nil) // connects the relay
	if status != http.StatusCreated || s.waitStatus(t, first.OrderID) != "fulfilled" {
		t.Fatalf("first order: status %d", status)
	}
	binding := fmt.Sprintf("/api/bindings/%s/e/%s/q/%s/%s", url.PathEscape(s.env.VHost), orderevents.Exchange,
		url.PathEscape(orderevents.Queue), orderevents.RoutingKeyCreated)
	if err := rabbitDo(http.MethodDelete, binding, nil, nil); err != nil {
		t.Fatalf("unbind: %v", err)
	}

	status, _, order := s.placeOrder(t, body, nil)
	if status != http.StatusCreated {
		t.Fatalf("status = %d, want 201 (the order is stored with its message)", status)
	}
	if got := s.waitStatus(t, order.OrderID); got != "fulfilled" {
		t.Fatalf("order status = %q, want fulfilled once the relay has recovered", got)
	}
	var failed, delivered bool
	waitFor(t, patience, "the failed and the successful send spans", func() bool {
		failed, delivered = false, false
		for _, sp := range s.otlp.Spans() {
			if sp.Name != "publish orders:order.created" {
				continue
			}
			failed = failed || (sp.Status == statusError && hasException(sp, "not routed") && sp.Attrs["outbox.attempts"] == "1")
			delivered = delivered || (sp.Status != statusError && sp.Attrs["outbox.attempts"] == "2")
		}
		return failed && delivered
	})
	// The relay marks a row sent after the broker's confirm, in its own
	// transaction, so fulfillment can finish the order first.
	waitUntil(t, patience, "every outbox row marked sent", func() (bool, error) {
		n, err := s.env.tryQueryInt("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
		return n == 0, err
	})
}
