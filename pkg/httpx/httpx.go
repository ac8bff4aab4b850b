// Package httpx holds the suite's few HTTP conventions: strict JSON decoding,
// JSON encoding, and RFC 9457 problem responses that carry the trace ID.
package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// MaxBodyBytes bounds every JSON request body in the suite.
const MaxBodyBytes = 64 << 10

// FieldError names one invalid field and why, in words a client can act on.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
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

// NewProblem returns a problem whose type is derived from its title.
func NewProblem(status int, title, detail string, fields ...FieldError) *Problem {
	slug := strings.ReplaceAll(strings.ToLower(title), " ", "-")
	return &Problem{Type: "/problems/" + slug, Title: title, Status: status, Detail: detail, Errors: fields}
}

// Invalid is the 422 answer for values that parse but make no sense.
func Invalid(fields ...FieldError) *Problem {
	return NewProblem(http.StatusUnprocessableEntity, "Invalid request", "one or more fields have invalid values", fields...)
}

// DecodeJSON reads exactly one JSON object into dst. It refuses a content type
// other than application/json (415), a body over MaxBodyBytes (413), unknown
// fields, wrong types, trailing data and malformed JSON (400), each as a
// *Problem that names the field when there is one.
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return NewProblem(http.StatusUnsupportedMediaType, "Unsupported media type",
			"the body must be application/json", FieldError{Field: "Content-Type", Reason: "must be application/json"})
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body must hold a single JSON object")
	}
	return nil
}

func decodeProblem(err error) *Problem {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		tooBig    *http.MaxBytesError
	)
	switch {
	case errors.As(err, &tooBig):
		return NewProblem(http.StatusRequestEntityTooLarge, "Body too large",
			fmt.Sprintf("the body must be at most %d bytes", tooBig.Limit))
	case errors.As(err, &syntaxErr):
		return NewProblem(http.StatusBadRequest, "Malformed JSON", fmt.Sprintf("syntax error at byte %d", syntaxErr.Offset))
	case errors.As(err, &typeErr):
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "a field has the wrong type",
			FieldError{Field: typeErr.Field, Reason: "must be a " + typeErr.Type.Kind().String()})
	case errors.Is(err, io.EOF):
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body ends too early")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body has a field this API does not know",
			FieldError{Field: field, Reason: "unknown field"})
	default:
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body is not valid JSON")
	}
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

// ProblemBody returns p as JSON, stamped with the current trace ID.
func ProblemBody(r *http.Request, p *Problem) []byte {
	if sc := trace.SpanFromContext(r.Context()).SpanContext(); sc.IsValid() {
		p.TraceID = sc.TraceID().String()
	}
	b, _ := json.Marshal(p)
	return append(b, '\n')
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
