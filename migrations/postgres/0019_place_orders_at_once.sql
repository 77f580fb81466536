-- A batch of orders in one statement, committed on its own: what
-- `allot_place_orders` does, for a batch that needs nothing more in its
-- transaction. Called outside a transaction block, the statement is the
-- transaction, and the batch is placed in one round trip instead of four
-- (BEGIN, the call, the read of the merchants' endpoints, COMMIT).
--
-- A batch needs more when a merchant endpoint is enabled (its events are
-- written by the caller, who matches each endpoint's subscriptions) or
-- when an order of the SKU waits for stock (the caller alerts the admin
-- and the merchants). Then this raises `AL001` before anything is
-- committed, and the caller places the batch again the long way, in a
-- transaction of its own (`orders::batch`). Either check may see what
-- another transaction committed an instant before; the long way is
-- always correct, so a needless refusal costs only time.
create function allot_place_orders_at_once(
    for_sku      text,
    sources      text[],
    order_ids    text[],
    emails       text[],
    coupon_codes text[],
    at_ms        bigint,
    attempts     integer,
    after_key    bigint,
    lease_to     text,
    lease_until  bigint,
    lease_count  integer
)
returns table (out_ref bigint, out_state text, out_new boolean, out_key bigint,
               out_job bigint, out_behind boolean)
language plpgsql volatile
-- As `allot_place_orders`: found by keys, nothing to compile, one plan.
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
    return query
        select * from allot_place_orders(for_sku, sources, order_ids, emails, coupon_codes,
                                         at_ms, attempts, after_key, lease_to, lease_until,
                                         lease_count);
    if exists (select 1 from endpoints where enabled = 1)
       or exists (select 1 from orders o
                   where o.state = 'awaiting_stock' and o.product_sku = for_sku) then
        raise exception 'this batch of orders needs a transaction of its own'
              using errcode = 'AL001';
    end if;
end
$$;
