package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Payment errors, as the provider reports them.
var (
	ErrPaymentDeclined    = errors.New("payment declined")
	ErrPaymentUnavailable = errors.New("payment provider unavailable")
)

// PaymentProvider simulates a remote card processor: each charge takes
// Latency and a FailureRate share of charges is declined. It never sees card
// data: the suite charges an order, not a card.
type PaymentProvider struct {
	Latency     time.Duration
	FailureRate float64
}

// Charge charges amountCents for the order, or returns why it could not.
func (p PaymentProvider) Charge(ctx context.Context, orderID string, amountCents int64, currency string) error {
	select {
	case <-time.After(p.Latency):
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return errors.Join(ErrPaymentUnavailable, ctx.Err())
		}
		return ctx.Err()
	}
	if rand.Float64() < p.FailureRate {
		return ErrPaymentDeclined
	}
	return nil
}
