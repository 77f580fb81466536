//! Coupon SQL for each backend, side by side.
//!
//! The claim algorithm is written once ([`claim_batch`]); each backend
//! supplies its four statements through [`ClaimTx`]. What differs:
//! - PostgreSQL locks the coupon row with `FOR NO KEY UPDATE` (it does not
//!   block the foreign-key checks of other tables the way `FOR UPDATE` does);
//! - MySQL/MariaDB lock it with `FOR UPDATE` and run at READ COMMITTED (see
//!   `db.rs`) so the claims check sees what the previous lock holder committed;
//! - SQLite takes the database write lock at `BEGIN IMMEDIATE`, so a plain
//!   select is already serialised.

use std::{collections::HashSet, future::Future};

use sqlx::{MySql, Postgres, Sqlite, Transaction};

use super::{Amount, ClaimOutcome, Coupon, CouponName, UserId};
use crate::db::Db;

pub(super) async fn insert(db: &Db, name: &CouponName, amount: Amount) -> Result<(), sqlx::Error> {
    let (name, amount) = (name.as_str(), amount.0);
    match db {
        Db::Sqlite { writer, .. } => {
            sqlx::query("insert into coupons (name, amount, remaining_amount) values (?, ?, ?)")
                .bind(name)
                .bind(amount)
                .bind(amount)
                .execute(writer)
                .await?;
        }
        Db::Postgres(pool) => {
            sqlx::query("insert into coupons (name, amount, remaining_amount) values ($1, $2, $2)")
                .bind(name)
                .bind(amount)
                .execute(pool)
                .await?;
        }
        Db::MySql(pool) => {
            sqlx::query("insert into coupons (name, amount, remaining_amount) values (?, ?, ?)")
                .bind(name)
                .bind(amount)
                .bind(amount)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// One statement, so the coupon and its claims come from one snapshot and
/// `remaining_amount + claimed_by.len() == amount` holds in every answer.
pub(super) async fn find(db: &Db, name: &CouponName) -> Result<Option<Coupon>, sqlx::Error> {
    type Row = (i64, i64, Option<String>);
    let rows: Vec<Row> = match db {
        Db::Sqlite { reader, .. } => {
            sqlx::query_as(
                "select c.amount, c.remaining_amount, cl.user_id
                   from coupons c left join coupon_claims cl on cl.coupon_name = c.name
                  where c.name = ? order by cl.id",
            )
            .bind(name.as_str())
            .fetch_all(reader)
            .await?
        }
        Db::Postgres(pool) => {
            sqlx::query_as(
                "select c.amount, c.remaining_amount, cl.user_id
                   from coupons c left join coupon_claims cl on cl.coupon_name = c.name
                  where c.name = $1 order by cl.id",
            )
            .bind(name.as_str())
            .fetch_all(pool)
            .await?
        }
        Db::MySql(pool) => {
            sqlx::query_as(
                "select c.amount, c.remaining_amount, cl.user_id
                   from coupons c left join coupon_claims cl on cl.coupon_name = c.name
                  where c.name = ? order by cl.id",
            )
            .bind(name.as_str())
            .fetch_all(pool)
            .await?
        }
    };
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
    match db {
        Db::Sqlite { writer, .. } => {
            run_claims(writer.begin_with(Db::SQLITE_BEGIN).await?, coupon, users).await
        }
        Db::Postgres(pool) => run_claims(pool.begin().await?, coupon, users).await,
        Db::MySql(pool) => run_claims(pool.begin().await?, coupon, users).await,
    }
}

async fn run_claims<T: ClaimTx>(
    mut tx: T,
    coupon: &CouponName,
    users: &[UserId],
) -> Result<Option<Vec<ClaimOutcome>>, sqlx::Error> {
    let coupon = coupon.as_str();
    // Dropping `tx` without commit rolls back, on every early return.
    let Some(mut remaining) = tx.lock_remaining(coupon).await? else {
        return Ok(None);
    };
    let mut granted_now = HashSet::new();
    let mut outcomes = Vec::with_capacity(users.len());
    for user in users {
        let outcome = if granted_now.contains(user) || tx.has_claimed(coupon, user.as_str()).await?
        {
            ClaimOutcome::AlreadyClaimed
        } else if remaining == 0 {
            ClaimOutcome::OutOfStock
        } else {
            tx.insert_claim(coupon, user.as_str()).await?;
            granted_now.insert(user);
            remaining -= 1;
            ClaimOutcome::Granted
        };
        outcomes.push(outcome);
    }
    if !granted_now.is_empty() {
        tx.take(coupon, granted_now.len() as i64).await?;
        tx.commit().await?;
    }
    Ok(Some(outcomes))
}

/// The statements of a claim transaction. Futures are `Send` so the claim can
/// run inside an HTTP handler.
trait ClaimTx: Send {
    /// Locks the coupon against other claimers; its remaining stock, or `None`.
    fn lock_remaining(
        &mut self,
        coupon: &str,
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send;
    fn has_claimed(
        &mut self,
        coupon: &str,
        user: &str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
    fn insert_claim(
        &mut self,
        coupon: &str,
        user: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    fn take(
        &mut self,
        coupon: &str,
        units: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    fn commit(self) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Implements [`ClaimTx`] for one backend from its four statements. Bind
/// order is the same everywhere: lock (coupon), has_claimed (coupon, user),
/// insert (coupon, user), take (units, coupon).
macro_rules! claim_statements {
    ($db:ty {
        lock: $lock:literal,
        has_claimed: $has_claimed:literal,
        insert: $insert:literal,
        take: $take:literal $(,)?
    }) => {
        impl ClaimTx for Transaction<'_, $db> {
            async fn lock_remaining(&mut self, coupon: &str) -> Result<Option<i64>, sqlx::Error> {
                sqlx::query_scalar($lock)
                    .bind(coupon)
                    .fetch_optional(&mut **self)
                    .await
            }
            async fn has_claimed(&mut self, coupon: &str, user: &str) -> Result<bool, sqlx::Error> {
                let claims: i64 = sqlx::query_scalar($has_claimed)
                    .bind(coupon)
                    .bind(user)
                    .fetch_one(&mut **self)
                    .await?;
                Ok(claims > 0)
            }
            async fn insert_claim(&mut self, coupon: &str, user: &str) -> Result<(), sqlx::Error> {
                sqlx::query($insert)
                    .bind(coupon)
                    .bind(user)
                    .execute(&mut **self)
                    .await
                    .map(drop)
            }
            async fn take(&mut self, coupon: &str, units: i64) -> Result<(), sqlx::Error> {
                sqlx::query($take)
                    .bind(units)
                    .bind(coupon)
                    .execute(&mut **self)
                    .await
                    .map(drop)
            }
            async fn commit(self) -> Result<(), sqlx::Error> {
                Transaction::commit(self).await
            }
        }
    };
}

claim_statements!(Sqlite {
    // BEGIN IMMEDIATE already holds the database write lock.
    lock: "select remaining_amount from coupons where name = ?",
    has_claimed: "select count(*) from coupon_claims where coupon_name = ? and user_id = ?",
    insert: "insert into coupon_claims (coupon_name, user_id) values (?, ?)",
    take: "update coupons set remaining_amount = remaining_amount - ? where name = ?",
});

claim_statements!(Postgres {
    lock: "select remaining_amount from coupons where name = $1 for no key update",
    has_claimed: "select count(*) from coupon_claims where coupon_name = $1 and user_id = $2",
    insert: "insert into coupon_claims (coupon_name, user_id) values ($1, $2)",
    take: "update coupons set remaining_amount = remaining_amount - $1 where name = $2",
});

claim_statements!(MySql {
    lock: "select remaining_amount from coupons where name = ? for update",
    has_claimed: "select count(*) from coupon_claims where coupon_name = ? and user_id = ?",
    insert: "insert into coupon_claims (coupon_name, user_id) values (?, ?)",
    take: "update coupons set remaining_amount = remaining_amount - ? where name = ?",
});
