//! What the buyer and the admin are emailed, and when.
//!
//! Each notice is an outbox job, enqueued in the transaction that made it
//! necessary, and turned into a letter only when a worker runs it: the key
//! email reads the key from the pool at send time, so no key is ever copied
//! into a job payload or a log.
//!
//! Admin alerts come at once for the first case and batched after that:
//! - out of stock: one urgent email per sell-out of a SKU (named by the
//!   newest key imported, so concurrent buyers cannot each trigger one),
//!   then one digest per alert window while orders keep waiting;
//! - needs attention: one urgent email per alert window, then a digest;
//! - low stock: one email per SKU per run of the check.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::store;
use crate::{
    db::{Db, Tx},
    jobs::{self, JobError, NewJob, alerts::window, rfc3339},
    keys::Sku,
};

pub const KEY_EMAIL_KIND: &str = "key_email";
pub const OUT_OF_STOCK_KIND: &str = "out_of_stock_alert";
pub const ATTENTION_KIND: &str = "needs_attention_alert";
pub const LOW_STOCK_KIND: &str = "low_stock_alert";

/// Job kinds this module turns into letters.
pub const KINDS: &[&str] = &[
    KEY_EMAIL_KIND,
    OUT_OF_STOCK_KIND,
    ATTENTION_KIND,
    LOW_STOCK_KIND,
];

/// A message to render and send.
#[derive(Debug)]
pub struct Letter {
    pub to: String,
    pub template: &'static str,
    pub context: Value,
}

/// SKUs go into dedupe keys (at most 255 characters); long ones are hashed.
fn scope(sku: &Sku) -> String {
    let sku = sku.as_str();
    if sku.len() <= 96 {
        return sku.to_string();
    }
    let digest = Sha256::digest(sku.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Urgent for the first order of a sell-out, a digest per window after.
pub(super) async fn out_of_stock(
    tx: &mut Tx,
    sku: &Sku,
    order: i64,
    sell_out: i64,
    now: i64,
    interval: Duration,
    max_attempts: i32,
) -> Result<(), sqlx::Error> {
    let scope = scope(sku);
    let urgent = NewJob::new(
        OUT_OF_STOCK_KIND,
        json!({"sku": sku.as_str(), "order": order}),
        max_attempts,
    )
    .dedupe_key(format!("{OUT_OF_STOCK_KIND}:{scope}:{sell_out}"));
    if jobs::enqueue(tx, &urgent, now).await?.is_some() {
        return Ok(());
    }
    let (start, end) = window(now, interval);
    let digest = NewJob::new(
        OUT_OF_STOCK_KIND,
        json!({"sku": sku.as_str(), "from": start, "to": end}),
        max_attempts,
    )
    .dedupe_key(format!("{OUT_OF_STOCK_KIND}:{scope}:{sell_out}:{start}"))
    .run_at(end);
    jobs::enqueue(tx, &digest, now).await.map(drop)
}

/// Urgent for the first order set aside in a window, a digest after it.
pub(super) async fn needs_attention(
    tx: &mut Tx,
    order: i64,
    now: i64,
    interval: Duration,
    max_attempts: i32,
) -> Result<(), sqlx::Error> {
    let (start, end) = window(now, interval);
    let urgent = NewJob::new(ATTENTION_KIND, json!({"order": order}), max_attempts)
        .dedupe_key(format!("{ATTENTION_KIND}:{start}"));
    if jobs::enqueue(tx, &urgent, now).await?.is_some() {
        return Ok(());
    }
    let digest = NewJob::new(
        ATTENTION_KIND,
        json!({"from": start, "to": end}),
        max_attempts,
    )
    .dedupe_key(format!("{ATTENTION_KIND}:{start}:digest"))
    .run_at(end);
    jobs::enqueue(tx, &digest, now).await.map(drop)
}

/// One low-stock email for `sku` for the check that ran at `run_at`.
pub(crate) fn low_stock(
    sku: &Sku,
    available: i64,
    threshold: i64,
    run_at: i64,
    max_attempts: i32,
) -> NewJob {
    NewJob::new(
        LOW_STOCK_KIND,
        json!({"sku": sku.as_str(), "available": available, "threshold": threshold}),
        max_attempts,
    )
    .dedupe_key(format!("{LOW_STOCK_KIND}:{}:{run_at}", scope(sku)))
}

#[derive(Deserialize)]
struct Payload {
    sku: Option<String>,
    order: Option<i64>,
    from: Option<i64>,
    to: Option<i64>,
    available: Option<i64>,
    threshold: Option<i64>,
}

/// The letter for a job of one of [`KINDS`]; `None` when there is nothing
/// to say any more (the orders were served meanwhile) or nobody to tell.
pub async fn prepare(
    db: &Db,
    kind: &str,
    payload: &str,
    admin: Option<&str>,
) -> Result<Option<Letter>, JobError> {
    let payload: Payload = serde_json::from_str(payload)
        .map_err(|e| JobError::Permanent(format!("bad {kind} payload: {e}")))?;
    let read = |e: sqlx::Error| JobError::retry(format!("reading the database: {e}"));
    if kind == KEY_EMAIL_KIND {
        let order = payload
            .order
            .ok_or_else(|| JobError::Permanent("key email without an order".into()))?;
        let letter = store::key_letter(db, order)
            .await
            .map_err(read)?
            .ok_or_else(|| JobError::Permanent(format!("order {order} has no key assigned")))?;
        if letter.status == "revoked" {
            return Err(JobError::Permanent(format!(
                "the key of order {} was revoked before its email was sent",
                letter.order_id
            )));
        }
        let to = letter
            .email
            .ok_or_else(|| JobError::Permanent(format!("order {order} has no email")))?;
        return Ok(Some(Letter {
            to,
            template: "license_key",
            context: json!({
                "key": letter.license_key,
                "order_id": letter.order_id,
                "product": letter.product_sku.unwrap_or_default(),
            }),
        }));
    }
    let Some(admin) = admin else {
        tracing::warn!(
            kind,
            "an admin alert is due and ALLOT_ADMIN_EMAIL is not set; nobody is emailed"
        );
        return Ok(None);
    };
    let letter = |template, context| {
        Ok(Some(Letter {
            to: admin.to_string(),
            template,
            context,
        }))
    };
    match kind {
        OUT_OF_STOCK_KIND => {
            let sku = payload.sku.unwrap_or_default();
            let (from, to) = (payload.from.unwrap_or(0), payload.to.unwrap_or(i64::MAX));
            let window = |ms: Option<i64>| ms.map(rfc3339).unwrap_or_default();
            let (waiting, oldest, new_in_window) = store::waiting_summary(db, &sku, from, to)
                .await
                .map_err(read)?;
            if waiting == 0 {
                return Ok(None); // restocked meanwhile
            }
            letter(
                "out_of_stock",
                json!({
                    "sku": sku,
                    "urgent": payload.order.is_some(),
                    "waiting": waiting,
                    "waiting_since": oldest.map(rfc3339).unwrap_or_default(),
                    "new_in_window": new_in_window,
                    "window_start": window(payload.from),
                    "window_end": window(payload.to),
                }),
            )
        }
        ATTENTION_KIND => {
            let orders = store::set_aside_orders(
                db,
                payload.order,
                payload.from.unwrap_or(0),
                payload.to.unwrap_or(0),
            )
            .await
            .map_err(read)?;
            if orders.is_empty() {
                return Ok(None); // taken up again and served meanwhile
            }
            let orders: Vec<Value> = orders
                .iter()
                .map(|o| {
                    json!({
                        "source": o.source,
                        "order_id": o.order_id,
                        "problem": o.problem.as_deref().unwrap_or("-"),
                        "received_at": rfc3339(o.updated_at),
                    })
                })
                .collect();
            letter(
                "needs_attention",
                json!({"orders": orders, "urgent": payload.order.is_some()}),
            )
        }
        LOW_STOCK_KIND => letter(
            "low_stock",
            json!({
                "sku": payload.sku.unwrap_or_default(),
                "available": payload.available.unwrap_or(0),
                "threshold": payload.threshold.unwrap_or(0),
            }),
        ),
        other => Err(JobError::Permanent(format!(
            "no notice for job kind {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_skus_are_hashed_in_dedupe_keys() {
        let long = Sku::parse(&"x".repeat(255)).unwrap();
        let job = low_stock(&long, 1, 10, 1_700_000_000_000, 3);
        assert!(job.dedupe_key.unwrap().len() < 100);
        let short = Sku::parse("course-101").unwrap();
        assert!(
            low_stock(&short, 1, 10, 5, 3)
                .dedupe_key
                .unwrap()
                .contains("course-101")
        );
    }
}
