package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Product is one entry of the catalogue.
type Product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int    `json:"stock"`
}

// Order is an order as stored, with its lines.
type Order struct {
	ID         string      `json:"order_id"`
	CustomerID string      `json:"customer_id"`
	TenantID   string      `json:"tenant_id,omitempty"`
	Status     string      `json:"status"`
	TotalCents int64       `json:"total_cents"`
	Currency   string      `json:"currency"`
	TraceID    string      `json:"trace_id"`
	Items      []OrderItem `json:"items"`
	CreatedAt  time.Time   `json:"created_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
}

// OrderItem is one line of an order, priced when it was placed.
type OrderItem struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// Store is the orders service's PostgreSQL access.
type Store struct {
	pool *instrumented.Pool
}

// openStore connects to PostgreSQL through the instrumented pool.
func openStore(ctx context.Context, databaseURL string, tel *telemetry.Telemetry, opts instrumented.SQLOptions) (*Store, error) {
	pool, err := instrumented.Postgres(ctx, databaseURL, tel, opts)
	if err != nil {
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Database names the PostgreSQL database, which also namespaces the cache.
func (s *Store) Database() string { return s.pool.Config().ConnConfig.Database }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Migrate applies the embedded migrations that have not run yet, in name
// order, each in its own transaction. An advisory lock keeps two replicas
// starting together from applying the same migration twice.
func (s *Store) Migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	const lockID = 7_305_117 // any constant shared by every replica
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockID); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockID) //nolint:errcheck // the session ends anyway
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, name := range names {
		sql, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, "INSERT INTO schema_migrations (name) VALUES ($1) ON CONFLICT DO NOTHING", name)
			if err != nil || tag.RowsAffected() == 0 {
				return err // already applied
			}
			_, err = tx.Exec(ctx, string(sql))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
	}
	return nil
}

// Products lists the catalogue.
func (s *Store) Products(ctx context.Context) ([]Product, error) {
	rows, _ := s.pool.Query(ctx, "SELECT sku, name, price_cents, stock FROM products ORDER BY sku")
	products, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Product])
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return products, nil
}

// Stock returns the stock of each known SKU among skus.
func (s *Store) Stock(ctx context.Context, skus []string) (map[string]int64, error) {
	return s.column(ctx, "SELECT sku, stock::bigint FROM products WHERE sku = ANY($1)", skus)
}

// Prices returns the price in cents of each known SKU among skus.
func (s *Store) Prices(ctx context.Context, skus []string) (map[string]int64, error) {
	return s.column(ctx, "SELECT sku, price_cents FROM products WHERE sku = ANY($1)", skus)
}

func (s *Store) column(ctx context.Context, query string, skus []string) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, query, skus)
	if err != nil {
		return nil, fmt.Errorf("read products: %w", err)
	}
	values := make(map[string]int64, len(skus))
	var (
		sku string
		v   int64
	)
	_, err = pgx.ForEachRow(rows, []any{&sku, &v}, func() error {
		values[sku] = v
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read products: %w", err)
	}
	return values, nil
}

// CreateOrder writes, in ONE transaction, the order and its lines, its
// outbox message (made by enqueue, outbox.go), and (with an Idempotency-Key)
// the answer to the request. Once it has committed, the order exists and its
// message will be published: the relay picks it up, woken by NOTIFY (sent
// when the transaction commits).
func (s *Store) CreateOrder(ctx context.Context, o Order, idem *IdempotencyKey, answer Answer, enqueue Enqueue) error {
	var msgCtx context.Context
	var done func(error)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO orders (id, customer_id, tenant_id, status, total_cents, currency, trace_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, o.ID, o.CustomerID, o.TenantID, o.Status, o.TotalCents, o.Currency, o.TraceID)
		if err != nil {
			return fmt.Errorf("insert order: %w", err)
		}
		rows := make([][]any, len(o.Items))
		for i, it := range o.Items {
			rows[i] = []any{o.ID, it.SKU, it.Quantity, it.UnitPriceCents}
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{"order_items"},
			[]string{"order_id", "sku", "quantity", "unit_price_cents"}, pgx.CopyFromRows(rows))
		if err != nil {
			return fmt.Errorf("insert order items: %w", err)
		}

		var msg OutboxMessage
		msgCtx, msg, done = enqueue(ctx)
		_, err = tx.Exec(msgCtx, `INSERT INTO outbox (message_id, exchange, routing_key, headers, body)
			VALUES ($1, $2, $3, $4, $5)`, msg.MessageID, msg.Exchange, msg.RoutingKey, msg.Headers, msg.Body)
		if err != nil {
			return fmt.Errorf("insert outbox message: %w", err)
		}
		if _, err := tx.Exec(msgCtx, "SELECT pg_notify($1, '')", outboxChannel); err != nil {
			return fmt.Errorf("notify relay: %w", err)
		}
		if idem != nil {
			if err := answerKey(ctx, tx, *idem, answer); err != nil {
				return err
			}
		}
		return nil
	})
	if done != nil {
		done(err)
	}
	return err
}

// ErrOrderNotFound is returned for an order ID that is not stored.
var ErrOrderNotFound = errors.New("order not found")

// GetOrder reads one order with its lines.
func (s *Store) GetOrder(ctx context.Context, id string) (Order, error) {
	var o Order
	err := s.pool.QueryRow(ctx, `SELECT id::text, customer_id, tenant_id, status, total_cents, currency, trace_id, created_at, updated_at
		FROM orders WHERE id = $1`, id).
		Scan(&o.ID, &o.CustomerID, &o.TenantID, &o.Status, &o.TotalCents, &o.Currency, &o.TraceID, &o.CreatedAt, &o.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return o, ErrOrderNotFound
	}
	if err != nil {
		return o, fmt.Errorf("read order: %w", err)
	}
	rows, _ := s.pool.Query(ctx, "SELECT sku, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY sku", id)
	o.Items, err = pgx.CollectRows(rows, pgx.RowToStructByPos[OrderItem])
	if err != nil {
		return o, fmt.Errorf("read order items: %w", err)
	}
	return o, nil
}

// PricesOneByOne is Prices as an N+1 query (workshop scenario
// pricing-n-plus-one): it lists the catalogue, then reads each product's
// price on its own, and keeps those among skus.
func (s *Store) PricesOneByOne(ctx context.Context, skus []string) (map[string]int64, error) {
	rows, _ := s.pool.Query(ctx, "SELECT sku FROM products ORDER BY sku")
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	prices := make(map[string]int64, len(skus))
	for _, sku := range all {
		var price int64
		if err := s.pool.QueryRow(ctx, "SELECT price_cents FROM products WHERE sku = $1", sku).Scan(&price); err != nil {
			return nil, fmt.Errorf("read price of %s: %w", sku, err)
		}
		if slices.Contains(skus, sku) {
			prices[sku] = price
		}
	}
	return prices, nil
}
