package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

const edgeBody = `{"customer_id":"cust-edge","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`

// callerTrace is a caller's traceparent without its flags, and a tracestate
// far over the suite's cap (32 members of about 100 bytes each).
func callerTrace() (traceID, spanID, bigState string) {
	members := make([]string, 32)
	for i := range members {
		members[i] = "v" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "=" + strings.Repeat("x", 100)
	}
	return randomHex(16), randomHex(8), strings.Join(members, ",")
}

// outboxHeader returns the header the outbox stored with the message of
// orderID, waiting for the row; "" when the header is absent.
func outboxHeader(t *testing.T, e *env, orderID, header string) string {
	t.Helper()
	waitUntil(t, patience, "the order's outbox row", func() (bool, error) {
		n, err := e.tryQueryInt(`SELECT count(*) FROM outbox WHERE convert_from(body, 'UTF8') LIKE '%' || $1 || '%'`, orderID)
		return n == 1, err
	})
	c, err := pgx.Connect(t.Context(), e.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var v string
	if err := c.QueryRow(t.Context(), `SELECT coalesce(headers->>$2, '') FROM outbox WHERE convert_from(body, 'UTF8') LIKE '%' || $1 || '%'`,
		orderID, header).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestInboundTrust: with INBOUND_TRACE at its default (trust), the gateway
// continues a caller's trace, flags included, and carries a tracestate within
// the cap; a larger one is dropped before the first span starts.
func TestInboundTrust(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	traceID, spanID, big := callerTrace()

	t.Run("not sampled followed", func(t *testing.T) {
		status, h, _ := s.placeOrder(t, edgeBody, map[string]string{"traceparent": "00-" + traceID + "-" + spanID + "-00"})
		if status != http.StatusCreated {
			t.Fatalf("status %d, want 201", status)
		}
		if got, want := h.Get("traceresponse"), "-00"; !strings.Contains(got, traceID) || !strings.HasSuffix(got, want) {
			t.Errorf("traceresponse %q, want the caller's trace %s, not sampled", got, traceID)
		}
	})
	for _, tc := range []struct{ name, state, want string }{
		{"small tracestate carried", "vendor=caller", "vendor=caller"},
		{"oversize tracestate dropped", big, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, p := s.placeOrder(t, edgeBody, map[string]string{
				"traceparent": "00-" + randomHex(16) + "-" + spanID + "-01", "tracestate": tc.state,
			})
			if status != http.StatusCreated {
				t.Fatalf("status %d, want 201", status)
			}
			if !strings.HasSuffix(h.Get("traceresponse"), "-01") {
				t.Errorf("traceresponse %q, want sampled", h.Get("traceresponse"))
			}
			if got := outboxHeader(t, s.env, p.OrderID, "tracestate"); got != tc.want {
				t.Errorf("outbox tracestate = %.40q (%d bytes), want %q", got, len(got), tc.want)
			}
		})
	}
}

// TestInboundNewRoot: with INBOUND_TRACE=new-root, a caller's "not sampled"
// no longer decides: the order gets a trace of its own, whose gateway span
// links to the caller's, and the caller's tracestate goes no further.
func TestInboundNewRoot(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"INBOUND_TRACE": "new-root"})
	traceID, spanID, _ := callerTrace()

	status, h, p := s.placeOrder(t, edgeBody, map[string]string{
		"traceparent": "00-" + traceID + "-" + spanID + "-00", "tracestate": "vendor=caller",
	})
	if status != http.StatusCreated {
		t.Fatalf("status %d, want 201", status)
	}
	got := traceIDFromHeader(t, h)
	if got == traceID || !strings.HasSuffix(h.Get("traceresponse"), "-01") {
		t.Fatalf("traceresponse %q, want a new, sampled trace (the caller's was %s)", h.Get("traceresponse"), traceID)
	}
	waitUntil(t, patience, "the order's complete trace", func() (bool, error) {
		return len(missing(s.otlp.Trace(got))) == 0, nil
	})
	edge := find(t, s.otlp.Trace(got), "gateway", server, "POST /api/orders")
	if edge.ParentID != "" || !slices.Contains(edge.Links, spanID) {
		t.Errorf("gateway span: parent %q, links %v; want a root linked to the caller's span %s", edge.ParentID, edge.Links, spanID)
	}
	if state := outboxHeader(t, s.env, p.OrderID, "tracestate"); state != "" {
		t.Errorf("outbox tracestate = %q, want none", state)
	}
}

// TestOrdersTrustPolicy: orders' port is reachable without the gateway, so
// orders filters the baggage and tracestate itself: only a well-formed
// tenant is stored, published and recorded, and nothing else passes.
func TestOrdersTrustPolicy(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	_, _, big := callerTrace()
	for _, tc := range []struct {
		name, baggage, wantTenant, wantBaggage string
	}{
		{"CR LF and markup", "tenant.id=" + url.PathEscape("evil\r\nX: <script>"), "", ""},
		{"4000-character tenant", "tenant.id=" + strings.Repeat("t", 4000), "", ""},
		{"secrets beside a good tenant", "password=hunter2,junk=" + strings.Repeat("j", 3000) + ",tenant.id=acme", "acme", "tenant.id=acme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, s.orders.URL()+"/orders", strings.NewReader(edgeBody))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("traceparent", "00-"+randomHex(16)+"-"+randomHex(8)+"-01")
			req.Header.Set("tracestate", big)
			req.Header.Set("baggage", tc.baggage)
			resp, err := testClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p placed
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusCreated {
				t.Fatalf("status %d (%v), want 201", resp.StatusCode, err)
			}
			traceID := traceIDFromHeader(t, resp.Header)

			if n := s.env.queryInt(t, `SELECT count(*) FROM orders WHERE id::text = $1 AND coalesce(tenant_id, '') = $2`, p.OrderID, tc.wantTenant); n != 1 {
				t.Errorf("order %s not stored with tenant %q", p.OrderID, tc.wantTenant)
			}
			if got := outboxHeader(t, s.env, p.OrderID, "baggage"); got != tc.wantBaggage {
				t.Errorf("outbox baggage = %.60q (%d bytes), want %q", got, len(got), tc.wantBaggage)
			}
			if got := outboxHeader(t, s.env, p.OrderID, "tracestate"); got != "" {
				t.Errorf("outbox tracestate of %d bytes, want none", len(got))
			}
			waitUntil(t, patience, "the order's spans in orders and fulfillment", func() (bool, error) {
				spans := s.otlp.Trace(traceID)
				return slices.ContainsFunc(spans, func(sp span) bool { return sp.Name == "order.process" }) &&
					slices.ContainsFunc(spans, func(sp span) bool { return sp.Kind == consumer }), nil
			})
			for _, sp := range s.otlp.Trace(traceID) {
				if got, ok := sp.Attrs["tenant.id"]; ok && got != tc.wantTenant {
					t.Errorf("%s span %q has tenant.id %.40q, want %q", sp.Service, sp.Name, got, tc.wantTenant)
				}
			}
		})
	}
}

// The paths each service's routes.go names as polled are never traced, in
// the real binaries: health checks every few seconds, and the scenario
// read-out a script polls, would bury the real traffic.
func TestPolledPathsUntraced(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	polled := map[*process][]string{
		s.gateway:     {"/healthz", "/readyz"},
		s.orders:      {"/healthz", "/readyz", "/scenarios"},
		s.fulfillment: {"/healthz", "/readyz", "/scenarios"},
	}
	for p, paths := range polled {
		for _, path := range paths {
			resp, err := testClient.Get(p.URL() + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s: %s", p.name, path, resp.Status)
			}
		}
	}
	// A request that is traced, so the check below cannot pass for want of spans.
	if status, _, _ := s.call(t, http.MethodGet, "/api/products", "", nil, nil); status != http.StatusOK {
		t.Fatalf("GET /api/products: %d", status)
	}
	s.stop(t) // everything they made has arrived
	var traced bool
	for _, sp := range s.otlp.Spans() {
		if sp.Name == "GET /api/products" {
			traced = true
		}
		for _, path := range []string{"/healthz", "/readyz", "/scenarios"} {
			if strings.HasSuffix(sp.Name, path) || sp.Attrs["url.path"] == path {
				t.Errorf("%s traced %s: span %q", sp.Service, path, sp.Name)
			}
		}
	}
	if !traced {
		t.Error("no span for GET /api/products: the check proves nothing")
	}
}
