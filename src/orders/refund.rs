//! Refunds: a paid order taken back. Its key is revoked (it will never be
//! handed out again), the order leaves the fulfilment states for good (a
//! waiting order stops waiting), the buyer and the admin are emailed and
//! merchants hear `order.refunded` (and `key.revoked`), all in one
//! transaction. Refunding twice changes nothing.
//!
//! Also here: revoking a key by hand (`allot keys revoke`), which tells
//! merchants `key.revoked` in the same transaction.

use serde_json::json;

use super::{Fulfilment, OrderState, Placed, Status, notices, store};
use crate::{
    db::{Db, Tx, read_state, retry_on_contention},
    intake::normalize::{Order, Source},
    jobs,
    keys::{self, LicenseKey, Revoked, Sku},
    merchant::{self, Event},
    on_tx,
};

/// Which order a refund names: its id, or the payment it was paid with.
#[derive(Debug, Clone, Copy)]
pub struct PaidOrder<'a> {
    pub source: Source,
    pub order_id: Option<&'a str>,
    pub payment_ref: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refund {
    /// Refunded now; `revoked`: it had a key, which is revoked.
    Refunded {
        order_id: String,
        revoked: bool,
    },
    Already {
        order_id: String,
    },
    /// No such order (yet: a refund can arrive before its order).
    NoOrder,
}

impl Fulfilment {
    /// Refunds `order`; `why` is kept in its history.
    pub async fn refund(
        &self,
        order: PaidOrder<'_>,
        why: &str,
        now: i64,
    ) -> Result<Refund, sqlx::Error> {
        retry_on_contention(|| async {
            let mut tx = self.db.begin().await?;
            let found = lock_paid(
                &mut tx,
                order.source.as_str(),
                order.order_id,
                order.payment_ref,
            )
            .await?;
            let Some((id, state)) = found else {
                return Ok(Refund::NoOrder);
            };
            let summary = store::summary(&mut tx, id).await?;
            if state == OrderState::Refunded {
                return Ok(Refund::Already {
                    order_id: summary.order_id,
                });
            }
            let revoked = match summary.license_key_id {
                Some(key) => keys::revoke_id(&mut tx, key).await?,
                None => false,
            };
            refunded(&mut tx, id, now).await?;
            let detail = match summary.license_key_id {
                Some(key) if revoked => format!("{why}; key #{key} revoked"),
                Some(key) => format!("{why}; key #{key} was revoked already"),
                None => format!("{why}; no key had been assigned"),
            };
            store::event(&mut tx, id, now, OrderState::Refunded, &detail).await?;
            for job in notices::refund(id, summary.email.is_some(), self.max_attempts) {
                jobs::enqueue(&mut tx, &job, now).await?;
            }
            self.announce(&mut tx, id, "order.refunded", now).await?;
            if revoked {
                let event = key_revoked(
                    summary.license_key_id,
                    summary.product_sku.as_deref(),
                    Some((&summary.source, &summary.order_id)),
                    why,
                );
                merchant::emit(&mut tx, &event, now, self.max_attempts).await?;
            }
            tx.commit().await?;
            metrics::counter!("allot_orders_refunded_total", "source" => order.source.as_str())
                .increment(1);
            tracing::info!(source = order.source.as_str(), order_id = %summary.order_id, revoked, "order refunded");
            Ok(Refund::Refunded {
                order_id: summary.order_id,
                revoked,
            })
        })
        .await
    }

    /// Records a paid order whose refund arrived first: refunded at once,
    /// no key vended. A repeat is a duplicate.
    pub async fn place_refunded(
        &self,
        source: Source,
        order: &Order,
        sku: Option<&Sku>,
        payment_ref: Option<&str>,
        now: i64,
    ) -> Result<Placed, sqlx::Error> {
        retry_on_contention(|| async {
            let mut tx = self.db.begin().await?;
            let Some(id) = store::claim(&mut tx, source, &order.order_id, now).await? else {
                return Ok(Placed {
                    order_id: order.order_id.clone(),
                    status: Status::Duplicate,
                    detail: None,
                });
            };
            let details = store::Details {
                email: Some(order.email.as_str()),
                product_sku: sku.map(Sku::as_str),
                coupon_code: order.coupon_code.as_deref(),
            };
            store::describe(&mut tx, id, &details, now).await?;
            refunded(&mut tx, id, now).await?;
            store::set_payment_ref(&mut tx, id, payment_ref).await?;
            let detail = format!(
                "received from {}; its refund had arrived first: no key vended",
                source.as_str()
            );
            store::event(&mut tx, id, now, OrderState::Refunded, &detail).await?;
            for job in notices::refund(id, true, self.max_attempts) {
                jobs::enqueue(&mut tx, &job, now).await?;
            }
            self.announce(&mut tx, id, "order.refunded", now).await?;
            tx.commit().await?;
            Ok(Placed {
                order_id: order.order_id.clone(),
                status: Status::Refunded,
                detail: Some(detail),
            })
        })
        .await
    }
}

fn key_revoked(
    key: Option<i64>,
    sku: Option<&str>,
    order: Option<(&str, &str)>,
    why: &str,
) -> Event {
    let order = order.map(|(source, order_id)| json!({"source": source, "order_id": order_id}));
    Event::new(
        "key.revoked",
        json!({"key_id": key, "sku": sku, "order": order, "reason": why}),
    )
    .with_key(key)
}

/// `allot keys revoke`: takes a key out of circulation and tells merchants,
/// in one transaction.
pub async fn revoke_key(
    db: &Db,
    key: &LicenseKey,
    max_attempts: i32,
    now: i64,
) -> Result<Revoked, sqlx::Error> {
    let mut tx = db.begin().await?;
    let revoked = keys::revoke(&mut tx, key).await?;
    if let Revoked::Yes { id, sku, .. } = &revoked {
        let event = key_revoked(Some(*id), Some(sku), None, "revoked by an operator");
        merchant::emit(&mut tx, &event, now, max_attempts).await?;
    }
    tx.commit().await?;
    Ok(revoked)
}

// The statements of refunds and of the payment an order was paid with.

/// The order of `source` with id `order_id`, or whose payment is
/// `payment_ref` (the older one if both name an order), locked: its row id
/// and state. Two lookups, each on its own index: SQLite, which gathers no
/// statistics, planned the two conditions `or`ed in one statement on the
/// `source` prefix of the order id index, reading every order of the
/// source, a whole sale's worth, for one refund.
pub(super) async fn lock_paid(
    tx: &mut Tx,
    source: &str,
    order_id: Option<&str>,
    payment_ref: Option<&str>,
) -> Result<Option<(i64, OrderState)>, sqlx::Error> {
    let by_id = match order_id {
        Some(order_id) => lock_one(tx, BY_ORDER_ID, source, order_id).await?,
        None => None,
    };
    let by_payment = match payment_ref {
        Some(payment_ref) => lock_one(tx, BY_PAYMENT, source, payment_ref).await?,
        None => None,
    };
    Ok(match (by_id, by_payment) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    })
}

/// An order of a source by its order id (unique).
const BY_ORDER_ID: &str = "select id, state from orders where source = ? and order_id = ?";

/// The oldest order of a source paid with a payment.
const BY_PAYMENT: &str =
    "select id, state from orders where source = ? and payment_ref = ? order by id limit 1";

async fn lock_one(
    tx: &mut Tx,
    select: &str,
    source: &str,
    value: &str,
) -> Result<Option<(i64, OrderState)>, sqlx::Error> {
    let select = format!("{select}{}", tx.backend().for_update());
    let found: Option<(i64, String)> = on_tx!(tx, |conn, sql| {
        sqlx::query_as(sql(select))
            .bind(source)
            .bind(value)
            .fetch_optional(conn)
            .await
    })?;
    found
        .map(|(id, state)| Ok((id, read_state(state)?)))
        .transpose()
}

pub(super) async fn refunded(tx: &mut Tx, id: i64, now: i64) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update orders set state = 'refunded', raw_body = null, updated_at = ? where id = ?",
        ))
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Connection;

    use super::{BY_ORDER_ID, BY_PAYMENT};
    use crate::db::{DatabaseSettings, Db};

    /// On a fresh store, before any statistics are gathered, each lookup
    /// searches its own index: a refund reads one order, not every order of
    /// its source.
    #[tokio::test]
    async fn a_refund_finds_its_order_through_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/allot.db", dir.path().display());
        let settings = DatabaseSettings {
            url: url.clone(),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
        };
        Db::open(&settings).await.unwrap().close().await;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for (select, search) in [
            (BY_ORDER_ID, "(source=? AND order_id=?)"),
            (BY_PAYMENT, "USING INDEX orders_payment_ref (payment_ref=?)"),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("explain query plan {select}")))
                    .bind("stripe")
                    .bind("pi_1")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            let steps: Vec<&str> = plan.iter().map(|step| step.3.as_str()).collect();
            assert!(
                steps.len() == 1
                    && steps[0].starts_with("SEARCH orders")
                    && steps[0].contains(search),
                "{select}: {steps:?}"
            );
        }
    }
}
