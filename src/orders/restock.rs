//! When keys arrive: orders waiting for a SKU are fulfilled oldest first,
//! one short transaction each, while keys last. `allot keys import` runs it
//! for its SKU at once; the scheduler runs it for every SKU as a safety net.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use super::{Fulfilment, OrderState, history, notices, store};
use crate::{
    db::{self, Tx, retry_on_contention},
    jobs,
    keys::{self, Assignment, Sku},
    merchant,
};

impl Fulfilment {
    /// Fulfils orders waiting for `sku`, oldest first, while keys last.
    /// Returns how many were fulfilled.
    pub async fn fulfil_waiting(&self, sku: &Sku, now: i64) -> Result<u64, db::Error> {
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
                Ok::<_, db::Error>(served)
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
    pub async fn fulfil_all_waiting(&self, now: i64) -> Result<u64, db::Error> {
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

impl Fulfilment {
    /// Vends a key to order `id` and queues its email. `false`: no key left.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fulfil(
        &self,
        tx: &mut Tx,
        id: i64,
        order_id: &str,
        sku: &Sku,
        email: &str,
        coupon_code: Option<&str>,
        how: &str,
        now: i64,
    ) -> Result<bool, db::Error> {
        let assignment = Assignment {
            email,
            order_id,
            coupon_code,
        };
        let Some(vended) = keys::vend(tx, sku, &assignment, now).await? else {
            return Ok(false);
        };
        let targets = merchant::subscribers(tx, "order.fulfilled").await?;
        self.record_fulfilment(tx, id, vended.id, sku, how, now, &targets)
            .await?;
        Ok(true)
    }

    /// What follows a vend of key `key` to order `id`: the buyer's email
    /// job, the order's new state and history, `order.fulfilled` to
    /// `targets`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_fulfilment(
        &self,
        tx: &mut Tx,
        id: i64,
        key: i64,
        sku: &Sku,
        how: &str,
        now: i64,
        targets: &[i64],
    ) -> Result<(), sqlx::Error> {
        let job = notices::key_email(id, key, self.max_attempts);
        let job_id = jobs::enqueue(tx, &job, now).await?;
        store::fulfilled(tx, id, key, job_id, now).await?;
        store::event(
            tx,
            id,
            now,
            OrderState::Fulfilled,
            &history::fulfilled(how, key, sku.as_str(), job_id),
        )
        .await?;
        self.announce_to(tx, targets, id, "order.fulfilled", now)
            .await?;
        metrics::counter!("allot_keys_vended_total").increment(1);
        Ok(())
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
