package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// memoryLogExporter keeps exported log records.
type memoryLogExporter struct {
	mu      sync.Mutex
	records []sdklog.Record
}

func (e *memoryLogExporter) Export(_ context.Context, rs []sdklog.Record) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range rs {
		e.records = append(e.records, r.Clone())
	}
	return nil
}
func (e *memoryLogExporter) Shutdown(context.Context) error   { return nil }
func (e *memoryLogExporter) ForceFlush(context.Context) error { return nil }

func newTestLogger(t *testing.T, level slog.Level) (*slog.Logger, *bytes.Buffer, *memoryLogExporter) {
	t.Helper()
	exp := &memoryLogExporter{}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(exp)))
	t.Cleanup(func() { _ = lp.Shutdown(context.Background()) })
	var out bytes.Buffer
	return slog.New(NewLogHandler(&out, lp, "test", level)), &out, exp
}

func decodeLines(t *testing.T, out *bytes.Buffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		lines = append(lines, m)
	}
	return lines
}

func TestLogHandlerCarriesTraceContext(t *testing.T) {
	log, out, exp := newTestLogger(t, slog.LevelInfo)
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "work")
	defer span.End()
	sc := span.SpanContext()

	log.InfoContext(ctx, "inside", "order_id", "o-1")
	log.With("service_part", "x").WithGroup("req").InfoContext(ctx, "grouped", "path", "/p")
	log.InfoContext(context.Background(), "outside")
	log.DebugContext(ctx, "filtered out")

	lines := decodeLines(t, out)
	if len(lines) != 3 {
		t.Fatalf("got %d JSON lines, want 3 (debug filtered): %s", len(lines), out)
	}
	for _, l := range lines[:2] {
		if l["trace_id"] != sc.TraceID().String() || l["span_id"] != sc.SpanID().String() {
			t.Errorf("line %v: trace_id/span_id at top level = %v/%v, want %s/%s", l["msg"], l["trace_id"], l["span_id"], sc.TraceID(), sc.SpanID())
		}
	}
	if req, _ := lines[1]["req"].(map[string]any); req["path"] != "/p" || lines[1]["service_part"] != "x" {
		t.Errorf("grouped line lost its attributes: %v", lines[1])
	}
	if _, ok := lines[2]["trace_id"]; ok {
		t.Errorf("line outside a span has a trace_id: %v", lines[2])
	}

	exp.mu.Lock()
	defer exp.mu.Unlock()
	if len(exp.records) != 3 {
		t.Fatalf("got %d OTLP records, want 3", len(exp.records))
	}
	if r := exp.records[0]; r.TraceID() != sc.TraceID() || r.SpanID() != sc.SpanID() || r.Body().AsString() != "inside" {
		t.Errorf("OTLP record = %s trace %s span %s, want 'inside' in %s/%s", r.Body().AsString(), r.TraceID(), r.SpanID(), sc.TraceID(), sc.SpanID())
	}
}
