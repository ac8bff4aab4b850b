package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestPrioritySampler(t *testing.T) {
	remote := func(flags trace.TraceFlags) context.Context {
		return trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{0x4b, 0xf9, 1}, SpanID: trace.SpanID{0x00, 0xf0, 1}, TraceFlags: flags, Remote: true,
		}))
	}
	tests := []struct {
		name       string
		ratio      float64
		parent     context.Context
		tenant     string // tenant.id at start, "" for none
		wantKept   bool
		wantReason string // sampling.reason, "" for none
	}{
		{"root, priority tenant, ratio 0", 0, context.Background(), "vip", true, "priority_tenant"},
		{"root, other tenant, ratio 0", 0, context.Background(), "acme", false, ""},
		{"root, no tenant, ratio 0", 0, context.Background(), "", false, ""},
		{"root, other tenant, ratio 1", 1, context.Background(), "acme", true, "ratio"},
		{"root, priority tenant, ratio 1", 1, context.Background(), "vip", true, "priority_tenant"},
		{"remote parent sampled, ratio 0", 0, remote(trace.FlagsSampled), "acme", true, ""},
		{"remote parent not sampled, ratio 1", 1, remote(0), "acme", false, ""},
		{"remote parent not sampled, priority tenant", 0, remote(0), "vip", true, "priority_tenant"},
		{"remote parent sampled, priority tenant", 0, remote(trace.FlagsSampled), "vip", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(newPrioritySampler(tt.ratio, []string{"gold", "vip"})), sdktrace.WithSpanProcessor(rec))
			var opts []trace.SpanStartOption
			if tt.tenant != "" {
				opts = append(opts, trace.WithAttributes(attribute.String("tenant.id", tt.tenant)))
			}
			_, sp := tp.Tracer("t").Start(tt.parent, "root", opts...)
			sp.End()

			if got := sp.SpanContext().IsSampled(); got != tt.wantKept {
				t.Fatalf("sampled = %v, want %v", got, tt.wantKept)
			}
			if !tt.wantKept {
				if n := len(rec.Ended()); n != 0 {
					t.Errorf("%d spans recorded, want none", n)
				}
				return
			}
			ended := rec.Ended()
			if len(ended) != 1 {
				t.Fatalf("%d spans recorded, want 1", len(ended))
			}
			if got := attr(ended[0].Attributes(), "sampling.reason"); got != tt.wantReason {
				t.Errorf("sampling.reason = %q, want %q", got, tt.wantReason)
			}
		})
	}
}

// TestPrioritySamplerChildrenFollow: within a service, a span follows its
// parent's decision whatever its tenant, so a trace is never kept in part.
func TestPrioritySamplerChildrenFollow(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(newPrioritySampler(0, []string{"vip"})), sdktrace.WithSpanProcessor(rec))
	tenant := trace.WithAttributes(attribute.String("tenant.id", "vip"))

	ctx, dropped := tp.Tracer("t").Start(t.Context(), "root")
	_, child := tp.Tracer("t").Start(ctx, "child", tenant)
	if child.SpanContext().IsSampled() {
		t.Error("a priority tenant's child of a dropped local span was sampled")
	}
	child.End()
	dropped.End()

	ctx, kept := tp.Tracer("t").Start(t.Context(), "root", tenant)
	_, child = tp.Tracer("t").Start(ctx, "child")
	if !child.SpanContext().IsSampled() {
		t.Error("the child of a kept span was dropped")
	}
	child.End()
	kept.End()
	if got := attr(rec.Ended()[0].Attributes(), "sampling.reason"); got != "" {
		t.Errorf("child has sampling.reason %q, want none: only the span that decided records it", got)
	}
}

func TestSamplerFromEnv(t *testing.T) {
	tests := []struct {
		name, sampler, arg, tenants string
		wantSuite                   bool   // the suite's sampler, not the SDK's
		wantErr                     string // what the error names, "" for none
	}{
		{"nothing set", "", "", "", true, ""},
		{"ratio without a sampler name", "", "0.01", "vip", true, ""},
		{"parent-based ratio", "parentbased_traceidratio", "0.5", "vip,gold", true, ""},
		{"name in any case", " ParentBased_TraceIDRatio ", "1", "", true, ""},
		{"another sampler", "always_on", "", "", false, ""},
		{"another sampler with priority tenants", "parentbased_always_off", "", "vip", false, "PRIORITY_TENANTS needs OTEL_TRACES_SAMPLER"},
		{"blank priority list", "always_on", "", " , ", false, ""},
		{"not a number", "", "often", "", false, "OTEL_TRACES_SAMPLER_ARG"},
		{"above 1", "parentbased_traceidratio", "1.5", "", false, "OTEL_TRACES_SAMPLER_ARG"},
		{"below 0", "", "-0.1", "", false, "OTEL_TRACES_SAMPLER_ARG"},
		{"NaN", "", "NaN", "", false, "OTEL_TRACES_SAMPLER_ARG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OTEL_TRACES_SAMPLER", tt.sampler)
			t.Setenv("OTEL_TRACES_SAMPLER_ARG", tt.arg)
			t.Setenv("PRIORITY_TENANTS", tt.tenants)
			s, err := samplerFromEnv()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s != nil; got != tt.wantSuite {
				t.Errorf("suite's sampler = %v (%v), want %v", got, s, tt.wantSuite)
			}
		})
	}
}

// TestSetupRefusesBadSampling: a wrong sampling setting stops the service.
func TestSetupRefusesBadSampling(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "1%")
	if _, _, err := Setup(t.Context(), Options{ServiceName: "x"}); err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER_ARG") {
		t.Errorf("Setup with OTEL_TRACES_SAMPLER_ARG=1%% = %v, want an error naming the variable", err)
	}
}

// TestStartAttributesReachTheSampler: the attributes of WithStartAttributes
// are on the SERVER span when it starts, so a priority tenant's request is
// kept at ratio 0 and an ordinary one is not.
func TestStartAttributesReachTheSampler(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tel := &Telemetry{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSampler(newPrioritySampler(0, []string{"vip"})), sdktrace.WithSpanProcessor(rec)),
		MeterProvider:  metricnoop.NewMeterProvider(),
		Propagator:     testPropagator,
	}
	tenant := func(r *http.Request) []attribute.KeyValue {
		if id := r.Header.Get("X-Tenant-ID"); id != "" {
			return []attribute.KeyValue{attribute.String("tenant.id", id)}
		}
		return nil
	}
	r := chi.NewRouter()
	r.Use(tel.HTTPMiddleware(WithStartAttributes(tenant)))
	r.Get("/orders", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	for _, tt := range []struct {
		tenant   string
		wantKept bool
	}{{"vip", true}, {"acme", false}, {"", false}} {
		before := len(rec.Ended())
		req := httptest.NewRequest(http.MethodGet, "/orders", nil)
		if tt.tenant != "" {
			req.Header.Set("X-Tenant-ID", tt.tenant)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if kept := strings.HasSuffix(w.Header().Get("traceresponse"), "-01"); kept != tt.wantKept {
			t.Errorf("tenant %q: traceresponse %q, want sampled = %v", tt.tenant, w.Header().Get("traceresponse"), tt.wantKept)
		}
		spans := rec.Ended()[before:]
		if !tt.wantKept {
			if len(spans) != 0 {
				t.Errorf("tenant %q: %d spans recorded, want none", tt.tenant, len(spans))
			}
			continue
		}
		if len(spans) != 1 {
			t.Fatalf("tenant %q: %d spans recorded, want 1", tt.tenant, len(spans))
		}
		s := spans[0]
		if s.SpanKind() != trace.SpanKindServer || s.Name() != "GET /orders" {
			t.Errorf("span = %s %q, want SERVER %q", s.SpanKind(), s.Name(), "GET /orders")
		}
		if got, reason := attr(s.Attributes(), "tenant.id"), attr(s.Attributes(), "sampling.reason"); got != tt.tenant || reason != "priority_tenant" {
			t.Errorf("tenant.id = %q, sampling.reason = %q; want %q and priority_tenant", got, reason, tt.tenant)
		}
	}
}
