-- A vend that comes short of keys while another transaction holds some of
-- the SKU's keys does not know yet whether they are sold: that transaction
-- may still roll back and free them. `SKIP LOCKED` passes them over as if
-- they were gone, and an order would wait for stock that is there. The
-- statement that commits a batch at once (0019) rolls back after taking
-- keys whenever a sell-out inside its batch needs a transaction, so at a
-- sell-out this happened: a cluster's 30 orders for 20 keys were answered
-- 17 fulfilled and 13 waiting while 3 keys lay free.
--
-- `allot_no_keys_held_elsewhere` is called by a vend that came short
-- (`keys::none_held_elsewhere`, and the statement below). A fresh statement
-- sees what is committed: a key still available is one this transaction
-- could not lock, so it raises a serialization failure, and the caller
-- runs its transaction again (`db::retry_on_contention`) once the holder
-- has finished.
create function allot_no_keys_held_elsewhere(for_sku text)
returns void
language plpgsql volatile
as $$
begin
    if exists (select 1 from license_keys l
                where l.status = 'available' and l.product_sku = for_sku) then
        raise exception 'keys of % are held by another transaction that has not finished', for_sku
              using errcode = 'serialization_failure';
    end if;
end
$$;

-- As in 0019, with two changes:
-- - a batch that needs a transaction because of the store (an enabled
--   merchant endpoint, orders of the SKU already waiting) is refused before
--   it writes or locks anything;
-- - a batch that ran short of keys is refused only once no other
--   transaction holds one (see above); until then it is run again.
create or replace function allot_place_orders_at_once(
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
                                         at_ms, attempts, after_key, lease_to, lease_until,
                                         lease_count)
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
