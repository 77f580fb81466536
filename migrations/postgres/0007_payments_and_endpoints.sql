-- Payments in, merchant notifications out.
-- Times are Unix epoch milliseconds, as everywhere.

-- A paid order can be refunded: its key is revoked and it leaves the
-- fulfilment states for good. `payment_ref` is the provider's payment (a
-- Stripe PaymentIntent, a generic reference) that refunds name.
alter table orders drop constraint orders_state_check;
alter table orders add constraint orders_state_check
    check (state in ('fulfilled', 'awaiting_stock', 'needs_attention', 'refunded'));
alter table orders add column payment_ref text;
create index orders_payment_ref on orders (payment_ref);

-- Every payment event received, once per provider event id: the log of what
-- a provider said and what allot did about it (`outcome`, `detail`).
create table payment_events (
    id          bigint generated always as identity primary key,
    provider    text   not null,            -- 'stripe' | 'generic'
    event_id    text   not null,            -- the provider's id: a repeat is a duplicate
    event_type  text   not null,
    payment_ref text,                       -- the payment it is about
    order_id    text,                       -- the order it became or names
    amount      bigint,                     -- minor units (cents)
    currency    text,
    outcome     text   not null,            -- what allot did: order, refund, recorded, ignored…
    detail      text   not null,
    received_at bigint not null,
    constraint payment_events_provider_event unique (provider, event_id)
);
create index payment_events_payment on payment_events (provider, payment_ref);
create index payment_events_time on payment_events (received_at);

-- Merchant webhook endpoints: where events are POSTed, signed with the
-- endpoint's secret (Standard Webhooks). During a rotation the previous
-- secret also signs until `previous_until`.
create table endpoints (
    id              bigint generated always as identity primary key,
    url             text     not null,
    description     text     not null default '',
    events          text     not null,         -- comma-separated event types or patterns; '*' = all
    secret          text     not null,         -- whsec_…
    previous_secret text,
    previous_until  bigint,
    include_keys    smallint not null default 0, -- 1: payloads carry the license key
    enabled         smallint not null default 1,
    disabled_reason text,
    failing_since   bigint,                    -- first failure since the last success
    last_success_at bigint,
    last_failure_at bigint,
    created_at      bigint   not null,
    updated_at      bigint   not null
);

-- Events for merchants, written in the transaction of the change that
-- causes them; each subscribed endpoint gets its own delivery job. Only
-- events some endpoint subscribed to are kept.
create table merchant_events (
    id             bigint generated always as identity primary key,
    event_type     text   not null,
    payload        text   not null,           -- JSON `data`, never a license key
    license_key_id bigint,                    -- added at send time for endpoints that asked
    created_at     bigint not null
);
create index merchant_events_time on merchant_events (created_at);

-- Every delivery attempt to an endpoint, with what it answered.
create table endpoint_attempts (
    id          bigint generated always as identity primary key,
    endpoint_id bigint  not null,
    event_id    bigint  not null,
    job_id      bigint,
    attempt     integer not null,
    at          bigint  not null,
    status      integer,                       -- HTTP status; null: no answer (timeout, refused)
    duration_ms bigint  not null,
    outcome     text    not null,              -- 'delivered' | 'retry' | 'dead'
    response    text    not null               -- an excerpt of the answer, or the error
);
create index endpoint_attempts_endpoint on endpoint_attempts (endpoint_id, id);
create index endpoint_attempts_event on endpoint_attempts (event_id, id);
create index endpoint_attempts_time on endpoint_attempts (at);
