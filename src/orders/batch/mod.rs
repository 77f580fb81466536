//! Group commit for webhook orders: concurrent orders for one SKU are
//! placed in one transaction ([`crate::batch`]): their rows, one locking
//! read of as many keys as they need (oldest first, `SKIP LOCKED` on the
//! servers), their email jobs and history, one commit.
//!
//! Each order gets the outcome it would get alone, in arrival order: a
//! repeat of an order earlier in the batch (or already stored) is a
//! duplicate; once the keys run out, the rest of the batch waits for stock,
//! behind any order already waiting. A batch whose transaction fails for a
//! reason of its own is placed again one order at a time, so that one bad
//! order fails alone.

mod store;

use std::collections::{HashMap, HashSet};

use super::{Fulfilment, Placed, Status, notices, place::claim};
use crate::{
    batch::Decide,
    db::{Tx, is_unavailable, retry_on_contention},
    intake::normalize::{Order, Source},
    jobs,
    keys::{self, Assignment, Sku},
    merchant,
};

/// The most orders one transaction places: bounded so that its locks are
/// held briefly; the rest wait for the next batch.
pub(super) const MAX_BATCH: usize = 128;

/// One order waiting to be placed.
pub(super) struct Request {
    pub source: Source,
    pub order: Order,
    pub now: i64,
}

/// The decider: a [`Fulfilment`] that places alone (it holds no batcher).
pub(super) struct Orders(pub Fulfilment);

impl Decide for Orders {
    type Key = Sku;
    type Request = Request;
    type Answer = Result<Placed, sqlx::Error>;

    async fn decide(&self, sku: &Sku, batch: Vec<Request>) -> Vec<Self::Answer> {
        if batch.len() == 1 {
            return vec![self.0.place_alone(sku, &batch[0]).await];
        }
        match retry_on_contention(|| self.0.place_together(sku, &batch)).await {
            Ok(placed) => placed.into_iter().map(Ok).collect(),
            Err(error) if is_unavailable(&error) => {
                // One outage, told to each order in words that still read
                // as an outage (503, try again).
                let said = error.to_string();
                batch
                    .iter()
                    .map(|_| Err(sqlx::Error::Io(std::io::Error::other(said.clone()))))
                    .collect()
            }
            Err(error) => {
                tracing::warn!(%error, orders = batch.len(), "a batch of orders failed; placing each alone");
                let mut answers = Vec::with_capacity(batch.len());
                for request in &batch {
                    answers.push(self.0.place_alone(sku, request).await);
                }
                answers
            }
        }
    }
}

impl Fulfilment {
    async fn place_alone(&self, sku: &Sku, r: &Request) -> Result<Placed, sqlx::Error> {
        let sku = Ok(sku.clone());
        retry_on_contention(|| self.place_once(r.source, &r.order, &sku, None, &[], r.now)).await
    }

    /// Places `batch`, all for `sku`, in one transaction whose statements
    /// do not grow with the batch (an order that needed attention before,
    /// taken up again, and merchant announcements are the exceptions).
    async fn place_together(
        &self,
        sku: &Sku,
        batch: &[Request],
    ) -> Result<Vec<Placed>, sqlx::Error> {
        let now = batch.iter().map(|r| r.now).max().unwrap_or_default();
        let mut tx = self.db.begin().await?;
        let mut statuses = vec![Status::Duplicate; batch.len()];
        // First arrivals per source; a repeat inside the batch is a duplicate.
        let mut firsts: Vec<(Source, Vec<usize>)> = Vec::new();
        let mut seen = HashSet::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            if !seen.insert((r.source.as_str(), r.order.order_id.as_str())) {
                continue;
            }
            match firsts.iter_mut().find(|(source, _)| *source == r.source) {
                Some((_, group)) => group.push(i),
                None => firsts.push((r.source, vec![i])),
            }
        }
        let mut new: Vec<(usize, i64)> = Vec::with_capacity(batch.len());
        for (source, group) in &firsts {
            let ids: Vec<&str> = group
                .iter()
                .map(|&i| batch[i].order.order_id.as_str())
                .collect();
            let stored: HashMap<String, store::Stored> =
                store::stored(&mut tx, source.as_str(), &ids)
                    .await?
                    .into_iter()
                    .map(|row| (row.order_id.clone(), row))
                    .collect();
            let mut fresh = Vec::new();
            for &i in group {
                let order = &batch[i].order;
                match stored.get(&order.order_id) {
                    None => fresh.push(i),
                    // Set aside before: taken up again, as `claim` does.
                    Some(row) if row.state == "needs_attention" => {
                        if let Some(id) = claim(&mut tx, *source, &order.order_id, now).await? {
                            let details = super::store::Details {
                                email: Some(order.email.as_str()),
                                product_sku: Some(sku.as_str()),
                                coupon_code: order.coupon_code.as_deref(),
                            };
                            super::store::describe(&mut tx, id, &details, now).await?;
                            new.push((i, id));
                        }
                    }
                    Some(_) => {}
                }
            }
            if fresh.is_empty() {
                continue;
            }
            let rows: Vec<store::NewOrder> = fresh
                .iter()
                .map(|&i| store::NewOrder {
                    order_id: &batch[i].order.order_id,
                    email: batch[i].order.email.as_str(),
                    coupon_code: batch[i].order.coupon_code.as_deref(),
                })
                .collect();
            let inserted =
                store::insert(&mut tx, source.as_str(), sku.as_str(), &rows, now).await?;
            // One stored by another transaction meanwhile is a duplicate.
            new.extend(
                fresh
                    .iter()
                    .filter_map(|&i| inserted.get(&batch[i].order.order_id).map(|&id| (i, id))),
            );
        }
        new.sort_unstable();
        if new.is_empty() {
            tx.commit().await?;
            return Ok(answers(batch, statuses));
        }
        let queued_behind = super::store::waiting_ahead(&mut tx, sku).await?;
        let reserved = if queued_behind {
            Vec::new()
        } else {
            keys::reserve(&mut tx, sku, new.len()).await?
        };
        let (served, waiting) = new.split_at(reserved.len());
        let mut events = Vec::with_capacity(new.len());
        if !served.is_empty() {
            self.fulfil_served(&mut tx, sku, batch, served, &reserved, &mut events, now)
                .await?;
            for &(i, _) in served {
                statuses[i] = Status::Fulfilled;
            }
        }
        if let Some(&(_, first)) = waiting.first() {
            // Only the first order of the batch to wait can be the first of
            // a sell-out; those after it queue behind it.
            let alert = !queued_behind || !keys::in_stock(&mut tx, sku).await?;
            let ids: Vec<i64> = waiting.iter().map(|&(_, id)| id).collect();
            store::waiting(&mut tx, &ids, now).await?;
            for (n, &(i, id)) in waiting.iter().enumerate() {
                let received = format!("received from {}", batch[i].source.as_str());
                let detail = if n == 0 && !queued_behind {
                    format!(
                        "{received}; {} is out of stock, waiting for keys",
                        sku.as_str()
                    )
                } else {
                    format!(
                        "{received}; queued behind earlier orders waiting for {}",
                        sku.as_str()
                    )
                };
                events.push((id, "awaiting_stock", detail));
                statuses[i] = Status::AwaitingStock;
            }
            if alert {
                self.sold_out(&mut tx, sku, first, now).await?;
            }
            let targets = merchant::subscribers(&mut tx, "order.awaiting_stock").await?;
            for &id in &ids {
                self.announce_to(&mut tx, &targets, id, "order.awaiting_stock", now)
                    .await?;
            }
            metrics::counter!("allot_orders_awaiting_stock_total").increment(ids.len() as u64);
        }
        store::events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(answers(batch, statuses))
    }

    /// Assigns `reserved[n]` to the `n`th order of `served` (oldest key to
    /// the earliest order), queues their emails and marks them fulfilled;
    /// their history entries go to `events`.
    #[allow(clippy::too_many_arguments)]
    async fn fulfil_served(
        &self,
        tx: &mut Tx,
        sku: &Sku,
        batch: &[Request],
        served: &[(usize, i64)],
        reserved: &[i64],
        events: &mut Vec<(i64, &'static str, String)>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let assignments: Vec<(i64, Assignment)> = served
            .iter()
            .zip(reserved)
            .map(|(&(i, _), &key)| {
                let order = &batch[i].order;
                let to = Assignment {
                    email: order.email.as_str(),
                    order_id: &order.order_id,
                    coupon_code: order.coupon_code.as_deref(),
                };
                (key, to)
            })
            .collect();
        keys::assign_reserved_many(tx, &assignments, now).await?;
        let emails: Vec<_> = served
            .iter()
            .zip(reserved)
            .map(|(&(_, id), &key)| notices::key_email(id, key, self.max_attempts))
            .collect();
        let jobs = jobs::enqueue_many(tx, &emails, now).await?;
        let settled: Vec<(i64, i64, Option<i64>)> = served
            .iter()
            .zip(reserved)
            .zip(&jobs)
            .map(|((&(_, id), &key), &job)| (id, key, job))
            .collect();
        store::fulfilled(tx, &settled, now).await?;
        for (&(i, _), &(id, key, job)) in served.iter().zip(&settled) {
            events.push((
                id,
                "fulfilled",
                format!(
                    "received from {}; key #{key} of {} assigned, email to the buyer queued (job {})",
                    batch[i].source.as_str(),
                    sku.as_str(),
                    job.map_or_else(|| "-".into(), |j| j.to_string())
                ),
            ));
        }
        let targets = merchant::subscribers(tx, "order.fulfilled").await?;
        for &(id, _, _) in &settled {
            self.announce_to(tx, &targets, id, "order.fulfilled", now)
                .await?;
        }
        metrics::counter!("allot_keys_vended_total").increment(settled.len() as u64);
        Ok(())
    }
}

fn answers(batch: &[Request], statuses: Vec<Status>) -> Vec<Placed> {
    batch
        .iter()
        .zip(statuses)
        .map(|(r, status)| {
            metrics::counter!("allot_orders_total", "source" => r.source.as_str(), "status" => status.as_str()).increment(1);
            Placed {
                order_id: r.order.order_id.clone(),
                status,
                detail: None,
            }
        })
        .collect()
}
