-- Payments in, merchant notifications out.
-- Times are Unix epoch milliseconds, as everywhere.

-- A paid order can be refunded: its key is revoked and it leaves the
-- fulfilment states for good. `payment_ref` is the provider's payment (a
-- Stripe PaymentIntent, a generic reference) that refunds name.
alter table orders drop constraint orders_state_known;
alter table orders add constraint orders_state_known
    check (state in ('fulfilled', 'awaiting_stock', 'needs_attention', 'refunded'));
alter table orders add column payment_ref varchar(255);
create index orders_payment_ref on orders (payment_ref);

-- Every payment event received, once per provider event id: the log of what
-- a provider said and what allot did about it (`outcome`, `detail`).
create table payment_events (
    id          bigint       not null auto_increment primary key,
    provider    varchar(32)  not null,         -- 'stripe' | 'generic'
    event_id    varchar(255) not null,         -- the provider's id: a repeat is a duplicate
    event_type  varchar(255) not null,
    payment_ref varchar(255),                  -- the payment it is about
    order_id    varchar(255),                  -- the order it became or names
    amount      bigint,                        -- minor units (cents)
    currency    varchar(16),
    outcome     varchar(32)  not null,         -- what allot did: order, refund, recorded, ignored…
    detail      text         not null,
    received_at bigint       not null,
    unique key payment_events_provider_event (provider, event_id),
    key payment_events_payment (provider, payment_ref),
    key payment_events_time (received_at)
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;

-- Merchant webhook endpoints: where events are POSTed, signed with the
-- endpoint's secret (Standard Webhooks). During a rotation the previous
-- secret also signs until `previous_until`.
create table endpoints (
    id              bigint       not null auto_increment primary key,
    url             text         not null,
    description     varchar(500) not null default '',
    events          text         not null,     -- comma-separated event types or patterns; '*' = all
    secret          varchar(255) not null,     -- whsec_…
    previous_secret varchar(255),
    previous_until  bigint,
    include_keys    smallint     not null default 0, -- 1: payloads carry the license key
    enabled         smallint     not null default 1,
    disabled_reason text,
    failing_since   bigint,                    -- first failure since the last success
    last_success_at bigint,
    last_failure_at bigint,
    created_at      bigint       not null,
    updated_at      bigint       not null
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;

-- Events for merchants, written in the transaction of the change that
-- causes them; each subscribed endpoint gets its own delivery job. Only
-- events some endpoint subscribed to are kept.
create table merchant_events (
    id             bigint       not null auto_increment primary key,
    event_type     varchar(64)  not null,
    payload        mediumtext   not null,      -- JSON `data`, never a license key
    license_key_id bigint,                     -- added at send time for endpoints that asked
    created_at     bigint       not null,
    key merchant_events_time (created_at)
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;

-- Every delivery attempt to an endpoint, with what it answered.
create table endpoint_attempts (
    id          bigint      not null auto_increment primary key,
    endpoint_id bigint      not null,
    event_id    bigint      not null,
    job_id      bigint,
    attempt     integer     not null,
    at          bigint      not null,
    status      integer,                       -- HTTP status; null: no answer (timeout, refused)
    duration_ms bigint      not null,
    outcome     varchar(16) not null,          -- 'delivered' | 'retry' | 'dead'
    response    text        not null,          -- an excerpt of the answer, or the error
    key endpoint_attempts_endpoint (endpoint_id, id),
    key endpoint_attempts_event (event_id, id),
    key endpoint_attempts_time (at)
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;
