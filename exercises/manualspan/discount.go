//go:build !solution

// Package manualspan is the exercise of docs/workshop/03-manual-spans.md:
// give Discount a span of its own.
//
//	make exercise        runs the tests against your code
//	make test            runs them against the solution (solution.go)
package manualspan

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/trace"
)

// ErrUnknownCustomer is returned for a customer without an account.
var ErrUnknownCustomer = errors.New("unknown customer")

// Discount returns the loyalty discount, in cents, of an order of totalCents
// by customerID: 10% for loyal customers.
func Discount(ctx context.Context, tracer trace.Tracer, customerID string, totalCents int64) (int64, error) {
	// TODO(workshop 3): start a span named "order.apply_discount" here, with
	// the attribute customer.id, and end it when the function returns.

	if customerID == "" {
		// TODO(workshop 3): record the error on the span and set its status
		// to Error.
		return 0, ErrUnknownCustomer
	}
	discount := int64(0)
	if loyal(customerID) {
		discount = totalCents / 10
	}
	// TODO(workshop 3): set the attribute discount.cents to the discount.
	return discount, nil
}

func loyal(customerID string) bool { return len(customerID) > 0 && customerID[0] == 'l' }
