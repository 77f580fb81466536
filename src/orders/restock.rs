//! When keys arrive: orders waiting for a SKU are fulfilled oldest first,
//! one short transaction each, while keys last. `allot keys import` runs it
//! for its SKU at once; the scheduler runs it for every SKU as a safety net.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

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
    /// safety net that runs on a timer, whoever added the keys. Sets the
    /// gauge `allot_orders_awaiting_stock{sku}` to what still waits.
    pub async fn fulfil_all_waiting(&self, now: i64) -> Result<u64, sqlx::Error> {
        let mut fulfilled = 0;
        let mut still_waiting = Vec::new();
        for (sku, waiting) in store::skus_waiting(&self.db).await? {
            let served = match Sku::parse(&sku) {
                // A read first: a sold-out SKU costs no write transaction.
                Ok(parsed) if keys::has_available(&self.db, &parsed).await? => {
                    self.fulfil_waiting(&parsed, now).await?
                }
                Ok(_) => 0,
                Err(error) => {
                    tracing::warn!(%error, "an order waits for an unusable SKU");
                    0
                }
            };
            fulfilled += served;
            still_waiting.push((sku, (waiting - served as i64).max(0)));
        }
        self.published_waiting.publish(still_waiting);
        Ok(fulfilled)
    }
}

/// The SKUs of one [`Fulfilment`] in the gauge of waiting orders.
#[derive(Clone, Default)]
pub(super) struct Published(Arc<Mutex<BTreeSet<String>>>);

impl Published {
    /// Sets the gauge of orders waiting per SKU; a SKU that waited at the
    /// last sweep and no longer does goes to 0 rather than keep its count.
    fn publish(&self, waiting: Vec<(String, i64)>) {
        let mut published = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now: BTreeSet<String> = waiting.iter().map(|(sku, _)| sku.clone()).collect();
        for gone in published.difference(&now) {
            metrics::gauge!("allot_orders_awaiting_stock", "sku" => gone.clone()).set(0.0);
        }
        for (sku, n) in waiting {
            metrics::gauge!("allot_orders_awaiting_stock", "sku" => sku).set(n as f64);
        }
        *published = now;
    }
}
