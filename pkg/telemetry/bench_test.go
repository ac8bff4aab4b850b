package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/baggage"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// The hot paths of the suite's telemetry, measured with -benchmem; compare
// runs with benchstat (make bench-micro writes bin/bench-micro.txt).

// discardExporter drops spans, so the benchmarks measure the SDK's own work.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

func benchTelemetry(b *testing.B) *Telemetry {
	b.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &Telemetry{TracerProvider: tp, MeterProvider: metricnoop.NewMeterProvider(), Propagator: testPropagator}
}

// BenchmarkHTTPMiddleware is one request through the suite's server
// middleware (otelhttp, route naming, traceresponse) and a chi router.
func BenchmarkHTTPMiddleware(b *testing.B) {
	for _, tc := range []struct {
		name   string
		traced bool
	}{{"traced", true}, {"untraced", false}} {
		b.Run(tc.name, func(b *testing.B) {
			r := chi.NewRouter()
			if tc.traced {
				r.Use(benchTelemetry(b).HTTPMiddleware())
			}
			r.Get("/orders/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
			req := httptest.NewRequest(http.MethodGet, "/orders/0190b5c4-0000-7000-8000-000000000000", nil)
			req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			b.ReportAllocs()
			for b.Loop() {
				r.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}

// BenchmarkAMQPCarrier is the propagation of one message: inject on publish,
// extract on consume, with a tenant in baggage.
func BenchmarkAMQPCarrier(b *testing.B) {
	tel := benchTelemetry(b)
	member, _ := baggage.NewMemberRaw("tenant.id", "acme")
	bag, _ := baggage.New(member)
	ctx, span := tel.Tracer("bench").Start(baggage.ContextWithBaggage(context.Background(), bag), "publish")
	defer span.End()
	b.Run("inject", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = InjectAMQP(ctx, tel.Propagator, nil)
		}
	})
	headers := InjectAMQP(ctx, tel.Propagator, amqp.Table{})
	b.Run("extract", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !trace.SpanContextFromContext(ExtractAMQP(context.Background(), tel.Propagator, headers)).IsValid() {
				b.Fatal("no span context")
			}
		}
	})
}

// BenchmarkLogHandler is one log line inside a span: JSON to a writer and an
// OTLP record to a batch processor that exports nowhere.
func BenchmarkLogHandler(b *testing.B) {
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(discardLogs{})))
	b.Cleanup(func() { _ = lp.Shutdown(context.Background()) })
	rec := tracetest.NewSpanRecorder()
	ctx, span := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("bench").Start(context.Background(), "work")
	defer span.End()
	for _, tc := range []struct {
		name    string
		handler slog.Handler
	}{
		{"suite", NewLogHandler(io.Discard, lp, "bench", slog.LevelInfo)},
		{"json-only", slog.NewJSONHandler(io.Discard, nil)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			log := slog.New(tc.handler)
			b.ReportAllocs()
			for b.Loop() {
				log.InfoContext(ctx, "order placed", "order_id", "0190b5c4-0000-7000-8000-000000000000", "total_cents", 2980)
			}
		})
	}
}

type discardLogs struct{}

func (discardLogs) Export(context.Context, []sdklog.Record) error { return nil }
func (discardLogs) Shutdown(context.Context) error                { return nil }
func (discardLogs) ForceFlush(context.Context) error              { return nil }

// BenchmarkRootSampler is one root span with tenant.id started and ended
// under the SDK's parentbased_traceidratio and under the suite's priority
// sampler (the same ratio, one priority tenant), so the price of the
// priority check and of recording sampling.reason reads off side by side.
func BenchmarkRootSampler(b *testing.B) {
	for _, tc := range []struct {
		name    string
		sampler sdktrace.Sampler
		tenant  string
	}{
		{"sdk-parentbased-ratio", sdktrace.ParentBased(sdktrace.TraceIDRatioBased(1)), "acme"},
		{"priority-ratio-tenant", newPrioritySampler(1, []string{"globex"}), "acme"},
		{"priority-priority-tenant", newPrioritySampler(1, []string{"acme"}), "acme"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(tc.sampler), sdktrace.WithBatcher(discardExporter{}))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			tracer := tp.Tracer("bench")
			ctx := context.Background()
			start := trace.WithAttributes(tenantIDKey.String(tc.tenant))
			b.ReportAllocs()
			for b.Loop() {
				_, span := tracer.Start(ctx, "POST /api/orders", trace.WithSpanKind(trace.SpanKindServer), start)
				span.End()
			}
		})
	}
}
