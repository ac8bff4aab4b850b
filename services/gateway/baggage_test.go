package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
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
			got := filterBaggage(in, edge{tenant: tt.tenant})
			if v := got.Member(telemetry.TenantKey).Value(); v != tt.want {
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

// TestTenantAttributes: the tenant the SERVER span starts with is the one
// trustedBaggage passes on, and a request it refuses starts with none.
func TestTenantAttributes(t *testing.T) {
	tests := []struct {
		name    string
		header  string // X-Tenant-ID
		inbound string // W3C baggage header
		want    string // tenant.id at start, "" for none
	}{
		{"nothing", "", "", ""},
		{"header", "acme", "", "acme"},
		{"inbound baggage", "", "tenant.id=globex", "globex"},
		{"header wins over inbound", "acme", "tenant.id=globex", "acme"},
		{"malformed header refused", "-acme", "tenant.id=globex", ""},
		{"malformed inbound dropped", "", "tenant.id=%20bad%20value", ""},
		{"oversized baggage refused", "acme", "k=" + strings.Repeat("v", 8200), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.header != "" {
				r.Header.Set("X-Tenant-ID", tt.header)
			}
			if tt.inbound != "" {
				r.Header.Set("baggage", tt.inbound)
			}
			got := ""
			for _, kv := range tenantAttributes(r) {
				if kv.Key == telemetry.TenantKey {
					got = kv.Value.AsString()
				}
			}
			if got != tt.want {
				t.Errorf("tenant.id at start = %q, want %q", got, tt.want)
			}

			// The same request through trustedBaggage, with the baggage as
			// otelhttp extracts it: the tenant passed on is the same.
			passed := ""
			h := trustedBaggage(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				passed = baggage.FromContext(r.Context()).Member(telemetry.TenantKey).Value()
			}))
			ctx := propagation.Baggage{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			h.ServeHTTP(httptest.NewRecorder(), r.WithContext(ctx))
			if passed != got {
				t.Errorf("trustedBaggage passes tenant.id %q on, the span started with %q", passed, got)
			}
		})
	}
}

// TestServerSpanStartsWithTenant: the gateway's SERVER span has tenant.id
// among its start attributes, where a sampler sees it.
func TestServerSpanStartsWithTenant(t *testing.T) {
	tel := telemetryOff(t)
	rec := &startRecorder{}
	tel.TracerProvider = rec
	h := (&server{tel: tel}).routes()
	for _, tt := range []struct{ header, want string }{{"acme", "acme"}, {"", ""}, {"-acme", ""}} {
		r := httptest.NewRequest(http.MethodGet, "/api/nowhere", nil)
		if tt.header != "" {
			r.Header.Set("X-Tenant-ID", tt.header)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got := rec.serverTenant(); got != tt.want {
			t.Errorf("X-Tenant-ID %q: the SERVER span started with tenant.id %q, want %q", tt.header, got, tt.want)
		}
	}
}

// startRecorder is a tracer provider that records the tenant.id each
// SERVER span starts with, and otherwise does nothing.
type startRecorder struct {
	tracenoop.TracerProvider
	mu     sync.Mutex
	tenant string // of the last SERVER span
}

func (p *startRecorder) Tracer(string, ...trace.TracerOption) trace.Tracer {
	return startRecordingTracer{p.TracerProvider.Tracer(""), p}
}

func (p *startRecorder) serverTenant() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tenant
}

type startRecordingTracer struct {
	trace.Tracer
	p *startRecorder
}

func (t startRecordingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if cfg := trace.NewSpanStartConfig(opts...); cfg.SpanKind() == trace.SpanKindServer {
		tenant := ""
		for _, kv := range cfg.Attributes() {
			if kv.Key == telemetry.TenantKey {
				tenant = kv.Value.AsString()
			}
		}
		t.p.mu.Lock()
		t.p.tenant = tenant
		t.p.mu.Unlock()
	}
	return t.Tracer.Start(ctx, name, opts...)
}

// TestRequestID: every request gets a request id, answered in X-Request-ID
// and passed on as the request.id member: the caller's header, else a valid
// inbound member, else a new one. A malformed header is refused.
func TestRequestID(t *testing.T) {
	var seen baggage.Baggage
	h := trustedBaggage(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen = baggage.FromContext(r.Context())
	}))
	serve := func(header, inbound string) *httptest.ResponseRecorder {
		seen = baggage.Baggage{}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if header != "" {
			r.Header.Set("X-Request-ID", header)
		}
		if inbound != "" {
			r.Header.Set("baggage", inbound)
		}
		ctx := propagation.Baggage{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r.WithContext(ctx))
		return w
	}

	for _, tt := range []struct{ name, header, inbound, want string }{
		{"header", "req-42:a.b_c", "", "req-42:a.b_c"},
		{"header wins over inbound", "req-42", "request.id=other", "req-42"},
		{"valid inbound member", "", "request.id=edge-7", "edge-7"},
	} {
		w := serve(tt.header, tt.inbound)
		if got := w.Header().Get("X-Request-ID"); got != tt.want || seen.Member(telemetry.RequestIDKey).Value() != tt.want {
			t.Errorf("%s: answered %q, passed on %q; want %q for both", tt.name, got, seen.Member(telemetry.RequestIDKey).Value(), tt.want)
		}
	}

	first, second := serve("", "").Header().Get("X-Request-ID"), serve("", "request.id=%20bad").Header().Get("X-Request-ID")
	if !telemetry.RequestIDPattern.MatchString(first) || !telemetry.RequestIDPattern.MatchString(second) || first == second {
		t.Errorf("new request ids %q and %q: want two different, valid ids", first, second)
	}
	if seen.Member(telemetry.RequestIDKey).Value() != second {
		t.Errorf("passed on request.id %q, answered %q", seen.Member(telemetry.RequestIDKey).Value(), second)
	}

	for _, bad := range []string{"has space", "semi;colon", strings.Repeat("x", 65), "-leading-dash"} {
		w := serve(bad, "")
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "X-Request-ID") {
			t.Errorf("X-Request-ID %q: %d %s, want 400 naming the header", bad, w.Code, w.Body)
		}
	}
}
