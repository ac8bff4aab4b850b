package telemetry

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// HTTPOption adjusts HTTPMiddleware.
type HTTPOption func(*httpOptions)

type httpOptions struct {
	startAttrs func(*http.Request) []attribute.KeyValue
	newRoot    bool
	untraced   map[string]bool
}

// WithUntraced names paths whose requests get neither spans nor metrics: the
// health endpoints orchestrators poll every few seconds, and read-outs a
// script polls, which would bury real traffic. Each service passes its own.
func WithUntraced(paths ...string) HTTPOption {
	return func(o *httpOptions) {
		if o.untraced == nil {
			o.untraced = map[string]bool{}
		}
		for _, p := range paths {
			o.untraced[p] = true
		}
	}
}

// WithStartAttributes gives each SERVER span the attributes fn returns for
// its request as the span starts, where the sampler sees them (the gateway's
// tenant.id decides whether a priority tenant's trace is kept). Attributes set
// once the span has started come too late for that.
func WithStartAttributes(fn func(*http.Request) []attribute.KeyValue) HTTPOption {
	return func(o *httpOptions) { o.startAttrs = fn }
}

// WithNewRoot starts every SERVER span as the root of a new trace, linked to
// the caller's span, instead of continuing the caller's trace: the sampler,
// not the caller's flags, decides whether the request is traced, and the
// caller's tracestate is not carried on. For a public edge whose callers are
// not trusted.
func WithNewRoot() HTTPOption {
	return func(o *httpOptions) { o.newRoot = true }
}

// HTTPMiddleware traces and measures the requests of a chi router. Install it
// with the router's first Use: it names each SERVER span after the matched
// route template ("GET /api/orders/{id}"), sets http.route on the span and the
// metrics, and answers with a W3C traceresponse header. A caller's
// tracestate beyond MaxTraceStateBytes is dropped as it is extracted: the
// SERVER span inherits it when it starts.
func (t *Telemetry) HTTPMiddleware(opts ...HTTPOption) func(http.Handler) http.Handler {
	var o httpOptions
	for _, opt := range opts {
		opt(&o)
	}
	tp := t.TracerProvider
	if o.startAttrs != nil {
		// otelhttp takes only the same start options for every request; its
		// tracer adds the request's own, handed over in the context.
		tp = startAttrsProvider{tp}
	}
	otelMW := otelhttp.NewMiddleware("http.server",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(t.MeterProvider),
		otelhttp.WithPropagators(trustedExtract{TextMapPropagator: t.Propagator, dropTraceState: o.newRoot}),
		otelhttp.WithPublicEndpointFn(func(*http.Request) bool { return o.newRoot }),
		otelhttp.WithFilter(func(r *http.Request) bool { return !o.untraced[r.URL.Path] }),
		otelhttp.WithSpanNameFormatter(serverSpanName),
	)
	return func(next http.Handler) http.Handler {
		inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			span := trace.SpanFromContext(r.Context())
			if sc := span.SpanContext(); sc.IsValid() {
				w.Header().Set("traceresponse", "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-"+sc.TraceFlags().String())
			}
			sw := &statusWriter{ResponseWriter: w}
			next.ServeHTTP(sw, r)
			if sw.status >= 500 {
				// The conventions' error.type of a failed request: its status.
				errorType := semconv.ErrorTypeKey.String(strconv.Itoa(sw.status))
				span.SetAttributes(errorType)
				if l, ok := otelhttp.LabelerFromContext(r.Context()); ok {
					l.Add(errorType)
				}
			}
			// chi fills its route context while routing; read it afterwards.
			if rc := chi.RouteContext(r.Context()); rc != nil {
				if route := rc.RoutePattern(); route != "" {
					span.SetName(r.Method + " " + route)
					span.SetAttributes(semconv.HTTPRoute(route))
					if l, ok := otelhttp.LabelerFromContext(r.Context()); ok {
						l.Add(semconv.HTTPRoute(route))
					}
				}
			}
		})
		traced := otelMW(inner)
		if o.startAttrs == nil {
			return traced
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !o.untraced[r.URL.Path] {
				if attrs := o.startAttrs(r); len(attrs) > 0 {
					r = r.WithContext(context.WithValue(r.Context(), startAttrsKey{}, attrs))
				}
			}
			traced.ServeHTTP(w, r)
		})
	}
}

// startAttrsKey carries a request's start attributes from HTTPMiddleware to
// the tracer otelhttp starts the SERVER span with.
type startAttrsKey struct{}

// startAttrsProvider makes tracers that add the start attributes found in the
// context. Only otelhttp's SERVER spans are started with them.
type startAttrsProvider struct{ trace.TracerProvider }

func (p startAttrsProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return startAttrsTracer{p.TracerProvider.Tracer(name, opts...)}
}

type startAttrsTracer struct{ trace.Tracer }

func (t startAttrsTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if attrs, ok := ctx.Value(startAttrsKey{}).([]attribute.KeyValue); ok {
		opts = append(opts, trace.WithAttributes(attrs...))
	}
	return t.Tracer.Start(ctx, name, opts...)
}

// serverSpanName is "METHOD /route/{template}" once the router has matched
// the request, and the method alone before that (or for a 404): both are the
// low-cardinality names the HTTP conventions ask for.
func serverSpanName(_ string, r *http.Request) string {
	if r.Pattern == "" {
		return r.Method
	}
	if _, route, ok := strings.Cut(r.Pattern, " "); ok { // net/http patterns may start with a method
		return r.Method + " " + route
	}
	return r.Method + " " + r.Pattern
}

// HTTPTransport wraps base so each outgoing request gets a CLIENT span and
// carries traceparent, tracestate and baggage.
func (t *Telemetry) HTTPTransport(base http.RoundTripper) http.RoundTripper {
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(t.TracerProvider),
		otelhttp.WithMeterProvider(t.MeterProvider),
		otelhttp.WithPropagators(t.Propagator),
		// CLIENT spans are named by the method alone: the URL has IDs in it.
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
	)
}

// statusWriter notes the status a handler answered with. Unwrap lets
// http.ResponseController reach the writer's other methods (Flush).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
