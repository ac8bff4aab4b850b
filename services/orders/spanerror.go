package main

// How the service's hand-made spans (process.go, payment.go, outbox.go)
// record an error, and with which error.type.

import (
	"context"
	"errors"
	"slices"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// recordError records err on span. A refused order (unknown SKU, no stock)
// is the client's doing: it is recorded as an event but leaves the status
// alone, so error rates count only real failures. A failure also gets its
// error.type (errorType).
func recordError(span trace.Span, err error) {
	if err == nil {
		return
	}
	if slices.ContainsFunc([]error{ErrUnknownSKU, ErrOutOfStock}, func(e error) bool { return errors.Is(err, e) }) {
		span.RecordError(err)
		return
	}
	telemetry.Fail(span, err, errorType(err))
}

// errorType classes a failure for the error.type attribute: one word per
// cause the service knows, so failures can be counted by cause.
func errorType(err error) string {
	switch {
	case errors.Is(err, ErrPaymentDeclined):
		return "payment_declined"
	case errors.Is(err, ErrPaymentUnavailable), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, orderevents.ErrNotConfirmed), errors.Is(err, orderevents.ErrNotRouted), errors.Is(err, orderevents.ErrBrokerBlocked):
		return "publish_failed"
	case errors.Is(err, ErrUnavailable):
		return "dependency_unavailable"
	default:
		return "" // _OTHER
	}
}
