package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

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
	waitFor(t, 20*time.Second, "every order fulfilled", func() bool {
		return s.env.queryInt(t, "SELECT count(*) FROM orders WHERE status = 'fulfilled'") == n
	})
	if got := s.env.queryInt(t, "SELECT 1000000 - stock FROM products WHERE sku = 'DRIPPER-V60'"); got != n {
		t.Errorf("stock taken = %d, want %d (once per order)", got, n)
	}
	waitFor(t, 10*time.Second, "a CONSUMER span in every order's trace", func() bool {
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
		publish := find(t, spans, "orders", producer, "publish orders")
		consume := find(t, spans, "fulfillment", consumer, "process fulfillment.order-created")
		wantParent(t, consume, publish)
		if consume.Attrs["order.id"] != id || publish.Status == statusError {
			t.Errorf("trace %s: consumer order.id %q (want %s), publish status %v", traceID, consume.Attrs["order.id"], id, publish.Status)
		}
	}
}

// TestUnroutableOrderIsRolledBack removes the queue's binding, so the broker
// returns the mandatory message: the order must be refused with 503 and
// rolled back, not reported as placed.
func TestUnroutableOrderIsRolledBack(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)

	binding := fmt.Sprintf("/api/bindings/%s/e/%s/q/%s/%s", url.PathEscape(s.env.VHost), orderevents.Exchange,
		url.PathEscape(orderevents.Queue), orderevents.RoutingKeyCreated)
	if err := rabbitDo(http.MethodDelete, binding, nil, nil); err != nil {
		t.Fatalf("unbind: %v", err)
	}
	status, h, body := s.call(t, http.MethodPost, "/api/orders", "application/json",
		[]byte(`{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`), nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, want 503; body %s", status, body)
	}
	traceID := traceIDFromHeader(t, h)
	waitFor(t, 5*time.Second, "the PRODUCER span", func() bool {
		for _, sp := range s.otlp.Trace(traceID) {
			if sp.Kind == producer {
				return true
			}
		}
		return false
	})
	publish := find(t, s.otlp.Trace(traceID), "orders", producer, "publish orders")
	if publish.Status != statusError || !hasException(publish, "not routed") {
		t.Errorf("PRODUCER status %v events %+v, want ERROR with a 'not routed' exception", publish.Status, publish.Events)
	}
	if n := s.env.queryInt(t, "SELECT count(*) FROM orders"); n != 0 {
		t.Errorf("%d orders stored, want 0 (rolled back)", n)
	}
}
