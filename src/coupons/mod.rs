//! Flash-sale coupons: create a coupon with a stock, let users claim it at most
//! once each, show who got one.
//!
//! - this file: the domain (parsed names, outcomes, errors) and the operations
//!   the HTTP routes and the CLI share;
//! - `store`: its SQL (one text for every backend but the row lock) and the
//!   one claim algorithm;
//! - `combiner`: group commit, many concurrent claims on a coupon in one
//!   transaction;
//! - `routes`: the HTTP contract.
//!
//! Atomicity never depends on this process: the coupon row lock (or SQLite's
//! single writer) orders all claims on a coupon, on every backend and across
//! any number of `allot serve` processes.
//!
//! Owns the `coupons` and `coupon_claims` tables; imports plumbing only, and
//! nothing imports it but `app` and `cli`.

mod combiner;
mod routes;
mod store;

use std::sync::Arc;

use serde::Serialize;

use crate::{
    db::{Db, is_unique_violation},
    text::BoundedText,
};

pub use combiner::Combiner;
pub use routes::router;

/// A coupon name that is safe to store and compare on every backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CouponName(BoundedText);

/// The id of the user claiming a coupon, as the shop knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(BoundedText);

/// How many units a coupon has in total; at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(i64);

impl CouponName {
    pub fn parse(value: impl Into<String>) -> Result<Self, CouponError> {
        identifier("name", value.into()).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl UserId {
    pub fn parse(value: impl Into<String>) -> Result<Self, CouponError> {
        identifier("user_id", value.into()).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Amount {
    pub fn parse(value: i64) -> Result<Self, CouponError> {
        if value < 1 {
            return Err(CouponError::Invalid(format!(
                "amount must be at least 1, got {value}"
            )));
        }
        Ok(Self(value))
    }
}

/// Names and user ids follow the shared rules of [`BoundedText`], compared
/// in NFC.
fn identifier(field: &'static str, value: String) -> Result<BoundedText, CouponError> {
    BoundedText::identifier(field, &value).map_err(|e| CouponError::Invalid(e.to_string()))
}

/// A coupon as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Coupon {
    pub name: String,
    pub amount: i64,
    pub remaining_amount: i64,
    /// User ids in the order their claims committed.
    pub claimed_by: Vec<String>,
}

/// What happened to one claim once the coupon was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    Granted,
    AlreadyClaimed,
    OutOfStock,
}

#[derive(Debug, thiserror::Error)]
pub enum CouponError {
    #[error("{0}")]
    Invalid(String),
    #[error("a coupon with this name already exists")]
    AlreadyExists,
    #[error("no coupon with this name")]
    NotFound,
    #[error("this user has already claimed this coupon")]
    AlreadyClaimed,
    #[error("this coupon has no units left")]
    OutOfStock,
    /// Shared: one failed batch answers each of its claims with it.
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    #[error("the claim was interrupted before it was decided")]
    Interrupted,
}

impl From<sqlx::Error> for CouponError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}

pub async fn create(db: &Db, name: &CouponName, amount: Amount) -> Result<Coupon, CouponError> {
    match store::insert(db, name, amount).await {
        Ok(()) => Ok(Coupon {
            name: name.as_str().to_string(),
            amount: amount.0,
            remaining_amount: amount.0,
            claimed_by: Vec::new(),
        }),
        Err(e) if is_unique_violation(&e) => Err(CouponError::AlreadyExists),
        Err(e) => Err(e.into()),
    }
}

pub async fn show(db: &Db, name: &CouponName) -> Result<Coupon, CouponError> {
    store::find(db, name).await?.ok_or(CouponError::NotFound)
}

/// A coupon's stock, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Stock {
    pub name: String,
    pub amount: i64,
    pub remaining_amount: i64,
}

/// The `limit` newest coupons.
pub async fn newest(db: &Db, limit: i64) -> Result<Vec<Stock>, sqlx::Error> {
    store::newest(db, limit).await
}

/// Claims one unit for `user`, in one transaction with the other claims on
/// the coupon in flight in this process (see [`Combiner`]). Already-claimed
/// is decided before stock, so a user who holds a unit hears "already
/// claimed" even after a sell-out.
pub async fn claim(claims: &Combiner, name: &CouponName, user: &UserId) -> Result<(), CouponError> {
    let result = match claims.claim(name, user).await {
        Ok(ClaimOutcome::Granted) => Ok(()),
        Ok(ClaimOutcome::AlreadyClaimed) => Err(CouponError::AlreadyClaimed),
        Ok(ClaimOutcome::OutOfStock) => Err(CouponError::OutOfStock),
        // The row lock makes this unreachable; the UNIQUE constraint is the
        // last line of defence and still means "already claimed".
        Err(CouponError::Database(e)) if is_unique_violation(&e) => {
            Err(CouponError::AlreadyClaimed)
        }
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(()) => "granted",
        Err(CouponError::AlreadyClaimed) => "already_claimed",
        Err(CouponError::OutOfStock) => "out_of_stock",
        Err(CouponError::NotFound) => "not_found",
        Err(_) => "error",
    };
    metrics::counter!("allot_coupon_claims_total", "outcome" => outcome).increment(1);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_in_characters_not_bytes() {
        assert!(CouponName::parse("é".repeat(255)).is_ok());
        assert!(CouponName::parse("é".repeat(256)).is_err());
        assert!(CouponName::parse("").is_err());
        assert!(CouponName::parse(" PROMO").is_err());
        assert!(CouponName::parse("PRO\u{0}MO").is_err());
        assert!(CouponName::parse("PROMO SUPER 🎉").is_ok());
    }

    #[test]
    fn amount_must_be_positive() {
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(-5).is_err());
        assert_eq!(Amount::parse(1).unwrap(), Amount(1));
    }
}
