package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ordertrace/ordertrace/pkg/scenario"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Service places orders: it checks stock, prices the order, charges the
// payment, and stores the order with its message, each step a span of its own.
type Service struct {
	store    *Store
	cache    *Cache
	payments PaymentProvider
	timeout  time.Duration // of one charge
	flags    scenario.Switches

	// paymentLock is taken around each charge only in the order-lock
	// scenario: a lock that serialises every order.
	paymentLock sync.Mutex
	prop        propagation.TextMapPropagator
	tracer      trace.Tracer
	log         *slog.Logger
}

// Below, the rest of what the handlers ask of the service; PlaceOrder is in
// process.go. A failing store is ErrUnavailable here, so the handlers deal
// in the service's errors only.

// Products lists the catalogue.
func (s *Service) Products(ctx context.Context) ([]Product, error) {
	products, err := s.store.Products(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return products, nil
}

// Order reads one order with its lines, or returns ErrOrderNotFound.
func (s *Service) Order(ctx context.Context, id string) (Order, error) {
	order, err := s.store.GetOrder(ctx, id)
	if err != nil && !errors.Is(err, ErrOrderNotFound) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return order, err
}

// ClaimKey claims k for a request, as Store.ClaimKey does: the stored answer
// of a twin answered before, ErrKeyReused, ErrKeyInFlight, or the key.
func (s *Service) ClaimKey(ctx context.Context, k IdempotencyKey) (*Answer, error) {
	answer, err := s.store.ClaimKey(ctx, k)
	if err != nil && !errors.Is(err, ErrKeyReused) && !errors.Is(err, ErrKeyInFlight) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return answer, err
}

// ReleaseKey frees the key of a request that placed no order.
func (s *Service) ReleaseKey(ctx context.Context, k IdempotencyKey) error {
	return s.store.ReleaseKey(ctx, k)
}

// Ping checks that PostgreSQL answers, all the service needs to take orders.
func (s *Service) Ping(ctx context.Context) error { return s.store.Ping(ctx) }

// Scenarios answers the workshop's switches as they are loaded.
func (s *Service) Scenarios() http.HandlerFunc { return s.flags.Handler() }
