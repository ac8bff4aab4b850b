package main

// The payment step of order.process: chargePayment charges the order and
// retries a charge that timed out, each attempt a CLIENT span (chargeOnce),
// with a simulated provider (PaymentProvider) on the other end.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/ordertrace/ordertrace/pkg/scenario"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Payment errors, as the provider reports them.
var (
	ErrPaymentDeclined    = errors.New("payment declined")
	ErrPaymentUnavailable = errors.New("payment provider unavailable")
)

// A charge that times out is tried again, up to paymentAttempts in all, after
// paymentBackoff, then twice that. The provider charges an order once,
// whatever the number of attempts (the order ID is its idempotency key).
const (
	paymentAttempts = 3
	paymentBackoff  = 100 * time.Millisecond
)

// chargePayment charges the order, trying again when the provider does not
// answer in time. Each attempt is a span of its own.
func (s *Service) chargePayment(ctx context.Context, order Order) (err error) {
	provider := s.payments
	provider.FailureRate = max(provider.FailureRate, s.flags.Number(ctx, scenario.PaymentFailures))
	if s.flags.On(ctx, scenario.PaymentTimeouts) {
		provider.Latency = time.Minute // workshop scenario: the provider hangs
	}
	for attempt := 1; ; attempt++ {
		err = s.chargeOnce(ctx, provider, order, attempt)
		if !errors.Is(err, ErrPaymentUnavailable) || attempt == paymentAttempts {
			return err
		}
		select {
		case <-time.After(paymentBackoff << (attempt - 1)):
		case <-ctx.Done():
			return err
		}
	}
}

// chargeOnce is one call to the payment provider: a remote call, so a CLIENT
// span, bounded by the payment timeout.
func (s *Service) chargeOnce(ctx context.Context, provider PaymentProvider, order Order, attempt int) (err error) {
	ctx, span := s.tracer.Start(ctx, "order.charge_payment",
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("payment.provider", "simulated"),
			attribute.Int64("payment.amount_cents", order.TotalCents),
			attribute.String("payment.currency", order.Currency),
			attribute.Int("payment.attempt", attempt),
		))
	defer func() {
		recordError(span, err)
		span.End()
	}()
	if s.flags.On(ctx, scenario.OrderLock) {
		// Workshop scenario: one lock around every charge, so orders wait
		// for each other, and each charge span includes that wait.
		s.paymentLock.Lock()
		defer s.paymentLock.Unlock()
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := provider.Charge(ctx, order.ID, order.TotalCents, order.Currency); err != nil {
		return fmt.Errorf("charge order: %w", err)
	}
	return nil
}

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
