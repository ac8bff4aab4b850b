-- Idempotency keys are scoped by tenant as well as by customer, so one
-- tenant's answer is never replayed to another. Refusals are no longer kept
-- (a refused request stores nothing), and expired keys are swept by age,
-- which the index on expires_at makes cheap.
ALTER TABLE idempotency_keys ADD COLUMN tenant_id text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (tenant_id, customer_id, key);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
DELETE FROM idempotency_keys WHERE status = 'done' AND response_status <> 201;
