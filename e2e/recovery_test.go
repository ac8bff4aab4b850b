package e2e

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestReconnectAfterBrokerDropsConnections closes, through the management
// API, every connection the services hold to the broker (what a broker
// restart does to them, without stopping the machine's broker for the other
// tests). The relay and the consumer reconnect by themselves, declare the
// topology again, and orders placed meanwhile are all fulfilled.
func TestReconnectAfterBrokerDropsConnections(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"PAYMENT_LATENCY": "1ms"})
	const body = `{"customer_id":"c","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`

	status, _, first := s.placeOrder(t, body, nil) // the relay connects on its first message
	if status != http.StatusCreated || s.waitStatus(t, first.OrderID) != "fulfilled" {
		t.Fatalf("first order: status %d", status)
	}
	var conns []struct{ Name string }
	waitUntil(t, patience, "the relay's and the consumer's connections in the management API", func() (bool, error) {
		conns = nil
		err := rabbitDo(http.MethodGet, "/api/vhosts/"+url.PathEscape(s.env.VHost)+"/connections", nil, &conns)
		return len(conns) >= 2, err
	})
	for _, c := range conns {
		if err := rabbitDo(http.MethodDelete, "/api/connections/"+url.PathEscape(c.Name), nil, nil); err != nil {
			t.Fatalf("close connection %s: %v", c.Name, err)
		}
	}

	// Orders keep coming while the services are cut off and reconnecting.
	var placed []string
	for range 10 {
		status, _, o := s.placeOrder(t, body, nil)
		if status != http.StatusCreated {
			t.Fatalf("order during the outage: status %d, want 201 (orders do not need the broker)", status)
		}
		placed = append(placed, o.OrderID)
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range placed {
		if got := s.waitStatus(t, id); got != "fulfilled" {
			t.Errorf("order %s: %q after the reconnection, want fulfilled", id, got)
		}
	}
	// The relay marks a row sent after the broker's confirm, in its own
	// transaction, so fulfillment can finish the order first.
	waitUntil(t, patience, "every outbox row marked sent after recovery", func() (bool, error) {
		n, err := s.env.tryQueryInt("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
		return n == 0, err
	})
	// Subscribed again, fulfillment says it is ready (the broker closes a
	// connection asynchronously, so this is a poll, not a single question).
	waitUntil(t, patience, "fulfillment ready after reconnecting", func() (bool, error) {
		err := s.fulfillment.tryReady()
		return err == nil, err
	})
}
