-- Flash-sale coupons. A claim lives in its own table (never embedded in the
-- coupon row); the claim insert and the decrement of remaining_amount commit
-- together, so remaining_amount + count(claims) = amount at every commit.
create table coupons (
    id               bigint generated always as identity primary key,
    name             text        not null constraint coupons_name_key unique,
    amount           bigint      not null check (amount >= 1),
    remaining_amount bigint      not null check (remaining_amount between 0 and amount),
    created_at       timestamptz not null default now()
);

create table coupon_claims (
    id          bigint generated always as identity primary key, -- claim order for claimed_by
    coupon_name text        not null references coupons (name),
    user_id     text        not null,
    claimed_at  timestamptz not null default now(),
    constraint coupon_claims_user_coupon_key unique (user_id, coupon_name)
);

-- Serves "who claimed this coupon, in order" without a sort.
create index coupon_claims_by_coupon on coupon_claims (coupon_name, id);
