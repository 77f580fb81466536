-- Orders received from shop webhooks, one row per (source, order id): the
-- unique key is what makes a repeated delivery a duplicate. The key, the
-- order row and the buyer's email job commit together.
-- Times are Unix epoch milliseconds, as in the outbox.
create table orders (
    id             integer primary key autoincrement,
    source         text    not null,
    order_id       text    not null,
    state          text    not null
                   check (state in ('fulfilled', 'awaiting_stock', 'needs_attention')),
    email          text,
    product_sku    text,
    coupon_code    text,
    license_key_id integer references license_keys (id),
    email_job_id   integer,
    problem        text,
    raw_body       blob,    -- kept for needs_attention: nothing a shop sent is dropped
    created_at     integer not null,
    updated_at     integer not null,
    unique (source, order_id)
);

-- Waiting orders of a SKU, oldest first (restock), and orders by state.
create index orders_state on orders (state, product_sku, id);

-- What happened to each order, in order.
create table order_events (
    id       integer primary key autoincrement,
    order_ref integer not null references orders (id) on delete cascade,
    at       integer not null,
    state    text    not null,
    detail   text    not null
);
create index order_events_order on order_events (order_ref, id);
