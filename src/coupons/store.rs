//! Coupon SQL: one text per statement with `?` placeholders through
//! `on_db!`/`on_tx!`, and the one claim algorithm ([`claim_batch`]).
//!
//! What differs by backend is how the coupon row is locked
//! ([`lock_coupon`]), and that PostgreSQL runs the batch's statements in
//! one function call; the rule that decides the claims is one ([`decide`]).

use std::collections::HashSet;

use sqlx::QueryBuilder;

use super::{Amount, ClaimOutcome, Coupon, CouponName, UserId};
use crate::{
    db::{Db, Tx, push_list},
    on_db, on_tx,
};

pub(super) async fn insert(db: &Db, name: &CouponName, amount: Amount) -> Result<(), sqlx::Error> {
    on_db!(db, write, |pool, sql| {
        sqlx::query(sql(
            "insert into coupons (name, amount, remaining_amount) values (?, ?, ?)",
        ))
        .bind(name.as_str())
        .bind(amount.0)
        .bind(amount.0)
        .execute(pool)
        .await
        .map(drop)
    })
}

pub(super) async fn newest(db: &Db, limit: i64) -> Result<Vec<super::Stock>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select name, amount, remaining_amount from coupons order by id desc limit ?",
        ))
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

/// One statement, so the coupon and its claims come from one snapshot and
/// `remaining_amount + claimed_by.len() == amount` holds in every answer.
pub(super) async fn find(db: &Db, name: &CouponName) -> Result<Option<Coupon>, sqlx::Error> {
    type Row = (i64, i64, Option<String>);
    let rows: Vec<Row> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql("select c.amount, c.remaining_amount, cl.user_id
               from coupons c left join coupon_claims cl on cl.coupon_name = c.name
              where c.name = ? order by cl.id"))
        .bind(name.as_str())
        .fetch_all(pool)
        .await
    })?;
    let Some(&(amount, remaining_amount, _)) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(Coupon {
        name: name.as_str().to_string(),
        amount,
        remaining_amount,
        claimed_by: rows.into_iter().filter_map(|(_, _, user)| user).collect(),
    }))
}

/// Decides and records the claims of `users` on one coupon in ONE
/// transaction, in order, with exactly the outcomes the same claims would get
/// one by one (a user twice in the list: granted, then already claimed);
/// `None` when the coupon does not exist. Four statements and one commit
/// whatever the number of users: lock the coupon, find who of them already
/// holds a unit, insert the new claims, take the stock. On PostgreSQL the
/// four run inside one function call (`allot_claim_batch`, migration 0011):
/// one round trip, where the batch's lock was otherwise held across six.
pub(super) async fn claim_batch(
    db: &Db,
    coupon: &CouponName,
    users: &[UserId],
) -> Result<Option<Vec<ClaimOutcome>>, sqlx::Error> {
    let coupon = coupon.as_str();
    match db {
        Db::Postgres(pool) => {
            let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
            let found: Option<(i64, Vec<String>)> =
                sqlx::query_as("select remaining, held from allot_claim_batch($1, $2)")
                    .bind(coupon)
                    .bind(&names)
                    .fetch_optional(pool)
                    .await?;
            Ok(found.map(|(remaining, held)| decide(remaining, held, users).0))
        }
        Db::Sqlite { .. } | Db::MySql(_) => claim_step_by_step(db, coupon, users).await,
    }
}

/// [`claim_batch`]'s four statements one by one.
async fn claim_step_by_step(
    db: &Db,
    coupon: &str,
    users: &[UserId],
) -> Result<Option<Vec<ClaimOutcome>>, sqlx::Error> {
    // Dropping `tx` without commit rolls back, on every early return.
    let mut tx = db.begin().await?;
    let Some(remaining) = lock_coupon(&mut tx, coupon).await? else {
        return Ok(None);
    };
    let holders = claimed_among(&mut tx, coupon, users).await?;
    let (outcomes, granted) = decide(remaining, holders, users);
    if !granted.is_empty() {
        insert_claims(&mut tx, coupon, &granted).await?;
        take(&mut tx, coupon, granted.len() as i64).await?;
        tx.commit().await?;
    }
    Ok(Some(outcomes))
}

/// The claim rule, given the stock before the batch and who of `users`
/// held a unit: in order, a holder (or a user granted earlier in the list)
/// is already claimed, anyone else is granted while stock remains. The
/// outcomes, and the users granted in order. `allot_claim_batch` applies
/// the same rule on PostgreSQL.
fn decide(
    mut remaining: i64,
    holders: impl IntoIterator<Item = String>,
    users: &[UserId],
) -> (Vec<ClaimOutcome>, Vec<&str>) {
    let mut holders: HashSet<String> = holders.into_iter().collect();
    let mut granted = Vec::new();
    let mut outcomes = Vec::with_capacity(users.len());
    for user in users {
        let outcome = if holders.contains(user.as_str()) {
            ClaimOutcome::AlreadyClaimed
        } else if remaining == 0 {
            ClaimOutcome::OutOfStock
        } else {
            holders.insert(user.as_str().to_string());
            granted.push(user.as_str());
            remaining -= 1;
            ClaimOutcome::Granted
        };
        outcomes.push(outcome);
    }
    (outcomes, granted)
}

/// Locks the coupon against other claimers; its remaining stock, or `None`.
async fn lock_coupon(tx: &mut Tx, coupon: &str) -> Result<Option<i64>, sqlx::Error> {
    // SQLite's BEGIN IMMEDIATE already holds the database write lock; MySQL
    // runs at READ COMMITTED (see `db`), so the claims check that follows
    // sees what the previous lock holder committed. PostgreSQL never comes
    // here: it locks inside `allot_claim_batch`.
    let lock = tx.backend().for_update();
    let select = format!("select remaining_amount from coupons where name = ?{lock}");
    on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(select))
            .bind(coupon)
            .fetch_optional(conn)
            .await
    })
}

/// Which of `users` already hold a unit of the coupon.
async fn claimed_among(
    tx: &mut Tx,
    coupon: &str,
    users: &[UserId],
) -> Result<Vec<String>, sqlx::Error> {
    let found: Vec<String> = on_tx!(tx, |conn, _sql| {
        let mut select =
            QueryBuilder::new("select user_id from coupon_claims where coupon_name = ");
        select.push_bind(coupon).push(" and user_id in ");
        push_list(&mut select, users.iter().map(UserId::as_str));
        // Not kept prepared: the text differs with the batch size (see `db::sql`).
        select
            .build_query_scalar()
            .persistent(false)
            .fetch_all(conn)
            .await
    })?;
    Ok(found)
}

/// One multi-row insert; ids follow the list, so `claimed_by` keeps the
/// order in which the claims were decided.
async fn insert_claims(tx: &mut Tx, coupon: &str, users: &[&str]) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, _sql| {
        let mut insert = QueryBuilder::new("insert into coupon_claims (coupon_name, user_id) ");
        insert.push_values(users, |mut row, user| {
            row.push_bind(coupon).push_bind(*user);
        });
        insert
            .build()
            .persistent(false)
            .execute(conn)
            .await
            .map(drop)
    })
}

async fn take(tx: &mut Tx, coupon: &str, units: i64) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update coupons set remaining_amount = remaining_amount - ? where name = ?",
        ))
        .bind(units)
        .bind(coupon)
        .execute(conn)
        .await
        .map(drop)
    })
}
