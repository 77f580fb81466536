//! Placing one order: one transaction holds the order row (which makes a
//! repeat a duplicate), the key and the buyer's email job, so they commit
//! together or not at all. Orders that cannot be served yet wait for stock;
//! payloads that cannot be used are set aside with their raw body.

use super::{Fulfilment, OrderState, Placed, Status, body_reference, history, notices, store};
use crate::{
    db::{Tx, retry_on_contention},
    intake::normalize::{Order, Source},
    jobs,
    keys::{self, Assignment, Sku},
    merchant::{self, Event},
};
use serde_json::json;

impl Fulfilment {
    pub(super) async fn place(
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
        let sku = self.sku_for(order, url_sku);
        if let (Ok(sku), Some(batches)) = (&sku, &self.batches) {
            let request = super::batch::Request {
                source,
                order: order.clone(),
                now,
                request_id: crate::telemetry::request_id(),
            };
            // Only a panic while placing the batch leaves it unanswered:
            // the shop is told to deliver again.
            let lane = self.lane_of(sku, source, &order.order_id);
            return batches
                .submit(&lane, request)
                .await
                .unwrap_or(Err(sqlx::Error::WorkerCrashed));
        }
        retry_on_contention(|| self.place_once(source, order, &sku, None, body, now)).await
    }

    /// Places a paid order from a payment provider, whose SKU the provider's
    /// intake found (or the reason it could not), and notes the payment
    /// `payment_ref` it was paid with. A repeat is a duplicate.
    pub async fn place_paid(
        &self,
        source: Source,
        order: &Order,
        sku: Result<Sku, String>,
        payment_ref: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Placed, sqlx::Error> {
        retry_on_contention(|| self.place_once(source, order, &sku, payment_ref, body, now)).await
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
    pub(super) async fn place_once(
        &self,
        source: Source,
        order: &Order,
        sku: &Result<Sku, String>,
        payment_ref: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Placed, sqlx::Error> {
        let placed = |status: Status, detail: Option<String>| Placed {
            order_id: order.order_id.clone(),
            status,
            detail,
        };
        let mut tx = self.db.begin().await?;
        let Some(id) = store::claim(&mut tx, source, &order.order_id, now).await? else {
            metrics::counter!("allot_orders_total", "source" => source.as_str(), "status" => "duplicate").increment(1);
            return Ok(placed(Status::Duplicate, None));
        };
        // With the order, so that a refund naming the payment finds it and
        // merchants hear of it in `order.fulfilled`.
        if payment_ref.is_some() {
            store::set_payment_ref(&mut tx, id, payment_ref).await?;
        }
        let details = store::Details {
            email: Some(order.email.as_str()),
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
        let received = history::received(source);
        let status = if store::waiting_ahead(&mut tx, sku).await? {
            // Orders already wait for this SKU: queue behind them, so that
            // a restock serves the oldest first. Alert only if the pool is
            // really empty (keys may have just arrived).
            let empty = !keys::in_stock(&mut tx, sku).await?;
            let detail = history::waiting(&received, sku.as_str(), false);
            self.wait_for_stock(&mut tx, id, sku, &detail, empty, now)
                .await?;
            Status::AwaitingStock
        } else if self
            .fulfil(
                &mut tx,
                id,
                &order.order_id,
                sku,
                order.email.as_str(),
                order.coupon_code.as_deref(),
                &received,
                now,
            )
            .await?
        {
            Status::Fulfilled
        } else {
            keys::none_held_elsewhere(&mut tx, sku).await?;
            let detail = history::waiting(&received, sku.as_str(), true);
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
        let targets = merchant::subscribers(tx, "order.awaiting_stock").await?;
        self.record_wait(tx, id, sku, detail, alert, now, &targets)
            .await
    }

    /// [`Self::wait_for_stock`], announced to `targets` (the subscribers of
    /// `order.awaiting_stock`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_wait(
        &self,
        tx: &mut Tx,
        id: i64,
        sku: &Sku,
        detail: &str,
        alert: bool,
        now: i64,
        targets: &[i64],
    ) -> Result<(), sqlx::Error> {
        store::wait(tx, id, now).await?;
        store::event(tx, id, now, OrderState::AwaitingStock, detail).await?;
        if alert {
            self.sold_out(tx, sku, id, now).await?;
        }
        self.announce_to(tx, targets, id, "order.awaiting_stock", now)
            .await?;
        metrics::counter!("allot_orders_awaiting_stock_total").increment(1);
        Ok(())
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
    ) -> Result<bool, sqlx::Error> {
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
        retry_on_contention(|| async {
            let mut tx = self.db.begin().await?;
            // A repeat of a body already set aside is recorded again (the
            // admin may be waiting for it) under the same reference.
            let id = match store::claim(&mut tx, source, &order_id, now).await? {
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
                email: None,
                product_sku: None,
                coupon_code: None,
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
        store::event(tx, id, now, OrderState::NeedsAttention, problem).await?;
        notices::needs_attention(tx, id, now, self.alert_interval, self.max_attempts).await?;
        self.announce(tx, id, "order.needs_attention", now).await?;
        metrics::counter!("allot_orders_needing_attention_total").increment(1);
        tracing::warn!(order = id, %problem, "an order needs attention; its body is kept");
        Ok(())
    }
}
