package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/ordertrace/ordertrace/pkg/httpx"
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
	tests := []struct {
		name       string
		req        PlaceOrderRequest
		wantFields []string
	}{
		{"valid", PlaceOrderRequest{CustomerID: "c", Items: []RequestItem{item("A", 1), item("B", 10000)}}, nil},
		{"no customer", PlaceOrderRequest{Items: []RequestItem{item("A", 1)}}, []string{"customer_id"}},
		{"no items", PlaceOrderRequest{CustomerID: "c"}, []string{"items"}},
		{"zero and too many", PlaceOrderRequest{CustomerID: "c", Items: []RequestItem{item("A", 0), item("B", 10001)}},
			[]string{"items[0].quantity", "items[1].quantity"}},
		{"empty and repeated sku", PlaceOrderRequest{CustomerID: "c", Items: []RequestItem{item("", 1), item("A", 1), item("A", 2)}},
			[]string{"items[0].sku", "items[2].sku"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			var got []string
			if p, ok := err.(*httpx.Problem); ok {
				for _, f := range p.Errors {
					got = append(got, f.Field)
				}
			} else if err != nil {
				t.Fatalf("Validate() = %v, want a *httpx.Problem", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantFields) {
				t.Errorf("fields = %v, want %v", got, tt.wantFields)
			}
		})
	}
}
