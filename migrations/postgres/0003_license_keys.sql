-- The key bank: a FIFO pool of license keys per product SKU. A key is
-- vended by flipping it from 'available' to 'assigned' in the transaction
-- that records the order, so it can never be handed out twice.
-- Times are Unix epoch milliseconds, as in the outbox.
create table license_keys (
    id                   bigint generated always as identity primary key, -- FIFO order
    license_key          text   not null constraint license_keys_key unique,
    status               text   not null default 'available'
                         check (status in ('available', 'assigned', 'revoked')),
    product_sku          text   not null,
    assigned_to_email    text,
    assigned_order_id    text,
    assigned_coupon_code text,
    assigned_at          bigint,
    imported_at          bigint not null
);

-- Serves the vend query (the oldest available key of a SKU) as a range scan
-- in id order, so FOR UPDATE SKIP LOCKED skips exactly the rows other
-- buyers hold; also serves the stock count per SKU.
create index license_keys_vend on license_keys (status, product_sku, id);
