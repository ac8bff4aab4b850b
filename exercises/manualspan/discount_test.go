//go:build solution || exercise

package manualspan

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// The checks of the exercise: `make exercise` runs them against your code.

func discount(t *testing.T, customerID string) (got int64, span, parent sdktrace.ReadOnlySpan, err error) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("exercise")
	ctx, root := tracer.Start(context.Background(), "order.process")
	got, err = Discount(ctx, tracer, customerID, 5000)
	root.End()
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "order.apply_discount":
			span = s
		case "order.process":
			parent = s
		}
	}
	if span == nil {
		t.Fatalf("no span named order.apply_discount was ended; spans: %d", len(rec.Ended()))
	}
	return got, span, parent, err
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

func TestTheSpanIsAChildOfTheCallersSpan(t *testing.T) {
	_, span, parent, _ := discount(t, "loyal-1")
	if span.Parent().SpanID() != parent.SpanContext().SpanID() || span.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Error("order.apply_discount is not a child of the caller's span: start it from the ctx you were given")
	}
}

func TestTheSpanSaysWhoAndHowMuch(t *testing.T) {
	got, span, _, err := discount(t, "loyal-1")
	if got != 500 || err != nil {
		t.Fatalf("Discount = %d, %v; want 500 (the code's behaviour must not change)", got, err)
	}
	if attr(span, "customer.id") != "loyal-1" || attr(span, "discount.cents") != "500" {
		t.Errorf("attributes customer.id=%q discount.cents=%q; want loyal-1 and 500", attr(span, "customer.id"), attr(span, "discount.cents"))
	}
	if span.Status().Code == codes.Error {
		t.Error("a successful discount left the span's status at Error")
	}
}

func TestAnErrorMarksTheSpan(t *testing.T) {
	_, span, _, err := discount(t, "")
	if !errors.Is(err, ErrUnknownCustomer) {
		t.Fatalf("err = %v, want ErrUnknownCustomer", err)
	}
	recorded := false
	for _, e := range span.Events() {
		recorded = recorded || e.Name == "exception"
	}
	if span.Status().Code != codes.Error || !recorded {
		t.Errorf("status %v, exception event %v; want Error and the error recorded", span.Status().Code, recorded)
	}
}
