// Package httpx holds the suite's few HTTP conventions: strict JSON decoding
// (decode.go), JSON encoding, RFC 9457 problem responses that carry the trace
// ID, and the HTTP server's start and stop (server.go).
package httpx

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// MaxBodyBytes bounds every JSON request body in the suite.
const MaxBodyBytes = 64 << 10

// BodyField is the field a FieldError names when the problem is the request
// body as a whole (not JSON, not an object, too large, ...): a name no field
// of the API can have.
const BodyField = "(body)"

// FieldError names one invalid field and why, in words a client can act on.
// Field is a path into the JSON body written as in JavaScript, with names
// between dots and array indices in brackets (items[0].quantity; see
// FieldPath), BodyField for the body itself, or the name of a header or path
// parameter (Idempotency-Key, id).
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// FieldPath writes the path to a field of the JSON body, in the one style
// every problem of the suite uses: FieldPath("items", 0, "quantity") is
// "items[0].quantity". A name that is not a plain identifier (letters,
// digits, '_' and '-') is written as a quoted index: a["odd.name"].
func FieldPath(segments ...any) string {
	var b strings.Builder
	for _, s := range segments {
		switch s := s.(type) {
		case int:
			b.WriteString("[" + strconv.Itoa(s) + "]")
		case string:
			switch {
			case !plainName(s):
				b.WriteString("[" + strconv.Quote(s) + "]")
			case b.Len() > 0:
				b.WriteString("." + s)
			default:
				b.WriteString(s)
			}
		default:
			panic(fmt.Sprintf("httpx.FieldPath: segment %v is neither a name nor an index", s))
		}
	}
	return b.String()
}

func plainName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Problem is an application/problem+json body (RFC 9457).
type Problem struct {
	Type    string       `json:"type"`
	Title   string       `json:"title"`
	Status  int          `json:"status"`
	Detail  string       `json:"detail,omitempty"`
	Errors  []FieldError `json:"errors,omitempty"`
	TraceID string       `json:"trace_id,omitempty"`
}

// Error lets a Problem travel as an error to the one place that writes it.
func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

// LogAttrs are what a log line about a refused request says of p, as slog
// key-value pairs: its status, title and first reason, all the suite's own
// words. The first field is named too, except in a 400 (a malformed body),
// whose paths may hold keys the client made up; no value the client sent is
// ever logged.
func (p *Problem) LogAttrs() []any {
	attrs := []any{"status", p.Status, "title", p.Title}
	if len(p.Errors) > 0 {
		if p.Status != http.StatusBadRequest {
			attrs = append(attrs, "field", p.Errors[0].Field)
		}
		attrs = append(attrs, "reason", p.Errors[0].Reason)
	}
	return attrs
}

// The bounds of a problem, so that its size never grows with the request
// that caused it: at most MaxFieldErrors errors, then one entry that names
// OmittedField and says how many more there were, and every text clipped.
// With its texts' characters each encoded in at most two bytes (ProblemBody),
// a problem is at most MaxProblemBytes of JSON.
const (
	MaxFieldErrors  = 20
	MaxProblemBytes = 16 << 10

	maxTitleBytes  = 128 // title, and field names
	maxReasonBytes = 200 // detail, and reasons
)

// OmittedField is the field of the entry that ends a problem's errors when
// there were more than MaxFieldErrors: like BodyField, a name no field of
// the API can have.
const OmittedField = "(omitted)"

// NewProblem returns a problem whose type is derived from its title, within
// the bounds above.
func NewProblem(status int, title, detail string, fields ...FieldError) *Problem {
	title = clip(title, maxTitleBytes)
	slug := strings.ReplaceAll(strings.ToLower(title), " ", "-")
	errs := make([]FieldError, 0, min(len(fields), MaxFieldErrors+1))
	for i, f := range fields {
		if i == MaxFieldErrors {
			errs = append(errs, FieldError{Field: OmittedField,
				Reason: fmt.Sprintf("%d more not listed; correct these and send the request again", len(fields)-i)})
			break
		}
		errs = append(errs, FieldError{Field: clip(f.Field, maxTitleBytes), Reason: clip(f.Reason, maxReasonBytes)})
	}
	if len(errs) == 0 {
		errs = nil
	}
	return &Problem{Type: "/problems/" + slug, Title: title, Status: status, Detail: clip(detail, maxReasonBytes), Errors: errs}
}

// clip returns s as valid UTF-8 without control characters (each of which
// JSON would write as six bytes), cut to at most n bytes with an ellipsis.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// Invalid is the 422 answer for values that parse but make no sense.
func Invalid(fields ...FieldError) *Problem {
	return NewProblem(http.StatusUnprocessableEntity, "Invalid request", "one or more fields have invalid values", fields...)
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteProblem writes p, stamped with the current trace ID so a client can
// open the trace. Server-side failures (5xx) and failed payments (402) mark
// the current span as an error: the request failed, not the client.
func WriteProblem(w http.ResponseWriter, r *http.Request, p *Problem) {
	span := trace.SpanFromContext(r.Context())
	if p.Status >= 500 || p.Status == http.StatusPaymentRequired {
		span.SetStatus(codes.Error, p.Title)
	}
	WriteRaw(w, p.Status, ProblemBody(r, p))
}

// ProblemBody returns p as JSON, stamped with the current trace ID. Behind
// TraceContext (which every service installs after its tracing middleware)
// a request always has one.
func ProblemBody(r *http.Request, p *Problem) []byte {
	if sc := trace.SpanFromContext(r.Context()).SpanContext(); sc.IsValid() {
		p.TraceID = sc.TraceID().String()
	}
	// Without HTML escaping, '<', '>' and '&' take one byte each, not six:
	// part of what keeps a problem within MaxProblemBytes.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(p)
	return b.Bytes()
}

// WriteRaw writes an already encoded JSON body: a problem for a status of
// 400 and above, a plain JSON document otherwise.
func WriteRaw(w http.ResponseWriter, status int, body []byte) {
	ct := "application/json"
	if status >= 400 {
		ct = "application/problem+json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// TraceContext gives a request that has no trace context one of its own: a
// new trace ID and span ID, in a span that records nothing. Install it after
// the tracing middleware. With tracing on, the SDK has already started a
// span for every request and TraceContext does nothing; with tracing off
// (OTEL_TRACES_EXPORTER=none, a no-op tracer provider) and no traceparent
// from the client, it is what gives the request a trace ID: in its answer's
// trace_id and traceresponse header, in its log lines, and in the
// traceparent of every call it makes, which the services behind continue.
// The new context is marked sampled, so that a service behind that does
// trace records its spans, as it would have for a request of its own.
// Health checks (/healthz, /readyz) are left alone: they are never traced.
func TraceContext(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if trace.SpanContextFromContext(r.Context()).IsValid() || r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		sc := newSpanContext()
		if w.Header().Get("traceresponse") == "" {
			w.Header().Set("traceresponse", "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-"+sc.TraceFlags().String())
		}
		next.ServeHTTP(w, r.WithContext(trace.ContextWithSpanContext(r.Context(), sc)))
	})
}

// newSpanContext returns a span context with random, valid IDs.
func newSpanContext() trace.SpanContext {
	var tid trace.TraceID
	var sid trace.SpanID
	for !tid.IsValid() {
		binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
		binary.BigEndian.PutUint64(tid[8:], rand.Uint64())
	}
	for !sid.IsValid() {
		binary.BigEndian.PutUint64(sid[:], rand.Uint64())
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
}
