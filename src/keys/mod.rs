//! The key bank: pools of license keys per product SKU, imported from files,
//! vended first in first out, exactly once each, whatever the concurrency.
//!
//! - this file: the domain (SKUs, keys, stock) and the operations;
//! - `store`: the SQL per backend (the vend differs: `SKIP LOCKED` on the
//!   servers, the single writer on SQLite);
//! - `import`: streaming a CSV or one-key-per-line file into the pool.
//!
//! License keys are secrets: nothing here logs or prints one.

pub mod import;
mod store;

use serde::Serialize;

use crate::db::{Db, Tx};

/// Keys, SKUs and order ids are stored in columns of 255 characters.
const MAX_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct Invalid {
    field: &'static str,
    problem: String,
}

/// Shared rules: 1..=255 characters, no control characters, no surrounding
/// whitespace (MySQL's PAD SPACE collation would equate "a" and "a ").
fn text(field: &'static str, value: &str) -> Result<String, Invalid> {
    let chars = value.chars().count();
    let problem = if chars == 0 {
        "must not be empty".to_string()
    } else if chars > MAX_LEN {
        format!("must be at most {MAX_LEN} characters, got {chars}")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_string()
    } else if value.trim() != value {
        "must not start or end with whitespace".to_string()
    } else {
        return Ok(value.to_string());
    };
    Err(Invalid { field, problem })
}

/// A product SKU, the name of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sku(String);

impl Sku {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        text("SKU", value).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A license key. Its `Debug` hides the value, so it cannot reach a log by
/// accident.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LicenseKey(String);

impl LicenseKey {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        text("license key", value).map(Self)
    }

    /// The key itself, for the buyer's email and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LicenseKey(***)")
    }
}

/// Keys per state for one SKU, as `allot keys stock --json` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
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
) -> Result<Option<Vended>, sqlx::Error> {
    store::vend(tx, sku, to, now).await
}

#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked; it was in this state before.
    Yes {
        was: String,
    },
    Already,
    NotFound,
}

/// Takes a key out of circulation, available or assigned (a refund, a
/// leak). An assigned key keeps its assignment for the record.
pub async fn revoke(db: &Db, key: &LicenseKey) -> Result<Revoked, sqlx::Error> {
    store::revoke(db, key).await
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
