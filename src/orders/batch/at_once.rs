//! Whether the next batch of a SKU should first try to commit in the one
//! statement that places it (PostgreSQL, `allot_place_orders` on its own,
//! `place_orders.pg.sql`), or go straight to a transaction of its own.
//!
//! The statement refuses a batch that needs more than it does (an enabled
//! merchant endpoint, an order waiting for stock), and the batch is placed
//! again in a transaction: right, but the first call was wasted. So after
//! a refusal a SKU's batches take the transaction for [`RETRY_AFTER`]:
//! during a sell-out, or on a store with merchant endpoints, one call in
//! that time is tried in vain, not every batch.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::keys::Sku;

/// How long a refusal sends a SKU's batches to a transaction.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// When each SKU's batch was last refused, and how many batches were
/// committed at once.
#[derive(Default)]
pub(super) struct AtOnce {
    refused: Mutex<HashMap<Sku, Instant>>,
    committed: AtomicU64,
}

impl AtOnce {
    /// How many batches one statement placed and committed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// A batch was placed and committed by one statement.
    pub fn commits(&self) {
        self.committed.fetch_add(1, Ordering::Relaxed);
    }

    /// The next batch for `sku` may try the one statement.
    pub fn may_try(&self, sku: &Sku) -> bool {
        self.may_try_at(sku, Instant::now())
    }

    /// A batch for `sku` was refused: it needed a transaction.
    pub fn refused(&self, sku: &Sku) {
        self.refused_at(sku, Instant::now());
    }

    fn may_try_at(&self, sku: &Sku, now: Instant) -> bool {
        self.lock()
            .get(sku)
            .is_none_or(|&at| now.saturating_duration_since(at) >= RETRY_AFTER)
    }

    fn refused_at(&self, sku: &Sku, now: Instant) {
        let mut refused = self.lock();
        // Refusals that no longer count go, so the map stays as small as
        // the SKUs refused lately.
        refused.retain(|_, &mut at| now.saturating_duration_since(at) < RETRY_AFTER);
        refused.insert(sku.clone(), now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Sku, Instant>> {
        // Every change is one call on the map: a panic elsewhere cannot
        // leave it half-changed.
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_sku_takes_the_transaction_for_a_while_and_others_do_not() {
        let at_once = AtOnce::default();
        let sold_out = Sku::parse("sold-out").unwrap();
        let other = Sku::parse("other").unwrap();
        let start = Instant::now();
        assert!(at_once.may_try_at(&sold_out, start));
        at_once.refused_at(&sold_out, start);
        assert!(!at_once.may_try_at(&sold_out, start + RETRY_AFTER / 2));
        assert!(at_once.may_try_at(&other, start + RETRY_AFTER / 2));
        assert!(at_once.may_try_at(&sold_out, start + RETRY_AFTER));
    }

    #[test]
    fn old_refusals_are_dropped() {
        let at_once = AtOnce::default();
        let start = Instant::now();
        at_once.refused_at(&Sku::parse("old").unwrap(), start);
        at_once.refused_at(&Sku::parse("new").unwrap(), start + RETRY_AFTER);
        assert_eq!(at_once.lock().len(), 1);
    }
}
