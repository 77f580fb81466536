//! The one way an order is placed: in a batch, alone as a batch of one.
//! Concurrent webhook orders for one SKU are placed in one transaction
//! ([`crate::batch`]): their rows, one locking
//! read of as many keys as they need (oldest first, `SKIP LOCKED` on the
//! servers), their email jobs and history, one commit.
//!
//! Each order gets the outcome it would get alone, in arrival order: a
//! repeat of an order earlier in the batch (or already stored) is a
//! duplicate; once the keys run out, the rest of the batch waits for stock,
//! behind any order already waiting. An order set aside before is taken up
//! again. A batch whose transaction fails for a reason of its own is placed
//! again one order at a time, so that one bad order fails alone.
//!
//! A batch runs per SKU and lane ([`Lane`]): on PostgreSQL two batches of a
//! SKU are in flight at once (`orders::lanes_for`), each taking the keys the
//! other has not locked. An order's lane follows from its id, so its
//! repeats queue in one lane and never race their first arrival here.
//!
//! On PostgreSQL a batch whose orders all get keys, on a store with no
//! merchant endpoint, is committed by the one statement that places it,
//! outside a transaction block ([`at_once`]): one round trip instead of
//! four.

mod at_once;
mod resume;
mod settle;
mod store;

use std::{collections::HashSet, sync::Arc};

use tracing::Instrument;

use super::{Fulfilment, OrderState, Placed, Status, store::claim};
use crate::{
    batch::Decide,
    db::{self, Db, Tx, retry_on_contention},
    intake::normalize::{Order, Source},
    keys::{self, Sku},
    merchant, telemetry,
};

/// The most orders one transaction places: bounded so that its locks are
/// held briefly; the rest wait for the next batch.
pub(super) const MAX_BATCH: usize = 128;

/// One order waiting to be placed.
pub(super) struct Request {
    pub source: Source,
    pub order: Order,
    /// The payment it was paid with, from a payment provider.
    pub payment_ref: Option<String>,
    pub now: i64,
    /// The request that delivered the order: the batch names it in its
    /// span, and the order's jobs carry it.
    pub request_id: Option<Arc<str>>,
}

/// The decider: a [`Fulfilment`] without a batcher that places batches,
/// where its last batch of each SKU stopped in the key pool, and which
/// SKUs' batches were lately refused a commit at once.
pub(super) struct Orders {
    alone: Fulfilment,
    resume: resume::Resume,
    at_once: at_once::AtOnce,
}

impl Orders {
    pub fn new(alone: Fulfilment) -> Self {
        Self {
            alone,
            resume: resume::Resume::default(),
            at_once: at_once::AtOnce::default(),
        }
    }
}

/// Which batches an order may share: those of its SKU in its lane.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Lane {
    pub sku: Sku,
    pub lane: u8,
}

impl Decide for Orders {
    type Key = Lane;
    type Request = Request;
    type Answer = Result<Placed, db::Error>;

    /// Inside an `order_batch` span naming the requests whose orders it
    /// places, with one line when it is done: a search for one request's id
    /// finds the batch that placed its order.
    async fn decide(&self, lane: &Lane, batch: Vec<Request>) -> Vec<Self::Answer> {
        let span = tracing::info_span!(
            "order_batch",
            sku = lane.sku.as_str(),
            orders = batch.len(),
            request_ids = request_ids(&batch),
        );
        async {
            let answers = self.place(lane, batch).await;
            let count = |status| {
                answers
                    .iter()
                    .filter(|a| a.as_ref().is_ok_and(|p| p.status == status))
                    .count()
            };
            tracing::info!(
                fulfilled = count(Status::Fulfilled),
                awaiting_stock = count(Status::AwaitingStock),
                failed = answers.iter().filter(|a| a.is_err()).count(),
                "order batch placed"
            );
            answers
        }
        .instrument(span)
        .await
    }
}

/// The ids of the requests of `batch`, comma-separated.
fn request_ids(batch: &[Request]) -> String {
    let ids: Vec<&str> = batch
        .iter()
        .filter_map(|r| r.request_id.as_deref())
        .collect();
    ids.join(",")
}

impl Orders {
    async fn place(&self, lane: &Lane, batch: Vec<Request>) -> Vec<Result<Placed, db::Error>> {
        let sku = &lane.sku;
        match self.place_together(sku, &batch).await {
            Ok(placed) => placed.into_iter().map(Ok).collect(),
            Err(error) if error.is_unavailable() => {
                // One outage, told to each order as itself (503, try again).
                batch.iter().map(|_| Err(error.clone())).collect()
            }
            Err(error) if batch.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(%error, orders = batch.len(), "a batch of orders failed; placing each alone");
                let mut answers = Vec::with_capacity(batch.len());
                for request in &batch {
                    // As its own request: what it enqueues names that
                    // request.
                    let alone = self.place_together(sku, std::slice::from_ref(request));
                    let placed = telemetry::serving(request.request_id.clone(), alone).await;
                    answers.push(placed.map(|mut placed| placed.remove(0)));
                }
                answers
            }
        }
    }

    /// Places `batch`, all for `sku`, running it again on contention; the
    /// walk for keys starts where the SKU's last batch stopped, and the
    /// batch tries a commit at once unless the SKU's were refused lately.
    async fn place_together(&self, sku: &Sku, batch: &[Request]) -> Result<Vec<Placed>, db::Error> {
        let after = self.resume.after(sku);
        let at_once = self.at_once.may_try(sku);
        let together =
            retry_on_contention(|| self.alone.place_batch(sku, batch, after, at_once)).await?;
        match together.at_once {
            Some(true) => self.at_once.commits(),
            Some(false) => self.at_once.refused(sku),
            None => {}
        }
        if let Some(key) = together.last_key {
            self.resume.stopped_at(sku, key);
        }
        Ok(together.placed)
    }

    /// How many batches were committed by the one statement that placed
    /// them (PostgreSQL).
    pub fn committed_at_once(&self) -> u64 {
        self.at_once.committed()
    }
}

impl Fulfilment {
    /// Places one order as a batch of one, without a batcher (a payment's
    /// order, or a [`Fulfilment`] not [`grouped`](Fulfilment::grouped)).
    pub(super) async fn place_one(&self, sku: &Sku, request: Request) -> Result<Placed, db::Error> {
        let batch = std::slice::from_ref(&request);
        let mut together = retry_on_contention(|| self.place_batch(sku, batch, None, true)).await?;
        Ok(together.placed.remove(0))
    }

    /// Places `batch`, all for `sku`, in one transaction whose statements
    /// do not grow with the batch (an order that needed attention before,
    /// taken up again, and merchant announcements are the exceptions).
    /// Every order is placed here.
    /// On PostgreSQL the walk for keys starts after key `after` (see
    /// `resume`), and with `at_once` the batch is first offered to the
    /// statement that commits it on its own.
    async fn place_batch(
        &self,
        sku: &Sku,
        batch: &[Request],
        after: Option<i64>,
        at_once: bool,
    ) -> Result<Together, db::Error> {
        let now = batch.iter().map(|r| r.now).max().unwrap_or_default();
        let mut statuses = vec![Status::Duplicate; batch.len()];
        // First arrivals; a repeat inside the batch is a duplicate.
        let mut seen = HashSet::with_capacity(batch.len());
        let firsts: Vec<usize> = (0..batch.len())
            .filter(|&i| seen.insert((batch[i].source.as_str(), batch[i].order.order_id.as_str())))
            .collect();
        let placing = settle::Placing {
            sku,
            batch,
            max_attempts: self.max_attempts,
            now,
            handoff: self.handoff.as_ref(),
        };
        let mut tried_at_once = None;
        match &self.db {
            Db::Postgres(pool) if at_once => {
                let mut conn = pool.acquire().await?;
                match settle::in_one_call(&mut conn, placing, &firsts, after, true).await {
                    Ok(placed) => {
                        drop(conn);
                        return Ok(committed_at_once(batch, statuses, placed));
                    }
                    Err(error) if settle::needs_transaction(&error) => tried_at_once = Some(false),
                    Err(error) => return Err(error),
                }
            }
            // Not offered, or no statement commits a batch on its own.
            Db::Postgres(_) | Db::Sqlite { .. } | Db::MySql(_) => {}
        }
        let mut tx = self.db.begin().await?;
        let (new, settled) = match &mut tx {
            Tx::Postgres(pg) => {
                let placed = settle::in_one_call(pg, placing, &firsts, after, false).await?;
                (placed.new, placed.settled)
            }
            Tx::Sqlite(_) | Tx::MySql(_) => {
                let new = self.store_new(&mut tx, sku, batch, &firsts, now).await?;
                if new.is_empty() {
                    tx.commit().await?;
                    return Ok(Together {
                        placed: answers(batch, statuses),
                        last_key: None,
                        at_once: tried_at_once,
                    });
                }
                let settled = settle::settle(&mut tx, placing, &new).await?;
                (new, settled)
            }
        };
        let last_key = settled.served.last().map(|&(key, _)| key);
        let (served, waiting) = new.split_at(settled.served.len());
        if !served.is_empty() {
            for &(i, _) in served {
                statuses[i] = Status::Fulfilled;
            }
            let targets = merchant::subscribers(&mut tx, "order.fulfilled").await?;
            for &(i, id) in served {
                let announce = self.announce_to(&mut tx, &targets, id, "order.fulfilled", now);
                telemetry::serving(batch[i].request_id.clone(), announce).await?;
            }
            metrics::counter!("allot_keys_vended_total").increment(served.len() as u64);
        }
        if let Some(&(at, first)) = waiting.first() {
            for &(i, _) in waiting {
                statuses[i] = Status::AwaitingStock;
            }
            // Only the first order of the batch to wait can be the first of
            // a sell-out; those after it queue behind it.
            let alert = !settled.queued_behind || !keys::in_stock(&mut tx, sku).await?;
            if alert {
                let sold_out = self.sold_out(&mut tx, sku, first, now);
                telemetry::serving(batch[at].request_id.clone(), sold_out).await?;
            }
            let targets = merchant::subscribers(&mut tx, "order.awaiting_stock").await?;
            for &(i, id) in waiting {
                let announce = self.announce_to(&mut tx, &targets, id, "order.awaiting_stock", now);
                telemetry::serving(batch[i].request_id.clone(), announce).await?;
            }
            metrics::counter!("allot_orders_awaiting_stock_total").increment(waiting.len() as u64);
        }
        tx.commit().await?;
        settled.handed.deliver();
        Ok(Together {
            placed: answers(batch, statuses),
            last_key,
            at_once: tried_at_once,
        })
    }

    /// Stores the first arrivals `firsts` of `batch` (SQLite, MySQL) and
    /// returns those that are new as (place in batch, row id), in arrival
    /// order; see [`Self::store_source`].
    async fn store_new(
        &self,
        tx: &mut Tx,
        sku: &Sku,
        batch: &[Request],
        firsts: &[usize],
        now: i64,
    ) -> Result<Vec<(usize, i64)>, sqlx::Error> {
        let mut sources: Vec<Source> = Vec::new();
        for &i in firsts {
            if !sources.contains(&batch[i].source) {
                sources.push(batch[i].source);
            }
        }
        let mut new = Vec::with_capacity(firsts.len());
        for source in sources {
            let group: Vec<usize> = firsts
                .iter()
                .copied()
                .filter(|&i| batch[i].source == source)
                .collect();
            self.store_source(tx, sku, batch, source, &group, now, &mut new)
                .await?;
        }
        new.sort_unstable();
        Ok(new)
    }

    /// Stores the orders `group` of `batch` (first arrivals, one source)
    /// and adds those that are new to `new` as (place in batch, row id):
    /// fresh ones, and ones set aside before (`needs_attention`), taken up
    /// again as `claim` does. The others were placed before: duplicates.
    ///
    /// How each backend finds which are new is `store::insert`'s.
    #[allow(clippy::too_many_arguments)]
    async fn store_source(
        &self,
        tx: &mut Tx,
        sku: &Sku,
        batch: &[Request],
        source: Source,
        group: &[usize],
        now: i64,
        new: &mut Vec<(usize, i64)>,
    ) -> Result<(), sqlx::Error> {
        let order_id = |i: usize| batch[i].order.order_id.as_str();
        let rows: Vec<store::NewOrder> = group
            .iter()
            .map(|&i| store::NewOrder {
                order_id: order_id(i),
                email: batch[i].order.email.as_str(),
                coupon_code: batch[i].order.coupon_code.as_deref(),
                payment_ref: batch[i].payment_ref.as_deref(),
            })
            .collect();
        let stored = store::insert(tx.steps(), source.as_str(), sku.as_str(), &rows, now).await?;
        for &i in group {
            if let Some(&id) = stored.new.get(order_id(i)) {
                new.push((i, id));
                continue;
            }
            // Set aside before: taken up again, as `claim` does.
            if stored.there.get(order_id(i)) != Some(&OrderState::NeedsAttention) {
                continue;
            }
            let order = &batch[i].order;
            if let Some(id) = claim(tx, source, &order.order_id, now).await? {
                let details = super::store::Details {
                    email: Some(order.email.as_str()),
                    product_sku: Some(sku.as_str()),
                    coupon_code: order.coupon_code.as_deref(),
                };
                super::store::describe(tx, id, &details, now).await?;
                if let Some(payment_ref) = batch[i].payment_ref.as_deref() {
                    super::store::set_payment_ref(tx, id, Some(payment_ref)).await?;
                }
                new.push((i, id));
            }
        }
        Ok(())
    }
}

/// What one transaction did with a batch.
struct Together {
    /// Each order's answer, in the order of the batch.
    placed: Vec<Placed>,
    /// The last key assigned, in the order keys are taken.
    last_key: Option<i64>,
    /// Whether the statement that commits a batch at once did
    /// (`Some(true)`) or refused it (`Some(false)`), if it was tried
    /// (see [`at_once`]).
    at_once: Option<bool>,
}

/// The answers to a batch that one statement placed and committed: every
/// new order got a key (the statement refuses a batch in which one
/// waits), and there was no merchant endpoint to tell.
fn committed_at_once(
    batch: &[Request],
    mut statuses: Vec<Status>,
    placed: settle::InOneCall,
) -> Together {
    let settled = placed.settled;
    for (n, &(i, _)) in placed.new.iter().enumerate() {
        statuses[i] = if n < settled.served.len() {
            Status::Fulfilled
        } else {
            Status::AwaitingStock
        };
    }
    metrics::counter!("allot_keys_vended_total").increment(settled.served.len() as u64);
    settled.handed.deliver();
    Together {
        placed: answers(batch, statuses),
        last_key: settled.served.last().map(|&(key, _)| key),
        at_once: Some(true),
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
