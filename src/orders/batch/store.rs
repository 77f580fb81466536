//! The multi-row SQL of a batch of orders, on the `orders` and
//! `order_events` tables. On SQLite each statement reads the batch's rows
//! (or ids) from one JSON array, so its text is the same for every batch and it is
//! prepared once (see `db::json_rows`). On MySQL each statement's shape
//! follows the size of the batch, so none is kept among the connection's
//! prepared statements, where it would push out those that are used again.

use crate::orders::OrderState;
use std::collections::HashMap;

use sqlx::QueryBuilder;

use crate::{
    db::{Backend, Tx, json_rows, push_case, push_list},
    on_tx,
};

/// An order already stored under one of the batch's order ids.
#[derive(sqlx::FromRow)]
pub(super) struct Stored {
    pub order_id: String,
    #[sqlx(try_from = "String")]
    pub state: OrderState,
}

/// The orders of `source` stored under any of `order_ids`.
pub(super) async fn stored(
    tx: &mut Tx,
    source: &str,
    order_ids: &[&str],
) -> Result<Vec<Stored>, sqlx::Error> {
    if let Tx::Sqlite(conn) = tx {
        return sqlx::query_as(
            "select order_id, state from orders
              where source = ?1 and order_id in (select value from json_each(?2))",
        )
        .bind(source)
        .bind(json_rows(order_ids)?)
        .fetch_all(&mut **conn)
        .await;
    }
    on_tx!(tx, |conn, _sql| {
        let mut select = QueryBuilder::new("select order_id, state from orders where source = ");
        select.push_bind(source).push(" and order_id in ");
        push_list(&mut select, order_ids.iter().copied());
        select
            .build_query_as()
            .persistent(false)
            .fetch_all(conn)
            .await
    })
}

/// A new order of the batch, as its payload describes it.
pub(super) struct NewOrder<'a> {
    pub order_id: &'a str,
    pub email: &'a str,
    pub coupon_code: Option<&'a str>,
    /// The payment it was paid with, from a payment provider.
    pub payment_ref: Option<&'a str>,
}

/// Inserts `orders` of `source` for `sku` as placeholders (settled before
/// the transaction commits; PostgreSQL writes each order once, in its final
/// state, in `allot_place_orders`). Returns the new rows' ids by order id;
/// an order another transaction stored meanwhile is left out on SQLite and
/// fails the statement on MySQL (which has no "do nothing" that spares
/// other errors).
pub(super) async fn insert(
    tx: &mut Tx,
    source: &str,
    sku: &str,
    orders: &[NewOrder<'_>],
    now: i64,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    if let Tx::Sqlite(conn) = tx {
        let rows: Vec<(&str, &str, Option<&str>, Option<&str>)> = orders
            .iter()
            .map(|o| (o.order_id, o.email, o.coupon_code, o.payment_ref))
            .collect();
        let json = json_rows(&rows)?;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "insert into orders (source, order_id, state, email, product_sku, coupon_code, payment_ref,
                                 created_at, updated_at)
             select ?1, o.value ->> 0, 'needs_attention', o.value ->> 1, ?2, o.value ->> 2,
                    o.value ->> 3, ?3, ?3
               from json_each(?4) o where true order by o.key
             on conflict (source, order_id) do nothing returning id, order_id",
        )
        .bind(source)
        .bind(sku)
        .bind(now)
        .bind(json)
        .fetch_all(&mut **conn)
        .await?;
        return Ok(rows.into_iter().map(|(id, o)| (o, id)).collect());
    }
    let mysql = tx.backend() == Backend::MySql;
    let rows: Vec<(i64, String)> = on_tx!(tx, |conn, _sql| {
        let mut insert = QueryBuilder::new(
            "insert into orders (source, order_id, state, email, product_sku, coupon_code, payment_ref, created_at, updated_at) ",
        );
        insert.push_values(orders, |mut row, order| {
            row.push_bind(source)
                .push_bind(order.order_id)
                .push_bind(OrderState::NeedsAttention.as_str())
                .push_bind(order.email)
                .push_bind(sku)
                .push_bind(order.coupon_code)
                .push_bind(order.payment_ref)
                .push_bind(now)
                .push_bind(now);
        });
        if mysql {
            insert.build().persistent(false).execute(&mut *conn).await?;
            let mut select = QueryBuilder::new("select id, order_id from orders where source = ");
            select.push_bind(source).push(" and order_id in ");
            push_list(&mut select, orders.iter().map(|order| order.order_id));
            select
                .build_query_as()
                .persistent(false)
                .fetch_all(conn)
                .await
        } else {
            insert.push(" on conflict (source, order_id) do nothing returning id, order_id");
            insert
                .build_query_as()
                .persistent(false)
                .fetch_all(conn)
                .await
        }
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, order_id)| (order_id, id))
        .collect())
}

/// Marks each order fulfilled with its key and email job.
pub(super) async fn fulfilled(
    tx: &mut Tx,
    orders: &[(i64, i64, Option<i64>)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    if let Tx::Sqlite(conn) = tx {
        let json = json_rows(orders)?;
        sqlx::query(
            "update orders set state = 'fulfilled', license_key_id = f.value ->> 1,
                    email_job_id = f.value ->> 2, problem = null, raw_body = null, updated_at = ?1
               from json_each(?2) f where orders.id = f.value ->> 0",
        )
        .bind(now)
        .bind(json)
        .execute(&mut **conn)
        .await?;
        return Ok(());
    }
    on_tx!(tx, |conn, _sql| {
        let mut update =
            QueryBuilder::new("update orders set state = 'fulfilled', license_key_id = ");
        push_case(
            &mut update,
            "id",
            orders.iter().map(|(id, key, _)| (*id, *key)),
        );
        update.push(", email_job_id = ");
        push_case(
            &mut update,
            "id",
            orders.iter().map(|(id, _, job)| (*id, *job)),
        );
        update.push(", problem = null, raw_body = null, updated_at = ");
        update.push_bind(now).push(" where id in ");
        push_list(&mut update, orders.iter().map(|(id, _, _)| *id));
        update
            .build()
            .persistent(false)
            .execute(conn)
            .await
            .map(drop)
    })
}

/// Marks the orders `ids` as waiting for stock.
pub(super) async fn waiting(tx: &mut Tx, ids: &[i64], now: i64) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    if let Tx::Sqlite(conn) = tx {
        sqlx::query(
            "update orders set state = 'awaiting_stock', problem = null, raw_body = null,
                    updated_at = ?1
              where id in (select value from json_each(?2))",
        )
        .bind(now)
        .bind(json_rows(ids)?)
        .execute(&mut **conn)
        .await?;
        return Ok(());
    }
    on_tx!(tx, |conn, _sql| {
        let mut update = QueryBuilder::new(
            "update orders set state = 'awaiting_stock', problem = null, raw_body = null, updated_at = ",
        );
        update.push_bind(now).push(" where id in ");
        push_list(&mut update, ids.iter().copied());
        update
            .build()
            .persistent(false)
            .execute(conn)
            .await
            .map(drop)
    })
}

/// Adds one history entry (order, state, detail) per order.
pub(super) async fn events(
    tx: &mut Tx,
    events: &[(i64, OrderState, String)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    if let Tx::Sqlite(conn) = tx {
        let json = json_rows(events)?;
        sqlx::query(
            "insert into order_events (order_ref, at, state, detail)
             select e.value ->> 0, ?1, e.value ->> 1, e.value ->> 2 from json_each(?2) e",
        )
        .bind(now)
        .bind(json)
        .execute(&mut **conn)
        .await?;
        return Ok(());
    }
    on_tx!(tx, |conn, _sql| {
        let mut insert =
            QueryBuilder::new("insert into order_events (order_ref, at, state, detail) ");
        insert.push_values(events, |mut row, (id, state, detail)| {
            row.push_bind(*id)
                .push_bind(now)
                .push_bind(state.as_str())
                .push_bind(detail.as_str());
        });
        insert
            .build()
            .persistent(false)
            .execute(conn)
            .await
            .map(drop)
    })
}
