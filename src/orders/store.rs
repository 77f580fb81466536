//! Orders SQL. One text with `?` placeholders where the dialects agree;
//! written out per backend where they do not (the idempotent insert, row
//! locks).

use serde::Serialize;

use crate::{
    db::{Db, Tx},
    jobs::rfc3339,
    keys::Sku,
    on_db, on_tx,
};

pub(super) enum Claimed {
    New(i64),
    Existing { id: i64, state: String },
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    state: String,
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
    let inserted: Option<i64> = match tx {
        Tx::Sqlite(tx) => {
            sqlx::query_scalar(
                "insert into orders (source, order_id, state, created_at, updated_at)
                 values (?, ?, 'needs_attention', ?, ?) on conflict (source, order_id) do nothing returning id",
            )
            .bind(source)
            .bind(order_id)
            .bind(now)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?
        }
        Tx::Postgres(tx) => {
            sqlx::query_scalar(
                "insert into orders (source, order_id, state, created_at, updated_at)
                 values ($1, $2, 'needs_attention', $3, $3) on conflict (source, order_id) do nothing returning id",
            )
            .bind(source)
            .bind(order_id)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?
        }
        // A duplicate-key error fails the statement, not the transaction
        // (INSERT IGNORE would also swallow truncation and other errors).
        Tx::MySql(tx) => {
            let done = sqlx::query(
                "insert into orders (source, order_id, state, created_at, updated_at)
                 values (?, ?, 'needs_attention', ?, ?)",
            )
            .bind(source)
            .bind(order_id)
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await;
            match done {
                Ok(done) => Some(done.last_insert_id() as i64),
                Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => None,
                Err(e) => return Err(e),
            }
        }
    };
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

/// The order's state, with its row locked until the transaction ends
/// (SQLite's transaction holds the database's write lock already).
pub(super) async fn lock_state(tx: &mut Tx, id: i64) -> Result<String, sqlx::Error> {
    match tx {
        Tx::Sqlite(tx) => {
            sqlx::query_scalar("select state from orders where id = ?")
                .bind(id)
                .fetch_one(&mut **tx)
                .await
        }
        Tx::Postgres(tx) => {
            sqlx::query_scalar("select state from orders where id = $1 for update")
                .bind(id)
                .fetch_one(&mut **tx)
                .await
        }
        Tx::MySql(tx) => {
            sqlx::query_scalar("select state from orders where id = ? for update")
                .bind(id)
                .fetch_one(&mut **tx)
                .await
        }
    }
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
        .bind(problem)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub(super) async fn wait(tx: &mut Tx, id: i64, now: i64) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update orders set state = 'awaiting_stock', problem = null, raw_body = null, updated_at = ? where id = ?",
        ))
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
    state: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "insert into order_events (order_ref, at, state, detail) values (?, ?, ?, ?)",
        ))
        .bind(id)
        .bind(now)
        .bind(state)
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

/// Whether `sku` has a key left (index `license_keys_vend`).
const ANY_AVAILABLE: &str =
    "select id from license_keys where status = 'available' and product_sku = ? limit 1";

pub(super) async fn in_stock(tx: &mut Tx, sku: &Sku) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(ANY_AVAILABLE))
            .bind(sku.as_str())
            .fetch_optional(conn)
            .await
    })?;
    Ok(found.is_some())
}

/// The newest key ever imported for `sku`: it names a sell-out, which
/// lasts until a restock adds newer keys. Unlike the last key handed out,
/// it is the same for every buyer racing into the empty pool (one of them
/// may be vending the last key right now). Three index lookups on
/// `license_keys_vend`, one per status, instead of a scan of the SKU.
pub(super) async fn newest_key(tx: &mut Tx, sku: &Sku) -> Result<i64, sqlx::Error> {
    let newest: Option<i64> = on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(
            "select max(newest) from (
                 select max(id) as newest from license_keys where status = 'available' and product_sku = ?
                 union all
                 select max(id) from license_keys where status = 'assigned' and product_sku = ?
                 union all
                 select max(id) from license_keys where status = 'revoked' and product_sku = ?
             ) as per_status",
        ))
        .bind(sku.as_str())
        .bind(sku.as_str())
        .bind(sku.as_str())
        .fetch_one(conn)
        .await
    })?;
    Ok(newest.unwrap_or(0))
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
    const SELECT: &str = "select id, order_id, email, coupon_code from orders
                           where state = 'awaiting_stock' and product_sku = ? order by id limit 1";
    match tx {
        Tx::Sqlite(tx) => {
            sqlx::query_as(SELECT)
                .bind(sku.as_str())
                .fetch_optional(&mut **tx)
                .await
        }
        Tx::Postgres(tx) => {
            sqlx::query_as(
                "select id, order_id, email, coupon_code from orders
                  where state = 'awaiting_stock' and product_sku = $1 order by id limit 1 for update",
            )
            .bind(sku.as_str())
            .fetch_optional(&mut **tx)
            .await
        }
        Tx::MySql(tx) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} for update")))
                .bind(sku.as_str())
                .fetch_optional(&mut **tx)
                .await
        }
    }
}

pub(super) async fn has_available(db: &Db, sku: &Sku) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql(ANY_AVAILABLE))
            .bind(sku.as_str())
            .fetch_optional(pool)
            .await
    })?;
    Ok(found.is_some())
}

pub(super) async fn skus_waiting(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql(
            "select distinct product_sku from orders where state = 'awaiting_stock' and product_sku is not null",
        ))
        .fetch_all(pool)
        .await
    })
}

/// Waiting orders of a SKU: how many, since when, and how many started
/// waiting in [from, to).
pub(crate) async fn waiting_summary(
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
pub(crate) struct SetAside {
    pub id: i64,
    pub source: String,
    pub order_id: String,
    pub problem: Option<String>,
    pub updated_at: i64,
}

/// One order set aside (`id`), or all those set aside in [from, to).
pub(crate) async fn set_aside_orders(
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

/// What the key email needs: the order and its key.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyLetter {
    pub email: Option<String>,
    pub order_id: String,
    pub product_sku: Option<String>,
    pub license_key: String,
    pub status: String,
}

pub(crate) async fn key_letter(db: &Db, id: i64) -> Result<Option<KeyLetter>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select o.email, o.order_id, o.product_sku, k.license_key, k.status
               from orders o join license_keys k on k.id = o.license_key_id
              where o.id = ?",
        ))
        .bind(id)
        .fetch_optional(pool)
        .await
    })
}

/// An order as `GET /v1/orders/{source}/{order_id}` shows it. Never the key.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    pub source: String,
    pub order_id: String,
    pub state: String,
    pub email: Option<String>,
    pub product_sku: Option<String>,
    pub coupon_code: Option<String>,
    pub problem: Option<String>,
    /// The body as received, for orders that need attention.
    pub raw_body: Option<String>,
    pub received_at: String,
    pub updated_at: String,
    /// The buyer's key email, once queued.
    pub email_delivery: Option<Delivery>,
    pub history: Vec<Event>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub job_id: i64,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: String,
    pub state: String,
    pub detail: String,
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    id: i64,
    source: String,
    order_id: String,
    state: String,
    email: Option<String>,
    product_sku: Option<String>,
    coupon_code: Option<String>,
    problem: Option<String>,
    raw_body: Option<Vec<u8>>,
    created_at: i64,
    updated_at: i64,
    job_id: Option<i64>,
    job_state: Option<String>,
    job_attempts: Option<i32>,
    job_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    at: i64,
    state: String,
    detail: String,
}

pub(super) async fn find(
    db: &Db,
    source: &str,
    order_id: &str,
) -> Result<Option<OrderView>, sqlx::Error> {
    let row: Option<ViewRow> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select o.id, o.source, o.order_id, o.state, o.email, o.product_sku, o.coupon_code,
                    o.problem, o.raw_body, o.created_at, o.updated_at,
                    j.id as job_id, j.state as job_state, j.attempts as job_attempts,
                    j.last_error as job_error
               from orders o left join jobs j on j.id = o.email_job_id
              where o.source = ? and o.order_id = ?",
        ))
        .bind(source)
        .bind(order_id)
        .fetch_optional(pool)
        .await
    })?;
    let Some(row) = row else {
        return Ok(None);
    };
    let events: Vec<EventRow> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select at, state, detail from order_events where order_ref = ? order by id",
        ))
        .bind(row.id)
        .fetch_all(pool)
        .await
    })?;
    let email_delivery = match (row.job_id, row.job_state) {
        (Some(job_id), Some(state)) => Some(Delivery {
            job_id,
            state,
            attempts: row.job_attempts.unwrap_or(0),
            last_error: row.job_error,
        }),
        _ => None,
    };
    Ok(Some(OrderView {
        source: row.source,
        order_id: row.order_id,
        state: row.state,
        email: row.email,
        product_sku: row.product_sku,
        coupon_code: row.coupon_code,
        problem: row.problem,
        raw_body: row
            .raw_body
            .map(|body| String::from_utf8_lossy(&body).into_owned()),
        received_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        email_delivery,
        history: events
            .into_iter()
            .map(|e| Event {
                at: rfc3339(e.at),
                state: e.state,
                detail: e.detail,
            })
            .collect(),
    }))
}
