package e2e

import (
	"net/http"
	"sync"
	"testing"
)

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	const (
		order1 = `{"customer_id":"cust-a","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`
		order2 = `{"customer_id":"cust-a","items":[{"sku":"MUG-CERAMIC","quantity":2}]}`
	)
	post := func(body, key string) (int, http.Header, []byte) {
		return s.call(t, http.MethodPost, "/api/orders", "application/json", []byte(body), map[string]string{"Idempotency-Key": key})
	}
	orders := func(customer string) int {
		return s.env.queryInt(t, "SELECT count(*) FROM orders WHERE customer_id = $1", customer)
	}

	t.Run("a retry gets the first answer", func(t *testing.T) {
		status1, _, body1 := post(order1, "k-retry")
		status2, h2, body2 := post(`{"items":[{"quantity":1,"sku":"MUG-CERAMIC"}],"customer_id":"cust-a"}`, "k-retry") // same request, other field order
		if status1 != http.StatusCreated || status2 != http.StatusCreated || string(body1) != string(body2) {
			t.Errorf("answers %d %s and %d %s, want the same 201 twice", status1, body1, status2, body2)
		}
		if h2.Get("Idempotent-Replayed") != "true" {
			t.Error("the replayed answer is not marked Idempotent-Replayed")
		}
	})
	t.Run("a key reused for another request is refused", func(t *testing.T) {
		status, h, body := post(order2, "k-retry")
		if p := decodeProblem(t, h, body); status != http.StatusUnprocessableEntity || len(p.Errors) == 0 || p.Errors[0].Field != "Idempotency-Key" {
			t.Errorf("status %d problem %+v, want 422 naming Idempotency-Key", status, p)
		}
	})
	if n := orders("cust-a"); n != 1 {
		t.Errorf("%d orders for cust-a, want 1", n)
	}

	t.Run("keys are scoped per customer", func(t *testing.T) {
		status, _, _ := post(`{"customer_id":"cust-b","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`, "k-retry")
		if status != http.StatusCreated || orders("cust-b") != 1 {
			t.Errorf("status %d, %d orders for cust-b; want a new order", status, orders("cust-b"))
		}
	})

	t.Run("twins at once make one order", func(t *testing.T) {
		const twins = 30
		body := `{"customer_id":"cust-c","items":[{"sku":"DRIPPER-V60","quantity":1}]}`
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			results = map[int]int{}
			bodies  = map[string]bool{}
		)
		for range twins {
			wg.Go(func() {
				status, _, b := post(body, "k-twins")
				mu.Lock()
				defer mu.Unlock()
				results[status]++
				if status == http.StatusCreated {
					bodies[string(b)] = true
				}
			})
		}
		wg.Wait()
		if n := orders("cust-c"); n != 1 {
			t.Errorf("%d orders from %d twin requests, want exactly 1", n, twins)
		}
		if results[http.StatusCreated]+results[http.StatusConflict] != twins || len(bodies) != 1 {
			t.Errorf("answers %v with %d distinct 201 bodies; want only 201 (one body) and 409", results, len(bodies))
		}
	})

	t.Run("a refusal stores nothing", func(t *testing.T) {
		for _, body := range []string{
			`{"customer_id":"cust-d","items":[{"sku":"LIMITED-ROAST","quantity":6}]}`, // 409: not enough stock
			`{"customer_id":"cust-d","items":[{"sku":"NO-SUCH-SKU","quantity":1}]}`,   // 422: not in the catalogue
		} {
			status1, _, _ := post(body, "k-refused")
			status2, h2, _ := post(body, "k-refused")
			if status1 < 400 || status1 >= 500 || status2 != status1 || h2.Get("Idempotent-Replayed") != "" {
				t.Errorf("answers %d then %d (replayed %q), want the same refusal twice, not replayed", status1, status2, h2.Get("Idempotent-Replayed"))
			}
			if n := s.env.queryInt(t, "SELECT count(*) FROM idempotency_keys WHERE key = 'k-refused'"); n != 0 {
				t.Errorf("%d idempotency rows after a refused request, want none", n)
			}
		}
	})

	t.Run("keys are scoped per tenant", func(t *testing.T) {
		body := `{"customer_id":"cust-f","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`
		postAs := func(tenant string) (int, http.Header, []byte) {
			return s.call(t, http.MethodPost, "/api/orders", "application/json", []byte(body),
				map[string]string{"Idempotency-Key": "k-tenant", "X-Tenant-ID": tenant})
		}
		statusA, _, bodyA := postAs("tenant-a")
		statusB, hB, bodyB := postAs("tenant-b")
		if statusA != http.StatusCreated || statusB != http.StatusCreated || hB.Get("Idempotent-Replayed") != "" || string(bodyA) == string(bodyB) {
			t.Errorf("answers %d %s and %d %s (replayed %q); want tenant-b its own order, not tenant-a's answer",
				statusA, bodyA, statusB, bodyB, hB.Get("Idempotent-Replayed"))
		}
		if n := s.env.queryInt(t, "SELECT count(DISTINCT tenant_id) FROM orders WHERE customer_id = 'cust-f'"); n != 2 {
			t.Errorf("orders of cust-f in %d tenants, want 2", n)
		}
	})

	t.Run("an expired key is free again", func(t *testing.T) {
		body := `{"customer_id":"cust-e","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`
		post(body, "k-expiring")
		s.env.queryInt(t, "WITH u AS (UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'k-expiring' RETURNING 1) SELECT count(*) FROM u")
		status, h, _ := post(body, "k-expiring")
		if status != http.StatusCreated || h.Get("Idempotent-Replayed") != "" || orders("cust-e") != 2 {
			t.Errorf("status %d, replayed %q, %d orders; want a new order after 24 hours", status, h.Get("Idempotent-Replayed"), orders("cust-e"))
		}
	})

	t.Run("a malformed key is refused", func(t *testing.T) {
		status, h, body := post(order1, "has spaces")
		if p := decodeProblem(t, h, body); status != http.StatusBadRequest || len(p.Errors) == 0 || p.Errors[0].Field != "Idempotency-Key" {
			t.Errorf("status %d problem %+v, want 400 naming Idempotency-Key", status, p)
		}
	})
}
