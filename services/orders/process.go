package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/ordertrace/ordertrace/pkg/httpx"
	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
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

// PlaceOrderRequest is the body of POST /orders.
type PlaceOrderRequest struct {
	CustomerID string        `json:"customer_id"`
	Items      []RequestItem `json:"items"`
}

// RequestItem is one line of PlaceOrderRequest.
type RequestItem struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// idPattern is what a customer ID or a SKU may look like: identifiers, not
// free text, so nothing stored or logged can carry markup or a payload.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$`)

// The limits of an order, as the README's API section states them.
const (
	maxItems    = 50
	maxQuantity = 10_000
)

// Why a value is refused, in the words of the API's problems.
const (
	reasonRequired  = "is required"
	reasonID        = "must be 1 to 64 characters, each an ASCII letter, a digit, '.', '_', ':', '@' or '-', the first a letter or digit"
	reasonItems     = "must hold 1 to 50 items"
	reasonDuplicate = "appears more than once; order each sku once, with the total quantity"
	reasonQuantity  = "must be a whole number from 1 to 10000"
)

// Validate checks the values, naming every field that is wrong.
func (r PlaceOrderRequest) Validate() error {
	var fields []httpx.FieldError
	if reason := checkID(r.CustomerID); reason != "" {
		fields = append(fields, httpx.FieldError{Field: "customer_id", Reason: reason})
	}
	if len(r.Items) == 0 || len(r.Items) > maxItems {
		fields = append(fields, httpx.FieldError{Field: "items", Reason: reasonItems})
	}
	seen := map[string]bool{}
	for i, it := range r.Items {
		if reason := checkID(it.SKU); reason != "" {
			fields = append(fields, httpx.FieldError{Field: httpx.FieldPath("items", i, "sku"), Reason: reason})
		} else if seen[it.SKU] {
			fields = append(fields, httpx.FieldError{Field: httpx.FieldPath("items", i, "sku"), Reason: reasonDuplicate})
		}
		seen[it.SKU] = true
		if it.Quantity < 1 || it.Quantity > maxQuantity {
			fields = append(fields, httpx.FieldError{Field: httpx.FieldPath("items", i, "quantity"), Reason: reasonQuantity})
		}
	}
	if len(fields) > 0 {
		return httpx.Invalid(fields...)
	}
	return nil
}

// checkID says why id is not a valid customer ID or SKU, "" when it is.
func checkID(id string) string {
	switch {
	case id == "":
		return reasonRequired
	case !idPattern.MatchString(id):
		return reasonID
	default:
		return ""
	}
}

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

// PlaceOrder runs order.process for a validated request. With an
// Idempotency-Key (claimed by the caller), the answer is recorded in the
// order's own transaction.
func (s *Service) PlaceOrder(ctx context.Context, req PlaceOrderRequest, idem *IdempotencyKey) (order Order, err error) {
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

	var event any = orderevents.OrderCreated{
		OrderID:    order.ID,
		TenantID:   order.TenantID,
		Items:      eventItems(order.Items),
		TotalCents: order.TotalCents,
		Currency:   order.Currency,
		CreatedAt:  time.Now().UTC(),
	}
	if rand.Float64() < s.flags.Number(ctx, scenario.PoisonMessages) {
		event = poisonEvent(event.(orderevents.OrderCreated))
	}
	body, err := json.Marshal(event)
	if err != nil {
		return order, fmt.Errorf("encode order event: %w", err)
	}
	err = s.store.CreateOrder(ctx, order, idem, Answer{Status: http.StatusCreated, Body: answerBody(order)}, s.orderCreated(body))
	if err != nil {
		return order, fmt.Errorf("%w: store order: %w", ErrUnavailable, err)
	}
	s.log.InfoContext(ctx, "order placed", "order_id", order.ID, "total_cents", order.TotalCents, "items", len(order.Items))
	return order, nil
}

// orderCreated makes the order.created message inside a PRODUCER span. The
// message is only stored here (messaging.operation.type "create"); the relay
// sends it later, and its headers carry this span's context, so the consumer
// continues this trace and the relay's send span links to it.
func (s *Service) orderCreated(body []byte) Enqueue {
	return func(ctx context.Context) (context.Context, OutboxMessage, func(error)) {
		messageID := uuid.NewString()
		ctx, span := s.tracer.Start(ctx, "publish "+orderevents.Exchange,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(telemetry.AMQPMessageAttributes(semconv.MessagingOperationTypeCreate, "publish",
				orderevents.Exchange, orderevents.RoutingKeyCreated, messageID, len(body))...))
		headers := map[string]string{}
		s.prop.Inject(ctx, propagation.MapCarrier(headers)) // traceparent, tracestate, baggage
		msg := OutboxMessage{
			MessageID: messageID, Exchange: orderevents.Exchange, RoutingKey: orderevents.RoutingKeyCreated,
			Headers: headers, Body: body,
		}
		return ctx, msg, func(err error) {
			recordError(span, err)
			span.End()
		}
	}
}

// poisonEvent is the order.created event as a careless release might have
// written it (workshop scenario poison-messages): its lines renamed, so
// fulfillment finds no items and can never apply it.
func poisonEvent(ev orderevents.OrderCreated) any {
	return struct {
		orderevents.OrderCreated
		Items []orderevents.Item `json:"items,omitempty"`
		Lines []orderevents.Item `json:"lines"`
	}{OrderCreated: ev, Lines: ev.Items}
}

// slowInventoryDelay is how long the inventory check of the slow-inventory
// scenario's tenant takes.
const slowInventoryDelay = 600 * time.Millisecond

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
		case <-time.After(slowInventoryDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stock, err := s.cachedLookup(ctx, span, "stock", skus, s.store.Stock, orderevents.StockTTL)
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

func eventItems(items []OrderItem) []orderevents.Item {
	out := make([]orderevents.Item, len(items))
	for i, it := range items {
		out[i] = orderevents.Item{SKU: it.SKU, Quantity: it.Quantity, UnitPriceCents: it.UnitPriceCents}
	}
	return out
}

// recordError records err on span. A refused order (unknown SKU, no stock)
// is the client's doing: it is recorded as an event but leaves the status
// alone, so error rates count only real failures.
func recordError(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.RecordError(err)
	if slices.ContainsFunc([]error{ErrUnknownSKU, ErrOutOfStock}, func(e error) bool { return errors.Is(err, e) }) {
		return
	}
	span.SetStatus(codes.Error, err.Error())
}
