package httpx

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
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
		wantReason  string // "": any
	}{
		{"valid", "application/json", `{"customer_id":"c","items":[{"sku":"A","quantity":1}]}`, 0, "", ""},
		{"valid with charset", "application/json; charset=utf-8", `{"customer_id":"c"}`, 0, "", ""},
		{"valid with space around", "application/json", " \n\t{ \"items\" : [ { \"quantity\" : 2 } ] }\n", 0, "", ""},
		{"null members", "application/json", `{"customer_id":null,"items":[{"quantity":null}]}`, 0, "", ""},
		{"wrong content type", "text/plain", `{}`, 415, "Content-Type", "must be application/json"},
		{"missing content type", "", `{}`, 415, "Content-Type", "must be application/json"},
		{"empty body", "application/json", ``, 400, BodyField, "is required: a JSON object"},
		{"syntax error", "application/json", `{"customer_id":}`, 400, BodyField, "is not valid JSON: syntax error at byte 16"},
		{"cut short", "application/json", `{"customer_id":"c"`, 400, BodyField, "is not valid JSON: it ends too early"},
		{"nested too deeply", "application/json", `{"items":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, 400, BodyField, "is not valid JSON: nested more than 10000 levels deep at byte 10009"},
		{"two values", "application/json", `{} {}`, 400, BodyField, "must hold a single JSON object, with nothing after it"},
		{"trailing garbage", "application/json", `{}x`, 400, BodyField, "must hold a single JSON object, with nothing after it"},
		{"too large", "application/json", `{"customer_id":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, BodyField, "must be at most 65536 bytes (64 KiB)"},

		// The body itself of the wrong type.
		{"body an array", "application/json", `[{"customer_id":"c"}]`, 400, BodyField, "must be a JSON object"},
		{"body a string", "application/json", `"c"`, 400, BodyField, "must be a JSON object"},
		{"body a number", "application/json", ` 7 `, 400, BodyField, "must be a JSON object"},
		{"body null", "application/json", `null`, 400, BodyField, "must be a JSON object"},

		// A field of the wrong type: its path and what it must be.
		{"number for a string", "application/json", `{"customer_id":7}`, 400, "customer_id", "must be a string"},
		{"object for a string", "application/json", `{"customer_id":{"id":"c"}}`, 400, "customer_id", "must be a string"},
		{"array for a string", "application/json", `{"customer_id":["c"]}`, 400, "customer_id", "must be a string"},
		{"string for a whole number", "application/json", `{"items":[{"quantity":"1"}]}`, 400, "items[0].quantity", "must be a whole number"},
		{"bool for a whole number", "application/json", `{"items":[{"quantity":true}]}`, 400, "items[0].quantity", "must be a whole number"},
		{"fraction", "application/json", `{"items":[{"quantity":1.5}]}`, 400, "items[0].quantity", "must be a whole number"},
		{"beyond any number", "application/json", `{"items":[{"quantity":1e400}]}`, 400, "items[0].quantity", "must be a whole number"},
		{"whole but too large", "application/json", `{"items":[{"quantity":99999999999999999999}]}`, 400, "items[0].quantity", "is out of range"},
		{"whole but too small", "application/json", `{"items":[{"quantity":-99999999999999999999}]}`, 400, "items[0].quantity", "is out of range"},
		{"the second item", "application/json", `{"items":[{"sku":"A","quantity":1},{"sku":"B","quantity":"2"}]}`, 400, "items[1].quantity", "must be a whole number"},
		{"the first of two errors", "application/json", `{"items":[{"sku":"A","quantity":1},{"sku":7},{"sku":"B","quantity":"2"}]}`, 400, "items[1].sku", "must be a string"},
		{"space around the value", "application/json", "{ \"items\" : [ {}, { \"quantity\" : \"1\" } ] }", 400, "items[1].quantity", "must be a whole number"},
		{"nested objects before", "application/json", `{"items":[{"sku":"A"},{},{"quantity":{"n":1}}]}`, 400, "items[2].quantity", "must be a whole number"},
		{"string for an array", "application/json", `{"items":"MUG"}`, 400, "items", "must be an array of JSON objects"},
		{"object for an array", "application/json", `{"items":{"sku":"A"}}`, 400, "items", "must be an array of JSON objects"},
		{"string for an item", "application/json", `{"items":["MUG"]}`, 400, "items[0]", "must be a JSON object"},
		{"array for an item", "application/json", `{"items":[{"sku":"A"},[1]]}`, 400, "items[1]", "must be a JSON object"},

		// A field the API does not have: its path.
		{"unknown field", "application/json", `{"customer_id":"c","password":"x"}`, 400, "password", "is not a field of this API"},
		{"unknown field in an item", "application/json", `{"items":[{"sku":"A"},{"sku":"B","price":0}]}`, 400, "items[1].price", "is not a field of this API"},
		{"unknown field after others", "application/json", `{"customer_id":"c","items":[{"sku":"A","quantity":1}],"coupon":{"code":"x"}}`, 400, "coupon", ""},
		{"unknown field with a dot", "application/json", `{"a.b":1}`, 400, `["a.b"]`, ""},

		// Names are exact, and each is given once: encoding/json alone would
		// take the last value and match any case.
		{"field in another case", "application/json", `{"Customer_ID":"c"}`, 400, "Customer_ID", "is not a field of this API; names are case-sensitive: did you mean customer_id?"},
		{"item field in another case", "application/json", `{"items":[{"sku":"A"},{"SKU":"B","quantity":1}]}`, 400, "items[1].SKU", "is not a field of this API; names are case-sensitive: did you mean sku?"},
		{"case before a type error", "application/json", `{"Items":[{"Quantity":"1"}]}`, 400, "Items", ""},
		{"duplicate field", "application/json", `{"customer_id":"a","customer_id":"b"}`, 400, "customer_id", "appears more than once in its object; give each field once"},
		{"duplicate field in an item", "application/json", `{"items":[{"sku":"A"},{"quantity":1,"sku":"B","quantity":2}]}`, 400, "items[1].quantity", "appears more than once in its object; give each field once"},
		{"duplicate unknown field", "application/json", `{"x":1,"x":2}`, 400, "x", "appears more than once in its object; give each field once"},
		{"same name in sibling objects", "application/json", `{"items":[{"sku":"A","quantity":1},{"sku":"B","quantity":1}]}`, 0, "", ""},
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
			if len(p.Errors) != 1 || p.Errors[0].Field != tt.wantField || tt.wantReason != "" && p.Errors[0].Reason != tt.wantReason {
				t.Errorf("errors = %+v, want field %q reason %q", p.Errors, tt.wantField, tt.wantReason)
			}
			for _, e := range p.Errors {
				for _, goWords := range []string{"int", "struct", "slice", "float", "map[", "main.", "httpx."} {
					if strings.Contains(e.Reason, goWords) {
						t.Errorf("reason %q speaks Go (%q)", e.Reason, goWords)
					}
				}
			}
		})
	}
}

// Paths are found in types other than the order too: embedded structs,
// maps, pointers, and the reasons for the other kinds of Go value.
func TestDecodeJSONPaths(t *testing.T) {
	type Address struct {
		Lines []string `json:"lines"`
	}
	type Meta struct {
		Note string `json:"note"`
	}
	type doc struct {
		Meta                         // embedded: its fields are doc's
		Addresses map[string]Address `json:"addresses"`
		Primary   *Address           `json:"primary"`
		Weight    float64            `json:"weight"`
		Gift      bool               `json:"gift"`
		Count     uint               `json:"count"`
		Tags      []int              `json:"tags"`
		Skip      string             `json:"-"`
	}
	tests := []struct {
		body       string
		wantField  string
		wantReason string
	}{
		{`{"note":"n","addresses":{"home":{"lines":["a",7]}}}`, "addresses.home.lines[1]", "must be a string"},
		{`{"addresses":{"home":{"lines":["a"],"zip":"1"}}}`, "addresses.home.zip", "is not a field of this API"},
		{`{"addresses":{"my home":{"lines":"a"}}}`, `addresses["my home"].lines`, "must be an array of strings"},
		{`{"primary":{"lines":[],"city":"x"}}`, "primary.city", "is not a field of this API"},
		{`{"note":1}`, "note", "must be a string"},
		{`{"Skip":"x"}`, "Skip", "is not a field of this API"},
		{`{"weight":"heavy"}`, "weight", "must be a number"},
		{`{"gift":"yes"}`, "gift", "must be true or false"},
		{`{"count":-1}`, "count", "must be a whole number, 0 or more"},
		{`{"tags":[1,"2"]}`, "tags[1]", "must be a whole number"},
		{`{"tags":"1,2"}`, "tags", "must be an array of whole numbers"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json")
			var dst doc
			p, ok := DecodeJSON(httptest.NewRecorder(), r, &dst).(*Problem)
			if !ok || len(p.Errors) != 1 || p.Errors[0] != (FieldError{tt.wantField, tt.wantReason}) {
				t.Errorf("problem %+v, want field %q reason %q", p, tt.wantField, tt.wantReason)
			}
		})
	}
}

func TestFieldPath(t *testing.T) {
	tests := []struct {
		segments []any
		want     string
	}{
		{nil, ""},
		{[]any{"customer_id"}, "customer_id"},
		{[]any{"items", 0, "quantity"}, "items[0].quantity"},
		{[]any{"items", 12}, "items[12]"},
		{[]any{"a", 0, 1, "b-c_d"}, "a[0][1].b-c_d"},
		{[]any{"a.b", "c"}, `["a.b"].c`},
		{[]any{"m", "", "x"}, `m[""].x`},
	}
	for _, tt := range tests {
		if got := FieldPath(tt.segments...); got != tt.want {
			t.Errorf("FieldPath(%v) = %q, want %q", tt.segments, got, tt.want)
		}
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

// With tracing off (a no-op tracer provider, as OTEL_TRACES_EXPORTER=none
// installs) and no traceparent from the client, TraceContext still gives the
// request a trace ID: in the problem's trace_id, the traceresponse header,
// and the traceparent of a call the request makes.
func TestTraceContextWithTracingOff(t *testing.T) {
	tracer := tracenoop.NewTracerProvider().Tracer("t")
	var forwarded propagation.MapCarrier
	h := TraceContext(Recover(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As the no-op tracer provider's middleware and client transport do.
		ctx, span := tracer.Start(r.Context(), "client")
		forwarded = propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, forwarded)
		span.End()
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		WriteProblem(w, r, Invalid(FieldError{Field: "items", Reason: "must hold 1 to 50 items"}))
	})))

	for _, path := range []string{"/orders", "/panic"} {
		t.Run(path, func(t *testing.T) {
			w := httptest.NewRecorder()
			ctx, span := tracer.Start(t.Context(), "server") // no parent: an invalid span context
			h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, nil).WithContext(ctx))
			span.End()

			var p Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if len(p.TraceID) != 32 || p.TraceID == strings.Repeat("0", 32) {
				t.Fatalf("trace_id = %q, want a trace ID; body %s", p.TraceID, w.Body)
			}
			if tr := w.Header().Get("traceresponse"); !strings.HasPrefix(tr, "00-"+p.TraceID+"-") || !strings.HasSuffix(tr, "-01") {
				t.Errorf("traceresponse = %q, want the trace %s", tr, p.TraceID)
			}
			if tp := forwarded["traceparent"]; !strings.HasPrefix(tp, "00-"+p.TraceID+"-") || !strings.HasSuffix(tp, "-01") {
				t.Errorf("traceparent passed on = %q, want the trace %s, sampled", tp, p.TraceID)
			}
		})
	}

	t.Run("a new trace per request", func(t *testing.T) {
		seen := map[string]bool{}
		for range 20 {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/orders", nil))
			var p Problem
			_ = json.Unmarshal(w.Body.Bytes(), &p)
			if seen[p.TraceID] {
				t.Fatalf("trace_id %s given twice", p.TraceID)
			}
			seen[p.TraceID] = true
		}
	})
}

// A trace context that came in (or that the SDK started) is kept, and health
// checks get none.
func TestTraceContextKeepsTheTrace(t *testing.T) {
	var got trace.SpanContext
	h := TraceContext(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = trace.SpanContextFromContext(r.Context())
	}))

	ctx, span := sdktrace.NewTracerProvider().Tracer("t").Start(t.Context(), "server")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/orders/1", nil).WithContext(ctx))
	span.End()
	if !got.Equal(span.SpanContext()) || w.Header().Get("traceresponse") != "" {
		t.Errorf("span context %v, traceresponse %q; want the request's own %v and no header of TraceContext's", got, w.Header().Get("traceresponse"), span.SpanContext())
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if got.IsValid() || w.Header().Get("traceresponse") != "" {
			t.Errorf("%s got a trace context %v", path, got)
		}
	}
}

// A problem's size does not grow with the request behind it: many errors,
// and long or hostile texts, still encode within MaxProblemBytes, as valid
// JSON that ends in one entry counting what was left out.
func TestProblemBound(t *testing.T) {
	hostile := strings.Repeat(`"\<&`+"\x00\xff\u2028", 4<<10)
	tests := []struct {
		name        string
		fields      int
		text        string
		wantErrors  int
		wantOmitted string // "": no omitted entry
	}{
		{"few errors", 3, "is required", 3, ""},
		{"exactly the cap", MaxFieldErrors, "is required", MaxFieldErrors, ""},
		{"one over the cap", MaxFieldErrors + 1, "is required", MaxFieldErrors + 1, "1 more not listed; correct these and send the request again"},
		{"thousands of hostile errors", 5000, hostile, MaxFieldErrors + 1, "4980 more not listed; correct these and send the request again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields := make([]FieldError, tt.fields)
			for i := range fields {
				fields[i] = FieldError{Field: tt.text, Reason: tt.text}
			}
			p := NewProblem(http.StatusUnprocessableEntity, tt.text, tt.text, fields...)
			body := ProblemBody(httptest.NewRequest(http.MethodPost, "/", nil), p)
			if len(body) > MaxProblemBytes {
				t.Errorf("problem is %d bytes, want at most %d", len(body), MaxProblemBytes)
			}
			var got Problem
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("problem is not JSON: %v", err)
			}
			if len(got.Errors) != tt.wantErrors {
				t.Fatalf("%d errors, want %d", len(got.Errors), tt.wantErrors)
			}
			last := got.Errors[len(got.Errors)-1]
			if omitted := last.Field == OmittedField; omitted != (tt.wantOmitted != "") || omitted && last.Reason != tt.wantOmitted {
				t.Errorf("last entry = %+v, want omitted %q", last, tt.wantOmitted)
			}
			if got.Type == "" || got.Status != http.StatusUnprocessableEntity {
				t.Errorf("type %q status %d, want a type and 422", got.Type, got.Status)
			}
		})
	}
}

// DecodeJSONBody returns the object as sent, which a proxy forwards: never
// longer than what it accepted, however much a re-encoding would escape.
func TestDecodeJSONBody(t *testing.T) {
	sent := `{"customer_id":"c<&>` + "\u2028" + `","items":[ {"sku":"A","quantity":1} ]}`
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(" "+sent+"\n"))
	r.Header.Set("Content-Type", "application/json")
	var dst order
	got, err := DecodeJSONBody(httptest.NewRecorder(), r, &dst)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != sent {
		t.Errorf("body = %s, want %s", got, sent)
	}
	if dst.CustomerID != "c<&>\u2028" || len(dst.Items) != 1 {
		t.Errorf("decoded %+v", dst)
	}
}

func TestProblemLogAttrs(t *testing.T) {
	invalid := Invalid(FieldError{Field: "items[0].sku", Reason: "is not in the catalogue"})
	if got := fmt.Sprint(invalid.LogAttrs()); got != "[status 422 title Invalid request field items[0].sku reason is not in the catalogue]" {
		t.Errorf("422: %s", got)
	}
	// A 400's path may be a key the client made up: it is never logged.
	malformed := NewProblem(http.StatusBadRequest, "Malformed JSON", "the body has a field this API does not know",
		FieldError{Field: "card_4111111111111111", Reason: "is not a field of this API"})
	if got := fmt.Sprint(malformed.LogAttrs()); strings.Contains(got, "4111") || !strings.Contains(got, "reason is not a field of this API") {
		t.Errorf("400: %s", got)
	}
}
