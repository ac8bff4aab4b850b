package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/otelconv"
)

// spanBatcher is the suite's batch span processor. It keeps the SDK's
// contract (the OTEL_BSP_* variables with the SDK's defaults, spans dropped
// when the queue is full, the same otel.sdk.processor.span.* metrics the
// dashboards and alerts read) and changes one thing: when its export
// goroutine wakes. The SDK's processor (v1.47) hands every ended span over a
// channel to that goroutine, which wakes it once per span, although an
// export waits for a full batch or the delay; profiled under load, that was
// about 1.5% of fulfillment's CPU (docs/performance.md). Here an ended span
// is appended under a mutex, and the goroutine wakes only when a batch is
// full, when the schedule delay has passed, or on a flush.
type spanBatcher struct {
	exporter sdktrace.SpanExporter
	cfg      batchConfig

	mu      sync.Mutex
	queue   []sdktrace.ReadOnlySpan
	stopped bool

	exportMu sync.Mutex // one export at a time; guards batch
	batch    []sdktrace.ReadOnlySpan

	full     chan struct{} // holds one signal: a batch is waiting
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	metrics *batchMetrics // nil when the SDK's observability is off
}

// observabilityVar switches the SDK's metrics about itself on; Setup turns it
// on unless it is set.
const observabilityVar = "OTEL_GO_X_OBSERVABILITY"

// batchConfig is what OTEL_BSP_* set, with the SDK's defaults.
type batchConfig struct {
	Delay, Timeout     time.Duration // Timeout 0: exports are not cut short
	MaxQueue, MaxBatch int
}

// batchConfigFromEnv reads OTEL_BSP_* (envInt: a value that is not a number
// is refused, where the SDK ignores it).
func batchConfigFromEnv() (batchConfig, error) {
	var errs error
	read := func(name string, def, least int) int {
		n, set, err := envInt(name)
		if err != nil || (set && n < least) {
			errs = errors.Join(errs, fmt.Errorf("%s: must be a whole number, at least %d", name, least))
			return def
		}
		if !set {
			return def
		}
		return n
	}
	cfg := batchConfig{
		Delay:    time.Duration(read("OTEL_BSP_SCHEDULE_DELAY", sdktrace.DefaultScheduleDelay, 1)) * time.Millisecond,
		Timeout:  time.Duration(read("OTEL_BSP_EXPORT_TIMEOUT", sdktrace.DefaultExportTimeout, 0)) * time.Millisecond,
		MaxQueue: read("OTEL_BSP_MAX_QUEUE_SIZE", sdktrace.DefaultMaxQueueSize, 1),
		MaxBatch: read("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", sdktrace.DefaultMaxExportBatchSize, 1),
	}
	// As the SDK does: a batch never holds more than the queue.
	cfg.MaxBatch = min(cfg.MaxBatch, cfg.MaxQueue)
	return cfg, errs
}

// newSpanBatcher starts a batcher exporting to exporter. Its metrics are
// created from the global meter provider, as the SDK's are.
func newSpanBatcher(exporter sdktrace.SpanExporter, cfg batchConfig) *spanBatcher {
	b := &spanBatcher{
		exporter: exporter,
		cfg:      cfg,
		queue:    make([]sdktrace.ReadOnlySpan, 0, cfg.MaxBatch),
		batch:    make([]sdktrace.ReadOnlySpan, 0, cfg.MaxBatch),
		full:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if strings.EqualFold(os.Getenv(observabilityVar), "true") {
		m, err := newBatchMetrics(func() int64 {
			b.mu.Lock()
			defer b.mu.Unlock()
			return int64(len(b.queue))
		}, int64(cfg.MaxQueue))
		if err != nil {
			otel.Handle(err)
		}
		b.metrics = m
	}
	go b.run()
	return b
}

// OnStart does nothing: spans are batched when they end.
func (*spanBatcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or drops it when the queue is full. It wakes
// the export goroutine only when the queue has just reached a batch.
func (b *spanBatcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	if len(b.queue) >= b.cfg.MaxQueue {
		b.mu.Unlock()
		b.metrics.processed(context.Background(), 1, true)
		return
	}
	b.queue = append(b.queue, s)
	ready := len(b.queue) == b.cfg.MaxBatch
	b.mu.Unlock()
	if ready {
		select {
		case b.full <- struct{}{}:
		default: // already signalled
		}
	}
}

// run exports full batches as they fill and whatever is queued when the
// schedule delay has passed since the last export.
func (b *spanBatcher) run() {
	defer close(b.done)
	timer := time.NewTimer(b.cfg.Delay)
	defer timer.Stop()
	for {
		all := false
		select {
		case <-b.stop:
			return
		case <-b.full:
		case <-timer.C:
			all = true
		}
		if err := b.export(context.Background(), all); err != nil {
			otel.Handle(err)
		}
		timer.Reset(b.cfg.Delay)
	}
}

// export sends the queue in batches of at most MaxBatch: only full ones, or
// with all, every span queued.
func (b *spanBatcher) export(ctx context.Context, all bool) error {
	b.exportMu.Lock()
	defer b.exportMu.Unlock()
	var errs error
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.cfg.MaxBatch)
		if n == 0 || (!all && n < b.cfg.MaxBatch) {
			b.mu.Unlock()
			return errs
		}
		b.batch = append(b.batch[:0], b.queue[:n]...)
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:]) // let the exported spans be collected
		b.queue = b.queue[:rest]
		b.mu.Unlock()

		b.metrics.processed(ctx, int64(n), false)
		errs = errors.Join(errs, b.exportBatch(ctx))
		clear(b.batch)
	}
}

func (b *spanBatcher) exportBatch(ctx context.Context) error {
	if b.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, b.cfg.Timeout, errors.New("span export timeout"))
		defer cancel()
	}
	return b.exporter.ExportSpans(ctx, b.batch)
}

// ForceFlush exports every span queued so far.
func (b *spanBatcher) ForceFlush(ctx context.Context) error {
	return b.export(ctx, true)
}

// Shutdown stops taking spans, exports what is queued and shuts the
// exporter down. It returns when ctx ends, even with an export hanging.
func (b *spanBatcher) Shutdown(ctx context.Context) error {
	err := errors.New("span batcher: already shut down")
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		close(b.stop)
		finished := make(chan error, 1)
		go func() {
			<-b.done
			finished <- errors.Join(b.export(ctx, true), b.exporter.Shutdown(ctx), b.metrics.shutdown())
		}()
		select {
		case err = <-finished:
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	return err
}

// batchMetrics are the SDK's own metrics of a batching span processor, with
// the names and attributes the SDK gives them (semantic conventions v1.43):
// spans processed (exported, or dropped with error.type queue_full), and the
// queue's size and capacity.
type batchMetrics struct {
	counter                metric.Int64Counter
	exportedOpts, fullOpts []metric.AddOption
	reg                    metric.Registration
}

var batcherIDs atomic.Int64

func newBatchMetrics(queueLen func() int64, capacity int64) (*batchMetrics, error) {
	meter := otel.GetMeterProvider().Meter("github.com/ordertrace/ordertrace/pkg/telemetry",
		metric.WithSchemaURL(semconv.SchemaURL))
	processed, err := otelconv.NewSDKProcessorSpanProcessed(meter)
	if err != nil {
		return nil, fmt.Errorf("span processor metrics: %w", err)
	}
	size, err := otelconv.NewSDKProcessorSpanQueueSize(meter)
	if err != nil {
		return nil, fmt.Errorf("span processor metrics: %w", err)
	}
	capInst, err := otelconv.NewSDKProcessorSpanQueueCapacity(meter)
	if err != nil {
		return nil, fmt.Errorf("span processor metrics: %w", err)
	}
	name := semconv.OTelComponentName(fmt.Sprintf("%s/%d", otelconv.ComponentTypeBatchingSpanProcessor, batcherIDs.Add(1)-1))
	kind := semconv.OTelComponentTypeBatchingSpanProcessor
	set := attribute.NewSet(name, kind)
	m := &batchMetrics{
		counter:      processed.Inst(),
		exportedOpts: []metric.AddOption{metric.WithAttributeSet(set)},
		fullOpts: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(name, kind,
			processed.AttrErrorType(otelconv.ErrorTypeAttr("queue_full"))))},
	}
	observe := []metric.ObserveOption{metric.WithAttributeSet(set)}
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(size.Inst(), queueLen(), observe...)
		o.ObserveInt64(capInst.Inst(), capacity, observe...)
		return nil
	}, size.Inst(), capInst.Inst())
	if err != nil {
		return nil, fmt.Errorf("span processor metrics: %w", err)
	}
	return m, nil
}

// processed counts n spans handed to the exporter, or dropped because the
// queue was full.
func (m *batchMetrics) processed(ctx context.Context, n int64, queueFull bool) {
	if m == nil {
		return
	}
	if queueFull {
		m.counter.Add(ctx, n, m.fullOpts...)
		return
	}
	m.counter.Add(ctx, n, m.exportedOpts...)
}

func (m *batchMetrics) shutdown() error {
	if m == nil {
		return nil
	}
	return m.reg.Unregister()
}
