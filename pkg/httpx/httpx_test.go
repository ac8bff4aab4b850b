package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

type order struct {
	CustomerID string `json:"customer_id"`
	Items      []struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	} `json:"items"`
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int // 0: decoded
		wantField   string
	}{
		{"valid", "application/json", `{"customer_id":"c","items":[{"sku":"A","quantity":1}]}`, 0, ""},
		{"valid with charset", "application/json; charset=utf-8", `{"customer_id":"c"}`, 0, ""},
		{"wrong content type", "text/plain", `{}`, 415, "Content-Type"},
		{"missing content type", "", `{}`, 415, "Content-Type"},
		{"empty body", "application/json", ``, 400, ""},
		{"syntax error", "application/json", `{"customer_id":}`, 400, ""},
		{"cut short", "application/json", `{"customer_id":"c"`, 400, ""},
		{"unknown field", "application/json", `{"customer_id":"c","password":"x"}`, 400, "password"},
		{"wrong type", "application/json", `{"customer_id":7}`, 400, "customer_id"},
		{"nested wrong type", "application/json", `{"items":[{"quantity":"1"}]}`, 400, "items.quantity"},
		{"two values", "application/json", `{} {}`, 400, ""},
		{"trailing garbage", "application/json", `{}x`, 400, ""},
		{"too large", "application/json", `{"customer_id":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			var dst order
			err := DecodeJSON(httptest.NewRecorder(), r, &dst)
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("DecodeJSON() = %v, want nil", err)
				}
				return
			}
			p, ok := err.(*Problem)
			if !ok {
				t.Fatalf("DecodeJSON() = %v, want a *Problem", err)
			}
			if p.Status != tt.wantStatus {
				t.Errorf("status = %d, want %d (%s)", p.Status, tt.wantStatus, p.Detail)
			}
			if tt.wantField != "" && (len(p.Errors) != 1 || p.Errors[0].Field != tt.wantField) {
				t.Errorf("errors = %+v, want field %q", p.Errors, tt.wantField)
			}
		})
	}
}

func TestWriteProblem(t *testing.T) {
	tests := []struct {
		status    int
		wantError bool
	}{
		{http.StatusBadRequest, false},
		{http.StatusUnprocessableEntity, false},
		{http.StatusPaymentRequired, true},
		{http.StatusServiceUnavailable, true},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			ctx, span := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("t").Start(t.Context(), "req")
			w := httptest.NewRecorder()
			WriteProblem(w, httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx), NewProblem(tt.status, "Some title", "detail"))
			span.End()

			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" || w.Code != tt.status {
				t.Errorf("answer %d %q, want %d application/problem+json", w.Code, ct, tt.status)
			}
			var p Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if p.TraceID != span.SpanContext().TraceID().String() || p.Type != "/problems/some-title" || p.Status != tt.status {
				t.Errorf("problem = %+v, want the span's trace_id, type /problems/some-title, status %d", p, tt.status)
			}
			gotError := rec.Ended()[0].Status().Code == codes.Error
			if gotError != tt.wantError {
				t.Errorf("span marked error = %v, want %v", gotError, tt.wantError)
			}
		})
	}
}

func TestRecover(t *testing.T) {
	w := httptest.NewRecorder()
	Recover(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })).
		ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "boom") {
		t.Errorf("panic answered %d %s, want a 500 problem without the panic text", w.Code, w.Body)
	}
}
