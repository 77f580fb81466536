-- The middle of a batch of orders for one SKU in one round trip: the
-- statements that `settle` in src/orders/batch/settle.rs runs one by one
-- on the other backends, run here inside one function call, inside the
-- batch's transaction (the caller has inserted the orders and, after the
-- call, tells admins and merchants what it returns).
--
-- `refs` are the new orders' row ids in arrival order, with their source,
-- order id, email and coupon code at the same positions. The oldest keys
-- go to the earliest orders; once they run out (or when orders of the SKU
-- already wait, which new orders queue behind) the rest wait for stock.
-- Returns one row per order, in order: its key and email job (null when it
-- waits), and whether orders were already waiting.
create function allot_place_batch(
    for_sku      text,
    refs         bigint[],
    sources      text[],
    order_ids    text[],
    emails       text[],
    coupon_codes text[],
    at_ms        bigint,
    attempts     integer
)
returns table (out_ref bigint, out_key bigint, out_job bigint, out_behind boolean)
language plpgsql volatile
-- Every row this function reads or writes is found by a key. A sale fills
-- `orders` faster than autovacuum analyses it, and on the statistics of a
-- few hundred rows the planner joined the batch to the orders by scanning
-- them all (3 ms per batch at 8,000 orders, growing with the sale).
set enable_seqscan = off
as $$
declare
    behind   boolean;
    picked   bigint[] := '{}';
    served   integer;
    assigned integer;
begin
    behind := exists (select 1 from orders o
                       where o.state = 'awaiting_stock' and o.product_sku = for_sku);
    if not behind then
        -- Oldest first as `keys::store::oldest_available` reads them; rows
        -- other transactions hold are skipped rather than waited for.
        picked := array(select l.id from license_keys l
                         where l.status = 'available' and l.product_sku = for_sku
                         order by l.imported_at, l.id
                         limit cardinality(refs)
                         for update skip locked);
    end if;
    served := cardinality(picked);

    if served > 0 then
        update license_keys l
           set status = 'assigned', assigned_to_email = a.email,
               assigned_order_id = a.order_id, assigned_coupon_code = a.coupon_code,
               assigned_at = at_ms
          from unnest(picked, emails[1:served], order_ids[1:served], coupon_codes[1:served])
               as a (id, email, order_id, coupon_code)
         where l.id = a.id;
        get diagnostics assigned = row_count;
        if assigned <> served then
            raise exception '% keys were reserved but % could be assigned', served, assigned;
        end if;

        with s (ref, key) as (
            select * from unnest(refs[1:served], picked)
        ), queued as (
            insert into jobs (kind, payload, dedupe_key, max_attempts, priority,
                              run_at, created_at, updated_at)
            select 'key_email', jsonb_build_object('order', s.ref, 'key', s.key)::text,
                   format('key_email:%s:%s', s.ref, s.key), attempts, 0, at_ms, at_ms, at_ms
              from s
            on conflict (dedupe_key) do nothing
            returning id, dedupe_key
        )
        update orders o
           set state = 'fulfilled', license_key_id = s.key, email_job_id = q.id,
               problem = null, raw_body = null, updated_at = at_ms
          from s left join queued q on q.dedupe_key = format('key_email:%s:%s', s.ref, s.key)
         where o.id = s.ref;
        -- Wakes listening workers at commit, as `jobs::wake::notify_in` does.
        perform pg_notify('allot_jobs', '');
    end if;

    if served < cardinality(refs) then
        update orders o
           set state = 'awaiting_stock', problem = null, raw_body = null, updated_at = at_ms
         where o.id = any(refs[served + 1:]);
    end if;

    -- The history, worded as `batch::place_together` words it.
    insert into order_events (order_ref, at, state, detail)
    select r.ref, at_ms,
           case when r.n <= served then 'fulfilled' else 'awaiting_stock' end,
           case
               when r.n <= served then
                   format('received from %s; key #%s of %s assigned, email to the buyer queued (job %s)',
                          r.source, picked[r.n], for_sku,
                          coalesce((select o.email_job_id::text from orders o where o.id = r.ref), '-'))
               when r.n = served + 1 and not behind then
                   format('received from %s; %s is out of stock, waiting for keys', r.source, for_sku)
               else
                   format('received from %s; queued behind earlier orders waiting for %s',
                          r.source, for_sku)
           end
      from unnest(refs, sources) with ordinality as r (ref, source, n)
     order by r.n;

    return query
        select r.ref, picked[r.n], case when r.n <= served then o.email_job_id end, behind
          from unnest(refs) with ordinality as r (ref, n)
          join orders o on o.id = r.ref
         order by r.n;
end
$$;
