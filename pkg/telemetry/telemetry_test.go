package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// These tests set process environment variables, so they do not run in parallel.

func TestSetupHonoursStandardVariables(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console") // a recording SDK, exporting to stdout
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv("OTEL_SERVICE_NAME", "renamed")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging,team=shop")

	var out bytes.Buffer
	tel, shutdown, err := Setup(t.Context(), Options{ServiceName: "orders", ServiceVersion: "1.2.3", LogOutput: &out})
	if err != nil {
		t.Fatal(err)
	}
	res := tel.TracerProvider.(*sdktrace.TracerProvider)
	_, span := res.Tracer("t").Start(t.Context(), "s")
	ro := span.(sdktrace.ReadOnlySpan)
	attrs := ro.Resource().Set()
	for key, want := range map[string]string{
		string(semconv.ServiceNameKey):               "renamed",
		string(semconv.ServiceVersionKey):            "1.2.3",
		string(semconv.DeploymentEnvironmentNameKey): "staging",
		"team": "shop",
	} {
		v, _ := attrs.Value(attributeKey(key))
		if v.String() != want {
			t.Errorf("resource %s = %q, want %q", key, v.String(), want)
		}
	}
	if v, _ := attrs.Value(semconv.ServiceInstanceIDKey); v.String() == "" {
		t.Error("resource has no service.instance.id")
	}
	span.End()

	tel.Logger.InfoContext(t.Context(), "hello")
	if !bytes.Contains(out.Bytes(), []byte(`"msg":"hello"`)) {
		t.Errorf("logger wrote %q, want a JSON line with the message", out.String())
	}
	if err := shutdown(t.Context()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestSetupRejectsUnknownExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	if _, _, err := Setup(t.Context(), Options{ServiceName: "x"}); err == nil {
		t.Error("Setup accepted OTEL_TRACES_EXPORTER=carrier-pigeon")
	}
}

func TestSamplerFromEnvironment(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0")

	tel, shutdown, err := Setup(t.Context(), Options{ServiceName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	ctx, root := tel.Tracer("t").Start(t.Context(), "root")
	if root.SpanContext().IsSampled() {
		t.Error("ratio 0 sampled a root span")
	}
	root.End()

	// A sampled parent from upstream keeps its child sampled: parent-based.
	upstream := InjectAMQP(ctx, tel.Propagator, nil)
	upstream["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	_, child := tel.Tracer("t").Start(ExtractAMQP(t.Context(), tel.Propagator, upstream), "child")
	if !child.SpanContext().IsSampled() {
		t.Error("child of a sampled remote parent was not sampled")
	}
	child.End()
}

// TestNoneTurnsSignalsOff: with every exporter set to none, nothing is
// recorded, yet an incoming trace still flows through to the next hop and
// into the log lines.
func TestNoneTurnsSignalsOff(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	var out bytes.Buffer
	tel, shutdown, err := Setup(t.Context(), Options{ServiceName: "x", LogOutput: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if _, ok := tel.TracerProvider.(*sdktrace.TracerProvider); ok {
		t.Error("OTEL_TRACES_EXPORTER=none still built the SDK's tracer provider")
	}
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := ExtractAMQP(t.Context(), tel.Propagator, map[string]any{"traceparent": traceparent})
	ctx, span := tel.Tracer("t").Start(ctx, "work")
	if span.IsRecording() {
		t.Error("a span was recorded with tracing off")
	}
	if got := InjectAMQP(ctx, tel.Propagator, nil)["traceparent"]; got != traceparent {
		t.Errorf("next hop gets traceparent %v, want the incoming %s", got, traceparent)
	}
	tel.Logger.InfoContext(ctx, "hello")
	if !bytes.Contains(out.Bytes(), []byte(`"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`)) {
		t.Errorf("log line %q lacks the incoming trace_id", out.String())
	}
}

// TestShutdownIsBounded exports to an address where nothing listens: the
// flush fails, and shutdown still returns once its context ends.
func TestShutdownIsBounded(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	tel, shutdown, err := Setup(t.Context(), Options{ServiceName: "x", LogLevel: slog.LevelError, LogOutput: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("t").Start(t.Context(), "lost")
	span.End()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- shutdown(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("shutdown reported success although nothing could be exported")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown ignored its deadline")
	}
}

func attributeKey(k string) attribute.Key { return attribute.Key(k) }

// TestSDKErrorsAreJSONLogLines: a failure the SDK reports (here, one handed to
// otel.Handle as an exporter would) is a JSON warning on the log stream, not
// a plain-text line on stderr.
func TestSDKErrorsAreJSONLogLines(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	var out bytes.Buffer
	_, shutdown, err := Setup(t.Context(), Options{ServiceName: "x", LogOutput: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t.Context())

	otel.Handle(errors.New("exporter: connection refused"))
	var line struct{ Level, Msg, Error string }
	if err := json.Unmarshal(out.Bytes(), &line); err != nil {
		t.Fatalf("log output %q is not one JSON line: %v", out.String(), err)
	}
	if line.Level != "WARN" || line.Msg != "opentelemetry sdk" || line.Error != "exporter: connection refused" {
		t.Errorf("log line = %+v, want a WARN naming the SDK's error", line)
	}
}

// The instrumentation libraries' duplicates of span metrics are dropped; the
// server's request duration is kept.
func TestDuplicateInstrumentsDropped(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithView(dropDuplicates))
	meter := mp.Meter("test")
	for _, name := range append([]string{"http.server.request.duration"}, DuplicateInstruments...) {
		h, err := meter.Float64Histogram(name)
		if err != nil {
			t.Fatal(err)
		}
		h.Record(context.Background(), 1)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got = append(got, m.Name)
		}
	}
	if !slices.Equal(got, []string{"http.server.request.duration"}) {
		t.Fatalf("recorded %v, want only http.server.request.duration", got)
	}
}
