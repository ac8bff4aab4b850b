package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
)

func TestFilterBaggage(t *testing.T) {
	tests := []struct {
		name    string
		inbound string // W3C baggage header
		tenant  string // X-Tenant-ID
		want    string // tenant.id that travels on, "" for none
		wantLen int    // members that travel on
	}{
		{"nothing", "", "", "", 0},
		{"header only", "", "acme", "acme", 1},
		{"allowed inbound member", "tenant.id=globex", "", "globex", 1},
		{"header wins over inbound", "tenant.id=globex", "acme", "acme", 1},
		{"unknown members dropped", "user.email=a%40b.c,session=xyz,tenant.id=acme", "", "acme", 1},
		{"properties dropped", "tenant.id=acme;owner=me", "", "acme", 1},
		{"malformed tenant value dropped", "tenant.id=%20bad%20value", "", "", 0},
		{"over-long tenant value dropped", "tenant.id=" + strings.Repeat("a", 65), "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, _ := baggage.Parse(tt.inbound)
			got := filterBaggage(in, tt.tenant)
			if v := got.Member(tenantKey).Value(); v != tt.want {
				t.Errorf("tenant.id = %q, want %q", v, tt.want)
			}
			if got.Len() != tt.wantLen {
				t.Errorf("%d members travel on (%s), want %d", got.Len(), got.String(), tt.wantLen)
			}
			for _, m := range got.Members() {
				if len(m.Properties()) != 0 {
					t.Errorf("member %s kept its properties", m.Key())
				}
			}
		})
	}
}

func TestTrustedBaggageMiddleware(t *testing.T) {
	var seen baggage.Baggage
	h := trustedBaggage(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen = baggage.FromContext(r.Context())
	}))

	t.Run("valid header becomes baggage", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-Tenant-ID", "acme-eu.1")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK || seen.Member("tenant.id").Value() != "acme-eu.1" {
			t.Errorf("status %d, baggage %q; want 200 and tenant.id=acme-eu.1", w.Code, seen.String())
		}
	})
	t.Run("malformed header refused", func(t *testing.T) {
		for _, bad := range []string{"has space", "semi;colon", strings.Repeat("x", 65), "-leading-dash"} {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("X-Tenant-ID", bad)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "X-Tenant-ID") {
				t.Errorf("X-Tenant-ID %q: %d %s, want 400 naming the header", bad, w.Code, w.Body)
			}
		}
	})
}
