-- The transactional outbox: a message is written in the same transaction as
-- its order, and a relay publishes it afterwards. headers holds the W3C trace
-- context and baggage of the span that created it, so the message continues
-- the order's trace however late it is sent.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    message_id  uuid        NOT NULL UNIQUE,
    exchange    text        NOT NULL,
    routing_key text        NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}',
    body        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    int         NOT NULL DEFAULT 0,
    last_error  text,
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Idempotency-Key records, scoped per customer. A key is claimed (in_flight)
-- before the order is processed and completed (done, with the answer) in the
-- order's own transaction; a claim whose lease ran out (a crashed request)
-- may be taken over. Records expire after 24 hours.
CREATE TABLE idempotency_keys (
    customer_id     text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    status          text        NOT NULL CHECK (status IN ('in_flight', 'done')),
    locked_until    timestamptz,
    response_status int,
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (customer_id, key)
);
