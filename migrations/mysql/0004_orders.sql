-- Orders received from shop webhooks, one row per (source, order id): the
-- unique key is what makes a repeated delivery a duplicate. The key, the
-- order row and the buyer's email job commit together.
-- Times are Unix epoch milliseconds, as in the outbox.
create table orders (
    id             bigint       not null auto_increment primary key,
    source         varchar(32)  not null,
    order_id       varchar(255) not null,
    state          varchar(32)  not null,
    email          varchar(320),
    product_sku    varchar(255),
    coupon_code    varchar(255),
    license_key_id bigint,
    email_job_id   bigint,
    problem        text,
    raw_body       mediumblob,  -- kept for needs_attention: nothing a shop sent is dropped
    created_at     bigint       not null,
    updated_at     bigint       not null,
    unique key orders_source_order (source, order_id),
    -- Waiting orders of a SKU, oldest first (restock), and orders by state.
    key orders_state (state, product_sku, id),
    constraint orders_key foreign key (license_key_id) references license_keys (id),
    constraint orders_state_known check (state in ('fulfilled', 'awaiting_stock', 'needs_attention'))
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;

-- What happened to each order, in order.
create table order_events (
    id        bigint      not null auto_increment primary key,
    order_ref bigint      not null,
    at        bigint      not null,
    state     varchar(32) not null,
    detail    text        not null,
    key order_events_order (order_ref, id),
    constraint order_events_order_ref foreign key (order_ref) references orders (id) on delete cascade
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;
