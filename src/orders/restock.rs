//! When keys arrive: orders waiting for a SKU are fulfilled oldest first,
//! one short transaction each, while keys last. `allot keys import` runs it
//! for its SKU at once; the scheduler runs it for every SKU as a safety net.

use super::{Fulfilment, store};
use crate::{
    db::retry_on_contention,
    keys::{self, Sku},
};

impl Fulfilment {
    /// Fulfils orders waiting for `sku`, oldest first, while keys last.
    /// Returns how many were fulfilled.
    pub async fn fulfil_waiting(&self, sku: &Sku, now: i64) -> Result<u64, sqlx::Error> {
        let mut fulfilled = 0;
        loop {
            let done = retry_on_contention(|| async {
                let mut tx = self.db.begin().await?;
                // Locks the oldest waiting order (waiting for it if another
                // process holds it), so that restocks go strictly in order.
                let Some(order) = store::oldest_waiting(&mut tx, sku).await? else {
                    return Ok(false);
                };
                let served = self
                    .fulfil(
                        &mut tx,
                        order.id,
                        &order.order_id,
                        sku,
                        &order.email,
                        order.coupon_code.as_deref(),
                        "keys arrived",
                        now,
                    )
                    .await?;
                if served {
                    tx.commit().await?;
                }
                Ok(served)
            })
            .await?;
            if !done {
                break;
            }
            fulfilled += 1;
        }
        if fulfilled > 0 {
            tracing::info!(
                sku = sku.as_str(),
                fulfilled,
                "fulfilled orders that waited for stock"
            );
        }
        Ok(fulfilled)
    }

    /// [`Self::fulfil_waiting`] for every SKU with waiting orders: the
    /// safety net that runs on a timer, whoever added the keys.
    pub async fn fulfil_all_waiting(&self, now: i64) -> Result<u64, sqlx::Error> {
        let mut fulfilled = 0;
        for sku in store::skus_waiting(&self.db).await? {
            match Sku::parse(&sku) {
                // A read first: a sold-out SKU costs no write transaction.
                Ok(sku) if keys::has_available(&self.db, &sku).await? => {
                    fulfilled += self.fulfil_waiting(&sku, now).await?
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "an order waits for an unusable SKU"),
            }
        }
        Ok(fulfilled)
    }
}
