package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The spans that make an order's trace complete: one in each service and the
// hop through the broker. A trace sampled in one service and dropped in
// another would miss some of them.
var completeTrace = []spanKey{
	{"gateway", server, "POST /api/orders"},
	{"orders", server, "POST /orders"},
	{"orders", internal, "order.process"},
	{"orders", producer, "create orders:order.created"},
	{"fulfillment", consumer, "process orders:order.created:fulfillment.order-created"},
}

// TestPrioritySampling: with head sampling at 1%, every order of a priority
// tenant is one complete trace, and only a few of the ordinary orders are
// traced, each of them completely. A caller's traceparent cannot drop a
// priority tenant's trace, and a sampled one is followed.
func TestPrioritySampling(t *testing.T) {
	t.Parallel()
	const (
		vip = "vip-tenant"
		n   = 200
	)
	s := startStack(t, map[string]string{
		"OTEL_TRACES_SAMPLER_ARG": "0.01",
		"PRIORITY_TENANTS":        "gold, " + vip,
		"PAYMENT_LATENCY":         "1ms", // the test is about traces, not the provider's pace
		// Room for every span of the burst: a span dropped from a full queue
		// would look like a trace sampled in part.
		"OTEL_BSP_MAX_QUEUE_SIZE": "16384",
	})
	tenant := func(id string) func() map[string]string {
		return func() map[string]string { return map[string]string{"X-Tenant-ID": id} }
	}
	withCaller := func(id, flags string) func() map[string]string {
		return func() map[string]string {
			return map[string]string{"X-Tenant-ID": id, "traceparent": "00-" + randomHex(16) + "-" + randomHex(8) + "-" + flags}
		}
	}
	priority := placeOrders(t, s, n, tenant(vip))
	ordinary := placeOrders(t, s, n, tenant("acme"))
	overridden := placeOrders(t, s, 5, withCaller(vip, "00"))  // the caller said "not sampled"
	followed := placeOrders(t, s, 5, withCaller("acme", "01")) // the caller said "sampled"

	total := len(priority) + len(ordinary) + len(overridden) + len(followed)
	waitUntil(t, patience, "fulfillment to process every order", func() (bool, error) {
		done, err := s.env.tryQueryInt(`SELECT count(*) FROM orders WHERE status = 'fulfilled'`)
		if err != nil {
			return false, err
		}
		if done != total {
			return false, fmt.Errorf("%d of %d orders fulfilled", done, total)
		}
		return true, nil
	})
	waitUntil(t, patience, "the priority tenant's traces", func() (bool, error) {
		traces := byTrace(s.otlp.Spans())
		complete := 0
		for _, o := range priority {
			if len(missing(traces[o.traceID])) == 0 {
				complete++
			}
		}
		if complete != len(priority) {
			return false, fmt.Errorf("%d of %d complete", complete, len(priority))
		}
		return true, nil
	})
	s.stop(t) // each service flushes: whatever else was sampled has arrived now
	traces := byTrace(s.otlp.Spans())

	// checkTrace checks one order's trace: complete, with its gateway SERVER
	// span the only one that says why it was kept, and returns that span.
	checkTrace := func(id, wantTenant, wantReason string) span {
		t.Helper()
		spans := traces[id]
		if m := missing(spans); len(m) > 0 {
			t.Errorf("trace %s lacks %v; it holds:\n%s", id, m, tree(spans))
			return span{}
		}
		root := find(t, spans, "gateway", server, "POST /api/orders")
		wantAttrs(t, root, map[string]string{"tenant.id": wantTenant})
		if got := root.Attrs["sampling.reason"]; got != wantReason {
			t.Errorf("trace %s: sampling.reason = %q, want %q", id, got, wantReason)
		}
		for _, sp := range spans {
			if _, ok := sp.Attrs["sampling.reason"]; ok && sp.SpanID != root.SpanID {
				t.Errorf("trace %s: %s %q has sampling.reason too; only the span that decided records it", id, sp.Service, sp.Name)
			}
		}
		return root
	}

	distinct := map[string]bool{}
	for _, o := range priority {
		distinct[o.traceID] = true
		if root := checkTrace(o.traceID, vip, "priority_tenant"); root.SpanID != "" && root.ParentID != "" {
			t.Errorf("trace %s: the gateway SERVER span has parent %s, want it to be the root", o.traceID, root.ParentID)
		}
	}
	if len(distinct) != n {
		t.Errorf("the priority tenant's %d orders are %d traces, want %d", n, len(distinct), n)
	}
	sampled := 0
	for _, o := range ordinary {
		if len(traces[o.traceID]) > 0 { // any span of it: then all of them
			sampled++
			checkTrace(o.traceID, "acme", "ratio")
		}
	}
	t.Logf("ordinary orders traced at 1%%: %d of %d", sampled, len(ordinary))
	if sampled > 10 {
		t.Errorf("%d of %d ordinary orders were traced at a ratio of 0.01, want at most 10", sampled, len(ordinary))
	}
	// Both continue the caller's trace, under the caller's span.
	for _, o := range append(overridden, followed...) {
		tenant, why := vip, "priority_tenant"
		if o.header["X-Tenant-ID"] != vip {
			tenant, why = "acme", "" // the caller decided
		}
		root := checkTrace(o.traceID, tenant, why)
		caller := strings.Split(o.header["traceparent"], "-") // version, trace, span, flags
		if root.SpanID != "" && (o.traceID != caller[1] || root.ParentID != caller[2]) {
			t.Errorf("trace %s under span %s, want the caller's trace %s under its span %s", o.traceID, root.ParentID, caller[1], caller[2])
		}
	}
}

// placedOrder is an order placed by placeOrders: its trace, and the headers
// it was sent with.
type placedOrder struct {
	traceID string
	header  map[string]string
}

// placeOrders places n orders through the gateway, eight at a time, each
// with the headers header returns.
func placeOrders(t *testing.T, s *stack, n int, header func() map[string]string) []placedOrder {
	t.Helper()
	const body = `{"customer_id":"cust-sampling","items":[{"sku":"MUG-CERAMIC","quantity":1}]}`
	var (
		mu     sync.Mutex
		orders []placedOrder
		errs   []error
		wg     sync.WaitGroup
	)
	next := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for range next {
				hdr := header()
				status, h, b, err := s.tryCall(http.MethodPost, "/api/orders", "application/json", []byte(body), hdr)
				var p placed
				switch {
				case err != nil:
				case status != http.StatusCreated:
					err = fmt.Errorf("POST /api/orders = %d %s, want 201", status, b)
				case json.Unmarshal(b, &p) != nil || p.TraceID == "":
					err = fmt.Errorf("POST /api/orders answered %s, want a trace_id", b)
				case !strings.HasPrefix(h.Get("traceresponse"), "00-"+p.TraceID+"-"):
					err = fmt.Errorf("traceresponse %q is not of the trace_id %s", h.Get("traceresponse"), p.TraceID)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					orders = append(orders, placedOrder{traceID: p.TraceID, header: hdr})
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d orders failed; the first: %v", len(errs), n, errs[0])
	}
	return orders
}

// byTrace groups spans by their trace ID.
func byTrace(spans []span) map[string][]span {
	out := map[string][]span{}
	for _, sp := range spans {
		out[sp.TraceID] = append(out[sp.TraceID], sp)
	}
	return out
}

// missing returns the spans of completeTrace that spans lacks.
func missing(spans []span) []spanKey {
	var out []spanKey
	for _, k := range completeTrace {
		if !slices.ContainsFunc(spans, func(sp span) bool { return sp.Service == k.service && sp.Kind == k.kind && sp.Name == k.name }) {
			out = append(out, k)
		}
	}
	return out
}
