-- A batch of orders for one SKU in one call: the orders stored once each in
-- their final state, the oldest keys assigned while they last, the buyers'
-- key emails queued (the first `lease_count` born leased to `lease_to`,
-- each naming the request that delivered its order, `request_ids` beside
-- `order_ids`), the history written; one row per order of the batch
-- answers what it got.
-- `orders::batch::settle` calls it; what follows in the transaction
-- (alerts, merchant announcements) stays in Rust. The SQLite and MySQL
-- twin of it is `settle::settle` with `batch::store`.
--
-- `words` holds what the history and the key email jobs say, as Rust
-- words them (`orders::history`, `orders::notices::key_email`): templates
-- filled here by `format()` and in Rust by `history::fill`, so the two
-- cannot drift apart.
create or replace function allot_place_orders(
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
-- Every row this function reads or writes is found by a key. A sale fills
-- `orders` faster than autovacuum analyses it, and on the statistics of a
-- few hundred rows the planner joined the batch to the orders by scanning
-- them all (3 ms per batch at 8,000 orders, growing with the sale).
set enable_seqscan = off
-- Should a scan the setting above forbids still be planned (a table with
-- no index to use), its price passes the JIT's threshold: tens of
-- milliseconds compiling a scan of a few rows. Nothing here is worth
-- compiling.
set jit = off
-- One plan per statement for the life of a connection, not a custom plan
-- made afresh at every call (the plan cache kept choosing those: planning
-- took about 2 % of a sale's CPU, `perf` of `allot bench orders`). Each
-- statement here finds its rows by a key, and the generic plans are the
-- same index scans (checked with auto_explain); they are made again when
-- the tables' statistics change.
set plan_cache_mode = force_generic_plan
as $$
declare
    fresh    integer[];   -- places in the batch of the orders not stored
    refs     bigint[];    -- their row ids, taken before they are written
    picked   bigint[] := '{}';
    jobs_of  bigint[] := '{}';
    behind   boolean;
    served   integer;
    written  integer;
    after_at bigint;
    order_seq regclass := pg_get_serial_sequence('orders', 'id')::regclass;
    received      text := words ->> 'received';
    fulfilled     text := words ->> 'fulfilled';
    sold_out      text := words ->> 'sold_out';
    queued_behind text := words ->> 'queued_behind';
    email_kind    text := words ->> 'email_kind';
    email_payload text := words ->> 'email_payload';
    email_dedupe  text := words ->> 'email_dedupe_key';
    email_urgency integer := (words ->> 'email_priority')::integer;
begin
    fresh := array(select i.n
                     from unnest(sources, order_ids) with ordinality as i (source, order_id, n)
                    where not exists (select 1 from orders o
                                       where o.source = i.source and o.order_id = i.order_id)
                    order by i.n);
    if cardinality(fresh) > 0 then
        behind := exists (select 1 from orders o
                           where o.state = 'awaiting_stock' and o.product_sku = for_sku);
        if not behind and after_key is not null then
            select l.imported_at into after_at from license_keys l where l.id = after_key;
            if after_at is not null then
                picked := array(select l.id from license_keys l
                                 where l.status = 'available' and l.product_sku = for_sku
                                   and (l.imported_at, l.id) > (after_at, after_key)
                                 order by l.imported_at, l.id
                                 limit cardinality(fresh)
                                 for update skip locked);
            end if;
        end if;
        if not behind and cardinality(picked) < cardinality(fresh) then
            -- Oldest first as `keys::store::oldest_available` reads them;
            -- rows other transactions hold are skipped rather than waited
            -- for. Keys this walk locked above are ours, not skipped.
            picked := array(select l.id from license_keys l
                             where l.status = 'available' and l.product_sku = for_sku
                             order by l.imported_at, l.id
                             limit cardinality(fresh)
                             for update skip locked);
        end if;
        served := cardinality(picked);
        refs := array(select nextval(order_seq)
                        from generate_series(1, cardinality(fresh)));

        if served > 0 then
            update license_keys l
               set status = 'assigned', assigned_to_email = emails[f.n],
                   assigned_order_id = order_ids[f.n], assigned_coupon_code = coupon_codes[f.n],
                   assigned_at = at_ms
              from unnest(picked, fresh[1:served]) as f (key, n)
             where l.id = f.key;
            get diagnostics written = row_count;
            if written <> served then
                raise exception '% keys were reserved but % could be assigned', served, written;
            end if;

            -- The buyer's email, as `orders::notices::key_email` queues it
            -- (new order ids: the dedupe keys cannot be taken). The payload
            -- template takes the key first, as serde orders the fields.
            with queued as (
                insert into jobs (state, attempts, locked_until, locked_by, kind, payload,
                                  dedupe_key, max_attempts, priority, run_at, created_at,
                                  updated_at, request_id)
                select case when s.k <= lease_count then 'running' else 'queued' end,
                       case when s.k <= lease_count then 1 else 0 end,
                       case when s.k <= lease_count then lease_until end,
                       case when s.k <= lease_count then lease_to end,
                       email_kind, format(email_payload, s.key, s.ref),
                       format(email_dedupe, s.ref, s.key), attempts, email_urgency,
                       at_ms, at_ms, at_ms, request_ids[fresh[s.k]]
                  from unnest(refs[1:served], picked) with ordinality as s (ref, key, k)
                 order by s.k
                returning id, dedupe_key
            )
            select array(select q.id
                           from unnest(refs[1:served], picked) with ordinality as s (ref, key, k)
                           left join queued q on q.dedupe_key = format(email_dedupe, s.ref, s.key)
                          order by s.k)
              into jobs_of;
            -- Wakes listening workers at commit, as `jobs::wake::notify_in`
            -- does, when some email was queued rather than handed over.
            if served > lease_count then
                perform pg_notify('allot_jobs', '');
            end if;
        end if;

        insert into orders (id, source, order_id, state, email, product_sku, coupon_code,
                            license_key_id, email_job_id, created_at, updated_at)
        overriding system value
        select refs[k], sources[f.n], order_ids[f.n],
               case when k <= served then 'fulfilled' else 'awaiting_stock' end,
               emails[f.n], for_sku, coupon_codes[f.n], picked[k], jobs_of[k], at_ms, at_ms
          from unnest(fresh) with ordinality as f (n, k)
         order by k
        on conflict (source, order_id) do nothing;
        get diagnostics written = row_count;
        if written <> cardinality(fresh) then
            raise exception 'an order of this batch was stored meanwhile by another transaction'
                  using errcode = 'serialization_failure';
        end if;

        -- The history, worded by `orders::history`.
        insert into order_events (order_ref, at, state, detail)
        select refs[k], at_ms,
               case when k <= served then 'fulfilled' else 'awaiting_stock' end,
               case
                   when k <= served then
                       format(fulfilled, format(received, sources[f.n]), picked[k], for_sku,
                              coalesce(jobs_of[k]::text, '-'))
                   when k = served + 1 and not behind then
                       format(sold_out, format(received, sources[f.n]), for_sku)
                   else
                       format(queued_behind, format(received, sources[f.n]), for_sku)
               end
          from unnest(fresh) with ordinality as f (n, k)
         order by k;
    end if;

    -- Only the orders stored before are looked up again. As a plain join
    -- condition, `f.k is null` was checked after the lookup, which ran for
    -- every order of the batch; in a lateral subquery kept whole
    -- (`offset 0`) it gates the lookup, a one-time filter per order.
    return query
        select coalesce(refs[f.k], o.id),
               coalesce(o.state, case when f.k <= served then 'fulfilled' else 'awaiting_stock' end),
               f.k is not null, picked[f.k], jobs_of[f.k], coalesce(behind, false)
          from unnest(sources, order_ids) with ordinality as i (source, order_id, n)
          left join unnest(fresh) with ordinality as f (n, k) on f.n = i.n
          left join lateral (select s.id, s.state from orders s
                              where f.k is null and s.source = i.source and s.order_id = i.order_id
                             offset 0) o on true
         order by i.n;
end
$$;
