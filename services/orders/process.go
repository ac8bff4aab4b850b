package main

// order.process: placing an order, each business step a span of its own.
// The inventory is checked and the order priced here, through the cache; the
// charge is in payment.go, and the order.created message in outbox.go.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/ordertrace/ordertrace/pkg/catalogcache"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

// Reasons an order is refused; the handler maps each to an HTTP problem.
var (
	ErrUnknownSKU  = errors.New("unknown sku")
	ErrOutOfStock  = errors.New("not enough stock")
	ErrUnavailable = errors.New("a dependency is unavailable")
)

// itemError says which line of the order was refused.
type itemError struct {
	Field string // httpx.FieldPath("items", 2, "sku"): "items[2].sku"
	Err   error
}

func (e *itemError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *itemError) Unwrap() error { return e.Err }

const (
	currency = "EUR"
	priceTTL = 5 * time.Minute

	// placeTimeout bounds charging, storing and publishing one order.
	placeTimeout = 15 * time.Second
)

// PlaceOrder runs order.process for a validated request. With an
// Idempotency-Key (claimed by the caller), the answer is recorded in the
// order's own transaction. answer makes it from the order: the caller hands
// it in, since only the handler knows the HTTP answer, and it must be stored
// before PlaceOrder returns.
func (s *Service) PlaceOrder(ctx context.Context, req PlaceOrderRequest, idem *IdempotencyKey, answer func(Order) Answer) (order Order, err error) {
	// The tenant arrives as baggage set by the gateway, and becomes an
	// attribute here so it can be searched for in the trace.
	tenant := baggage.FromContext(ctx).Member("tenant.id").Value()
	order = Order{
		ID:         uuid.Must(uuid.NewV7()).String(),
		CustomerID: req.CustomerID,
		TenantID:   tenant,
		Status:     "pending",
		Currency:   currency,
	}
	name := "order.process"
	if s.flags.On(ctx, scenario.SpanNamePerOrder) {
		name += " " + order.ID // workshop scenario: one span name per order
	}
	ctx, span := s.tracer.Start(ctx, name, trace.WithAttributes(
		attribute.String("order.id", order.ID),
		attribute.String("customer.id", order.CustomerID),
		attribute.Int("order.item_count", len(req.Items)),
	))
	if tenant != "" {
		span.SetAttributes(attribute.String("tenant.id", tenant))
	}
	if id := baggage.FromContext(ctx).Member("request.id").Value(); id != "" {
		span.SetAttributes(attribute.String("request.id", id))
	}
	defer func() {
		recordError(span, err)
		span.End()
	}()
	order.TraceID = span.SpanContext().TraceID().String()

	skus := make([]string, len(req.Items))
	for i, it := range req.Items {
		skus[i] = it.SKU
	}
	if err := s.validateInventory(ctx, req.Items, skus); err != nil {
		return order, err
	}
	if order.Items, order.TotalCents, err = s.calculatePricing(ctx, req.Items, skus); err != nil {
		return order, err
	}
	span.SetAttributes(attribute.Int64("order.total_cents", order.TotalCents))

	// From the charge on, the order is finished even if the client hangs up:
	// a charge without its order, or an order without its message, is worse
	// than an answer nobody reads. The span context travels on.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), placeTimeout)
	defer cancel()
	if err := s.chargePayment(ctx, order); err != nil {
		return order, err
	}

	enqueue, err := s.orderCreated(ctx, order)
	if err != nil {
		return order, err
	}
	err = s.store.CreateOrder(ctx, order, idem, answer(order), enqueue)
	if err != nil {
		return order, fmt.Errorf("%w: store order: %w", ErrUnavailable, err)
	}
	s.log.InfoContext(ctx, "order placed", "order_id", order.ID, "total_cents", order.TotalCents, "items", len(order.Items))
	return order, nil
}

// validateInventory checks that every SKU exists and has the stock asked for.
func (s *Service) validateInventory(ctx context.Context, items []RequestItem, skus []string) (err error) {
	ctx, span := s.tracer.Start(ctx, "order.validate_inventory")
	defer func() {
		recordError(span, err)
		span.End()
	}()
	if slow := s.flags.Text(ctx, scenario.SlowInventory); slow != "" && slow == baggage.FromContext(ctx).Member("tenant.id").Value() {
		// Workshop scenario: this tenant's warehouse answers slowly.
		select {
		case <-time.After(scenario.SlowInventoryDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stock, err := s.cachedLookup(ctx, span, "stock", skus, s.store.Stock, catalogcache.StockTTL)
	if err != nil {
		return err
	}
	for i, it := range items {
		available, known := stock[it.SKU]
		switch {
		case !known:
			return &itemError{Field: httpx.FieldPath("items", i, "sku"), Err: ErrUnknownSKU}
		case int64(it.Quantity) > available:
			return &itemError{Field: httpx.FieldPath("items", i, "quantity"), Err: ErrOutOfStock}
		}
	}
	return nil
}

// calculatePricing prices each line at the current price and sums the order.
func (s *Service) calculatePricing(ctx context.Context, items []RequestItem, skus []string) (lines []OrderItem, total int64, err error) {
	ctx, span := s.tracer.Start(ctx, "order.calculate_pricing")
	defer func() {
		recordError(span, err)
		span.End()
	}()
	var prices map[string]int64
	if s.flags.On(ctx, scenario.PricingNPlusOne) {
		// Workshop scenario: the catalogue, one product at a time.
		prices, err = s.store.PricesOneByOne(ctx, skus)
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	} else {
		prices, err = s.cachedLookup(ctx, span, "price", skus, s.store.Prices, priceTTL)
	}
	if err != nil {
		return nil, 0, err
	}
	lines = make([]OrderItem, len(items))
	for i, it := range items {
		price, known := prices[it.SKU]
		if !known {
			return nil, 0, &itemError{Field: httpx.FieldPath("items", i, "sku"), Err: ErrUnknownSKU}
		}
		lines[i] = OrderItem{SKU: it.SKU, Quantity: it.Quantity, UnitPriceCents: price}
		total += price * int64(it.Quantity)
	}
	span.SetAttributes(attribute.Int64("order.total_cents", total))
	return lines, total, nil
}

// cachedLookup reads values from the cache and loads the misses from the
// database, then caches them. The span shows how many were hits and misses.
func (s *Service) cachedLookup(ctx context.Context, span trace.Span, kind string, skus []string,
	load func(context.Context, []string) (map[string]int64, error), ttl time.Duration,
) (map[string]int64, error) {
	bypass := s.flags.On(ctx, scenario.CacheBypass) // workshop scenario
	values, misses := map[string]int64{}, skus
	if !bypass {
		values, misses = s.cache.get(ctx, kind, skus)
	}
	span.SetAttributes(attribute.Int("cache.hits", len(values)), attribute.Int("cache.misses", len(misses)))
	if len(misses) == 0 {
		return values, nil
	}
	loaded, err := load(ctx, misses)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !bypass {
		s.cache.set(ctx, kind, loaded, ttl)
	}
	for sku, v := range loaded {
		values[sku] = v
	}
	return values, nil
}
