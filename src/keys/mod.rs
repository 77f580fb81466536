//! The key bank: pools of license keys per product SKU, imported from files,
//! vended first in first out, exactly once each, whatever the concurrency.
//!
//! - this file: the domain (SKUs, keys, stock) and the operations;
//! - `store`: the SQL per backend (the vend differs: `SKIP LOCKED` on the
//!   servers, the single writer on SQLite);
//! - `import`: streaming a CSV or one-key-per-line file into the pool;
//! - `issued`: what an email reads of a sold key, concurrent reads together.
//!
//! License keys are secrets: nothing here logs or prints one.
//!
//! Owns the `license_keys` table: every query on it lives here. It must not
//! import `orders` or the outbox; orders call in.

pub mod import;
mod issued;
mod store;

pub use issued::{Issued, IssuedKeys, issued};
pub use store::oldest_available;

use serde::Serialize;

use crate::{
    db::{self, Db, Step, Tx},
    text::{BoundedText, Invalid},
};

/// A product SKU, the name of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sku(BoundedText);

impl Sku {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        BoundedText::identifier("SKU", value).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// A license key. Its `Debug` hides the value, so it cannot reach a log by
/// accident.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LicenseKey(BoundedText);

impl LicenseKey {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        BoundedText::parse("license key", value).map(Self)
    }

    /// The key itself, for the buyer's email and nowhere else.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LicenseKey(***)")
    }
}

/// Keys per state for one SKU, as `allot keys stock --json` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = KeyStock)]
pub struct Stock {
    pub product_sku: String,
    pub available: i64,
    pub assigned: i64,
    pub revoked: i64,
}

pub async fn stock(db: &Db) -> Result<Vec<Stock>, sqlx::Error> {
    store::stock(db).await
}

/// Who a vended key goes to.
#[derive(Debug, Clone)]
pub struct Assignment<'a> {
    pub email: &'a str,
    pub order_id: &'a str,
    pub coupon_code: Option<&'a str>,
}

/// A key taken from the pool.
#[derive(Debug, Clone)]
pub struct Vended {
    pub id: i64,
    pub key: LicenseKey,
}

/// Takes the oldest available key of `sku` and assigns it, inside the
/// caller's transaction (with the order row and the email job). `None`:
/// the pool is empty. Concurrent callers never get the same key: on the
/// servers each locks a different row (`SKIP LOCKED`); on SQLite the
/// transaction holds the single write lock.
pub async fn vend(
    tx: &mut Tx,
    sku: &Sku,
    to: &Assignment<'_>,
    now: i64,
) -> Result<Option<Vended>, db::Error> {
    store::vend(tx, sku, to, now).await
}

/// Locks up to `n` of the oldest available keys of `sku` for the caller's
/// transaction, oldest first, for [`assign_reserved_many`]: one statement where
/// [`vend`] takes one key per call. Fewer than `n`: the pool holds no more
/// that another transaction has not locked.
pub async fn reserve(tx: &mut Tx, sku: &Sku, n: usize) -> Result<Vec<i64>, sqlx::Error> {
    store::reserve(tx, sku, n).await
}

/// Assigns keys from [`reserve`], each to its buyer, in one statement. An
/// error if one was taken after all, which the row locks rule out; the
/// caller's transaction must not commit.
pub async fn assign_reserved_many(
    step: Step<'_>,
    assignments: &[(i64, Assignment<'_>)],
    now: i64,
) -> Result<(), db::Error> {
    let assigned = store::assign_many(step, assignments, now).await?;
    if assigned == assignments.len() as u64 {
        Ok(())
    } else {
        Err(db::Error::Broken(format!(
            "{} keys were reserved but {assigned} could be assigned",
            assignments.len()
        )))
    }
}

/// Whether `sku` has a key left, seen from inside a transaction.
pub async fn in_stock(tx: &mut Tx, sku: &Sku) -> Result<bool, sqlx::Error> {
    store::in_stock(tx, sku).await
}

/// Whether `sku` has a key left: a cheap read before a write transaction.
pub async fn has_available(db: &Db, sku: &Sku) -> Result<bool, sqlx::Error> {
    store::has_available(db, sku).await
}

/// The id of the newest key ever imported for `sku` (0 if none): it names
/// a sell-out, which lasts until a restock adds newer keys. Unlike the last
/// key handed out, it is the same for every buyer racing into the empty
/// pool (one of them may be vending the last key right now).
pub async fn newest_key(tx: &mut Tx, sku: &Sku) -> Result<i64, sqlx::Error> {
    store::newest_key(tx, sku).await
}

crate::stored_state! {
    /// Where a key of the pool stands (`license_keys.status`).
    pub enum KeyStatus: "key status" {
        Available = "available",
        Assigned = "assigned",
        Revoked = "revoked",
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked key `id` of `sku`; it was in state `was` before.
    Yes {
        was: KeyStatus,
        id: i64,
        sku: String,
    },
    Already,
    NotFound,
}

/// Takes a key out of circulation inside `tx`, available or assigned (a
/// refund, a leak). An assigned key keeps its assignment for the record.
pub async fn revoke(tx: &mut Tx, key: &LicenseKey) -> Result<Revoked, sqlx::Error> {
    store::revoke(tx, key).await
}

/// Revokes key `id` inside `tx` (the key of a refunded order); `false` if
/// it was revoked already.
pub async fn revoke_id(tx: &mut Tx, id: i64) -> Result<bool, sqlx::Error> {
    store::revoke_id(tx, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_show_in_debug_output() {
        let key = LicenseKey::parse("ABCD-1234-SECRET").unwrap();
        assert!(!format!("{key:?}").contains("SECRET"));
        assert!(!format!("{:?}", Vended { id: 1, key }).contains("SECRET"));
    }

    #[test]
    fn keys_and_skus_are_checked() {
        assert!(LicenseKey::parse("").is_err());
        assert!(LicenseKey::parse(" KEY").is_err());
        assert!(LicenseKey::parse(&"k".repeat(256)).is_err());
        assert!(Sku::parse("course-101").is_ok());
        assert!(Sku::parse("course\t101").is_err());
    }
}
