//go:build solution

// Package manualspan is the exercise of docs/workshop/03-manual-spans.md;
// this file is its solution.
package manualspan

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// ErrUnknownCustomer is returned for a customer without an account.
var ErrUnknownCustomer = errors.New("unknown customer")

// Discount returns the loyalty discount, in cents, of an order of totalCents
// by customerID: 10% for loyal customers.
func Discount(ctx context.Context, tracer trace.Tracer, customerID string, totalCents int64) (discount int64, err error) {
	_, span := tracer.Start(ctx, "order.apply_discount", trace.WithAttributes(attribute.String("customer.id", customerID)))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()

	if customerID == "" {
		return 0, ErrUnknownCustomer
	}
	if loyal(customerID) {
		discount = totalCents / 10
	}
	span.SetAttributes(attribute.Int64("discount.cents", discount))
	return discount, nil
}

func loyal(customerID string) bool { return len(customerID) > 0 && customerID[0] == 'l' }
