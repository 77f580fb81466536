-- Flash-sale coupons. A claim lives in its own table (never embedded in the
-- coupon row); the claim insert and the decrement of remaining_amount commit
-- together, so remaining_amount + count(claims) = amount at every commit.
create table coupons (
    id               integer primary key autoincrement,
    name             text    not null unique,
    amount           integer not null check (amount >= 1),
    remaining_amount integer not null check (remaining_amount between 0 and amount),
    created_at       text    not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

create table coupon_claims (
    id          integer primary key autoincrement,  -- claim order for claimed_by
    coupon_name text    not null references coupons (name),
    user_id     text    not null,
    claimed_at  text    not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    unique (user_id, coupon_name)
);

-- Serves "who claimed this coupon, in order" without a sort.
create index coupon_claims_by_coupon on coupon_claims (coupon_name, id);
