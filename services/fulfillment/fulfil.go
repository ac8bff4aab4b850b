package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ordertrace/ordertrace/pkg/catalogcache"
	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Why a message could not be applied. A permanent error is dead-lettered at
// once; any other is retried.
var (
	errPermanent     = errors.New("message can never be applied")
	errOrderNotFound = errors.New("order not found")
)

// Fulfiller applies order.created messages: it takes the stock and marks the
// order fulfilled (or failed, when the stock ran out since the order was
// placed), in one transaction that also records the message as processed.
type Fulfiller struct {
	pool    *instrumented.Pool
	rdb     *redis.Client
	cacheDB string // the database name that namespaces orders' cache keys
	tracer  trace.Tracer
	delay   metric.Float64Histogram // from order placed to fulfilment applied
	flags   scenario.Switches
}

// newFulfiller makes a Fulfiller and its metric.
func newFulfiller(pool *instrumented.Pool, rdb *redis.Client, tel *telemetry.Telemetry, flags scenario.Switches) (*Fulfiller, error) {
	delay, err := tel.MeterProvider.Meter("github.com/ordertrace/ordertrace/services/fulfillment").Float64Histogram(
		"fulfillment.order.delay",
		metric.WithUnit("s"),
		metric.WithDescription("Time from an order being placed to its fulfilment being committed."),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
	)
	if err != nil {
		return nil, fmt.Errorf("fulfillment metrics: %w", err)
	}
	return &Fulfiller{
		pool: pool, rdb: rdb, delay: delay, flags: flags,
		// pgxpool's Config() copies the whole configuration: read it once.
		cacheDB: pool.Config().ConnConfig.Database,
		tracer:  tel.Tracer("github.com/ordertrace/ordertrace/services/fulfillment"),
	}, nil
}

// outcome is what applying a message did.
type outcome string

const (
	outcomeFulfilled outcome = "fulfilled"
	outcomeFailed    outcome = "failed"    // not enough stock left
	outcomeDuplicate outcome = "duplicate" // this message was applied before
	outcomeSettled   outcome = "settled"   // the order was already fulfilled or failed
)

// Apply applies one message body, and returns the order it was for and what
// became of it. messageID makes it idempotent.
func (f *Fulfiller) Apply(ctx context.Context, messageID string, body []byte) (orderID string, result outcome, err error) {
	var ev orderevents.OrderCreated
	if err := json.Unmarshal(body, &ev); err != nil || ev.OrderID == "" || len(ev.Items) == 0 {
		return "", "", fmt.Errorf("%w: body is not an order.created event", errPermanent)
	}
	if messageID == "" {
		return ev.OrderID, "", fmt.Errorf("%w: message has no message_id", errPermanent)
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("order.id", ev.OrderID))
	if ms := f.flags.Number(ctx, scenario.SlowFulfillment); ms > 0 {
		// Workshop scenario: the warehouse is slow to pick each order.
		select {
		case <-time.After(time.Duration(ms * float64(time.Millisecond))):
		case <-ctx.Done():
			return ev.OrderID, "", ctx.Err()
		}
	}

	var levels map[string]int64 // the stock left of each SKU taken
	err = pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "INSERT INTO processed_messages (message_id) VALUES ($1) ON CONFLICT DO NOTHING", messageID)
		if err != nil {
			return fmt.Errorf("record message: %w", err)
		}
		if tag.RowsAffected() == 0 {
			result = outcomeDuplicate
			return nil
		}
		var status string
		err = tx.QueryRow(ctx, "SELECT status FROM orders WHERE id = $1 FOR UPDATE", ev.OrderID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			// Not (yet) committed by orders, or never: retried, then dead-lettered.
			return errOrderNotFound
		}
		if err != nil {
			return fmt.Errorf("lock order: %w", err)
		}
		if status != "pending" {
			result = outcomeSettled
			return nil
		}
		result, levels, err = f.reserveStock(ctx, tx, ev.Items)
		if err != nil {
			return err
		}
		return f.completeOrder(ctx, tx, ev.OrderID, result)
	})
	if err != nil {
		return ev.OrderID, "", err
	}
	if result == outcomeFulfilled || result == outcomeFailed {
		f.delay.Record(ctx, time.Since(ev.CreatedAt).Seconds(), metric.WithAttributes(attribute.String("fulfillment.outcome", string(result))))
	}
	if result == outcomeFulfilled {
		f.cacheStock(ctx, levels)
	}
	return ev.OrderID, result, nil
}

// reserveStock takes the stock of every line, or none of it: a savepoint
// undoes the lines already taken when one runs short. It returns the new stock
// level of each SKU taken.
func (f *Fulfiller) reserveStock(ctx context.Context, tx pgx.Tx, items []orderevents.Item) (result outcome, levels map[string]int64, err error) {
	ctx, span := f.tracer.Start(ctx, "fulfillment.reserve_stock",
		trace.WithAttributes(attribute.Int("order.item_count", len(items))))
	defer func() {
		recordError(span, err)
		span.End()
	}()
	sp, err := tx.Begin(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("savepoint: %w", err)
	}
	// Rows are locked in SKU order, whatever the order's line order, so two
	// orders for the same products never wait on each other in a cycle.
	items = slices.SortedFunc(slices.Values(items), func(a, b orderevents.Item) int { return strings.Compare(a.SKU, b.SKU) })
	levels = make(map[string]int64, len(items))
	for _, it := range items {
		var left int64
		err := sp.QueryRow(ctx, "UPDATE products SET stock = stock - $2 WHERE sku = $1 AND stock >= $2 RETURNING stock::bigint",
			it.SKU, it.Quantity).Scan(&left)
		if errors.Is(err, pgx.ErrNoRows) {
			span.SetAttributes(attribute.Bool("fulfillment.out_of_stock", true))
			return outcomeFailed, nil, sp.Rollback(ctx)
		}
		if err != nil {
			return "", nil, fmt.Errorf("take stock: %w", err)
		}
		levels[it.SKU] = left
	}
	return outcomeFulfilled, levels, sp.Commit(ctx)
}

// completeOrder sets the order's final status.
func (f *Fulfiller) completeOrder(ctx context.Context, tx pgx.Tx, orderID string, result outcome) (err error) {
	ctx, span := f.tracer.Start(ctx, "fulfillment.complete_order",
		trace.WithAttributes(attribute.String("order.status", string(result))))
	defer func() {
		recordError(span, err)
		span.End()
	}()
	if _, err := tx.Exec(ctx, "UPDATE orders SET status = $2, updated_at = now() WHERE id = $1", orderID, string(result)); err != nil {
		return fmt.Errorf("update order: %w", err)
	}
	return nil
}

// cacheStock writes the new stock levels to orders' cache (write-through),
// after the commit. Deleting the keys instead would make the next order of
// the same products miss the cache and read PostgreSQL: under load, nearly
// every order did (docs/performance.md). Two fulfillments of one SKU may
// write in the opposite order of their commits, leaving a level one order
// too high until the next write or the TTL; orders' check is advisory, and
// reserveStock is the one that refuses to oversell. A failure only leaves a
// stale entry until its TTL.
func (f *Fulfiller) cacheStock(ctx context.Context, levels map[string]int64) {
	_, _ = f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sku, left := range levels {
			p.Set(ctx, catalogcache.Key(f.cacheDB, "stock", sku), left, catalogcache.StockTTL)
		}
		return nil
	})
}
