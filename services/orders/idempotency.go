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
)

// Why an Idempotency-Key cannot be used for a request.
var (
	ErrKeyInFlight = errors.New("a request with this idempotency key is still being processed")
	ErrKeyReused   = errors.New("this idempotency key was used for a different request")
)

// keyLease is how long a claimed key is protected from a twin request. A
// request that crashed releases its key when the lease runs out.
const keyLease = 30 * time.Second

// IdempotencyKey identifies one request: the key a customer sent, and a hash
// of what the request asked for.
type IdempotencyKey struct {
	CustomerID string
	Key        string
	Hash       []byte
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
// and nil error mean the caller holds the key and must answer or release it.
func (s *Store) ClaimKey(ctx context.Context, k IdempotencyKey) (*Answer, error) {
	var answer *Answer
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM idempotency_keys WHERE customer_id = $1 AND key = $2 AND expires_at < now()",
			k.CustomerID, k.Key)
		if err != nil {
			return fmt.Errorf("expire idempotency key: %w", err)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (customer_id, key, request_hash, status, locked_until)
			VALUES ($1, $2, $3, 'in_flight', now() + $4::interval) ON CONFLICT DO NOTHING`,
			k.CustomerID, k.Key, k.Hash, keyLease.String())
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
			FROM idempotency_keys WHERE customer_id = $1 AND key = $2 FOR UPDATE`, k.CustomerID, k.Key).
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
		_, err = tx.Exec(ctx, "UPDATE idempotency_keys SET locked_until = now() + $3::interval WHERE customer_id = $1 AND key = $2",
			k.CustomerID, k.Key, keyLease.String())
		return err
	})
	return answer, err
}

// AnswerKey records the answer to a request that was refused, so its twins
// get the same answer.
func (s *Store) AnswerKey(ctx context.Context, k IdempotencyKey, a Answer) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return answerKey(ctx, tx, k, a) })
}

func answerKey(ctx context.Context, tx pgx.Tx, k IdempotencyKey, a Answer) error {
	_, err := tx.Exec(ctx, `UPDATE idempotency_keys SET status = 'done', locked_until = NULL, response_status = $3, response_body = $4
		WHERE customer_id = $1 AND key = $2`, k.CustomerID, k.Key, a.Status, a.Body)
	if err != nil {
		return fmt.Errorf("record idempotent answer: %w", err)
	}
	return nil
}

// ReleaseKey frees a key whose request failed for a reason a retry may not
// meet (a dependency down), so the retry is processed afresh.
func (s *Store) ReleaseKey(ctx context.Context, k IdempotencyKey) error {
	_, err := s.pool.Exec(ctx, "DELETE FROM idempotency_keys WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'",
		k.CustomerID, k.Key)
	return err
}
