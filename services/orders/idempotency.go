package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/baggage"
)

// Why an Idempotency-Key cannot be used for a request.
var (
	ErrKeyInFlight = errors.New("a request with this idempotency key is still being processed")
	ErrKeyReused   = errors.New("this idempotency key was used for a different request")
)

// keyLease is how long a claimed key is protected from a twin request. A
// request that crashed releases its key when the lease runs out.
const keyLease = 30 * time.Second

// sweepBatch is how many expired keys each claim deletes. A claim adds at
// most one key, so sweeping more than one keeps the table at about a day of
// keys, and a small batch keeps the claim short.
const sweepBatch = 10

// IdempotencyKey identifies one request: the key a customer of a tenant
// sent, and a hash of what the request asked for. The tenant and the
// customer scope the key, so nobody is answered with someone else's order.
type IdempotencyKey struct {
	TenantID   string
	CustomerID string
	Key        string
	Hash       []byte
}

// newIdempotencyKey scopes key to the request's tenant (from baggage, as the
// gateway sets it) and customer.
func newIdempotencyKey(ctx context.Context, req PlaceOrderRequest, key string) *IdempotencyKey {
	return &IdempotencyKey{
		TenantID:   baggage.FromContext(ctx).Member("tenant.id").Value(),
		CustomerID: req.CustomerID,
		Key:        key,
		Hash:       requestHash(req),
	}
}

// Answer is the status and body a request was answered with, replayed to
// the request's twins.
type Answer struct {
	Status int
	Body   []byte
}

// requestHash hashes the decoded request, so formatting and field order do
// not make two identical requests differ.
func requestHash(req PlaceOrderRequest) []byte {
	b, _ := json.Marshal(req)
	h := sha256.Sum256(b)
	return h[:]
}

// ClaimKey claims k for a request. It returns the stored answer when the same
// request was answered before, ErrKeyReused when the key came with another
// request, and ErrKeyInFlight while a twin is being processed. A nil answer
// and nil error mean the caller holds the key and must answer it (in the
// order's transaction) or release it.
func (s *Store) ClaimKey(ctx context.Context, k IdempotencyKey) (*Answer, error) {
	var answer *Answer
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND customer_id = $2 AND key = $3 AND expires_at < now()",
			k.TenantID, k.CustomerID, k.Key)
		if err != nil {
			return fmt.Errorf("expire idempotency key: %w", err)
		}
		if _, err := sweepExpiredKeys(ctx, tx, sweepBatch); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (tenant_id, customer_id, key, request_hash, status, locked_until)
			VALUES ($1, $2, $3, $4, 'in_flight', now() + $5::interval) ON CONFLICT DO NOTHING`,
			k.TenantID, k.CustomerID, k.Key, k.Hash, keyLease.String())
		if err != nil {
			return fmt.Errorf("claim idempotency key: %w", err)
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		var (
			hash     []byte
			status   string
			leaseEnd *time.Time
			code     *int
			body     []byte
			now      time.Time
		)
		err = tx.QueryRow(ctx, `SELECT request_hash, status, locked_until, response_status, response_body, now()
			FROM idempotency_keys WHERE tenant_id = $1 AND customer_id = $2 AND key = $3 FOR UPDATE`, k.TenantID, k.CustomerID, k.Key).
			Scan(&hash, &status, &leaseEnd, &code, &body, &now)
		if err != nil {
			return fmt.Errorf("read idempotency key: %w", err)
		}
		switch {
		case !bytes.Equal(hash, k.Hash):
			return ErrKeyReused
		case status == "done" && code != nil:
			answer = &Answer{Status: *code, Body: body}
			return nil
		case leaseEnd != nil && leaseEnd.After(now):
			return ErrKeyInFlight
		}
		// The twin that held the key is gone: take it over.
		_, err = tx.Exec(ctx, `UPDATE idempotency_keys SET locked_until = now() + $4::interval
			WHERE tenant_id = $1 AND customer_id = $2 AND key = $3`, k.TenantID, k.CustomerID, k.Key, keyLease.String())
		return err
	})
	return answer, err
}

// sweepExpiredKeys deletes at most limit expired keys. Keys that other
// claims hold are skipped rather than waited for: the next claim sweeps
// them. It returns how many it deleted.
func sweepExpiredKeys(ctx context.Context, tx pgx.Tx, limit int) (int64, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM idempotency_keys WHERE (tenant_id, customer_id, key) IN (
		SELECT tenant_id, customer_id, key FROM idempotency_keys WHERE expires_at < now() LIMIT $1 FOR UPDATE SKIP LOCKED)`, limit)
	if err != nil {
		return 0, fmt.Errorf("sweep expired idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// answerKey records the answer to a placed order, in the order's own
// transaction: the key is answered if and only if the order exists.
func answerKey(ctx context.Context, tx pgx.Tx, k IdempotencyKey, a Answer) error {
	_, err := tx.Exec(ctx, `UPDATE idempotency_keys SET status = 'done', locked_until = NULL, response_status = $4, response_body = $5
		WHERE tenant_id = $1 AND customer_id = $2 AND key = $3`, k.TenantID, k.CustomerID, k.Key, a.Status, a.Body)
	if err != nil {
		return fmt.Errorf("record idempotent answer: %w", err)
	}
	return nil
}

// ReleaseKey frees the key of a request that placed no order, whether it was
// refused or failed, so nothing of it is stored and a retry is processed
// afresh. A declined payment (402) is freed too: it took no money, and the
// customer may retry with the same key once the payment is sorted out.
func (s *Store) ReleaseKey(ctx context.Context, k IdempotencyKey) error {
	_, err := s.pool.Exec(ctx, "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND customer_id = $2 AND key = $3 AND status = 'in_flight'",
		k.TenantID, k.CustomerID, k.Key)
	if err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}
