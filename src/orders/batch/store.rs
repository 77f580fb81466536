//! The multi-row SQL of a batch of orders, on the `orders` and
//! `order_events` tables, for the backends that place a batch step by step
//! (`db::Step`; PostgreSQL writes each order once, in its final state, in
//! `allot_place_orders`). On SQLite each statement reads the batch's rows
//! (or ids) from one JSON array, so its text is the same for every batch
//! and it is prepared once (see `db::json_rows`). On MySQL each statement's
//! shape follows the size of the batch, so none is kept among the
//! connection's prepared statements, where it would push out those that
//! are used again.

use crate::orders::OrderState;
use std::collections::{HashMap, HashSet};

use sqlx::{MySql, QueryBuilder};

use crate::db::{Step, json_rows, push_case, push_list};

/// An order already stored under one of the batch's order ids.
#[derive(sqlx::FromRow)]
struct Stored {
    order_id: String,
    #[sqlx(try_from = "String")]
    state: OrderState,
}

/// The orders of `source` stored under any of `order_ids` (not empty).
async fn stored(
    step: Step<'_>,
    source: &str,
    order_ids: &[&str],
) -> Result<Vec<Stored>, sqlx::Error> {
    match step {
        Step::Sqlite(conn) => {
            sqlx::query_as(
                "select order_id, state from orders
                  where source = ?1 and order_id in (select value from json_each(?2))",
            )
            .bind(source)
            .bind(json_rows(order_ids)?)
            .fetch_all(conn)
            .await
        }
        Step::MySql(conn) => {
            let mut select =
                QueryBuilder::<MySql>::new("select order_id, state from orders where source = ");
            select.push_bind(source).push(" and order_id in ");
            push_list(&mut select, order_ids.iter().copied());
            select
                .build_query_as()
                .persistent(false)
                .fetch_all(conn)
                .await
        }
    }
}

/// A new order of the batch, as its payload describes it.
pub(super) struct NewOrder<'a> {
    pub order_id: &'a str,
    pub email: &'a str,
    pub coupon_code: Option<&'a str>,
    /// The payment it was paid with, from a payment provider.
    pub payment_ref: Option<&'a str>,
}

/// What storing a batch's orders of one source found.
#[derive(Default)]
pub(super) struct Inserted {
    /// The new rows' ids, by order id.
    pub new: HashMap<String, i64>,
    /// The state of each order stored before, by order id.
    pub there: HashMap<String, OrderState>,
}

/// Stores `orders` (not repeated) of `source` for `sku` as placeholders,
/// settled before the transaction commits, and reads the state of those
/// stored before. SQLite inserts first (`on conflict do nothing`) and
/// looks up only what was already there; MySQL, whose multi-row insert
/// fails on a duplicate (it has no "do nothing" that spares other errors),
/// looks up first. An order another transaction stores meanwhile is left
/// out on SQLite and fails the statement on MySQL.
pub(super) async fn insert(
    step: Step<'_>,
    source: &str,
    sku: &str,
    orders: &[NewOrder<'_>],
    now: i64,
) -> Result<Inserted, sqlx::Error> {
    if orders.is_empty() {
        return Ok(Inserted::default());
    }
    let (new, there): (Vec<(i64, String)>, Vec<Stored>) = match step {
        Step::Sqlite(conn) => {
            let rows: Vec<(&str, &str, Option<&str>, Option<&str>)> = orders
                .iter()
                .map(|o| (o.order_id, o.email, o.coupon_code, o.payment_ref))
                .collect();
            let new: Vec<(i64, String)> = sqlx::query_as(
                "insert into orders (source, order_id, state, email, product_sku, coupon_code,
                                     payment_ref, created_at, updated_at)
                 select ?1, o.value ->> 0, 'needs_attention', o.value ->> 1, ?2, o.value ->> 2,
                        o.value ->> 3, ?3, ?3
                   from json_each(?4) o where true order by o.key
                 on conflict (source, order_id) do nothing returning id, order_id",
            )
            .bind(source)
            .bind(sku)
            .bind(now)
            .bind(json_rows(&rows)?)
            .fetch_all(&mut *conn)
            .await?;
            let inserted: HashSet<&str> = new.iter().map(|(_, id)| id.as_str()).collect();
            let left: Vec<&str> = orders
                .iter()
                .map(|o| o.order_id)
                .filter(|id| !inserted.contains(id))
                .collect();
            let there = if left.is_empty() {
                Vec::new()
            } else {
                stored(Step::Sqlite(conn), source, &left).await?
            };
            (new, there)
        }
        Step::MySql(conn) => {
            let ids: Vec<&str> = orders.iter().map(|o| o.order_id).collect();
            let there = stored(Step::MySql(&mut *conn), source, &ids).await?;
            let found: HashSet<&str> = there.iter().map(|row| row.order_id.as_str()).collect();
            let fresh: Vec<&NewOrder> = orders
                .iter()
                .filter(|o| !found.contains(o.order_id))
                .collect();
            let new = if fresh.is_empty() {
                Vec::new()
            } else {
                let mut insert = QueryBuilder::<MySql>::new(
                    "insert into orders (source, order_id, state, email, product_sku, coupon_code, payment_ref, created_at, updated_at) ",
                );
                insert.push_values(&fresh, |mut row, order| {
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
                insert.build().persistent(false).execute(&mut *conn).await?;
                // No `returning`: the new ids are read back by order id.
                let mut select =
                    QueryBuilder::<MySql>::new("select id, order_id from orders where source = ");
                select.push_bind(source).push(" and order_id in ");
                push_list(&mut select, fresh.iter().map(|order| order.order_id));
                select
                    .build_query_as()
                    .persistent(false)
                    .fetch_all(conn)
                    .await?
            };
            (new, there)
        }
    };
    Ok(Inserted {
        new: new
            .into_iter()
            .map(|(id, order_id)| (order_id, id))
            .collect(),
        there: there
            .into_iter()
            .map(|row| (row.order_id, row.state))
            .collect(),
    })
}

/// Marks each order fulfilled with its key and email job.
pub(super) async fn fulfilled(
    step: Step<'_>,
    orders: &[(i64, i64, Option<i64>)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    match step {
        Step::Sqlite(conn) => {
            sqlx::query(
                "update orders set state = 'fulfilled', license_key_id = f.value ->> 1,
                        email_job_id = f.value ->> 2, problem = null, raw_body = null,
                        updated_at = ?1
                   from json_each(?2) f where orders.id = f.value ->> 0",
            )
            .bind(now)
            .bind(json_rows(orders)?)
            .execute(conn)
            .await?;
        }
        Step::MySql(conn) => {
            let mut update = QueryBuilder::<MySql>::new(
                "update orders set state = 'fulfilled', license_key_id = ",
            );
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
            update.build().persistent(false).execute(conn).await?;
        }
    }
    Ok(())
}

/// Marks the orders `ids` as waiting for stock.
pub(super) async fn waiting(step: Step<'_>, ids: &[i64], now: i64) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    match step {
        Step::Sqlite(conn) => {
            sqlx::query(
                "update orders set state = 'awaiting_stock', problem = null, raw_body = null,
                        updated_at = ?1
                  where id in (select value from json_each(?2))",
            )
            .bind(now)
            .bind(json_rows(ids)?)
            .execute(conn)
            .await?;
        }
        Step::MySql(conn) => {
            let mut update = QueryBuilder::<MySql>::new(
                "update orders set state = 'awaiting_stock', problem = null, raw_body = null, updated_at = ",
            );
            update.push_bind(now).push(" where id in ");
            push_list(&mut update, ids.iter().copied());
            update.build().persistent(false).execute(conn).await?;
        }
    }
    Ok(())
}

/// Adds one history entry (order, state, detail) per order.
pub(super) async fn events(
    step: Step<'_>,
    events: &[(i64, OrderState, String)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    match step {
        Step::Sqlite(conn) => {
            sqlx::query(
                "insert into order_events (order_ref, at, state, detail)
                 select e.value ->> 0, ?1, e.value ->> 1, e.value ->> 2 from json_each(?2) e",
            )
            .bind(now)
            .bind(json_rows(events)?)
            .execute(conn)
            .await?;
        }
        Step::MySql(conn) => {
            let mut insert = QueryBuilder::<MySql>::new(
                "insert into order_events (order_ref, at, state, detail) ",
            );
            insert.push_values(events, |mut row, (id, state, detail)| {
                row.push_bind(*id)
                    .push_bind(now)
                    .push_bind(state.as_str())
                    .push_bind(detail.as_str());
            });
            insert.build().persistent(false).execute(conn).await?;
        }
    }
    Ok(())
}
