//! Coupon SQL: one text per statement with `?` placeholders through
//! `on_db!`/`on_tx!`, and the one claim algorithm ([`claim_batch`]).
//!
//! What differs by backend is only how the coupon row is locked
//! ([`lock_coupon`]); everything else is the same text.

use std::collections::HashSet;

use super::{Amount, ClaimOutcome, Coupon, CouponName, UserId};
use crate::{
    db::{Backend, Db, Tx},
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

/// Decides and records the claims of `users` on one coupon in ONE transaction,
/// in order; `None` when the coupon does not exist. Today each HTTP claim is a
/// batch of one; the batch shape is what lets many claims on a hot coupon share
/// one lock and one commit later.
pub(super) async fn claim_batch(
    db: &Db,
    coupon: &CouponName,
    users: &[UserId],
) -> Result<Option<Vec<ClaimOutcome>>, sqlx::Error> {
    let coupon = coupon.as_str();
    // Dropping `tx` without commit rolls back, on every early return.
    let mut tx = db.begin().await?;
    let Some(mut remaining) = lock_coupon(&mut tx, coupon).await? else {
        return Ok(None);
    };
    let mut granted_now = HashSet::new();
    let mut outcomes = Vec::with_capacity(users.len());
    for user in users {
        let outcome = if granted_now.contains(user) || has_claimed(&mut tx, coupon, user).await? {
            ClaimOutcome::AlreadyClaimed
        } else if remaining == 0 {
            ClaimOutcome::OutOfStock
        } else {
            insert_claim(&mut tx, coupon, user).await?;
            granted_now.insert(user);
            remaining -= 1;
            ClaimOutcome::Granted
        };
        outcomes.push(outcome);
    }
    if !granted_now.is_empty() {
        take(&mut tx, coupon, granted_now.len() as i64).await?;
        tx.commit().await?;
    }
    Ok(Some(outcomes))
}

/// Locks the coupon against other claimers; its remaining stock, or `None`.
async fn lock_coupon(tx: &mut Tx, coupon: &str) -> Result<Option<i64>, sqlx::Error> {
    let lock = match tx.backend() {
        // BEGIN IMMEDIATE already holds the database write lock.
        Backend::Sqlite => "",
        // Unlike FOR UPDATE, does not block other tables' foreign-key checks.
        Backend::Postgres => " for no key update",
        // At READ COMMITTED (see `db`), so the claims check that follows sees
        // what the previous lock holder committed.
        Backend::MySql => " for update",
    };
    let select = format!("select remaining_amount from coupons where name = ?{lock}");
    on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(select))
            .bind(coupon)
            .fetch_optional(conn)
            .await
    })
}

async fn has_claimed(tx: &mut Tx, coupon: &str, user: &UserId) -> Result<bool, sqlx::Error> {
    let claims: i64 = on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(
            "select count(*) from coupon_claims where coupon_name = ? and user_id = ?",
        ))
        .bind(coupon)
        .bind(user.as_str())
        .fetch_one(conn)
        .await
    })?;
    Ok(claims > 0)
}

async fn insert_claim(tx: &mut Tx, coupon: &str, user: &UserId) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "insert into coupon_claims (coupon_name, user_id) values (?, ?)",
        ))
        .bind(coupon)
        .bind(user.as_str())
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
