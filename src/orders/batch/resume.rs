//! Where this process's last batch of orders for a SKU stopped in the key
//! pool, so that on PostgreSQL the next batch starts its walk there rather
//! than at the oldest key. Every key sold leaves a dead entry at the front
//! of the pool's index until a vacuum; walking from the oldest stepped over
//! all of them, batch after batch (migration 0016).
//!
//! A place is only a shortcut: the function walks from the oldest again
//! whenever it finds too few keys after it, and a place is forgotten after
//! [`FORGET_AFTER`], so a key stepped over while another transaction held
//! it (which then let go) waits at most that long for its turn.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::keys::Sku;

/// How long a place is trusted.
const FORGET_AFTER: Duration = Duration::from_secs(1);

/// The last key each SKU's batches assigned, and when.
#[derive(Default)]
pub(super) struct Resume {
    places: Mutex<HashMap<Sku, (i64, Instant)>>,
}

impl Resume {
    /// The key after which the next batch for `sku` may start, if this
    /// process assigned one of its keys less than [`FORGET_AFTER`] ago.
    pub fn after(&self, sku: &Sku) -> Option<i64> {
        self.after_at(sku, Instant::now())
    }

    /// A batch for `sku` committed; `key` is the last it assigned.
    pub fn stopped_at(&self, sku: &Sku, key: i64) {
        self.stopped_at_at(sku, key, Instant::now());
    }

    fn after_at(&self, sku: &Sku, now: Instant) -> Option<i64> {
        let places = self.lock();
        let &(key, at) = places.get(sku)?;
        (now.saturating_duration_since(at) < FORGET_AFTER).then_some(key)
    }

    fn stopped_at_at(&self, sku: &Sku, key: i64, now: Instant) {
        let mut places = self.lock();
        // SKUs no batch sold from lately go, so the map holds the SKUs on
        // sale, not every SKU ever sold.
        places.retain(|_, &mut (_, at)| now.saturating_duration_since(at) < FORGET_AFTER);
        places.insert(sku.clone(), (key, now));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Sku, (i64, Instant)>> {
        // Every change is one call on the map: a panic elsewhere cannot
        // leave it half-changed.
        self.places
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_trusted_for_a_second_then_forgotten() {
        let resume = Resume::default();
        let sku = Sku::parse("course").unwrap();
        let start = Instant::now();
        assert_eq!(resume.after_at(&sku, start), None);
        resume.stopped_at_at(&sku, 41, start);
        resume.stopped_at_at(&sku, 42, start);
        assert_eq!(
            resume.after_at(&sku, start + Duration::from_millis(999)),
            Some(42)
        );
        assert_eq!(resume.after_at(&sku, start + FORGET_AFTER), None);
    }

    #[test]
    fn places_of_skus_no_longer_sold_are_dropped() {
        let resume = Resume::default();
        let old = Sku::parse("old").unwrap();
        let new = Sku::parse("new").unwrap();
        let start = Instant::now();
        resume.stopped_at_at(&old, 1, start);
        resume.stopped_at_at(&new, 2, start + FORGET_AFTER);
        assert_eq!(resume.lock().len(), 1);
        assert_eq!(resume.after_at(&new, start + FORGET_AFTER), Some(2));
    }
}
