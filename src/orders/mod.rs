//! Orders from shop webhooks, fulfilled with a key from the pool exactly
//! once each.
//!
//! - this file: receiving a normalised payload (idempotency by source and
//!   order id, the vend, the buyer's email job: one transaction per order),
//!   waiting for stock and fulfilling waiting orders oldest first;
//! - `store`: the SQL;
//! - `notices`: what the buyer and the admin are emailed, and when;
//! - `routes`: `GET /v1/orders/{source}/{order_id}`.
//!
//! Every order ends in one of three states: `fulfilled` (a key assigned and
//! its email queued), `awaiting_stock` (kept until keys arrive) or
//! `needs_attention` (the payload could not be used; the raw body is kept).
//! Nothing a shop sent is dropped.

pub mod notices;
pub mod routes;
mod store;

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    config::Settings,
    db::{Db, Tx, is_contention},
    intake::normalize::{self, Order, Source},
    jobs::{self, NewJob},
    keys::{self, Assignment, Sku},
};

pub use store::{Delivery, Event, OrderView};

/// Order ids and emails longer than this cannot be stored as given.
const MAX_ORDER_ID: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Fulfilled,
    Duplicate,
    AwaitingStock,
    NeedsAttention,
    /// Not paid, cancelled or refunded: nothing stored, a later delivery of
    /// the paid order fulfils it.
    Ignored,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Fulfilled => "fulfilled",
            Self::Duplicate => "duplicate",
            Self::AwaitingStock => "awaiting_stock",
            Self::NeedsAttention => "needs_attention",
            Self::Ignored => "ignored",
        }
    }

    /// Which status speaks for a delivery of several orders: the one that
    /// most needs a person.
    fn urgency(self) -> u8 {
        match self {
            Self::NeedsAttention => 4,
            Self::AwaitingStock => 3,
            Self::Fulfilled => 2,
            Self::Ignored => 1,
            Self::Duplicate => 0,
        }
    }
}

/// What happened to one order of a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    pub order_id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The answer to one webhook delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub status: Status,
    pub orders: Vec<Placed>,
}

impl Receipt {
    fn new(orders: Vec<Placed>) -> Self {
        let status = orders
            .iter()
            .map(|o| o.status)
            .max_by_key(|s| s.urgency())
            .unwrap_or(Status::NeedsAttention);
        Self { status, orders }
    }
}

/// Receives orders and fulfils them. Cheap to clone.
#[derive(Clone)]
pub struct Fulfilment {
    db: Db,
    service_skus: BTreeMap<String, String>,
    max_attempts: i32,
    alert_interval: Duration,
}

impl Fulfilment {
    pub fn new(db: Db, settings: &Settings) -> Self {
        Self {
            db,
            service_skus: settings.intake.service_skus.clone(),
            max_attempts: settings.jobs.max_attempts(),
            alert_interval: settings.jobs.alert_interval,
        }
    }

    /// Normalises a webhook body from `source` and places each order in it.
    /// `url_sku` (from the webhook URL) wins over any SKU in the payload.
    /// Errors are the database's; a bad payload is a `needs_attention`.
    pub async fn receive(
        &self,
        source: Source,
        body: &[u8],
        url_sku: Option<&Sku>,
        now: i64,
    ) -> Result<Receipt, sqlx::Error> {
        let normalized = match normalize::normalize(source, body) {
            Ok(normalized) => normalized,
            Err(unparseable) => {
                let placed = self
                    .set_aside(
                        source,
                        &body_reference(body),
                        None,
                        body,
                        &unparseable.to_string(),
                        now,
                    )
                    .await?;
                return Ok(Receipt::new(vec![placed]));
            }
        };
        let mut placed = Vec::new();
        for order in &normalized.orders {
            placed.push(self.place(source, order, url_sku, body, now).await?);
        }
        if !normalized.problems.is_empty() {
            let problem = normalized.problems.join("; ");
            placed.push(
                self.set_aside(source, &body_reference(body), None, body, &problem, now)
                    .await?,
            );
        }
        Ok(Receipt::new(placed))
    }

    async fn place(
        &self,
        source: Source,
        order: &Order,
        url_sku: Option<&Sku>,
        body: &[u8],
        now: i64,
    ) -> Result<Placed, sqlx::Error> {
        if let Some(hold) = &order.hold {
            tracing::info!(source = source.as_str(), order_id = %order.order_id, %hold, "order not fulfilled: not paid");
            return Ok(Placed {
                order_id: order.order_id.clone(),
                status: Status::Ignored,
                detail: Some(format!("{hold}; a key is sent once it is paid")),
            });
        }
        if order.order_id.chars().count() > MAX_ORDER_ID {
            let problem = format!("the order id is longer than {MAX_ORDER_ID} characters");
            return self
                .set_aside(
                    source,
                    &body_reference(body),
                    Some(order),
                    body,
                    &problem,
                    now,
                )
                .await;
        }
        let sku = self.sku_for(order, url_sku);
        retry_on_contention(|| self.place_once(source, order, &sku, body, now)).await
    }

    /// The SKU from the URL, else the payload, else the service mapping.
    fn sku_for(&self, order: &Order, url_sku: Option<&Sku>) -> Result<Sku, String> {
        if let Some(sku) = url_sku {
            return Ok(sku.clone());
        }
        if let Some(sku) = &order.sku {
            return Sku::parse(sku).map_err(|e| format!("the payload's SKU is unusable: {e}"));
        }
        if let Some(service) = &order.service_id {
            return match self.service_skus.get(service) {
                Some(sku) => Sku::parse(sku).map_err(|e| e.to_string()),
                None => Err(format!(
                    "no SKU: the payload names none and service {service} is not in ALLOT_SERVICE_SKUS; add &sku=… to the webhook URL or map the service"
                )),
            };
        }
        Err("no SKU: the payload names none; add &sku=… to the webhook URL".into())
    }

    /// One order, one transaction: the order row (which makes a repeat a
    /// duplicate), the key and the buyer's email job commit together.
    async fn place_once(
        &self,
        source: Source,
        order: &Order,
        sku: &Result<Sku, String>,
        body: &[u8],
        now: i64,
    ) -> Result<Placed, sqlx::Error> {
        let placed = |status: Status, detail: Option<String>| Placed {
            order_id: order.order_id.clone(),
            status,
            detail,
        };
        let mut tx = self.db.begin().await?;
        let Some(id) = claim(&mut tx, source, &order.order_id, now).await? else {
            metrics::counter!("allot_orders_total", "source" => source.as_str(), "status" => "duplicate").increment(1);
            return Ok(placed(Status::Duplicate, None));
        };
        let details = store::Details {
            email: Some(&order.email),
            product_sku: sku.as_ref().ok().map(Sku::as_str),
            coupon_code: order.coupon_code.as_deref(),
        };
        let sku = match sku {
            Ok(sku) => sku,
            Err(problem) => {
                self.attention(&mut tx, id, &details, body, problem, now)
                    .await?;
                tx.commit().await?;
                return Ok(placed(Status::NeedsAttention, Some(problem.clone())));
            }
        };
        store::describe(&mut tx, id, &details, now).await?;
        let received = format!("received from {}", source.as_str());
        let status = if store::waiting_ahead(&mut tx, sku).await? {
            // Orders already wait for this SKU: queue behind them, so that
            // a restock serves the oldest first. Alert only if the pool is
            // really empty (keys may have just arrived).
            let empty = !store::in_stock(&mut tx, sku).await?;
            let detail = format!(
                "{received}; queued behind earlier orders waiting for {}",
                sku.as_str()
            );
            self.wait_for_stock(&mut tx, id, sku, &detail, empty, now)
                .await?;
            Status::AwaitingStock
        } else if self
            .fulfil(
                &mut tx,
                id,
                &order.order_id,
                sku,
                &order.email,
                order.coupon_code.as_deref(),
                &received,
                now,
            )
            .await?
        {
            Status::Fulfilled
        } else {
            let detail = format!(
                "{received}; {} is out of stock, waiting for keys",
                sku.as_str()
            );
            self.wait_for_stock(&mut tx, id, sku, &detail, true, now)
                .await?;
            Status::AwaitingStock
        };
        tx.commit().await?;
        metrics::counter!("allot_orders_total", "source" => source.as_str(), "status" => status.as_str()).increment(1);
        Ok(placed(status, None))
    }

    /// Keeps order `id` until keys arrive; `alert`: tell the admin (once per
    /// sell-out, then in the window's digest).
    async fn wait_for_stock(
        &self,
        tx: &mut Tx,
        id: i64,
        sku: &Sku,
        detail: &str,
        alert: bool,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        store::wait(tx, id, now).await?;
        store::event(tx, id, now, "awaiting_stock", detail).await?;
        if alert {
            let sell_out = store::newest_key(tx, sku).await?;
            notices::out_of_stock(
                tx,
                sku,
                id,
                sell_out,
                now,
                self.alert_interval,
                self.max_attempts,
            )
            .await?;
        }
        metrics::counter!("allot_orders_awaiting_stock_total").increment(1);
        Ok(())
    }

    /// Vends a key to order `id` and queues its email. `false`: no key left.
    #[allow(clippy::too_many_arguments)]
    async fn fulfil(
        &self,
        tx: &mut Tx,
        id: i64,
        order_id: &str,
        sku: &Sku,
        email: &str,
        coupon_code: Option<&str>,
        how: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let assignment = Assignment {
            email,
            order_id,
            coupon_code,
        };
        let Some(vended) = keys::vend(tx, sku, &assignment, now).await? else {
            return Ok(false);
        };
        let job = NewJob::new(
            notices::KEY_EMAIL_KIND,
            serde_json::json!({"order": id}),
            self.max_attempts,
        )
        .dedupe_key(format!("{}:{id}:{}", notices::KEY_EMAIL_KIND, vended.id));
        let job_id = jobs::enqueue(tx, &job, now).await?;
        store::fulfilled(tx, id, vended.id, job_id, now).await?;
        store::event(
            tx,
            id,
            now,
            "fulfilled",
            &format!(
                "{how}; key #{} of {} assigned, email to the buyer queued (job {})",
                vended.id,
                sku.as_str(),
                job_id.map_or_else(|| "-".into(), |j| j.to_string())
            ),
        )
        .await?;
        metrics::counter!("allot_keys_vended_total").increment(1);
        Ok(true)
    }

    /// Keeps what could not be used, with the reason, and alerts the admin.
    async fn set_aside(
        &self,
        source: Source,
        reference: &str,
        order: Option<&Order>,
        body: &[u8],
        problem: &str,
        now: i64,
    ) -> Result<Placed, sqlx::Error> {
        let order_id = reference.to_string();
        retry_on_contention(|| async {
            let mut tx = self.db.begin().await?;
            // A repeat of a body already set aside is recorded again (the
            // admin may be waiting for it) under the same reference.
            let id = match claim(&mut tx, source, &order_id, now).await? {
                Some(id) => id,
                None => {
                    tx.commit().await?;
                    return Ok(Placed {
                        order_id: order_id.clone(),
                        status: Status::Duplicate,
                        detail: None,
                    });
                }
            };
            let details = store::Details {
                email: order.map(|o| o.email.as_str()),
                product_sku: order.and_then(|o| o.sku.as_deref()),
                coupon_code: order.and_then(|o| o.coupon_code.as_deref()),
            };
            self.attention(&mut tx, id, &details, body, problem, now)
                .await?;
            tx.commit().await?;
            Ok(Placed {
                order_id: order_id.clone(),
                status: Status::NeedsAttention,
                detail: Some(problem.to_string()),
            })
        })
        .await
    }

    async fn attention(
        &self,
        tx: &mut Tx,
        id: i64,
        details: &store::Details<'_>,
        body: &[u8],
        problem: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        store::describe(tx, id, details, now).await?;
        store::set_aside(tx, id, body, problem, now).await?;
        store::event(tx, id, now, "needs_attention", problem).await?;
        notices::needs_attention(tx, id, now, self.alert_interval, self.max_attempts).await?;
        metrics::counter!("allot_orders_needing_attention_total").increment(1);
        tracing::warn!(order = id, %problem, "an order needs attention; its body is kept");
        Ok(())
    }

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
                Ok(sku) if store::has_available(&self.db, &sku).await? => {
                    fulfilled += self.fulfil_waiting(&sku, now).await?
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "an order waits for an unusable SKU"),
            }
        }
        Ok(fulfilled)
    }
}

/// Inserts the order row, or finds it. `None`: the order was received
/// before (fulfilled or waiting) and this delivery is a duplicate. An order
/// that needed attention is taken up again: the shop may have fixed it.
async fn claim(
    tx: &mut Tx,
    source: Source,
    order_id: &str,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    match store::insert(tx, source.as_str(), order_id, now).await? {
        store::Claimed::New(id) => Ok(Some(id)),
        store::Claimed::Existing { id, state } if state == "needs_attention" => {
            // Lock it and look again: a concurrent delivery may be taking it
            // up right now.
            let state = store::lock_state(tx, id).await?;
            Ok((state == "needs_attention").then_some(id))
        }
        store::Claimed::Existing { .. } => Ok(None),
    }
}

/// Runs a transaction again when the database broke a lock conflict by
/// rolling it back (deadlock, lock wait timeout, SQLite busy).
async fn retry_on_contention<T, F, Fut>(mut run: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match run().await {
            Err(error) if is_contention(&error) && tries < 4 => {
                tries += 1;
                tracing::debug!(%error, tries, "lock conflict; running the transaction again");
                let pause = rand::random_range(5..=20u64 * tries);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}

/// A stable reference for a body that names no usable order id: the same
/// body delivered twice is one record.
fn body_reference(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("unparsed-{hex}")
}

pub async fn find(
    db: &Db,
    source: Source,
    order_id: &str,
) -> Result<Option<OrderView>, sqlx::Error> {
    store::find(db, source.as_str(), order_id).await
}
