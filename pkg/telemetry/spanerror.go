package telemetry

import (
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Fail marks span as a failed operation, as the conventions ask of every
// failure: the exception event, ERROR status, and error.type, a short
// low-cardinality class of the failure ("timeout", "payment_declined") that
// dashboards can group by, where the message is free text that cannot be.
func Fail(span trace.Span, err error, errorType string) {
	if err == nil {
		return
	}
	if errorType == "" {
		errorType = semconv.ErrorTypeOther.Value.AsString()
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	span.SetAttributes(semconv.ErrorTypeKey.String(errorType))
}
