package telemetry

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

const callerParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"

// bigTraceState is a valid tracestate of 32 members, well over the cap.
func bigTraceState() string {
	members := make([]string, 32)
	for i := range members {
		members[i] = "v" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "=" + strings.Repeat("x", 100)
	}
	return strings.Join(members, ",")
}

func TestFilterBaggage(t *testing.T) {
	tests := []struct {
		name       string
		inbound    string // W3C baggage header
		wantTenant string
		wantLen    int
	}{
		{"nothing", "", "", 0},
		{"allowed members", "tenant.id=acme,request.id=req:1", "acme", 2},
		{"unknown members dropped", "password=hunter2,tenant.id=acme", "acme", 1},
		{"properties dropped", "tenant.id=acme;owner=me", "acme", 1},
		{"CR LF and markup dropped", "tenant.id=" + url.PathEscape("a\r\nb<script>"), "", 0},
		{"over-long tenant dropped", "tenant.id=" + strings.Repeat("a", 4000), "", 0},
		{"large junk dropped, tenant kept", "password=hunter2,junk=" + strings.Repeat("j", 6000) + ",tenant.id=acme", "acme", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, _ := baggage.Parse(tt.inbound)
			got := FilterBaggage(in)
			if v := got.Member(TenantKey).Value(); v != tt.wantTenant {
				t.Errorf("tenant.id = %q, want %q", v, tt.wantTenant)
			}
			if got.Len() != tt.wantLen {
				t.Errorf("%d members pass (%s), want %d", got.Len(), got.String(), tt.wantLen)
			}
			for _, m := range got.Members() {
				if len(m.Properties()) != 0 {
					t.Errorf("member %s kept its properties", m.Key())
				}
			}
			if n := len(got.String()); n > MaxBaggageBytes {
				t.Errorf("%d bytes pass, want at most %d", n, MaxBaggageBytes)
			}
		})
	}
}

func TestFilterTraceState(t *testing.T) {
	small, err := trace.ParseTraceState("vendor=abc,other=1")
	if err != nil {
		t.Fatal(err)
	}
	if got := FilterTraceState(small); got.String() != small.String() {
		t.Errorf("small tracestate = %q, want it kept: %q", got, small)
	}
	big, err := trace.ParseTraceState(bigTraceState())
	if err != nil {
		t.Fatal(err)
	}
	if got := FilterTraceState(big); got.Len() != 0 {
		t.Errorf("tracestate of %d bytes kept %d members, want none", len(big.String()), got.Len())
	}
}

// TestHTTPMiddlewareTrust: the SERVER span never inherits an oversize
// tracestate, TrustBaggage leaves the handler only the allowed baggage, and
// WithNewRoot starts a new, sampler-decided trace linked to the caller.
func TestHTTPMiddlewareTrust(t *testing.T) {
	tests := []struct {
		name           string
		opts           []HTTPOption
		flags          string
		tracestate     string
		wantSameTrace  bool
		wantTraceState string
		wantRecorded   bool
	}{
		{"small tracestate kept", nil, "01", "vendor=abc", true, "vendor=abc", true},
		{"oversize tracestate dropped", nil, "01", bigTraceState(), true, "", true},
		{"caller's not-sampled followed", nil, "00", "", true, "", false},
		{"new root ignores caller's flags", []HTTPOption{WithNewRoot()}, "00", "vendor=abc", false, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tel, rec := newTestTelemetry(t)
			var seen baggage.Baggage
			h := tel.HTTPMiddleware(tt.opts...)(TrustBaggage(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				seen = baggage.FromContext(r.Context())
			})))
			r := httptest.NewRequest(http.MethodGet, "/orders", nil)
			r.Header.Set("traceparent", callerParent+tt.flags)
			r.Header.Set("tracestate", tt.tracestate)
			r.Header.Set("baggage", "tenant.id=acme,password=hunter2")
			h.ServeHTTP(httptest.NewRecorder(), r)

			if seen.Len() != 1 || seen.Member(TenantKey).Value() != "acme" {
				t.Errorf("handler saw baggage %q, want tenant.id=acme only", seen.String())
			}
			spans := rec.Ended()
			if !tt.wantRecorded {
				if len(spans) != 0 {
					t.Errorf("%d spans recorded, want none", len(spans))
				}
				return
			}
			if len(spans) != 1 {
				t.Fatalf("%d spans recorded, want 1", len(spans))
			}
			sc := spans[0].SpanContext()
			if got := sc.TraceID().String() == "0af7651916cd43dd8448eb211c80319c"; got != tt.wantSameTrace {
				t.Errorf("continues the caller's trace = %v, want %v", got, tt.wantSameTrace)
			}
			if got := sc.TraceState().String(); got != tt.wantTraceState {
				t.Errorf("tracestate = %q, want %q", got, tt.wantTraceState)
			}
			if !tt.wantSameTrace {
				links := spans[0].Links()
				if len(links) != 1 || links[0].SpanContext.SpanID().String() != "b7ad6b7169203331" {
					t.Fatalf("links = %+v, want one to the caller's span", links)
				}
				if ts := links[0].SpanContext.TraceState(); ts.Len() != 0 {
					t.Errorf("link carries tracestate %q, want none", ts)
				}
			}
		})
	}
}

func TestExtractAMQPTrust(t *testing.T) {
	headers := amqp.Table{
		"traceparent": callerParent + "01",
		"tracestate":  bigTraceState(),
		"baggage":     "tenant.id=" + url.PathEscape("x\r\n<script>") + ",request.id=r-1,password=hunter2",
	}
	ctx := ExtractAMQP(t.Context(), testPropagator, headers)
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || sc.TraceState().Len() != 0 {
		t.Errorf("span context %v with tracestate %q, want valid without tracestate", sc.IsValid(), sc.TraceState())
	}
	if b := baggage.FromContext(ctx); b.String() != "request.id=r-1" {
		t.Errorf("baggage = %q, want request.id=r-1 only", b.String())
	}
}
