//! Payments in: Stripe Checkout and any provider that signs its events per
//! Standard Webhooks, made into orders, refunds and notifications.
//!
//! Owns the `payment_events` table: every event received, once per
//! provider event id, with what allot did about it. Imports `orders` (to
//! place and refund) and `merchant` (to announce `payment.*`); nothing
//! imports it but the composition root.
//!
//! - this file: a provider's event as allot reads it ([`PaymentEvent`]) and
//!   what each kind does;
//! - `stripe`: `Stripe-Signature` and Stripe's event shapes;
//! - `generic`: the documented shape for any other provider;
//! - `store`: the SQL of the event log;
//! - `routes`: `POST /v1/webhooks/stripe`, `POST /v1/webhooks/payments`.
//!
//! Events arrive more than once and out of order. A paid event places its
//! order (idempotent by order id) before it is logged, so a crash in
//! between is mended by the provider's next delivery; a refund is logged
//! before it looks for its order, and a paid event looks for a logged
//! refund after its order committed: whichever comes second sees the other.

mod generic;
pub mod routes;
mod store;
pub mod stripe;

use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    db::{self, Db, retry_on_contention},
    intake::normalize::{Order, Source},
    keys::Sku,
    merchant::{self, Event},
    orders::{Fulfilment, PaidOrder, Refund},
};

/// What an event asks of allot.
#[derive(Debug, Clone)]
pub enum Action {
    /// Paid: fulfil this order (or say why it cannot be read).
    Paid {
        order: Result<Order, String>,
        sku: Result<Sku, String>,
    },
    /// Refunded in full: revoke the order's key.
    Refunded,
    /// The payment failed: nothing to fulfil; merchants are told.
    Failed,
    /// Logged only (unpaid yet, a partial refund, a type allot does not use).
    Record(String),
}

/// One provider event, as the provider's parser reads it.
#[derive(Debug, Clone)]
pub struct PaymentEvent {
    pub provider: Source,
    pub event_id: String,
    pub event_type: String,
    pub action: Action,
    /// The payment it is about (a Stripe PaymentIntent, a reference).
    pub payment_ref: Option<String>,
    /// The order it is or names (a Checkout Session id, a reference).
    pub order_id: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
}

/// The answer to the provider.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = PaymentReceipt)]
pub struct Receipt {
    /// `fulfilled`, `awaiting_stock`, `needs_attention`, `duplicate`,
    /// `refunded`, `recorded`.
    #[schema(value_type = String)]
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub detail: String,
}

/// Receives payment events. Cheap to clone.
#[derive(Clone)]
pub struct Payments {
    db: Db,
    fulfilment: Fulfilment,
    max_attempts: i32,
}

impl Payments {
    pub fn new(db: Db, fulfilment: Fulfilment, max_attempts: i32) -> Self {
        Self {
            db,
            fulfilment,
            max_attempts,
        }
    }

    /// A signed body that is no event allot can read: set aside with its
    /// raw body for a person, and the admin alerted.
    pub async fn unreadable(
        &self,
        provider: Source,
        body: &[u8],
        problem: &str,
        now: i64,
    ) -> Result<Receipt, sqlx::Error> {
        let placed = self
            .fulfilment
            .set_aside(provider, body, problem, now)
            .await?;
        Ok(Receipt {
            status: placed.status.as_str(),
            order_id: Some(placed.order_id),
            detail: problem.to_string(),
        })
    }

    /// Does what `event` asks; `body` is kept if a paid order cannot be read.
    pub async fn receive(
        &self,
        event: PaymentEvent,
        body: &[u8],
        now: i64,
    ) -> Result<Receipt, db::Error> {
        match &event.action {
            Action::Paid { order, sku } => self.paid(&event, order, sku, body, now).await,
            Action::Refunded => Ok(self.refunded(&event, now).await?),
            Action::Failed => {
                let detail = "payment failed; nothing to fulfil".to_string();
                let new = self.log(&event, "failed", &detail, now).await?;
                Ok(receipt(
                    if new { "recorded" } else { "duplicate" },
                    &event,
                    detail,
                ))
            }
            Action::Record(why) => {
                let new = self.log(&event, "recorded", why, now).await?;
                Ok(receipt(
                    if new { "recorded" } else { "duplicate" },
                    &event,
                    why.clone(),
                ))
            }
        }
    }

    async fn paid(
        &self,
        event: &PaymentEvent,
        order: &Result<Order, String>,
        sku: &Result<Sku, String>,
        body: &[u8],
        now: i64,
    ) -> Result<Receipt, db::Error> {
        let order = match order {
            Ok(order) => order,
            Err(problem) => {
                let placed = self
                    .fulfilment
                    .set_aside(event.provider, body, problem, now)
                    .await?;
                let detail = format!("the paid order could not be read: {problem}");
                self.log(event, "needs_attention", &detail, now).await?;
                return Ok(Receipt {
                    status: "needs_attention",
                    order_id: Some(placed.order_id),
                    detail,
                });
            }
        };
        let refunded_first = store::refund_logged(
            &self.db,
            event.provider,
            Some(&order.order_id),
            event.payment_ref.as_deref(),
        )
        .await?;
        if refunded_first {
            let placed = self
                .fulfilment
                .place_refunded(
                    event.provider,
                    order,
                    sku.as_ref().ok(),
                    event.payment_ref.as_deref(),
                    now,
                )
                .await?;
            let detail = placed.detail.unwrap_or_else(|| "refunded already".into());
            let new = self.log(event, "refunded", &detail, now).await?;
            return Ok(Receipt {
                status: if new {
                    placed.status.as_str()
                } else {
                    "duplicate"
                },
                order_id: Some(placed.order_id),
                detail,
            });
        }
        let placed = self
            .fulfilment
            .place_paid(
                event.provider,
                order,
                sku.clone(),
                event.payment_ref.as_deref(),
                body,
                now,
            )
            .await?;
        let status = placed.status.as_str();
        let detail = placed
            .detail
            .clone()
            .unwrap_or_else(|| format!("order {}", status.replace('_', " ")));
        let new = self.log(event, status, &detail, now).await?;
        // A refund logged while this order was being placed is applied now.
        if store::refund_logged(
            &self.db,
            event.provider,
            Some(&order.order_id),
            event.payment_ref.as_deref(),
        )
        .await?
        {
            let refund = self.refund(event, Some(&order.order_id), now).await?;
            if matches!(refund, Refund::Refunded { .. }) {
                return Ok(receipt(
                    "refunded",
                    event,
                    "refunded before it was paid for".into(),
                ));
            }
        }
        let status = if new { status } else { "duplicate" };
        Ok(Receipt {
            status,
            order_id: Some(placed.order_id),
            detail,
        })
    }

    async fn refunded(&self, event: &PaymentEvent, now: i64) -> Result<Receipt, sqlx::Error> {
        // Logged first: a paid event for this order arriving meanwhile
        // finds it (see the module's note).
        self.log(event, "refund", "refund received", now).await?;
        let refund = self.refund(event, event.order_id.as_deref(), now).await?;
        let (status, order_id, detail) = match refund {
            Refund::Refunded { order_id, revoked } => (
                "refunded",
                Some(order_id),
                if revoked {
                    "order refunded, its key revoked".to_string()
                } else {
                    "order refunded; it had no key".to_string()
                },
            ),
            Refund::Already { order_id } => (
                "duplicate",
                Some(order_id),
                "the order was refunded already".to_string(),
            ),
            Refund::NoOrder => (
                "recorded",
                None,
                "no order for this payment yet; it is refunded if it arrives".to_string(),
            ),
        };
        store::describe(&self.db, event.provider, &event.event_id, &detail).await?;
        Ok(Receipt {
            status,
            order_id,
            detail,
        })
    }

    async fn refund(
        &self,
        event: &PaymentEvent,
        order_id: Option<&str>,
        now: i64,
    ) -> Result<Refund, sqlx::Error> {
        let order = PaidOrder {
            source: event.provider,
            order_id,
            payment_ref: event.payment_ref.as_deref(),
        };
        let why = format!(
            "refunded ({} event {})",
            event.provider.as_str(),
            event.event_id
        );
        self.fulfilment.refund(order, &why, now).await
    }

    /// Logs `event` with what was done; `false` if it was logged before.
    /// A new `payment.*` event is announced to merchants in the same
    /// transaction.
    async fn log(
        &self,
        event: &PaymentEvent,
        outcome: &str,
        detail: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let kind = match event.action {
            Action::Paid { .. } => Some("payment.succeeded"),
            Action::Refunded => Some("payment.refunded"),
            Action::Failed => Some("payment.failed"),
            Action::Record(_) => None,
        };
        retry_on_contention(|| async {
            let mut tx = self.db.begin().await?;
            let new = store::insert(&mut tx, event, outcome, detail, now).await?;
            if new && let Some(kind) = kind {
                let announced = Event::new(kind, announcement(event));
                merchant::emit(&mut tx, &announced, now, self.max_attempts).await?;
            }
            tx.commit().await?;
            Ok(new)
        })
        .await
    }
}

fn announcement(event: &PaymentEvent) -> Value {
    json!({
        "provider": event.provider.as_str(),
        "event_id": event.event_id,
        "provider_type": event.event_type,
        "order_id": event.order_id,
        "payment_ref": event.payment_ref,
        "amount": event.amount,
        "currency": event.currency,
    })
}

fn receipt(status: &'static str, event: &PaymentEvent, detail: String) -> Receipt {
    Receipt {
        status,
        order_id: event.order_id.clone(),
        detail,
    }
}
