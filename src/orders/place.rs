//! Receiving a delivery, and where each of its orders goes: one not paid is
//! ignored, one with a SKU is placed
//! in its batch (`batch`, where its row, its key and the buyer's email job
//! commit together), one without a usable SKU, or a payload that gives no
//! order, is set aside with its raw body and the reason.

use sha2::{Digest, Sha256};

use super::{Fulfilment, OrderState, Placed, Receipt, Status, batch, notices, store};
use crate::{
    db::{self, Tx, retry_on_contention},
    intake::normalize::{self, Order, Source},
    keys::{self, Sku},
    merchant::{self, Event},
    telemetry,
};
use serde_json::json;

impl Fulfilment {
    /// Normalises a webhook body from `source` and places each order in it.
    /// `url_sku` (from the webhook URL) wins over any SKU in the payload.
    /// Errors are the database's; a bad payload is a `needs_attention`.
    pub async fn receive(
        &self,
        source: Source,
        body: &[u8],
        url_sku: Option<&Sku>,
        now: i64,
    ) -> Result<Receipt, db::Error> {
        let normalized = match normalize::normalize(source, body) {
            Ok(normalized) => normalized,
            Err(unparseable) => {
                let placed = self
                    .set_aside(source, body, &unparseable.to_string(), now)
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
            placed.push(self.set_aside(source, body, &problem, now).await?);
        }
        Ok(Receipt::new(placed))
    }

    /// Takes an order that needed attention in again, from the body it was
    /// received with, as if the shop had delivered it once more (`url_sku`
    /// standing for the webhook URL's `?sku=`): for when its cause is
    /// fixed, a SKU mapped or keys added. The other orders of that body are
    /// duplicates by then, and answered so. `None`: no order `order_id`
    /// from `source` needs attention.
    pub async fn retry_intake(
        &self,
        source: Source,
        order_id: &str,
        url_sku: Option<&Sku>,
        now: i64,
    ) -> Result<Option<Receipt>, db::Error> {
        let Some(body) = store::set_aside_body(&self.db, source.as_str(), order_id).await? else {
            return Ok(None);
        };
        self.receive(source, &body, url_sku, now).await.map(Some)
    }

    pub(super) async fn place(
        &self,
        source: Source,
        order: &Order,
        url_sku: Option<&Sku>,
        body: &[u8],
        now: i64,
    ) -> Result<Placed, db::Error> {
        if let Some(hold) = &order.hold {
            tracing::info!(source = source.as_str(), order_id = %order.order_id, %hold, "order not fulfilled: not paid");
            return Ok(Placed {
                order_id: order.order_id.clone(),
                status: Status::Ignored,
                detail: Some(format!("{hold}; a key is sent once it is paid")),
            });
        }
        let sku = self.sku_for(order, url_sku);
        self.place_paid(source, order, sku, None, body, now).await
    }

    /// Places a paid order: one with a SKU goes to its batch (see `batch`),
    /// one without is set aside with the reason. From a payment provider,
    /// whose intake found the SKU (or the reason it could not), it notes the
    /// payment `payment_ref` it was paid with. A repeat is a duplicate.
    pub async fn place_paid(
        &self,
        source: Source,
        order: &Order,
        sku: Result<Sku, String>,
        payment_ref: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Placed, db::Error> {
        let sku = match sku {
            Ok(sku) => sku,
            Err(problem) => {
                let details = store::Details {
                    email: Some(order.email.as_str()),
                    product_sku: None,
                    coupon_code: order.coupon_code.as_deref(),
                };
                let set_aside = SetAside {
                    order_id: &order.order_id,
                    details,
                    payment_ref,
                    problem: &problem,
                };
                return Ok(self.keep(source, set_aside, body, now).await?);
            }
        };
        let request = batch::Request {
            source,
            order: order.clone(),
            payment_ref: payment_ref.map(str::to_owned),
            now,
            request_id: telemetry::request_id(),
        };
        let Some(batches) = &self.batches else {
            return self.place_one(&sku, request).await;
        };
        // Only a panic while placing the batch leaves it unanswered: the
        // shop is told to deliver again.
        let lane = self.lane_of(&sku, source, &order.order_id);
        batches
            .submit(&lane, request)
            .await
            .unwrap_or(Err(db::Error::Unanswered))
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

    /// Tells the admin that order `id` waits because `sku` ran out: at once
    /// for the first order of a sell-out (and merchants `stock.sold_out`),
    /// in the window's digest after it.
    pub(super) async fn sold_out(
        &self,
        tx: &mut Tx,
        sku: &Sku,
        id: i64,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let sell_out = keys::newest_key(tx, sku).await?;
        let first = notices::out_of_stock(
            tx,
            sku,
            id,
            sell_out,
            now,
            self.alert_interval,
            self.max_attempts,
        )
        .await?;
        if first {
            let event = Event::new("stock.sold_out", json!({ "sku": sku.as_str() }));
            merchant::emit(tx, &event, now, self.max_attempts).await?;
        }
        Ok(())
    }

    /// Keeps a body that gave no usable order, with the reason, under a
    /// reference derived from the body, and alerts the admin.
    pub async fn set_aside(
        &self,
        source: Source,
        body: &[u8],
        problem: &str,
        now: i64,
    ) -> Result<Placed, sqlx::Error> {
        let order_id = body_reference(body);
        let set_aside = SetAside {
            order_id: &order_id,
            details: store::Details {
                email: None,
                product_sku: None,
                coupon_code: None,
            },
            payment_ref: None,
            problem,
        };
        self.keep(source, set_aside, body, now).await
    }

    /// Keeps an order that cannot be placed as it came, with its body and
    /// the reason, and alerts the admin. A repeat of an order already set
    /// aside is recorded again (the admin may be waiting for it); a repeat
    /// of one placed is a duplicate.
    async fn keep(
        &self,
        source: Source,
        order: SetAside<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<Placed, sqlx::Error> {
        let placed = |status, detail| Placed {
            order_id: order.order_id.to_owned(),
            status,
            detail,
        };
        let status = retry_on_contention(|| async {
            let mut tx = self.db.begin().await?;
            let Some(id) = store::claim(&mut tx, source, order.order_id, now).await? else {
                tx.commit().await?;
                return Ok(Status::Duplicate);
            };
            // With the order, so that a refund naming the payment finds it.
            if order.payment_ref.is_some() {
                store::set_payment_ref(&mut tx, id, order.payment_ref).await?;
            }
            self.attention(&mut tx, id, &order.details, body, order.problem, now)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Status::NeedsAttention)
        })
        .await?;
        metrics::counter!("allot_orders_total", "source" => source.as_str(), "status" => status.as_str()).increment(1);
        Ok(match status {
            Status::NeedsAttention => placed(status, Some(order.problem.to_owned())),
            _ => placed(status, None),
        })
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
        store::event(tx, id, now, OrderState::NeedsAttention, problem).await?;
        notices::needs_attention(tx, id, now, self.alert_interval, self.max_attempts).await?;
        self.announce(tx, id, "order.needs_attention", now).await?;
        metrics::counter!("allot_orders_needing_attention_total").increment(1);
        tracing::warn!(order = id, %problem, "an order needs attention; its body is kept");
        Ok(())
    }
}

/// A stable reference for a body that names no usable order id: the same
/// body delivered twice is one record.
fn body_reference(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("unparsed-{hex}")
}

/// An order kept as it came, and why.
struct SetAside<'a> {
    order_id: &'a str,
    details: store::Details<'a>,
    payment_ref: Option<&'a str>,
    problem: &'a str,
}
