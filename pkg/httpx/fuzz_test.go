package httpx

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecodeJSON feeds the request decoder arbitrary bodies: it never
// panics, what it accepts re-decodes to the same value, and what it refuses
// is a problem within MaxProblemBytes that names a field.
func FuzzDecodeJSON(f *testing.F) {
	type item struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	}
	type order struct {
		CustomerID string `json:"customer_id"`
		Items      []item `json:"items"`
	}
	for _, seed := range []string{
		`{"customer_id":"c1","items":[{"sku":"A","quantity":1}]}`,
		`{"customer_id":"c1","customer_id":"c2"}`,
		`{"Customer_ID":"c1"}`,
		`{"items":[{"sku":"A","quantity":"1"}]}`,
		`{"items":[{"sku":"A","quantity":1e99}]}`,
		`[]`, `{}{}`, `{"items":[`, "\xff", ``,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var got order
		raw, err := DecodeJSONBody(httptest.NewRecorder(), r, &got)
		if err == nil {
			var again order
			if uerr := json.Unmarshal(raw, &again); uerr != nil {
				t.Fatalf("accepted %q, whose bytes do not decode again: %v", body, uerr)
			}
			return
		}
		var p *Problem
		if !errors.As(err, &p) {
			t.Fatalf("refused %q with %T, not a problem", body, err)
		}
		if len(p.Errors) == 0 || p.Errors[0].Field == "" {
			t.Fatalf("refused %q without naming a field: %+v", body, p)
		}
		if b, _ := json.Marshal(p); len(b) > MaxProblemBytes {
			t.Fatalf("a problem of %d bytes, more than %d", len(b), MaxProblemBytes)
		}
	})
}
