-- The key bank: a FIFO pool of license keys per product SKU. A key is
-- vended by flipping it from 'available' to 'assigned' in the transaction
-- that records the order, so it can never be handed out twice.
-- Times are Unix epoch milliseconds, as in the outbox.
create table license_keys (
    id                   bigint       not null auto_increment primary key, -- FIFO order
    license_key          varchar(255) not null,
    status               varchar(16)  not null default 'available',
    product_sku          varchar(255) not null,
    assigned_to_email    varchar(320),
    assigned_order_id    varchar(255),
    assigned_coupon_code varchar(255),
    assigned_at          bigint,
    imported_at          bigint       not null,
    unique key license_keys_key (license_key),
    -- MariaDB's SKIP LOCKED only skips rows when an index serves the scan;
    -- this one makes the vend query a range scan in id order.
    key license_keys_vend (status, product_sku, id),
    constraint license_keys_status_known check (status in ('available', 'assigned', 'revoked'))
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;
