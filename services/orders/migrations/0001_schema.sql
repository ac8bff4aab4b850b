-- The catalogue, the orders, and the messages fulfillment has applied.
CREATE TABLE products (
    sku         text PRIMARY KEY,
    name        text   NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    stock       int    NOT NULL CHECK (stock >= 0)
);

CREATE TABLE orders (
    id           uuid PRIMARY KEY,
    customer_id  text        NOT NULL,
    tenant_id    text        NOT NULL DEFAULT '',
    status       text        NOT NULL CHECK (status IN ('pending', 'fulfilled', 'failed')),
    total_cents  bigint      NOT NULL CHECK (total_cents >= 0),
    currency     text        NOT NULL,
    trace_id     text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    order_id         uuid   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    sku              text   NOT NULL REFERENCES products (sku),
    quantity         int    NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, sku)
);

-- One row per message fulfillment has applied, written in the same
-- transaction as the work, so a redelivered message changes nothing.
CREATE TABLE processed_messages (
    message_id   text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
