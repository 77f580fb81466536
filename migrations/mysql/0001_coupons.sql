-- Flash-sale coupons. A claim lives in its own table (never embedded in the
-- coupon row); the claim insert and the decrement of remaining_amount commit
-- together, so remaining_amount + count(claims) = amount at every commit.
--
-- utf8mb4_bin: names and user ids compare byte for byte, as on the other
-- backends ('Promo' and 'PROMO' are two coupons). Its PAD SPACE semantics
-- would equate 'a' and 'a ', which is why the API rejects names and user ids
-- that start or end with whitespace.
create table coupons (
    id               bigint       not null auto_increment primary key,
    name             varchar(255) not null,
    amount           bigint       not null,
    remaining_amount bigint       not null,
    created_at       datetime(6)  not null default current_timestamp(6),
    unique key coupons_name_key (name),
    constraint coupons_amount_positive check (amount >= 1),
    constraint coupons_remaining_in_range check (remaining_amount between 0 and amount)
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;

create table coupon_claims (
    id          bigint       not null auto_increment primary key, -- claim order for claimed_by
    coupon_name varchar(255) not null,
    user_id     varchar(255) not null,
    claimed_at  datetime(6)  not null default current_timestamp(6),
    unique key coupon_claims_user_coupon_key (user_id, coupon_name),
    key coupon_claims_by_coupon (coupon_name, id),
    constraint coupon_claims_coupon_fk foreign key (coupon_name) references coupons (name)
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;
