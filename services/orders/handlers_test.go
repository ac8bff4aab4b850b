package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
)

func TestProblemFor(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantField  string
	}{
		{"validation", httpx.Invalid(httpx.FieldError{Field: "items", Reason: "r"}), 422, "items"},
		{"unknown sku", &itemError{Field: "items[1].sku", Err: ErrUnknownSKU}, 422, "items[1].sku"},
		{"out of stock", &itemError{Field: "items[0].quantity", Err: ErrOutOfStock}, 409, "items[0].quantity"},
		{"declined", fmt.Errorf("charge order: %w", ErrPaymentDeclined), 402, ""},
		{"provider timeout", fmt.Errorf("charge order: %w", errors.Join(ErrPaymentUnavailable, context.DeadlineExceeded)), 502, ""},
		{"not found", ErrOrderNotFound, 404, ""},
		{"dependency down", fmt.Errorf("%w: dial tcp: refused", ErrUnavailable), 503, ""},
		{"anything else", errors.New("nil map"), 500, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := problemFor(tt.err)
			if p.Status != tt.wantStatus {
				t.Errorf("status = %d, want %d", p.Status, tt.wantStatus)
			}
			if tt.wantField != "" && (len(p.Errors) != 1 || p.Errors[0].Field != tt.wantField) {
				t.Errorf("errors = %+v, want field %s", p.Errors, tt.wantField)
			}
			if p.Status == http.StatusInternalServerError && p.Detail == tt.err.Error() {
				t.Error("internal error text reached the problem")
			}
		})
	}
}

func TestPlaceOrderRequestValidate(t *testing.T) {
	item := func(sku string, q int) RequestItem { return RequestItem{SKU: sku, Quantity: q} }
	items := func(n int) []RequestItem {
		out := make([]RequestItem, n)
		for i := range out {
			out[i] = item(fmt.Sprintf("SKU-%d", i), 1)
		}
		return out
	}
	id64 := "c" + strings.Repeat("x", 63)
	tests := []struct {
		name string
		req  PlaceOrderRequest
		want []httpx.FieldError
	}{
		{"valid", PlaceOrderRequest{CustomerID: "c", Items: []RequestItem{item("A", 1), item("B", 10000)}}, nil},
		{"every allowed character", PlaceOrderRequest{CustomerID: "0aZ._:@-", Items: []RequestItem{item("a-B_0.x:y@z", 1)}}, nil},
		{"longest ids, most items", PlaceOrderRequest{CustomerID: id64, Items: append(items(49), item(id64, 1))}, nil},
		{"no customer", PlaceOrderRequest{Items: []RequestItem{item("A", 1)}},
			[]httpx.FieldError{{Field: "customer_id", Reason: "is required"}}},
		{"customer id too long", PlaceOrderRequest{CustomerID: id64 + "x", Items: []RequestItem{item("A", 1)}},
			[]httpx.FieldError{{Field: "customer_id", Reason: reasonID}}},
		{"customer id not starting with a letter or digit", PlaceOrderRequest{CustomerID: "-c", Items: []RequestItem{item("A", 1)}},
			[]httpx.FieldError{{Field: "customer_id", Reason: reasonID}}},
		{"customer id with markup", PlaceOrderRequest{CustomerID: "<script>", Items: []RequestItem{item("A", 1)}},
			[]httpx.FieldError{{Field: "customer_id", Reason: reasonID}}},
		{"customer id not ASCII", PlaceOrderRequest{CustomerID: "kund-ä", Items: []RequestItem{item("A", 1)}},
			[]httpx.FieldError{{Field: "customer_id", Reason: reasonID}}},
		{"no items", PlaceOrderRequest{CustomerID: "c"}, []httpx.FieldError{{Field: "items", Reason: "must hold 1 to 50 items"}}},
		{"51 items", PlaceOrderRequest{CustomerID: "c", Items: items(51)}, []httpx.FieldError{{Field: "items", Reason: "must hold 1 to 50 items"}}},
		{"zero and too many", PlaceOrderRequest{CustomerID: "c", Items: []RequestItem{item("A", 0), item("B", 10001), item("C", -1)}},
			[]httpx.FieldError{
				{Field: "items[0].quantity", Reason: "must be a whole number from 1 to 10000"},
				{Field: "items[1].quantity", Reason: "must be a whole number from 1 to 10000"},
				{Field: "items[2].quantity", Reason: "must be a whole number from 1 to 10000"},
			}},
		{"empty, malformed and repeated sku", PlaceOrderRequest{CustomerID: "c", Items: []RequestItem{item("", 1), item("A", 1), item("A", 2), item("x y", 1)}},
			[]httpx.FieldError{
				{Field: "items[0].sku", Reason: "is required"},
				{Field: "items[2].sku", Reason: "appears more than once; order each sku once, with the total quantity"},
				{Field: "items[3].sku", Reason: reasonID},
			}},
		{"sku too long", PlaceOrderRequest{CustomerID: "c", Items: []RequestItem{item(id64+"x", 1)}},
			[]httpx.FieldError{{Field: "items[0].sku", Reason: reasonID}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			var got []httpx.FieldError
			if p, ok := err.(*httpx.Problem); ok {
				got = p.Errors
				if p.Status != http.StatusUnprocessableEntity {
					t.Errorf("status %d, want 422", p.Status)
				}
			} else if err != nil {
				t.Fatalf("Validate() = %v, want a *httpx.Problem", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("errors = %v, want %v", got, tt.want)
			}
		})
	}
}

// The orders service answers the problems of its own API (it is reached
// through the gateway, which forwards them) in the gateway's words and field
// paths, and with a trace_id even with tracing off.
func TestPlaceOrderProblems(t *testing.T) {
	for _, signal := range []string{"TRACES", "METRICS", "LOGS"} {
		t.Setenv("OTEL_"+signal+"_EXPORTER", "none")
	}
	tel, shutdown, err := telemetry.Setup(t.Context(), telemetry.Options{ServiceName: "orders", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	s := &server{tel: tel} // every refusal below comes before the service is needed
	h := tel.HTTPMiddleware()(httpx.TraceContext(httpx.Recover(s.placeOrder())))

	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name        string
		body        string
		header      map[string]string
		wantStatus  int
		wantErrors  []httpx.FieldError
		wantTraceID string // "": any trace ID
	}{
		{"wrong type in an item", `{"customer_id":"c","items":[{"sku":"A","quantity":1},{"sku":"B","quantity":"2"}]}`, nil,
			400, []httpx.FieldError{{Field: "items[1].quantity", Reason: "must be a whole number"}}, ""},
		{"items not an array", `{"customer_id":"c","items":{"sku":"A"}}`, nil,
			400, []httpx.FieldError{{Field: "items", Reason: "must be an array of JSON objects"}}, ""},
		{"body not an object", `[{"customer_id":"c"}]`, nil,
			400, []httpx.FieldError{{Field: httpx.BodyField, Reason: "must be a JSON object"}}, ""},
		{"unknown field in an item", `{"customer_id":"c","items":[{"sku":"A","quantity":1,"price_cents":1}]}`, nil,
			400, []httpx.FieldError{{Field: "items[0].price_cents", Reason: "is not a field of this API"}}, ""},
		{"invalid values", `{"customer_id":"","items":[{"sku":"A","quantity":0},{"sku":"A","quantity":1}]}`, nil,
			422, []httpx.FieldError{
				{Field: "customer_id", Reason: "is required"},
				{Field: "items[0].quantity", Reason: "must be a whole number from 1 to 10000"},
				{Field: "items[1].sku", Reason: "appears more than once; order each sku once, with the total quantity"},
			}, ""},
		{"malformed idempotency key", `{"customer_id":"c","items":[{"sku":"A","quantity":1}]}`, map[string]string{"Idempotency-Key": "has spaces"},
			400, []httpx.FieldError{{Field: "Idempotency-Key", Reason: "must be 1 to 255 visible ASCII characters (no spaces)"}}, ""},
		{"idempotency key too long", `{"customer_id":"c","items":[{"sku":"A","quantity":1}]}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)},
			400, []httpx.FieldError{{Field: "Idempotency-Key", Reason: "must be 1 to 255 visible ASCII characters (no spaces)"}}, ""},
		{"too many items, each invalid", `{"customer_id":"","items":[` + strings.Repeat(`{"sku":"","quantity":0},`, 2000) + `{}]}`, nil,
			422, []httpx.FieldError{
				{Field: "customer_id", Reason: "is required"},
				{Field: "items", Reason: "must hold 1 to 50 items"},
			}, ""},
		{"more errors than a problem lists", `{"customer_id":"c","items":[` + strings.Repeat(`{"sku":"","quantity":0},`, 49) + `{}]}`, nil,
			422, manyErrors(httpx.MaxFieldErrors, "80 more not listed; correct these and send the request again"), ""},
		{"field in another case", `{"Customer_Id":"c","items":[{"sku":"A","quantity":1}]}`, nil,
			400, []httpx.FieldError{{Field: "Customer_Id", Reason: "is not a field of this API; names are case-sensitive: did you mean customer_id?"}}, ""},
		{"duplicate field", `{"customer_id":"c","items":[{"sku":"A","quantity":1,"quantity":9}]}`, nil,
			400, []httpx.FieldError{{Field: "items[0].quantity", Reason: "appears more than once in its object; give each field once"}}, ""},
		{"a trace from the caller", `{"customer_id":"c"}`, map[string]string{"traceparent": traceparent},
			422, []httpx.FieldError{{Field: "items", Reason: "must hold 1 to 50 items"}}, "4bf92f3577b34da6a3ce929d0e0e4736"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json")
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)

			var p httpx.Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != tt.wantStatus {
				t.Fatalf("answer %d %s, want %d (%v)", w.Code, w.Body, tt.wantStatus, err)
			}
			if fmt.Sprint(p.Errors) != fmt.Sprint(tt.wantErrors) {
				t.Errorf("errors = %v, want %v", p.Errors, tt.wantErrors)
			}
			if w.Body.Len() > httpx.MaxProblemBytes {
				t.Errorf("problem of %d bytes for a body of %d, want at most %d", w.Body.Len(), len(tt.body), httpx.MaxProblemBytes)
			}
			if len(p.TraceID) != 32 || p.TraceID == strings.Repeat("0", 32) || tt.wantTraceID != "" && p.TraceID != tt.wantTraceID {
				t.Errorf("trace_id = %q, want a trace ID (%q)", p.TraceID, tt.wantTraceID)
			}
		})
	}
}

// manyErrors is the start of the errors of 50 items without sku or
// quantity, as a problem lists them: n entries, then the one for the rest.
func manyErrors(n int, omitted string) []httpx.FieldError {
	var fields []httpx.FieldError
	for i := 0; len(fields) < n; i++ {
		fields = append(fields,
			httpx.FieldError{Field: httpx.FieldPath("items", i, "sku"), Reason: "is required"},
			httpx.FieldError{Field: httpx.FieldPath("items", i, "quantity"), Reason: "must be a whole number from 1 to 10000"})
	}
	return append(fields[:n], httpx.FieldError{Field: httpx.OmittedField, Reason: omitted})
}
