package telemetry

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// batchRecorder is an exporter that keeps the size of every batch it is
// given and can be held, so a test can fill the queue behind an export.
type batchRecorder struct {
	mu      sync.Mutex
	batches []int
	spans   int
	hold    chan struct{} // when not nil, each export waits for it to close
	arrived chan int      // each batch's size, as it arrives
}

func newBatchRecorder() *batchRecorder { return &batchRecorder{arrived: make(chan int, 100)} }

func (r *batchRecorder) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	r.arrived <- len(spans)
	if r.hold != nil {
		select {
		case <-r.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, len(spans))
	r.spans += len(spans)
	return nil
}

func (r *batchRecorder) Shutdown(context.Context) error { return nil }

// next waits for the next batch to reach the exporter.
func (r *batchRecorder) next(t *testing.T) int {
	t.Helper()
	select {
	case n := <-r.arrived:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no batch reached the exporter")
		return 0
	}
}

func endSpans(tp trace.TracerProvider, n int) {
	tr := tp.Tracer("test")
	for range n {
		_, s := tr.Start(context.Background(), "span")
		s.End()
	}
}

func TestSpanBatcherExportsFullBatchesAtOnce(t *testing.T) {
	rec := newBatchRecorder()
	// A delay no test waits for: only full batches may be exported.
	b := newSpanBatcher(rec, batchConfig{Delay: time.Hour, MaxQueue: 64, MaxBatch: 8})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))

	endSpans(tp, 2*8+3)
	if got := []int{rec.next(t), rec.next(t)}; !slices.Equal(got, []int{8, 8}) {
		t.Fatalf("batches %v, want two of 8", got)
	}
	select {
	case n := <-rec.arrived:
		t.Fatalf("a batch of %d, not full, was exported before the delay", n)
	default:
	}
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := rec.next(t); n != 3 {
		t.Fatalf("the flush exported %d spans, want the 3 left", n)
	}

	// Unsampled spans are not queued.
	tpOff := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b), sdktrace.WithSampler(sdktrace.NeverSample()))
	endSpans(tpOff, 5)
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec.spans != 19 {
		t.Fatalf("%d spans exported, want 19", rec.spans)
	}
}

func TestSpanBatcherExportsAfterTheDelay(t *testing.T) {
	rec := newBatchRecorder()
	b := newSpanBatcher(rec, batchConfig{Delay: 20 * time.Millisecond, MaxQueue: 64, MaxBatch: 8})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	endSpans(tp, 3)
	if n := rec.next(t); n != 3 {
		t.Fatalf("the delay exported %d spans, want 3", n)
	}
}

// With the exporter held, the queue fills and what does not fit is dropped
// and counted under the same metric and attributes as the SDK's processor.
func TestSpanBatcherDropsWhenFullAndCountsLikeTheSDK(t *testing.T) {
	t.Setenv(observabilityVar, "true")
	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })

	rec := newBatchRecorder()
	rec.hold = make(chan struct{})
	b := newSpanBatcher(rec, batchConfig{Delay: time.Hour, MaxQueue: 4, MaxBatch: 2})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))

	endSpans(tp, 2)
	rec.next(t) // the first batch, held in the exporter: the queue is empty
	endSpans(tp, 6)
	close(rec.hold)
	// Flushed, not shut down: the queue's gauges are observed until then.
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	if rec.spans != 6 {
		t.Fatalf("%d spans exported, want 6 (2 dropped)", rec.spans)
	}

	// The SDK's own processor, beside it, for the names and attributes.
	sdkTP := sdktrace.NewTracerProvider(sdktrace.WithBatcher(newBatchRecorder()))
	endSpans(sdkTP, 1)
	if err := sdkTP.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	ours, sdks := map[string][]string{}, map[string][]string{}
	var exported, dropped int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if !strings.HasPrefix(m.Name, "otel.sdk.processor.span.") {
				continue
			}
			mine := sm.Scope.Name == "github.com/ordertrace/ordertrace/pkg/telemetry"
			into := sdks
			if mine {
				into = ours
			}
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, p := range sum.DataPoints {
					var keys []string
					for _, kv := range p.Attributes.ToSlice() {
						keys = append(keys, string(kv.Key))
					}
					into[m.Name] = append(into[m.Name], strings.Join(keys, ","))
					if mine {
						if v, ok := p.Attributes.Value("error.type"); ok && v.AsString() == "queue_full" {
							dropped += p.Value
						} else if m.Name == "otel.sdk.processor.span.processed" {
							exported += p.Value
						}
					}
				}
			}
		}
	}
	if exported != 6 || dropped != 2 {
		t.Errorf("counted %d processed and %d dropped (queue_full), want 6 and 2", exported, dropped)
	}
	for name, keys := range sdks {
		// The SDK's processor dropped nothing, so it has no queue_full point.
		for _, k := range keys {
			if !slices.Contains(ours[name], k) {
				t.Errorf("%s: the SDK records a point with attributes %s, the batcher does not (it has %v)", name, k, ours[name])
			}
		}
	}
	if len(sdks) < 3 {
		t.Errorf("the SDK's processor recorded %d of its three metrics: %v", len(sdks), sdks)
	}
}

func TestSpanBatcherShutdownIsBounded(t *testing.T) {
	rec := newBatchRecorder()
	rec.hold = make(chan struct{}) // never released: the export hangs
	b := newSpanBatcher(rec, batchConfig{Delay: time.Hour, MaxQueue: 8, MaxBatch: 2})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	endSpans(tp, 3)
	rec.next(t)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tp.Shutdown(ctx); err == nil {
		t.Fatal("shutdown with an export hanging returned no error")
	}
}

func TestBatchConfigFromEnv(t *testing.T) {
	cfg, err := batchConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	want := batchConfig{Delay: 5 * time.Second, Timeout: 30 * time.Second, MaxQueue: 2048, MaxBatch: 512}
	if cfg != want {
		t.Fatalf("defaults %+v, want the SDK's %+v", cfg, want)
	}

	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
	if cfg, _ = batchConfigFromEnv(); cfg.MaxQueue != 100 || cfg.MaxBatch != 100 || cfg.Delay != 250*time.Millisecond {
		t.Fatalf("got %+v, want a queue of 100, batches of at most 100, 250 ms", cfg)
	}

	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "5s")
	if _, err := batchConfigFromEnv(); err == nil || !strings.Contains(err.Error(), "OTEL_BSP_SCHEDULE_DELAY") {
		t.Fatalf("a delay of 5s (not milliseconds): error %v, want one naming the variable", err)
	}
}
