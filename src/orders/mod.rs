//! Orders from shop webhooks, fulfilled with a key from the pool exactly
//! once each.
//!
//! Owns the `orders` and `order_events` tables, the webhook route and the
//! order view. Calls `keys` for the pool and enqueues its emails through the
//! outbox; nothing below it imports it.
//!
//! - this file: what a delivery is answered with, and the [`Fulfilment`]
//!   that receives them;
//! - `place`: receiving a delivery, and where each order goes (ignored,
//!   set aside with its body, or into its batch);
//! - `batch`: the one way an order is placed (idempotency by source and
//!   order id, the keys, the buyers' email jobs, waiting for stock):
//!   concurrent orders for one SKU in one transaction, a lone one as a
//!   batch of one;
//! - `restock`: fulfilling waiting orders oldest first when keys arrive;
//! - `refund`: a paid order taken back, its key revoked; revoking by hand;
//! - `announce`: merchant endpoints told of an order's change, in its
//!   transaction;
//! - `notices`: what the buyer and the admin are emailed, and when;
//! - `history`: what an order's history says when it is placed, worded
//!   once for Rust and for PostgreSQL's `allot_place_orders`;
//! - `view`: an order's state and history, as `GET /v1/orders/…` shows it;
//! - `store`: the SQL of the two tables;
//! - `routes`: `POST /v1/webhooks/{source}`, `GET /v1/orders/{source}/{order_id}`.
//!
//! Every order ends in one of three states: `fulfilled` (a key assigned and
//! its email queued), `awaiting_stock` (kept until keys arrive) or
//! `needs_attention` (the payload could not be used; the raw body is kept),
//! until a refund makes it `refunded`. Nothing a shop sent is dropped.
//! Each change is announced to merchant endpoints in its transaction
//! (`order.fulfilled`, `order.awaiting_stock`, `order.needs_attention`,
//! `order.refunded`, `stock.sold_out`, `key.revoked`).

mod announce;
mod batch;
pub mod history;
pub mod notices;
mod place;
mod refund;
mod restock;
pub mod routes;
mod state;
mod store;
mod view;

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    time::Duration,
};

use serde::Serialize;

use tokio_util::task::TaskTracker;

use crate::{
    batch::Batcher,
    config::Settings,
    db::{Backend, Db},
    intake::normalize::Source,
    jobs,
    keys::Sku,
};

pub use refund::{PaidOrder, Refund, revoke_key};
pub use state::OrderState;
pub use view::{Browse, Delivery, Event, Listed, OrderView, browse, count_by_state, find};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = OrderStatus)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Fulfilled,
    Duplicate,
    AwaitingStock,
    NeedsAttention,
    /// Not paid, cancelled or refunded: nothing stored, a later delivery of
    /// the paid order fulfils it.
    Ignored,
    /// Paid and refunded (the refund arrived first): no key vended.
    Refunded,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Self::Fulfilled,
        Self::Duplicate,
        Self::AwaitingStock,
        Self::NeedsAttention,
        Self::Ignored,
        Self::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fulfilled => "fulfilled",
            Self::Duplicate => "duplicate",
            Self::AwaitingStock => "awaiting_stock",
            Self::NeedsAttention => "needs_attention",
            Self::Ignored => "ignored",
            Self::Refunded => "refunded",
        }
    }

    /// Which status speaks for a delivery of several orders: the one that
    /// most needs a person.
    fn urgency(self) -> u8 {
        match self {
            Self::NeedsAttention => 4,
            Self::AwaitingStock => 3,
            Self::Fulfilled => 2,
            Self::Ignored | Self::Refunded => 1,
            Self::Duplicate => 0,
        }
    }
}

/// What happened to one order of a delivery.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = PlacedOrder)]
pub struct Placed {
    pub order_id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The answer to one webhook delivery.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = OrderReceipt)]
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
    /// With [`Self::grouped`]: webhook orders combined per SKU.
    batches: Option<Batcher<batch::Orders>>,
    /// How many batches of one SKU may be in flight at once (see
    /// [`Self::grouped_in`]).
    lanes: u8,
    /// The SKUs whose waiting orders the last restock sweep published.
    published_waiting: restock::Published,
    /// This process's worker, which takes the key emails of a batch
    /// without leasing them (see `jobs::Handoff`).
    handoff: Option<jobs::Handoff>,
}

impl Fulfilment {
    pub fn new(db: Db, settings: &Settings) -> Self {
        Self {
            db,
            service_skus: settings.intake.service_skus.clone(),
            max_attempts: settings.jobs.max_attempts(),
            alert_interval: settings.jobs.alert_interval,
            batches: None,
            lanes: 1,
            published_waiting: restock::Published::default(),
            handoff: None,
        }
    }

    /// The key emails of batches go straight to `handoff`'s worker, in
    /// this process, as far as it has room (see `jobs::Handoff`).
    pub fn handing_to(mut self, handoff: jobs::Handoff) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// Webhook orders for the same SKU that arrive while another is being
    /// placed share its next transaction (see `batch`); their runners are
    /// tasks of `tasks`. Without it, each order is a transaction of its own.
    /// As many batches of a SKU are in flight at once as suit the backend
    /// (see [`lanes_for`]).
    pub fn grouped(self, tasks: TaskTracker) -> Self {
        let lanes = lanes_for(self.db.backend());
        self.grouped_in(tasks, lanes)
    }

    /// [`Self::grouped`] with `lanes` (at least one) batches of a SKU in
    /// flight at once. An order's lane follows from its source and order
    /// id, so a repeat of an order always queues behind the first in the
    /// same lane, and two batches of this process never store one order.
    pub fn grouped_in(self, tasks: TaskTracker, lanes: u8) -> Self {
        let alone = Self {
            batches: None,
            ..self.clone()
        };
        let runtime = self.db.writer_runtime();
        let batches = Batcher::new(
            batch::Orders::new(alone),
            tasks,
            batch::MAX_BATCH,
            "allot_order_batch_size",
        )
        .on(runtime);
        Self {
            batches: Some(batches),
            lanes: lanes.max(1),
            ..self
        }
    }

    /// With [`Self::grouped`]: how many orders for `sku` in its first lane
    /// wait for the batch in flight to commit (`None` when none is in
    /// flight), and how many batches were placed in all lanes.
    pub fn batching(&self, sku: &Sku) -> Option<(Option<usize>, u64)> {
        let batches = self.batches.as_ref()?;
        let lane = batch::Lane {
            sku: sku.clone(),
            lane: 0,
        };
        Some((batches.waiting(&lane), batches.batches()))
    }

    /// How many batches of orders were placed and committed by one
    /// statement (PostgreSQL, migration 0019), for tests and benchmarks.
    pub fn batches_committed_at_once(&self) -> u64 {
        self.batches
            .as_ref()
            .map_or(0, |batches| batches.decider().committed_at_once())
    }

    /// The lane of the order `order_id` of `source`: the batches of its SKU
    /// it may share (always 0 with one lane).
    pub fn lane(&self, source: Source, order_id: &str) -> u8 {
        match self.lanes {
            0 | 1 => 0,
            lanes => {
                let mut hasher = std::hash::DefaultHasher::new();
                (source.as_str(), order_id).hash(&mut hasher);
                (hasher.finish() % u64::from(lanes)) as u8
            }
        }
    }

    fn lane_of(&self, sku: &Sku, source: Source, order_id: &str) -> batch::Lane {
        batch::Lane {
            sku: sku.clone(),
            lane: self.lane(source, order_id),
        }
    }
}

/// How many batches of one SKU's orders a process runs at once. On
/// PostgreSQL two: one batch's keys are locked `SKIP LOCKED`, so the other
/// takes the next ones, and while one waits for its commit the other runs
/// its call (about 5 % more orders a second under `allot bench orders`; a
/// third and fourth lane gave less, each batch smaller and each commit
/// shared by fewer orders). SQLite has one writer, which a second batch
/// would only wait for; on MySQL one, untried.
pub fn lanes_for(backend: Backend) -> u8 {
    match backend {
        Backend::Postgres => 2,
        Backend::Sqlite | Backend::MySql => 1,
    }
}
