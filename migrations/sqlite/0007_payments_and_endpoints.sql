-- Payments in, merchant notifications out.
-- Times are Unix epoch milliseconds, as everywhere.

-- A paid order can be refunded: its key is revoked and it leaves the
-- fulfilment states for good. `payment_ref` is the provider's payment (a
-- Stripe PaymentIntent, a generic reference) that refunds name.
-- SQLite cannot change a check constraint in place: the two order tables
-- are rebuilt. The events table goes first and comes back pointing at the
-- new orders table (a rename rewrites references), so the cascade that
-- dropping a parent table implies never touches a row.
create table orders_v7 (
    id             integer primary key autoincrement,
    source         text    not null,
    order_id       text    not null,
    state          text    not null
                   check (state in ('fulfilled', 'awaiting_stock', 'needs_attention', 'refunded')),
    email          text,
    product_sku    text,
    coupon_code    text,
    license_key_id integer references license_keys (id),
    email_job_id   integer,
    problem        text,
    raw_body       blob,    -- kept for needs_attention: nothing a shop sent is dropped
    created_at     integer not null,
    updated_at     integer not null,
    payment_ref    text,
    unique (source, order_id)
);
insert into orders_v7 (id, source, order_id, state, email, product_sku, coupon_code,
                       license_key_id, email_job_id, problem, raw_body, created_at, updated_at)
    select id, source, order_id, state, email, product_sku, coupon_code,
           license_key_id, email_job_id, problem, raw_body, created_at, updated_at
    from orders;
create table order_events_v7 (
    id        integer primary key autoincrement,
    order_ref integer not null references orders_v7 (id) on delete cascade,
    at        integer not null,
    state     text    not null,
    detail    text    not null
);
insert into order_events_v7 (id, order_ref, at, state, detail)
    select id, order_ref, at, state, detail from order_events;
drop table order_events;
drop table orders;
alter table orders_v7 rename to orders;
alter table order_events_v7 rename to order_events;
create index orders_state on orders (state, product_sku, id);
create index orders_payment_ref on orders (payment_ref);
create index order_events_order on order_events (order_ref, id);
-- Every payment event received, once per provider event id: the log of what
-- a provider said and what allot did about it (`outcome`, `detail`).
create table payment_events (
    id          integer primary key autoincrement,
    provider    text   not null,            -- 'stripe' | 'generic'
    event_id    text   not null,            -- the provider's id: a repeat is a duplicate
    event_type  text   not null,
    payment_ref text,                       -- the payment it is about
    order_id    text,                       -- the order it became or names
    amount      integer,                     -- minor units (cents)
    currency    text,
    outcome     text   not null,            -- what allot did: order, refund, recorded, ignored…
    detail      text   not null,
    received_at integer not null,
    unique (provider, event_id)
);
create index payment_events_payment on payment_events (provider, payment_ref);
create index payment_events_time on payment_events (received_at);

-- Merchant webhook endpoints: where events are POSTed, signed with the
-- endpoint's secret (Standard Webhooks). During a rotation the previous
-- secret also signs until `previous_until`.
create table endpoints (
    id              integer primary key autoincrement,
    url             text     not null,
    description     text     not null default '',
    events          text     not null,         -- comma-separated event types or patterns; '*' = all
    secret          text     not null,         -- whsec_…
    previous_secret text,
    previous_until  integer,
    include_keys    integer not null default 0, -- 1: payloads carry the license key
    enabled         integer not null default 1,
    disabled_reason text,
    failing_since   integer,                    -- first failure since the last success
    last_success_at integer,
    last_failure_at integer,
    created_at      integer   not null,
    updated_at      integer   not null
);

-- Events for merchants, written in the transaction of the change that
-- causes them; each subscribed endpoint gets its own delivery job. Only
-- events some endpoint subscribed to are kept.
create table merchant_events (
    id             integer primary key autoincrement,
    event_type     text   not null,
    payload        text   not null,           -- JSON `data`, never a license key
    license_key_id integer,                    -- added at send time for endpoints that asked
    created_at     integer not null
);
create index merchant_events_time on merchant_events (created_at);

-- Every delivery attempt to an endpoint, with what it answered.
create table endpoint_attempts (
    id          integer primary key autoincrement,
    endpoint_id integer  not null,
    event_id    integer  not null,
    job_id      integer,
    attempt     integer not null,
    at          integer  not null,
    status      integer,                       -- HTTP status; null: no answer (timeout, refused)
    duration_ms integer  not null,
    outcome     text    not null,              -- 'delivered' | 'retry' | 'dead'
    response    text    not null               -- an excerpt of the answer, or the error
);
create index endpoint_attempts_endpoint on endpoint_attempts (endpoint_id, id);
create index endpoint_attempts_event on endpoint_attempts (event_id, id);
create index endpoint_attempts_time on endpoint_attempts (at);
