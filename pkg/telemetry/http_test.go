package telemetry

import (
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

func newTestTelemetry(t *testing.T) (*Telemetry, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	return &Telemetry{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
		MeterProvider:  metricnoop.NewMeterProvider(),
		Propagator:     testPropagator,
	}, rec
}

func attr(kvs []attribute.KeyValue, key string) string {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

func TestHTTPMiddleware(t *testing.T) {
	tel, rec := newTestTelemetry(t)
	r := chi.NewRouter()
	r.Use(tel.HTTPMiddleware(WithUntraced("/healthz", "/readyz", "/scenarios")))
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	r.Get("/healthz", ok)
	r.Get("/readyz", ok)
	r.Get("/scenarios", ok)
	r.Get("/orders/{id}", ok)

	tests := []struct {
		path, wantName, wantRoute string
		wantSpan                  bool
	}{
		{"/orders/42", "GET /orders/{id}", "/orders/{id}", true},
		{"/nowhere", "GET", "", true},
		{"/healthz", "", "", false},
		{"/readyz", "", "", false},
		{"/scenarios", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			before := len(rec.Ended())
			w := httptest.NewRecorder()
			r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tt.path, nil))
			spans := rec.Ended()[before:]
			if !tt.wantSpan {
				if len(spans) != 0 || w.Header().Get("traceresponse") != "" {
					t.Errorf("health endpoint traced: %d spans, traceresponse %q", len(spans), w.Header().Get("traceresponse"))
				}
				return
			}
			if len(spans) != 1 {
				t.Fatalf("got %d spans, want 1", len(spans))
			}
			s := spans[0]
			if s.Name() != tt.wantName || s.SpanKind() != trace.SpanKindServer {
				t.Errorf("span = %s %q, want SERVER %q", s.SpanKind(), s.Name(), tt.wantName)
			}
			if got := attr(s.Attributes(), "http.route"); got != tt.wantRoute {
				t.Errorf("http.route = %q, want %q", got, tt.wantRoute)
			}
			want := "00-" + s.SpanContext().TraceID().String() + "-" + s.SpanContext().SpanID().String() + "-01"
			if got := w.Header().Get("traceresponse"); got != want {
				t.Errorf("traceresponse = %q, want %q", got, want)
			}
		})
	}
}

func TestHTTPTransportPropagates(t *testing.T) {
	tel, rec := newTestTelemetry(t)
	var gotTraceparent string
	upstream := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		gotTraceparent = r.Header.Get("traceparent")
	}))
	defer upstream.Close()

	ctx, parent := tel.Tracer("test").Start(t.Context(), "parent")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, upstream.URL+"/orders/123", nil)
	resp, err := (&http.Client{Transport: tel.HTTPTransport(http.DefaultTransport)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	parent.End()

	var client sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			client = s
		}
	}
	if client == nil || client.Name() != "POST" || client.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("client span = %v, want a CLIENT span named POST under the parent", client)
	}
	if !strings.Contains(gotTraceparent, client.SpanContext().SpanID().String()) {
		t.Errorf("upstream saw traceparent %q, want the CLIENT span %s", gotTraceparent, client.SpanContext().SpanID())
	}
}
