package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
)

// TestProblemsWithTracingOff runs the gateway's routes with every signal
// off, as OTEL_*_EXPORTER=none sets them, in front of a stand-in for the
// orders service. Every problem names its field in the API's words and
// path style, and carries a trace_id: the traceparent's trace when the client
// sent one, else a trace the gateway starts, answers in traceresponse and
// passes on to orders.
func TestProblemsWithTracingOff(t *testing.T) {
	tel := telemetryOff(t)

	var (
		mu         sync.Mutex
		upstreamTP string // the traceparent orders received
	)
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upstreamTP = r.Header.Get("traceparent")
		mu.Unlock()
		// A problem of orders' own, stamped with the trace it was called in.
		tid := ""
		if parts := strings.Split(r.Header.Get("traceparent"), "-"); len(parts) == 4 {
			tid = parts[1]
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprintf(w, `{"type":"/problems/invalid-request","title":"Invalid request","status":422,"errors":[{"field":"items[0].sku","reason":"is not in the catalogue"}],"trace_id":%q}`, tid)
	}))
	t.Cleanup(orders.Close)
	s := &server{tel: tel, orders: &http.Client{Transport: tel.HTTPTransport(http.DefaultTransport)}, base: orders.URL}
	gateway := httptest.NewServer(s.routes())
	t.Cleanup(gateway.Close)

	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	valid := `{"customer_id":"c","items":[{"sku":"NO-SUCH-SKU","quantity":1}]}`
	tests := []struct {
		name, method, path, body string
		header                   map[string]string
		wantStatus               int
		wantErrors               []httpx.FieldError
		wantTraceID              string // "": the trace in traceresponse
		wantForwarded            bool
	}{
		{name: "wrong type in an item", method: "POST", path: "/api/orders",
			body:       `{"customer_id":"c","items":[{"sku":"A","quantity":1},{"sku":"B","quantity":"two"}]}`,
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "items[1].quantity", Reason: "must be a whole number"}}},
		{name: "customer id a number", method: "POST", path: "/api/orders", body: `{"customer_id":7,"items":[]}`,
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "customer_id", Reason: "must be a string"}}},
		{name: "items a string", method: "POST", path: "/api/orders", body: `{"customer_id":"c","items":"MUG"}`,
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "items", Reason: "must be an array of JSON objects"}}},
		{name: "body an array", method: "POST", path: "/api/orders", body: `[]`,
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "(body)", Reason: "must be a JSON object"}}},
		{name: "unknown field in an item", method: "POST", path: "/api/orders", body: `{"customer_id":"c","items":[{"sku":"A","quantity":1,"card":"4111"}]}`,
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "items[0].card", Reason: "is not a field of this API"}}},
		{name: "field in another case", method: "POST", path: "/api/orders", body: `{"customer_id":"c","Items":[]}`,
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "Items", Reason: "is not a field of this API; names are case-sensitive: did you mean items?"}}},
		{name: "duplicate field", method: "POST", path: "/api/orders", body: `{"customer_id":"a","customer_id":"b","items":[]}`,
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "customer_id", Reason: "appears more than once in its object; give each field once"}}},
		{name: "malformed tenant", method: "POST", path: "/api/orders", body: valid, header: map[string]string{"X-Tenant-ID": "-acme"},
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "X-Tenant-ID",
				Reason: "must be 1 to 64 characters, each an ASCII letter, a digit, '.', '_' or '-', the first a letter or digit"}}},
		{name: "unknown route", method: "GET", path: "/api/nothing", wantStatus: 404},
		{name: "problem of orders, forwarded", method: "POST", path: "/api/orders", body: valid,
			wantStatus: 422, wantErrors: []httpx.FieldError{{Field: "items[0].sku", Reason: "is not in the catalogue"}}, wantForwarded: true},
		{name: "trace of the client", method: "POST", path: "/api/orders", body: `{`, header: map[string]string{"traceparent": "00-" + clientTrace + "-00f067aa0ba902b7-01"},
			wantStatus: 400, wantErrors: []httpx.FieldError{{Field: "(body)", Reason: "is not valid JSON: it ends too early"}}, wantTraceID: clientTrace},
		{name: "trace of the client, forwarded", method: "POST", path: "/api/orders", body: valid, header: map[string]string{"traceparent": "00-" + clientTrace + "-00f067aa0ba902b7-01"},
			wantStatus: 422, wantErrors: []httpx.FieldError{{Field: "items[0].sku", Reason: "is not in the catalogue"}}, wantTraceID: clientTrace, wantForwarded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			upstreamTP = ""
			mu.Unlock()
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, gateway.URL+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p httpx.Problem
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != tt.wantStatus {
				t.Fatalf("answer %d %+v, want %d (%v)", resp.StatusCode, p, tt.wantStatus, err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			if fmt.Sprint(p.Errors) != fmt.Sprint(tt.wantErrors) {
				t.Errorf("errors = %v, want %v", p.Errors, tt.wantErrors)
			}

			want := tt.wantTraceID
			if want == "" {
				tr := strings.Split(resp.Header.Get("traceresponse"), "-")
				if len(tr) != 4 || len(tr[1]) != 32 || tr[1] == strings.Repeat("0", 32) {
					t.Fatalf("traceresponse = %q, want the trace the gateway started", resp.Header.Get("traceresponse"))
				}
				want = tr[1]
			}
			if p.TraceID != want {
				t.Errorf("trace_id = %q, want %q", p.TraceID, want)
			}
			mu.Lock()
			got := upstreamTP
			mu.Unlock()
			if tt.wantForwarded && !strings.HasPrefix(got, "00-"+want+"-") {
				t.Errorf("orders got traceparent %q, want the trace %s", got, want)
			}
		})
	}
}

// What the gateway accepts, orders accepts too: the gateway forwards the
// object as sent, so a body of characters that JSON re-encoding escapes
// (six bytes for each '<') cannot grow past orders' body limit into a 413.
func TestForwardedBodyFitsOrders(t *testing.T) {
	tel := telemetryOff(t)

	received := make(chan []byte, 1)
	// A stand-in for orders with its real decoding and body limit.
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := httpx.DecodeJSONBody(w, r, &placeOrderRequest{})
		received <- raw
		if err != nil {
			httpx.WriteProblem(w, r, err.(*httpx.Problem))
			return
		}
		httpx.WriteJSON(w, http.StatusCreated, map[string]string{"order_id": "o1"})
	}))
	t.Cleanup(orders.Close)
	s := &server{tel: tel, orders: &http.Client{Transport: tel.HTTPTransport(http.DefaultTransport)}, base: orders.URL}
	gateway := httptest.NewServer(s.routes())
	t.Cleanup(gateway.Close)

	// 30 KB: ten items whose SKUs are 3,000 '<' each, 180 KB once escaped.
	items := make([]string, 10)
	for i := range items {
		items[i] = fmt.Sprintf(`{"sku":"%s","quantity":1}`, strings.Repeat("<", 3000))
	}
	body := `{"customer_id":"c&d","items":[` + strings.Join(items, ",") + `]}`
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, gateway.URL+"/api/orders", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("answer %d %s, want 201", resp.StatusCode, answer)
	}
	if got := <-received; string(got) != body {
		t.Errorf("orders received %d bytes, want the %d the client sent, unchanged", len(got), len(body))
	}
}

// telemetryOff is the gateway's telemetry with every signal off: the no-op
// providers, as OTEL_*_EXPORTER=none gives a service. Trace context still
// flows, which is what these tests look at.
func telemetryOff(t *testing.T) *telemetry.Telemetry {
	t.Helper()
	for _, signal := range []string{"TRACES", "METRICS", "LOGS"} {
		t.Setenv("OTEL_"+signal+"_EXPORTER", "none")
	}
	tel, shutdown, err := telemetry.Setup(t.Context(), telemetry.Options{ServiceName: "gateway", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	return tel
}
