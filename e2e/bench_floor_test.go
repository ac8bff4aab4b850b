//go:build bench

package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// sdkFloor measures what the OpenTelemetry SDK alone costs per span: the CPU
// of this process (every goroutine, the garbage collector included) to start
// and end a span with the suite's five typical attributes (those of
// order.process), batch it with the production settings of the batch
// processor, encode it and send it over OTLP/HTTP to a receiver that reads
// and discards the body. It returns the µs per span of each repetition.
//
// The loop is far faster than any service, so the processor blocks on a full
// queue instead of dropping: every span measured is exported, as in the suite
// (which drops none), and the test checks it.
func sdkFloor(t *testing.T, spans, reps int) []float64 {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()

	ctx := context.Background()
	otlp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	exp := &countingExporter{SpanExporter: otlp}
	millis := func(name string) time.Duration {
		ms, err := strconv.Atoi(productionTelemetry[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return time.Duration(ms) * time.Millisecond
	}
	count := func(name string) int {
		n, err := strconv.Atoi(productionTelemetry[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return n
	}
	res := resource.NewWithAttributes("", attribute.String("service.name", "sdk-floor"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithBatcher(exp,
		sdktrace.WithBatchTimeout(millis("OTEL_BSP_SCHEDULE_DELAY")),
		sdktrace.WithExportTimeout(millis("OTEL_BSP_EXPORT_TIMEOUT")),
		sdktrace.WithMaxQueueSize(count("OTEL_BSP_MAX_QUEUE_SIZE")),
		sdktrace.WithMaxExportBatchSize(count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")),
		sdktrace.WithBlocking(),
	))
	defer func() { _ = tp.Shutdown(ctx) }()
	tracer := tp.Tracer("github.com/ordertrace/ordertrace/e2e")

	// Most of the suite's spans are children of a span from another process.
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	attrs := trace.WithAttributes(
		attribute.String("order.id", "0193a5c4-7f51-7a2b-9c1e-3f6d2a8b4c10"),
		attribute.String("customer.id", "bench-42"),
		attribute.Int("order.item_count", 2),
		attribute.String("tenant.id", "tenant-3"),
		attribute.Int64("order.total_cents", 5470),
	)
	run := func(n int) time.Duration {
		began := selfCPU(t)
		for range n {
			_, span := tracer.Start(ctx, "order.process", attrs)
			span.End()
		}
		if err := tp.ForceFlush(context.Background()); err != nil {
			t.Fatalf("flush: %v", err)
		}
		return selfCPU(t) - began
	}

	run(spans / 10) // connections, buffers and the heap warmed up
	var perSpan []float64
	for range reps {
		exported := exp.n.Load()
		cpu := run(spans)
		if got := exp.n.Load() - exported; got != int64(spans) {
			t.Fatalf("the SDK floor exported %d spans of %d", got, spans)
		}
		perSpan = append(perSpan, cpu.Seconds()*1e6/float64(spans))
	}
	return perSpan
}

// countingExporter counts the spans its exporter delivered.
type countingExporter struct {
	sdktrace.SpanExporter
	n atomic.Int64
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		e.n.Add(int64(len(spans)))
	}
	return err
}
