package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"go.opentelemetry.io/contrib/bridges/otelslog"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/trace"
)

// LogHandler writes every record twice: as a JSON line on stdout, with
// trace_id and span_id beside the message so a person (or Loki scraping
// container logs) can jump to the trace; and as an OTLP log record, where the
// trace context travels in its own fields and Loki keeps it as structured
// metadata. Always log with the ...Context(ctx) methods so both see the span.
type LogHandler struct {
	level slog.Leveler
	otel  slog.Handler

	// json has every WithAttrs and WithGroup applied. Once a group is open,
	// trace_id and span_id would land inside it, so grouped handlers rebuild
	// the chain from base with the IDs first (rare in this suite, and correct).
	base    slog.Handler
	json    slog.Handler
	replay  []func(slog.Handler) slog.Handler
	grouped bool
}

// NewLogHandler returns a handler writing JSON lines to out and OTLP records
// to lp, both filtered by level (info when nil).
func NewLogHandler(out io.Writer, lp otellog.LoggerProvider, scope string, level slog.Leveler) *LogHandler {
	if level == nil {
		level = slog.LevelInfo
	}
	base := slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})
	return &LogHandler{
		level: level,
		otel:  otelslog.NewHandler(scope, otelslog.WithLoggerProvider(lp)),
		base:  base,
		json:  base,
	}
}

// Enabled reports whether records at l are written at all.
func (h *LogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle writes r to both outputs and returns both errors.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	var otelErr error
	if h.otel.Enabled(ctx, r.Level) {
		otelErr = h.otel.Handle(ctx, r)
	}

	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return errors.Join(otelErr, h.json.Handle(ctx, r))
	}
	ids := []slog.Attr{
		slog.String("trace_id", sc.TraceID().String()),
		slog.String("span_id", sc.SpanID().String()),
	}
	if !h.grouped {
		r = r.Clone()
		r.AddAttrs(ids...)
		return errors.Join(otelErr, h.json.Handle(ctx, r))
	}
	jh := h.base.WithAttrs(ids)
	for _, apply := range h.replay {
		jh = apply(jh)
	}
	return errors.Join(otelErr, jh.Handle(ctx, r))
}

// WithAttrs returns a handler that adds attrs to every record.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	c := h.clone()
	c.otel = h.otel.WithAttrs(attrs)
	c.json = h.json.WithAttrs(attrs)
	c.replay = append(c.replay, func(j slog.Handler) slog.Handler { return j.WithAttrs(attrs) })
	return c
}

// WithGroup returns a handler that nests later attributes under name.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := h.clone()
	c.otel = h.otel.WithGroup(name)
	c.json = h.json.WithGroup(name)
	c.replay = append(c.replay, func(j slog.Handler) slog.Handler { return j.WithGroup(name) })
	c.grouped = true
	return c
}

func (h *LogHandler) clone() *LogHandler {
	c := *h
	c.replay = append([]func(slog.Handler) slog.Handler(nil), h.replay...)
	return &c
}
