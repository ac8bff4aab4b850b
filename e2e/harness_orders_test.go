package e2e

// Placing orders through the gateway and reading its answers: the placed
// answer, placeOrder and waitStatus, scenarioOrder (an order's body), and
// the problem details of a refused request.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

type placed struct {
	OrderID    string `json:"order_id"`
	Status     string `json:"status"`
	TotalCents int64  `json:"total_cents"`
	TraceID    string `json:"trace_id"`
}

// placeOrder posts an order through the gateway and returns the status,
// headers and decoded answer.
func (s *stack) placeOrder(t *testing.T, body string, header map[string]string) (int, http.Header, placed) {
	t.Helper()
	status, h, b := s.call(t, http.MethodPost, "/api/orders", "application/json", []byte(body), header)
	var p placed
	if status == http.StatusCreated {
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
	}
	return status, h, p
}

// waitStatus polls GET /api/orders/{id} until the order is no longer
// pending, and returns its status.
func (s *stack) waitStatus(t *testing.T, orderID string) string {
	t.Helper()
	var order struct{ Status string }
	waitUntil(t, patience, "order "+orderID+" to leave pending", func() (bool, error) {
		status, _, b, err := s.tryCall(http.MethodGet, "/api/orders/"+orderID, "", nil, nil)
		if err != nil {
			return false, err
		}
		if status != http.StatusOK {
			return false, fmt.Errorf("GET order: %d %s", status, b)
		}
		if err := json.Unmarshal(b, &order); err != nil {
			return false, fmt.Errorf("GET order: %s: %w", b, err)
		}
		return order.Status != "pending", nil
	})
	return order.Status
}

const scenarioOrder = `{"customer_id":"c","items":[{"sku":"COFFEE-BEANS-1KG","quantity":1},{"sku":"MUG-CERAMIC","quantity":2}]}`

type problem struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Status  int    `json:"status"`
	Errors  []struct{ Field, Reason string }
	TraceID string `json:"trace_id"`
}

func decodeProblem(t *testing.T, h http.Header, body []byte) problem {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json; body %s", ct, body)
	}
	var p problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	return p
}
