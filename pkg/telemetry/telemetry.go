// Package telemetry is the one place that builds the OpenTelemetry SDK for the
// suite's services: resource, tracer, meter and logger providers, propagators,
// the slog handler, and the helpers for HTTP and AMQP.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/runtime"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	otellog "go.opentelemetry.io/otel/log"
	lognoop "go.opentelemetry.io/otel/log/noop"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// Options names the service and says where its JSON log lines go. Everything
// else (endpoint, protocol, sampler, batching, which signals are on) comes from
// the standard OTEL_* environment variables, read by the SDK itself, the
// sampler's priority tenants from PRIORITY_TENANTS (sampler.go), and where
// profiles go from PYROSCOPE_SERVER_ADDRESS (profiles.go).
type Options struct {
	ServiceName    string // default for service.name; OTEL_SERVICE_NAME wins
	ServiceVersion string
	Environment    string // deployment.environment.name; OTEL_RESOURCE_ATTRIBUTES wins
	LogLevel       slog.Leveler
	LogOutput      io.Writer // JSON lines; os.Stdout when nil
}

// Telemetry is what a service receives: the providers to hand to its
// instrumentation, the propagator, and a logger that writes to stdout and OTLP.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	LoggerProvider otellog.LoggerProvider
	Propagator     propagation.TextMapPropagator
	Logger         *slog.Logger
}

// Tracer returns a tracer named after the instrumenting package.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.TracerProvider.Tracer(name) }

// Setup builds the SDK, installs it as the global default (so libraries that
// only know the globals, such as the SDK's own observability metrics, use it),
// and returns a shutdown that flushes every signal and joins every error.
// Call shutdown last, with a deadline: it returns when the context ends.
func Setup(ctx context.Context, opts Options) (tel *Telemetry, shutdown func(context.Context) error, err error) {
	var shutdowns []func(context.Context) error
	shutdownAll := func(ctx context.Context) error {
		var errs error
		// Stop in reverse order of creation: logs and traces first, metrics
		// last, so the SDK's counts of exported and dropped spans include the
		// final flush.
		for i := len(shutdowns) - 1; i >= 0; i-- {
			errs = errors.Join(errs, shutdowns[i](ctx))
		}
		shutdowns = nil
		return errs
	}
	defer func() {
		if err != nil { // undo what was built before the failure
			err = errors.Join(err, shutdownAll(ctx))
		}
	}()

	// The SDK counts queued, exported and dropped spans only when this
	// experimental switch is on; the suite wants those numbers by default.
	if _, set := os.LookupEnv(observabilityVar); !set {
		_ = os.Setenv(observabilityVar, "true")
	}

	// Checked first, so a wrong sampling setting stops the service before
	// anything is built.
	sampler, err := samplerFromEnv()
	if err != nil {
		return nil, nil, err
	}
	batching, err := batchConfigFromEnv()
	if err != nil {
		return nil, nil, err
	}
	profiles, err := profilingFromEnv()
	if err != nil {
		return nil, nil, err
	}

	res, err := newResource(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	out := opts.LogOutput
	if out == nil {
		out = os.Stdout
	}
	// The SDK's and the profiler's own failures go to stdout only (see
	// SetErrorHandler below).
	sdkLog := slog.New(NewLogHandler(out, lognoop.NewLoggerProvider(), serviceName(res), opts.LogLevel))

	// Profiles (profiles.go) start first, so they stop last: the final
	// flush serves spans, metrics and logs before them.
	if profiles.on() {
		stop, err := startProfiling(profiles, serviceName(res), sdkLog)
		if err != nil {
			return nil, nil, err
		}
		shutdowns = append(shutdowns, stop)
	}
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

	// Metrics come first: the tracer provider's observability instruments are
	// created from the global meter provider.
	reader, err := autoexport.NewMetricReader(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("metric exporter: %w", err)
	}
	// An exporter set to `none` turns its signal off entirely: the provider
	// is a no-op, so nothing is recorded only to be thrown away. Trace context
	// still flows: a no-op span carries its parent's trace, so a service with
	// tracing off passes the traceparent it received on to the next one.
	var mp metric.MeterProvider = metricnoop.NewMeterProvider()
	if !autoexport.IsNoneMetricReader(reader) {
		sdkmp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader),
			sdkmetric.WithView(dropDuplicates))
		shutdowns = append(shutdowns, sdkmp.Shutdown)
		mp = sdkmp
	}
	otel.SetMeterProvider(mp)

	// The batch processor is the suite's (batch.go): the SDK's contract,
	// without a wake-up per span. Its limits follow OTEL_BSP_*; the SDK
	// defaults (queue 2048, batches of 512 every 5 s) are the production
	// settings. The sampler is the suite's (sampler.go) unless OTEL_TRACES_SAMPLER
	// names another, which the SDK then builds itself.
	spanExp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("span exporter: %w", err)
	}
	var tp trace.TracerProvider = tracenoop.NewTracerProvider()
	if !autoexport.IsNoneSpanExporter(spanExp) {
		// The SDK keeps attribute values whole unless told otherwise; the
		// suite caps them (limits.go). NewSpanLimits reads the other limits
		// from their OTEL_* variables, as the SDK would without this option.
		limits := sdktrace.NewSpanLimits()
		limits.AttributeValueLengthLimit, err = attributeValueLengthLimit("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")
		if err != nil {
			return nil, nil, errors.Join(err, spanExp.Shutdown(ctx))
		}
		tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSpanProcessor(newSpanBatcher(spanExp, batching)), sdktrace.WithRawSpanLimits(limits)}
		if sampler != nil {
			tpOpts = append(tpOpts, sdktrace.WithSampler(sampler))
		}
		sdktp := sdktrace.NewTracerProvider(tpOpts...)
		shutdowns = append(shutdowns, sdktp.Shutdown)
		tp = sdktp
		if profiles.on() {
			tp = withSpanProfiles(sdktp) // root spans name their CPU samples
		}
	}

	logExp, err := autoexport.NewLogExporter(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("log exporter: %w", err)
	}
	var lp otellog.LoggerProvider = lognoop.NewLoggerProvider()
	if !autoexport.IsNoneLogExporter(logExp) {
		// The SDK reads only the log-specific variable; the general one
		// and the suite's default apply to log records too.
		lenLimit, err := attributeValueLengthLimit("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")
		if err != nil {
			return nil, nil, errors.Join(err, logExp.Shutdown(ctx))
		}
		sdklp := sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(sdklog.NewBatchProcessor(logExp)),
			sdklog.WithAttributeValueLengthLimit(lenLimit))
		shutdowns = append(shutdowns, sdklp.Shutdown)
		lp = sdklp
	}

	if err := runtime.Start(runtime.WithMeterProvider(mp)); err != nil {
		return nil, nil, fmt.Errorf("runtime metrics: %w", err)
	}

	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(prop)
	otel.SetLoggerProvider(lp)

	// The SDK reports its own failures (an unreachable collector, a full
	// queue) through this handler; by default they are plain text on stderr.
	// They become JSON lines of the same stream, written to stdout only: sent
	// over OTLP, a failing export would report itself in a loop.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		sdkLog.Warn("opentelemetry sdk", "error", err)
	}))
	tel = &Telemetry{
		TracerProvider: tp,
		MeterProvider:  mp,
		LoggerProvider: lp,
		Propagator:     prop,
		Logger:         slog.New(NewLogHandler(out, lp, serviceName(res), opts.LogLevel)),
	}
	return tel, shutdownAll, nil
}

// DuplicateInstruments are the instrumentation libraries' metrics that say
// nothing the collector does not already derive from spans (its span metrics:
// calls, errors and durations per span name, kind and status code). Recorded
// in the services as well, they were paid twice, on every request, query and
// command; the SDK drops them. Kept: http.server.request.duration (it counts
// every request, also those whose span head sampling dropped; the overview's
// p99 panel and lab 7 read it), the pools' gauges (pgx, Redis: no span shows
// an idle or exhausted pool), the Go runtime, the SDK's own counts, and the
// services' business metrics.
var DuplicateInstruments = []string{
	"http.server.request.body.size", "http.server.response.body.size", // otelhttp, server
	"http.client.request.duration", "http.client.request.body.size", // otelhttp, the gateway's client
	"db.client.operation.duration", "db.client.operation.errors", // otelpgx, per statement
}

// dropDuplicates is the view that drops DuplicateInstruments.
func dropDuplicates(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
	if slices.Contains(DuplicateInstruments, i.Name) {
		return sdkmetric.Stream{Aggregation: sdkmetric.AggregationDrop{}}, true
	}
	return sdkmetric.Stream{}, false
}

// newResource describes the process. The defaults come first so that
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, read by WithFromEnv, win.
func newResource(ctx context.Context, opts Options) (*resource.Resource, error) {
	env := opts.Environment
	if env == "" {
		env = "local"
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(
			semconv.ServiceName(opts.ServiceName),
			semconv.ServiceVersion(opts.ServiceVersion),
			semconv.DeploymentEnvironmentNameKey.String(env),
			semconv.ServiceInstanceID(uuid.NewString()),
		),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessRuntimeName(),
		resource.WithProcessRuntimeVersion(),
		resource.WithSchemaURL(semconv.SchemaURL),
	)
	if errors.Is(err, resource.ErrPartialResource) || errors.Is(err, resource.ErrSchemaURLConflict) {
		err = nil // a detector that cannot read the host is not worth failing for
	}
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	return res, nil
}

func serviceName(res *resource.Resource) string {
	if v, ok := res.Set().Value(semconv.ServiceNameKey); ok {
		return v.AsString()
	}
	return "unknown_service"
}

// FlushTimeout bounds the final flush of spans, metrics and logs.
const FlushTimeout = 5 * time.Second

// Flush calls shutdown with FlushTimeout and joins its error into *errp.
// Defer it right after Setup, so it runs last: after the servers and clients
// have stopped and written their final spans. It does not use ctx's deadline:
// ctx is usually the signal context, already done when shutdown starts.
func Flush(ctx context.Context, shutdown func(context.Context) error, errp *error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FlushTimeout)
	defer cancel()
	*errp = errors.Join(*errp, shutdown(ctx))
}
