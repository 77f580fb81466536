//! SQL of the `payment_events` log: one text with `?` placeholders through
//! `on_tx!`/`on_db!`, the idempotent insert through `insert_unless_exists!`.

use super::PaymentEvent;
use crate::{
    db::{Db, Tx},
    insert_unless_exists,
    intake::normalize::Source,
    on_db,
};

/// Logs `event`; `false` if this provider's event id was logged before.
pub(super) async fn insert(
    tx: &mut Tx,
    event: &PaymentEvent,
    outcome: &str,
    detail: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = insert_unless_exists!(
        &mut *tx,
        "insert into payment_events
            (provider, event_id, event_type, payment_ref, order_id, amount, currency, outcome, detail, received_at)
         values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        conflict "(provider, event_id)",
        [
            event.provider.as_str(),
            event.event_id.as_str(),
            event.event_type.as_str(),
            event.payment_ref.as_deref(),
            event.order_id.as_deref(),
            event.amount,
            event.currency.as_deref(),
            outcome,
            detail,
            now
        ]
    )?;
    Ok(inserted.is_some())
}

/// Replaces what the log says was done about an event.
pub(super) async fn describe(
    db: &Db,
    provider: Source,
    event_id: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    on_db!(db, write, |pool, sql| {
        sqlx::query(sql(
            "update payment_events set detail = ? where provider = ? and event_id = ?",
        ))
        .bind(detail)
        .bind(provider.as_str())
        .bind(event_id)
        .execute(pool)
        .await
        .map(drop)
    })
}

/// Whether a refund of this order or payment was logged.
pub(super) async fn refund_logged(
    db: &Db,
    provider: Source,
    order_id: Option<&str>,
    payment_ref: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql("select id from payment_events
              where provider = ? and outcome = 'refund' and (payment_ref = ? or order_id = ?)
              limit 1"))
        .bind(provider.as_str())
        .bind(payment_ref)
        .bind(order_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(found.is_some())
}
