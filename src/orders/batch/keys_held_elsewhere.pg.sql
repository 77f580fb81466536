-- A batch that comes short of keys while another transaction holds some of
-- the SKU's keys does not know yet whether they are sold: that transaction
-- may still roll back and free them. `SKIP LOCKED` passes them over as if
-- they were gone, and an order would wait for stock that is there. A batch
-- refused a commit on its own rolls back after taking keys whenever a
-- sell-out inside it needs a transaction, so at a sell-out this happened:
-- a cluster's 30 orders for 20 keys were answered 17 fulfilled and 13
-- waiting while 3 keys lay free.
--
-- `allot_place_orders` (`place_orders.pg.sql`, beside this file) calls it
-- when it came short, after assigning the keys it got. A fresh statement
-- sees what is committed: a key still available is one this transaction
-- could not lock, so it raises a serialization failure, and the caller
-- runs its transaction again (`db::retry_on_contention`) once the holder
-- has finished. On MySQL a transaction rolls back after taking keys only
-- when it fails, and SQLite never skips a key.
create or replace function allot_no_keys_held_elsewhere(for_sku text)
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
