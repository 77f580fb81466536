//! SQL of the `orders` and `order_events` tables: one text with `?`
//! placeholders through `on_tx!`/`on_db!`, row locks from `Backend`, the
//! idempotent insert through `insert_unless_exists!`. The order view's
//! query lives with the view (`view.rs`), a refund's with refunds
//! (`refund.rs`).

use serde::Serialize;

use super::OrderState;

use crate::{
    db::{Db, Tx, read_state},
    insert_unless_exists,
    intake::normalize::Source,
    keys::Sku,
    on_db, on_tx,
};

pub(super) enum Claimed {
    New(i64),
    Existing { id: i64, state: OrderState },
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    #[sqlx(try_from = "String")]
    state: OrderState,
}

/// Inserts the row for (source, order id), or finds the one that exists.
/// The row starts as `needs_attention` and is settled before the
/// transaction commits, so no other reader ever sees that placeholder.
pub(super) async fn insert(
    tx: &mut Tx,
    source: &str,
    order_id: &str,
    now: i64,
) -> Result<Claimed, sqlx::Error> {
    // A concurrent delivery of the same order waits here, on the unique key,
    // until the first one commits; then it finds the row.
    let inserted = insert_unless_exists!(
        &mut *tx,
        "insert into orders (source, order_id, state, created_at, updated_at)
         values (?, ?, 'needs_attention', ?, ?)",
        conflict "(source, order_id)",
        [source, order_id, now, now]
    )?;
    if let Some(id) = inserted {
        return Ok(Claimed::New(id));
    }
    let row: Row = on_tx!(tx, |conn, sql| {
        sqlx::query_as(sql(
            "select id, state from orders where source = ? and order_id = ?",
        ))
        .bind(source)
        .bind(order_id)
        .fetch_one(conn)
        .await
    })?;
    Ok(Claimed::Existing {
        id: row.id,
        state: row.state,
    })
}

/// Inserts the order row, or finds it: the idempotency by source and order
/// id. `None`: the order was received before (fulfilled or waiting) and
/// this delivery is a duplicate. An order that needed attention is taken
/// up again: the shop may have fixed it.
pub(super) async fn claim(
    tx: &mut Tx,
    source: Source,
    order_id: &str,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    match insert(tx, source.as_str(), order_id, now).await? {
        Claimed::New(id) => Ok(Some(id)),
        Claimed::Existing {
            id,
            state: OrderState::NeedsAttention,
        } => {
            // Lock it and look again: a concurrent delivery may be taking it
            // up right now.
            let state = lock_state(tx, id).await?;
            Ok((state == OrderState::NeedsAttention).then_some(id))
        }
        Claimed::Existing { .. } => Ok(None),
    }
}

/// Notes the payment order `id` was paid with, so that a refund naming
/// the payment finds it.
pub(super) async fn set_payment_ref(
    tx: &mut Tx,
    id: i64,
    payment_ref: Option<&str>,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql("update orders set payment_ref = ? where id = ?"))
            .bind(payment_ref)
            .bind(id)
            .execute(conn)
            .await
            .map(drop)
    })
}

/// The order's state, with its row locked until the transaction ends
/// (SQLite's transaction holds the database's write lock already).
pub(super) async fn lock_state(tx: &mut Tx, id: i64) -> Result<OrderState, sqlx::Error> {
    let select = format!(
        "select state from orders where id = ?{}",
        tx.backend().for_update()
    );
    let state: String = on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(select))
            .bind(id)
            .fetch_one(conn)
            .await
    })?;
    read_state(state)
}

/// Who ordered what, as far as the payload told.
pub(super) struct Details<'a> {
    pub email: Option<&'a str>,
    pub product_sku: Option<&'a str>,
    pub coupon_code: Option<&'a str>,
}

pub(super) async fn describe(
    tx: &mut Tx,
    id: i64,
    details: &Details<'_>,
    now: i64,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update orders set email = ?, product_sku = ?, coupon_code = ?, updated_at = ? where id = ?",
        ))
        .bind(details.email)
        .bind(details.product_sku)
        .bind(details.coupon_code)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub(super) async fn set_aside(
    tx: &mut Tx,
    id: i64,
    body: &[u8],
    problem: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update orders set state = 'needs_attention', raw_body = ?, problem = ?, updated_at = ? where id = ?",
        ))
        .bind(body)
        // MySQL's `text` holds 64 KiB; the body, kept whole, has the rest.
        .bind(crate::text::clip(problem, 4096))
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub(super) async fn fulfilled(
    tx: &mut Tx,
    id: i64,
    key_id: i64,
    email_job_id: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update orders set state = 'fulfilled', license_key_id = ?, email_job_id = ?,
                    problem = null, raw_body = null, updated_at = ?
              where id = ?",
        ))
        .bind(key_id)
        .bind(email_job_id)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub(super) async fn event(
    tx: &mut Tx,
    id: i64,
    now: i64,
    state: OrderState,
    detail: &str,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "insert into order_events (order_ref, at, state, detail) values (?, ?, ?, ?)",
        ))
        .bind(id)
        .bind(now)
        .bind(state.as_str())
        .bind(detail)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Whether orders for `sku` are already waiting (index `orders_state`).
pub(super) async fn waiting_ahead(tx: &mut Tx, sku: &Sku) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(
            "select id from orders where state = 'awaiting_stock' and product_sku = ? limit 1",
        ))
        .bind(sku.as_str())
        .fetch_optional(conn)
        .await
    })?;
    Ok(found.is_some())
}

#[derive(sqlx::FromRow)]
pub(super) struct Waiting {
    pub id: i64,
    pub order_id: String,
    pub email: String,
    pub coupon_code: Option<String>,
}

/// The oldest order waiting for `sku`, locked. Not `SKIP LOCKED`: a second
/// process restocking at once waits its turn instead of serving a younger
/// order first.
pub(super) async fn oldest_waiting(tx: &mut Tx, sku: &Sku) -> Result<Option<Waiting>, sqlx::Error> {
    let select = format!(
        "select id, order_id, email, coupon_code from orders
          where state = 'awaiting_stock' and product_sku = ? order by id limit 1{}",
        tx.backend().for_update()
    );
    on_tx!(tx, |conn, sql| {
        sqlx::query_as(sql(select))
            .bind(sku.as_str())
            .fetch_optional(conn)
            .await
    })
}

pub(super) async fn skus_waiting(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select product_sku, count(*) from orders
              where state = 'awaiting_stock' and product_sku is not null group by product_sku",
        ))
        .fetch_all(pool)
        .await
    })
}

/// Waiting orders of a SKU: how many, since when, and how many started
/// waiting in [from, to).
pub(super) async fn waiting_summary(
    db: &Db,
    sku: &str,
    from: i64,
    to: i64,
) -> Result<(i64, Option<i64>, i64), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Summary {
        waiting: i64,
        oldest: Option<i64>,
        new_in_window: i64,
    }
    let summary: Summary = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql("select count(*) as waiting, min(created_at) as oldest,
                    count(case when created_at >= ? and created_at < ? then 1 end) as new_in_window
               from orders where state = 'awaiting_stock' and product_sku = ?"))
        .bind(from)
        .bind(to)
        .bind(sku)
        .fetch_one(pool)
        .await
    })?;
    Ok((summary.waiting, summary.oldest, summary.new_in_window))
}

/// Orders set aside, for the admin's alert.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct SetAside {
    pub id: i64,
    pub source: String,
    pub order_id: String,
    pub problem: Option<String>,
    pub updated_at: i64,
}

/// One order set aside (`id`), or all those set aside in [from, to).
pub(super) async fn set_aside_orders(
    db: &Db,
    id: Option<i64>,
    from: i64,
    to: i64,
) -> Result<Vec<SetAside>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select id, source, order_id, problem, updated_at from orders
              where state = 'needs_attention' and (id = ? or (? is null and updated_at >= ? and updated_at < ?))
              order by id limit 200",
        ))
        .bind(id)
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
    })
}

/// The body an order set aside was received with; `None` unless the order
/// exists and still needs attention.
pub(super) async fn set_aside_body(
    db: &Db,
    source: &str,
    order_id: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let body: Option<Option<Vec<u8>>> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql("select raw_body from orders
              where source = ? and order_id = ? and state = 'needs_attention'"))
        .bind(source)
        .bind(order_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(body.flatten())
}

/// The key assigned to order `id`: for key emails queued before their
/// payload named the key.
pub(super) async fn key_of(db: &Db, id: i64) -> Result<Option<i64>, sqlx::Error> {
    let key: Option<Option<i64>> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql("select license_key_id from orders where id = ?"))
            .bind(id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(key.flatten())
}

/// An order as merchants and refund emails see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(super) struct Summary {
    pub source: String,
    pub order_id: String,
    #[sqlx(try_from = "String")]
    pub state: OrderState,
    pub email: Option<String>,
    #[serde(rename = "sku")]
    pub product_sku: Option<String>,
    pub coupon_code: Option<String>,
    pub payment_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip)]
    pub license_key_id: Option<i64>,
}

const SUMMARY: &str =
    "select source, order_id, state, email, product_sku, coupon_code, payment_ref,
        problem, license_key_id from orders where id = ?";

pub(super) async fn summary(tx: &mut Tx, id: i64) -> Result<Summary, sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query_as(sql(SUMMARY)).bind(id).fetch_one(conn).await
    })
}

pub(super) async fn summary_of(db: &Db, id: i64) -> Result<Option<Summary>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(SUMMARY))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}
