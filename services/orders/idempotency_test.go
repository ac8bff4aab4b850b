package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace/noop"
)

// newTestStore migrates a database of the test's own, dropped when it ends,
// and returns the store on it.
func newTestStore(t *testing.T) *Store {
	t.Helper()
	ctx := context.Background()
	adminURL := os.Getenv("TEST_DATABASE_URL")
	if adminURL == "" {
		adminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)
	name := "orders_test_" + rand.Text()[:12]
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("drop database: %v", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	u, _ := url.Parse(adminURL)
	u.Path = "/" + name
	tel := &telemetry.Telemetry{TracerProvider: noop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()}
	store, err := openStore(ctx, u.String(), tel, instrumented.SQLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return store
}

func countKeys(t *testing.T, s *Store, where string) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM idempotency_keys WHERE "+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// insertKeys stores n answered keys named prefix-0, prefix-1, ... that
// expire at expiresAt (an SQL expression).
func insertKeys(t *testing.T, s *Store, prefix string, n int, expiresAt string) {
	t.Helper()
	_, err := s.pool.Exec(context.Background(), `INSERT INTO idempotency_keys
		(tenant_id, customer_id, key, request_hash, status, response_status, response_body, expires_at)
		SELECT 't', 'c', $1 || '-' || i, '\x00', 'done', 201, '{}', `+expiresAt+` FROM generate_series(0, $2 - 1) AS i`,
		prefix, n)
	if err != nil {
		t.Fatal(err)
	}
}

func TestSweepExpiredKeys(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := t.Context()
	insertKeys(t, s, "expired", 2*sweepBatch+5, "now() - interval '1 second'")
	insertKeys(t, s, "fresh", 3, "now() + interval '24 hours'")

	var swept []int64
	for {
		var n int64
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) (err error) {
			n, err = sweepExpiredKeys(ctx, tx, sweepBatch)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		swept = append(swept, n)
	}
	if want := []int64{sweepBatch, sweepBatch, 5}; fmt.Sprint(swept) != fmt.Sprint(want) {
		t.Errorf("batches swept = %v, want %v", swept, want)
	}
	if got := countKeys(t, s, "key LIKE 'fresh-%'"); got != 3 {
		t.Errorf("%d fresh keys left, want 3", got)
	}
	if got := countKeys(t, s, "true"); got != 3 {
		t.Errorf("%d keys left, want only the 3 fresh ones", got)
	}
}

func TestClaimKeySweepsABatch(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	insertKeys(t, s, "expired", sweepBatch+5, "now() - interval '1 second'")
	if _, err := s.ClaimKey(t.Context(), IdempotencyKey{TenantID: "t", CustomerID: "c", Key: "new", Hash: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if got := countKeys(t, s, "expires_at < now()"); got != 5 {
		t.Errorf("%d expired keys left after a claim, want 5 (one batch of %d swept)", got, sweepBatch)
	}
	if got := countKeys(t, s, "key = 'new' AND status = 'in_flight'"); got != 1 {
		t.Errorf("%d claims of the new key, want 1", got)
	}
}

func TestClaimKeyIsScopedByTenantAndCustomer(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := t.Context()
	hash := requestHash(PlaceOrderRequest{CustomerID: "c", Items: []RequestItem{{SKU: "MUG-CERAMIC", Quantity: 1}}})
	first := IdempotencyKey{TenantID: "tenant-a", CustomerID: "c", Key: "k", Hash: hash}
	if answer, err := s.ClaimKey(ctx, first); answer != nil || err != nil {
		t.Fatalf("first claim = %v, %v; want the key", answer, err)
	}
	stored := Answer{Status: 201, Body: []byte(`{"order_id":"tenant-a's order"}`)}
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return answerKey(ctx, tx, first, stored) }); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		key    IdempotencyKey
		replay bool
	}{
		{"another tenant", IdempotencyKey{TenantID: "tenant-b", CustomerID: "c", Key: "k", Hash: hash}, false},
		{"no tenant", IdempotencyKey{CustomerID: "c", Key: "k", Hash: hash}, false},
		{"another customer", IdempotencyKey{TenantID: "tenant-a", CustomerID: "d", Key: "k", Hash: hash}, false},
		{"the same tenant and customer", first, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			answer, err := s.ClaimKey(ctx, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if got := answer != nil && string(answer.Body) == string(stored.Body); got != tt.replay {
				t.Errorf("replayed tenant-a's answer = %v, want %v", got, tt.replay)
			}
		})
	}
}

func TestReleaseKeyLeavesNothing(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := t.Context()
	k := IdempotencyKey{TenantID: "t", CustomerID: "c", Key: "refused", Hash: []byte{1}}
	if _, err := s.ClaimKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if got := countKeys(t, s, "true"); got != 0 {
		t.Errorf("%d keys left after a release, want none", got)
	}
	if answer, err := s.ClaimKey(ctx, k); answer != nil || err != nil {
		t.Errorf("claim after release = %v, %v; want the key again", answer, err)
	}
}
