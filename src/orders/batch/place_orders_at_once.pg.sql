-- A batch of orders placed and committed by one statement: what
-- `allot_place_orders` does, for a batch that needs nothing more in its
-- transaction. Called outside a transaction block, the statement is the
-- transaction: one round trip instead of four (BEGIN, the call, the read
-- of the merchants' endpoints, COMMIT).
--
-- A batch that needs more (an enabled merchant endpoint, orders of the SKU
-- already waiting) is refused with `AL001` before it writes or locks
-- anything; one that ran short of keys is refused only once no other
-- transaction holds one (`allot_no_keys_held_elsewhere`), and until then
-- run again. The caller then places it in a transaction of its own.
create or replace function allot_place_orders_at_once(
    for_sku      text,
    sources      text[],
    order_ids    text[],
    emails       text[],
    coupon_codes text[],
    request_ids  text[],
    at_ms        bigint,
    attempts     integer,
    after_key    bigint,
    lease_to     text,
    lease_until  bigint,
    lease_count  integer,
    words        jsonb
)
returns table (out_ref bigint, out_state text, out_new boolean, out_key bigint,
               out_job bigint, out_behind boolean)
language plpgsql volatile
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
    short boolean := false;
begin
    if exists (select 1 from endpoints where enabled = 1)
       or exists (select 1 from orders o
                   where o.state = 'awaiting_stock' and o.product_sku = for_sku) then
        raise exception 'this batch of orders needs a transaction of its own'
              using errcode = 'AL001';
    end if;
    for out_ref, out_state, out_new, out_key, out_job, out_behind in
        select * from allot_place_orders(for_sku, sources, order_ids, emails, coupon_codes,
                                         request_ids, at_ms, attempts, after_key, lease_to,
                                         lease_until, lease_count, words)
    loop
        short := short or (out_new and out_state = 'awaiting_stock');
        return next;
    end loop;
    if short then
        perform allot_no_keys_held_elsewhere(for_sku);
    end if;
    -- A sell-out inside the batch, or orders of the SKU that began to wait
    -- while it was placed: the caller alerts, in a transaction.
    if short or exists (select 1 from orders o
                         where o.state = 'awaiting_stock' and o.product_sku = for_sku) then
        raise exception 'this batch of orders needs a transaction of its own'
              using errcode = 'AL001';
    end if;
end
$$;
