-- A batch of orders for one SKU in one call, the one way PostgreSQL places
-- an order (a lone order is a batch of one): the orders stored once each
-- in their final state, the oldest keys assigned while they last, the
-- buyers' key emails queued (the first `lease_count` born leased to
-- `lease_to`, each naming the request that delivered its order,
-- `request_ids` beside `order_ids`), the history written. An order set
-- aside before (`needs_attention`) is taken up again, as
-- `orders::store::claim` does; any other order stored before is left. One
-- row per order placed, in arrival order, names its place in the batch
-- and what it got. `orders::batch::settle` calls it; what follows in the
-- transaction (alerts, merchant announcements) stays in Rust. The SQLite
-- and MySQL twin of it is `settle::settle` with `batch::store`.
--
-- `on_its_own`: called outside a transaction block, the statement is the
-- transaction, and a batch is placed in one round trip instead of four
-- (BEGIN, the call, the read of the merchants' endpoints, COMMIT). A batch
-- that needs more than this call is refused with `AL001`: one with a
-- merchant endpoint to tell or behind orders of the SKU already waiting
-- before it writes or locks anything, one that runs short of keys (a
-- sell-out to alert) before it stores an order. The caller then places it
-- again in a transaction, and does the rest in Rust.
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
    payment_refs text[],
    request_ids  text[],
    at_ms        bigint,
    attempts     integer,
    after_key    bigint,
    lease_to     text,
    lease_until  bigint,
    lease_count  integer,
    words        jsonb,
    on_its_own   boolean
)
returns table (out_place integer, out_ref bigint, out_key bigint, out_job bigint,
               out_behind boolean)
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
    fresh    integer[];   -- places in the batch of the orders to place
    retaken  bigint[];    -- for each, its row id if it was set aside before
    refs     bigint[];    -- their row ids, new ones taken before they are written
    picked   bigint[] := '{}';
    jobs_of  bigint[] := '{}';
    behind   boolean := false;
    served   integer := 0;
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
    if on_its_own and (exists (select 1 from endpoints where enabled = 1)
                       or exists (select 1 from orders o
                                   where o.state = 'awaiting_stock' and o.product_sku = for_sku)) then
        raise exception 'this batch of orders needs a transaction of its own'
              using errcode = 'AL001';
    end if;
    -- The orders not stored, and those set aside before, with their rows.
    select coalesce(array_agg(i.n order by i.n), '{}'), coalesce(array_agg(o.id order by i.n), '{}')
      into fresh, retaken
      from unnest(sources, order_ids) with ordinality as i (source, order_id, n)
      left join orders o on o.source = i.source and o.order_id = i.order_id
     where o.id is null or o.state = 'needs_attention';
    if exists (select 1 from unnest(retaken) r where r is not null) then
        -- Locked and looked at again: a concurrent delivery may be taking
        -- one up right now; then the batch runs again and finds it placed.
        if cardinality(array(select s.id from orders s
                              where s.id = any(retaken) and s.state = 'needs_attention'
                              order by s.id
                              for update))
           <> (select count(*) from unnest(retaken) r where r is not null) then
            raise exception 'an order of this batch was taken up meanwhile by another transaction'
                  using errcode = 'serialization_failure';
        end if;
    end if;
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
        refs := array(select case when r.id is null then nextval(order_seq) else r.id end
                        from unnest(retaken) with ordinality as r (id, k)
                       order by r.k);

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

        if served < cardinality(fresh) and not behind then
            -- Short of keys: not while another transaction may yet free
            -- some (`keys_held_elsewhere.pg.sql`).
            perform allot_no_keys_held_elsewhere(for_sku);
            if on_its_own then
                raise exception 'this batch of orders needs a transaction of its own'
                      using errcode = 'AL001';
            end if;
        end if;

        -- A row taken up again is its own conflict (its ref is its id), and
        -- keeps its body and problem no longer; any other conflict is an
        -- order stored meanwhile.
        insert into orders (id, source, order_id, state, email, product_sku, coupon_code,
                            payment_ref, license_key_id, email_job_id, created_at, updated_at)
        overriding system value
        select refs[k], sources[f.n], order_ids[f.n],
               case when k <= served then 'fulfilled' else 'awaiting_stock' end,
               emails[f.n], for_sku, coupon_codes[f.n], payment_refs[f.n], picked[k], jobs_of[k],
               at_ms, at_ms
          from unnest(fresh) with ordinality as f (n, k)
         order by k
        on conflict (source, order_id) do update
           set state = excluded.state, email = excluded.email,
               product_sku = excluded.product_sku, coupon_code = excluded.coupon_code,
               payment_ref = coalesce(excluded.payment_ref, orders.payment_ref),
               license_key_id = excluded.license_key_id, email_job_id = excluded.email_job_id,
               problem = null, raw_body = null, updated_at = excluded.updated_at
         where orders.id = excluded.id;
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

    -- The orders placed, in arrival order; the others were placed before.
    return query
        select f.n, refs[f.k], picked[f.k], jobs_of[f.k], behind
          from unnest(fresh) with ordinality as f (n, k)
         order by f.k;
    -- Orders of the SKU that began to wait while this batch was placed:
    -- the caller alerts, in a transaction.
    if on_its_own and exists (select 1 from orders o
                               where o.state = 'awaiting_stock' and o.product_sku = for_sku) then
        raise exception 'this batch of orders needs a transaction of its own'
              using errcode = 'AL001';
    end if;
end
$$;
