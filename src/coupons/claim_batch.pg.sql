-- A batch of claims on one coupon in one round trip: the statements that
-- `claim_batch` in src/coupons/store.rs runs one by one on the other
-- backends, run here inside one function call that is its own
-- transaction. Statements of a VOLATILE function each take a new
-- snapshot, so the holders are read after the coupon's lock is held and
-- see the claims the previous holder committed, exactly as the
-- statement-by-statement version does.
--
-- The rule is the one `store::decide` applies to the answer: in list
-- order, a user who holds a unit (or was granted one earlier in the list)
-- is already claimed; otherwise a unit is granted while any remain. The
-- function returns what that rule starts from (the stock before the batch
-- and who held a unit), and no row when the coupon does not exist.
create function allot_claim_batch(coupon text, users text[])
returns table (remaining bigint, held text[])
language plpgsql volatile as $$
declare
    stock   bigint;
    holders text[] := '{}';
    granted text[] := '{}';
    u       text;
begin
    -- Unlike FOR UPDATE, does not block other tables' foreign-key checks.
    select c.remaining_amount into stock from coupons c where c.name = coupon
       for no key update;
    if not found then
        return;
    end if;
    -- One probe of the unique key per user, in a loop rather than one
    -- `user_id = any(users)`: on a table whose statistics are stale (a sale
    -- fills it within seconds of the last analyse) the planner would scan
    -- every claim of the coupon instead.
    foreach u in array users loop
        if exists (select 1 from coupon_claims cl
                    where cl.user_id = u and cl.coupon_name = coupon) then
            holders := holders || u;
        end if;
    end loop;
    remaining := stock;
    held := holders;
    foreach u in array users loop
        exit when stock = 0;
        if not (u = any(holders)) then
            holders := holders || u;
            granted := granted || u;
            stock := stock - 1;
        end if;
    end loop;
    if cardinality(granted) > 0 then
        -- Ids follow the list, so `claimed_by` keeps the order of the grants.
        insert into coupon_claims (coupon_name, user_id)
        select coupon, g from unnest(granted) with ordinality as t (g, n) order by n;
        update coupons set remaining_amount = stock where name = coupon;
    end if;
    return next;
end
$$;
