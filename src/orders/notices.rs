//! What the buyer and the admin are emailed about orders, and when.
//!
//! Each notice is an outbox job of the [`Notice`] family, enqueued in the
//! transaction that made it necessary, and turned into a letter only when a
//! worker runs it: the key email reads the key from the pool at send time,
//! so no key is ever copied into a job payload or a log.
//!
//! Admin alerts come at once for the first case and batched after that:
//! - out of stock: one urgent email per sell-out of a SKU (named by the
//!   newest key imported, so concurrent buyers cannot each trigger one),
//!   then one digest per alert window while orders keep waiting;
//! - needs attention: one urgent email per alert window, then a digest.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::store;
use super::{OrderState, history};
use crate::{
    clock::{rfc3339, window},
    db::Tx,
    jobs::{self, JobError, KeyedJob, NewJob, Payload, Priority},
    keys::{KeyStatus, Sku},
    mail::{Compose, Letter},
    notices::{Context, admin_letter_to},
};

/// The job kinds of this family; the tag is the `kind` column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum Notice {
    /// The buyer's license key: the order's row id and the key's (the key
    /// itself is read at send time). Jobs queued by earlier versions name
    /// the order only.
    #[serde(rename = "key_email")]
    KeyEmail {
        order: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<i64>,
    },
    /// Orders wait for `sku`: urgent for one order, or a window's digest.
    #[serde(rename = "out_of_stock_alert")]
    OutOfStock {
        sku: String,
        #[serde(flatten)]
        scope: Scope,
    },
    /// Orders set aside: urgent for one order, or a window's digest.
    #[serde(rename = "needs_attention_alert")]
    NeedsAttention(Scope),
    /// The buyer told that order `order` was refunded (and its key revoked).
    #[serde(rename = "refund_email")]
    RefundEmail { order: i64 },
    /// The admin told the same.
    #[serde(rename = "refund_alert")]
    RefundAlert { order: i64 },
}

impl Notice {
    /// The one order this notice is about, if it is about one.
    fn order(&self) -> Option<i64> {
        match self {
            Notice::KeyEmail { order, .. }
            | Notice::RefundEmail { order }
            | Notice::RefundAlert { order }
            | Notice::OutOfStock {
                scope: Scope::Order { order },
                ..
            }
            | Notice::NeedsAttention(Scope::Order { order }) => Some(*order),
            Notice::OutOfStock { .. } | Notice::NeedsAttention(_) => None,
        }
    }
}

/// What an alert covers: one order (urgent), or a window (digest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scope {
    Order { order: i64 },
    Window { from: i64, to: i64 },
}

impl Payload for Notice {
    const KINDS: &'static [&'static str] = &[
        "key_email",
        "out_of_stock_alert",
        "needs_attention_alert",
        "refund_email",
        "refund_alert",
    ];

    /// The admin hears about a sell-out or a set-aside order before the
    /// queue of buyer emails drains.
    fn priority(&self) -> Priority {
        match self {
            Notice::KeyEmail { .. } | Notice::RefundEmail { .. } => Priority::Normal,
            Notice::OutOfStock { .. } | Notice::NeedsAttention(_) | Notice::RefundAlert { .. } => {
                Priority::Urgent
            }
        }
    }
}

/// The buyer's key email for order `order`, which got key `key_id`.
pub(super) fn key_email(order: i64, key_id: i64, max_attempts: i32) -> KeyedJob {
    let notice = Notice::KeyEmail {
        order,
        key: Some(key_id),
    };
    let dedupe = history::fill(history::KEY_EMAIL_JOB.dedupe_key, &[&order, &key_id]);
    NewJob::of(&notice, max_attempts).keyed(dedupe)
}

/// The kind of [`key_email`]'s jobs.
pub(super) const KEY_EMAIL: &str = history::KEY_EMAIL_JOB.kind;

/// The emails of a refund of order `order`: the buyer's (when the order
/// has an address) and the admin's.
pub(super) fn refund(order: i64, to_buyer: bool, max_attempts: i32) -> Vec<NewJob> {
    let mut jobs = vec![
        NewJob::of(&Notice::RefundAlert { order }, max_attempts)
            .dedupe_key(format!("refund_alert:{order}")),
    ];
    if to_buyer {
        jobs.push(
            NewJob::of(&Notice::RefundEmail { order }, max_attempts)
                .dedupe_key(format!("refund_email:{order}")),
        );
    }
    jobs
}

/// Urgent for the first order of a sell-out, a digest per window after.
/// `true` when this order is the first of its sell-out.
pub(super) async fn out_of_stock(
    tx: &mut Tx,
    sku: &Sku,
    order: i64,
    sell_out: i64,
    now: i64,
    interval: Duration,
    max_attempts: i32,
) -> Result<bool, sqlx::Error> {
    let scope = jobs::dedupe_part(sku.as_str());
    let alert = |scope| Notice::OutOfStock {
        sku: sku.as_str().to_string(),
        scope,
    };
    let urgent = NewJob::of(&alert(Scope::Order { order }), max_attempts)
        .dedupe_key(format!("out_of_stock_alert:{scope}:{sell_out}"));
    if jobs::enqueue(tx, &urgent, now).await?.is_some() {
        return Ok(true);
    }
    let (from, to) = window(now, interval);
    let digest = NewJob::of(&alert(Scope::Window { from, to }), max_attempts)
        .dedupe_key(format!("out_of_stock_alert:{scope}:{sell_out}:{from}"))
        .run_at(to);
    jobs::enqueue(tx, &digest, now).await.map(|_| false)
}

/// Urgent for the first order set aside in a window, a digest after it.
pub(super) async fn needs_attention(
    tx: &mut Tx,
    order: i64,
    now: i64,
    interval: Duration,
    max_attempts: i32,
) -> Result<(), sqlx::Error> {
    let (from, to) = window(now, interval);
    let urgent = NewJob::of(
        &Notice::NeedsAttention(Scope::Order { order }),
        max_attempts,
    )
    .dedupe_key(format!("needs_attention_alert:{from}"));
    if jobs::enqueue(tx, &urgent, now).await?.is_some() {
        return Ok(());
    }
    let digest = NewJob::of(
        &Notice::NeedsAttention(Scope::Window { from, to }),
        max_attempts,
    )
    .dedupe_key(format!("needs_attention_alert:{from}:digest"))
    .run_at(to);
    jobs::enqueue(tx, &digest, now).await.map(drop)
}

fn read(error: impl std::fmt::Display) -> JobError {
    JobError::retry(format!("reading the database: {error}"))
}

impl Compose for Notice {
    type Context = Context;

    /// `None` when there is nothing to say any more (the orders were served
    /// meanwhile) or nobody to tell.
    async fn compose(self, cx: &Context) -> Result<Option<Letter>, JobError> {
        // The worker's span for this attempt names the order it serves
        // (the outbox never reads a payload).
        if let Some(order) = self.order() {
            tracing::Span::current().record("order", order);
        }
        match self {
            Notice::KeyEmail { order, key } => key_letter(cx, order, key).await,
            Notice::OutOfStock { sku, scope } => out_of_stock_letter(cx, sku, scope).await,
            Notice::NeedsAttention(scope) => attention_letter(cx, scope).await,
            Notice::RefundEmail { order } => refund_letter(cx, order, false).await,
            Notice::RefundAlert { order } => refund_letter(cx, order, true).await,
        }
    }
}

/// One read of the key's row: the key, its status, and the buyer and order
/// it was assigned to in the order's transaction.
/// `None` when the order was refunded before its email went out: the buyer
/// gets the refund email instead.
async fn key_letter(
    cx: &Context,
    order: i64,
    key: Option<i64>,
) -> Result<Option<Letter>, JobError> {
    let missing = || JobError::Permanent(format!("order {order} has no key assigned"));
    let key_id = match key {
        Some(key) => key,
        None => store::key_of(&cx.db, order)
            .await
            .map_err(read)?
            .ok_or_else(missing)?,
    };
    let issued = cx
        .keys
        .get(key_id)
        .await
        .map_err(read)?
        .ok_or_else(missing)?;
    let order_id = issued.assigned_order_id.unwrap_or_default();
    if issued.status == KeyStatus::Revoked {
        let refunded = store::summary_of(&cx.db, order)
            .await
            .map_err(read)?
            .is_some_and(|o| o.state == OrderState::Refunded);
        if refunded {
            return Ok(None);
        }
        return Err(JobError::Permanent(format!(
            "the key of order {order_id} was revoked before its email was sent"
        )));
    }
    let to = issued
        .assigned_to_email
        .ok_or_else(|| JobError::Permanent(format!("order {order} has no email")))?;
    Ok(Some(Letter {
        to,
        template: "license_key".into(),
        context: json!({
            "key": issued.key.expose(),
            "order_id": order_id,
            "product": issued.product_sku,
        }),
    }))
}

async fn out_of_stock_letter(
    cx: &Context,
    sku: String,
    scope: Scope,
) -> Result<Option<Letter>, JobError> {
    if cx.admin.is_none() {
        return Ok(admin_letter_to(None, "out_of_stock", Value::Null));
    }
    let (from, to, urgent) = match scope {
        Scope::Order { .. } => (None, None, true),
        Scope::Window { from, to } => (Some(from), Some(to), false),
    };
    let (waiting, oldest, new_in_window) =
        store::waiting_summary(&cx.db, &sku, from.unwrap_or(0), to.unwrap_or(i64::MAX))
            .await
            .map_err(read)?;
    if waiting == 0 {
        return Ok(None); // restocked meanwhile
    }
    let window = |ms: Option<i64>| ms.map(rfc3339).unwrap_or_default();
    Ok(admin_letter_to(
        cx.admin.as_ref(),
        "out_of_stock",
        json!({
            "sku": sku,
            "urgent": urgent,
            "waiting": waiting,
            "waiting_since": oldest.map(rfc3339).unwrap_or_default(),
            "new_in_window": new_in_window,
            "window_start": window(from),
            "window_end": window(to),
        }),
    ))
}

/// The buyer's or the admin's refund email, from the order as it is now.
async fn refund_letter(cx: &Context, order: i64, admin: bool) -> Result<Option<Letter>, JobError> {
    let Some(summary) = store::summary_of(&cx.db, order).await.map_err(read)? else {
        return Err(JobError::Permanent(format!(
            "order {order} no longer exists"
        )));
    };
    let context = json!({
        "order_id": summary.order_id,
        "source": summary.source,
        "email": summary.email.as_deref().unwrap_or("-"),
        "product": summary.product_sku.as_deref().unwrap_or("-"),
        "revoked": summary.license_key_id.is_some(),
        "key_id": summary.license_key_id,
        "detail": "refunded by the payment provider",
    });
    if admin {
        return Ok(admin_letter_to(
            cx.admin.as_ref(),
            "order_refunded",
            context,
        ));
    }
    let to = summary
        .email
        .ok_or_else(|| JobError::Permanent(format!("order {order} has no email")))?;
    Ok(Some(Letter {
        to,
        template: "refund_notice".into(),
        context,
    }))
}

async fn attention_letter(cx: &Context, scope: Scope) -> Result<Option<Letter>, JobError> {
    if cx.admin.is_none() {
        return Ok(admin_letter_to(None, "needs_attention", Value::Null));
    }
    let (order, from, to) = match scope {
        Scope::Order { order } => (Some(order), 0, 0),
        Scope::Window { from, to } => (None, from, to),
    };
    let orders = store::set_aside_orders(&cx.db, order, from, to)
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
    Ok(admin_letter_to(
        cx.admin.as_ref(),
        "needs_attention",
        json!({"orders": orders, "urgent": order.is_some()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_keep_the_stored_shape() {
        let job = key_email(7, 3, 4);
        assert_eq!(job.kind, "key_email");
        assert_eq!(job.payload, json!({"order": 7, "key": 3}));
        assert_eq!(job.dedupe_key.as_deref(), Some("key_email:7:3"));
        let urgent = Notice::OutOfStock {
            sku: "c".into(),
            scope: Scope::Order { order: 1 },
        };
        assert_eq!(
            NewJob::of(&urgent, 1).payload,
            json!({"sku": "c", "order": 1})
        );
        let digest = Notice::NeedsAttention(Scope::Window { from: 1, to: 2 });
        assert_eq!(NewJob::of(&digest, 1).payload, json!({"from": 1, "to": 2}));
    }

    #[test]
    fn stored_payloads_decode() {
        let job = |kind: &str, payload: Value| jobs::Leased {
            id: 1,
            kind: kind.into(),
            payload: payload.to_string(),
            attempt: 1,
            max_attempts: 1,
            created_at: 0,
            request_id: None,
        };
        let window = jobs::decode::<Notice>(&job(
            "out_of_stock_alert",
            json!({"sku": "c", "from": 1, "to": 2}),
        ))
        .unwrap();
        assert_eq!(
            window,
            Notice::OutOfStock {
                sku: "c".into(),
                scope: Scope::Window { from: 1, to: 2 }
            }
        );
        let urgent =
            jobs::decode::<Notice>(&job("needs_attention_alert", json!({"order": 5}))).unwrap();
        assert_eq!(urgent, Notice::NeedsAttention(Scope::Order { order: 5 }));
        let earlier = jobs::decode::<Notice>(&job("key_email", json!({"order": 7}))).unwrap();
        assert_eq!(
            earlier,
            Notice::KeyEmail {
                order: 7,
                key: None
            }
        );
        assert!(jobs::decode::<Notice>(&job("key_email", json!({}))).is_err());
    }
}
