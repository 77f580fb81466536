//! Key bank SQL: one text with `?` placeholders through `on_tx!`/`on_db!`,
//! row locks from `Backend`; a batch is one JSON array on SQLite, one array
//! on PostgreSQL and a `QueryBuilder` list on MySQL, in one `match` each.

use sqlx::{Database, Encode, MySql, QueryBuilder, Type};

use super::{Assignment, KeyStatus, LicenseKey, Revoked, Sku, Stock, Vended};
use crate::{
    db::{self, Backend, Db, Step, Tx, json_rows, push_case, push_list, read_state},
    on_db, on_tx,
    text::BoundedText,
};

pub(super) async fn stock(db: &Db) -> Result<Vec<Stock>, sqlx::Error> {
    // count(…) is a BIGINT on every backend (MySQL's sum() would be DECIMAL).
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql("select product_sku,
                    count(case when status = 'available' then 1 end) as available,
                    count(case when status = 'assigned' then 1 end) as assigned,
                    count(case when status = 'revoked' then 1 end) as revoked
               from license_keys group by product_sku order by product_sku"))
        .fetch_all(pool)
        .await
    })
}

#[derive(sqlx::FromRow)]
struct Picked {
    id: i64,
    license_key: String,
}

pub(super) async fn vend(
    tx: &mut Tx,
    sku: &Sku,
    to: &Assignment<'_>,
    now: i64,
) -> Result<Option<Vended>, db::Error> {
    // The row lock makes a lost race impossible; should the update still
    // find the key taken, pick again rather than hand it out twice.
    for _ in 0..3 {
        let Some(picked) = pick_oldest(tx, sku).await? else {
            return Ok(None);
        };
        if assign(tx, picked.id, to, now).await? {
            return Ok(Some(Vended {
                id: picked.id,
                key: stored_key(picked.license_key)?,
            }));
        }
        tracing::warn!(
            key_id = picked.id,
            "a key picked for vending was taken meanwhile; picking again"
        );
    }
    Err(db::Error::Broken(
        "could not vend a key after three attempts".into(),
    ))
}

/// Assigns key `id` if it is still available; `false` if it is not.
async fn assign(tx: &mut Tx, id: i64, to: &Assignment<'_>, now: i64) -> Result<bool, sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update license_keys set status = 'assigned', assigned_to_email = ?, assigned_order_id = ?,
                    assigned_coupon_code = ?, assigned_at = ?
              where id = ? and status = 'available'",
        ))
        .bind(to.email)
        .bind(to.order_id)
        .bind(to.coupon_code)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .map(|done| done.rows_affected() == 1)
    })
}

/// Assigns each key of `assignments` (locked by [`reserve`] in this
/// transaction) to its buyer in one statement; how many it found.
pub(super) async fn assign_many(
    step: Step<'_>,
    assignments: &[(i64, Assignment<'_>)],
    now: i64,
) -> Result<u64, sqlx::Error> {
    if assignments.is_empty() {
        return Ok(0);
    }
    let done = match step {
        // The rows as one JSON array, one prepared statement for every
        // batch (see `db::json_rows`).
        Step::Sqlite(conn) => {
            let rows: Vec<(i64, &str, &str, Option<&str>)> = assignments
                .iter()
                .map(|(id, a)| (*id, a.email, a.order_id, a.coupon_code))
                .collect();
            sqlx::query(
                "update license_keys set status = 'assigned', assigned_to_email = a.value ->> 1,
                        assigned_order_id = a.value ->> 2, assigned_coupon_code = a.value ->> 3,
                        assigned_at = ?1
                   from json_each(?2) a where license_keys.id = a.value ->> 0",
            )
            .bind(now)
            .bind(json_rows(&rows)?)
            .execute(conn)
            .await?
            .rows_affected()
        }
        Step::MySql(conn) => {
            let mut update =
                QueryBuilder::<MySql>::new("update license_keys set status = 'assigned'");
            let ids = || assignments.iter().map(|(id, _)| *id);
            update.push(", assigned_to_email = ");
            push_case(
                &mut update,
                "id",
                ids().zip(assignments.iter().map(|(_, a)| a.email)),
            );
            update.push(", assigned_order_id = ");
            push_case(
                &mut update,
                "id",
                ids().zip(assignments.iter().map(|(_, a)| a.order_id)),
            );
            update.push(", assigned_coupon_code = ");
            push_case(
                &mut update,
                "id",
                ids().zip(assignments.iter().map(|(_, a)| a.coupon_code)),
            );
            update.push(", assigned_at = ").push_bind(now);
            // By id alone: `reserve` read these keys as available under the
            // locks this transaction still holds.
            update.push(" where id in ");
            push_list(&mut update, ids());
            // Its shape follows the batch: not kept as a prepared statement.
            update
                .build()
                .persistent(false)
                .execute(conn)
                .await?
                .rows_affected()
        }
    };
    Ok(done)
}

/// The ids of up to `n` of the oldest available keys of the SKU, oldest
/// first, locked like [`pick_oldest`]'s.
pub(super) async fn reserve(tx: &mut Tx, sku: &Sku, n: usize) -> Result<Vec<i64>, sqlx::Error> {
    let select = oldest_available(tx.backend(), "id");
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(select))
            .bind(sku.as_str())
            .bind(limit)
            .fetch_all(conn)
            .await
    })
}

/// The oldest available key of the SKU. On the servers, rows other
/// transactions hold are skipped rather than waited for.
async fn pick_oldest(tx: &mut Tx, sku: &Sku) -> Result<Option<Picked>, sqlx::Error> {
    let select = oldest_available(tx.backend(), "id, license_key");
    on_tx!(tx, |conn, sql| {
        sqlx::query_as(sql(select))
            .bind(sku.as_str())
            .bind(1_i64)
            .fetch_optional(conn)
            .await
    })
}

/// Selects `columns` of the oldest available keys of a SKU (bound first),
/// as many as the limit (bound second), locked on the servers.
///
/// Oldest is the order of import. On SQLite and MariaDB, `order by id` is
/// a range scan of `license_keys_vend` (without it MariaDB's SKIP LOCKED
/// would lock every row it reads). PostgreSQL's planner, once the table is
/// analysed, prefers walking the primary key in id order and filtering:
/// it assumes a SKU's keys are spread evenly over the ids, when they come
/// in blocks, one per import; the SKU imported second then reads past every
/// key of the first on each sale (a measured 65 ms instead of 0.2 ms with
/// 200,000 keys ahead). So on PostgreSQL the order is (imported_at, id),
/// which the primary key cannot give and the partial index
/// `license_keys_available` gives directly.
pub fn oldest_available(backend: Backend, columns: &str) -> String {
    format!(
        "select {columns} from license_keys
          where status = 'available' and product_sku = ? order by {} limit ?{}",
        oldest_first(backend),
        backend.for_update_skip_locked()
    )
}

/// The order of import, in the columns each backend's index gives.
fn oldest_first(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "imported_at, id",
        Backend::Sqlite | Backend::MySql => "id",
    }
}

/// A key read back from the pool; the import checked it on the way in.
pub(super) fn stored_key(value: String) -> Result<LicenseKey, sqlx::Error> {
    BoundedText::parse("license key", value)
        .map(LicenseKey)
        .map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Whether `sku` has a key left: the oldest key, unlocked (the same
/// index as a sale, whatever the planner would guess for a bare `limit 1`).
fn any_available(backend: Backend) -> String {
    format!(
        "select id from license_keys
          where status = 'available' and product_sku = ? order by {} limit 1",
        oldest_first(backend)
    )
}

pub(super) async fn in_stock(tx: &mut Tx, sku: &Sku) -> Result<bool, sqlx::Error> {
    let select = any_available(tx.backend());
    let found: Option<i64> = on_tx!(tx, |conn, sql| {
        sqlx::query_scalar(sql(select))
            .bind(sku.as_str())
            .fetch_optional(conn)
            .await
    })?;
    Ok(found.is_some())
}

pub(super) async fn has_available(db: &Db, sku: &Sku) -> Result<bool, sqlx::Error> {
    let select = any_available(db.backend());
    let found: Option<i64> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql(select))
            .bind(sku.as_str())
            .fetch_optional(pool)
            .await
    })?;
    Ok(found.is_some())
}

/// Three index lookups on `license_keys_vend`, one per status, instead of
/// a scan of the SKU.
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

pub(super) async fn revoke(tx: &mut Tx, key: &LicenseKey) -> Result<Revoked, sqlx::Error> {
    let select = format!(
        "select id, status, product_sku from license_keys where license_key = ?{}",
        tx.backend().for_update()
    );
    let row: Option<(i64, String, String)> = on_tx!(tx, |conn, sql| {
        sqlx::query_as(sql(select))
            .bind(key.expose())
            .fetch_optional(conn)
            .await
    })?;
    let Some((id, was, sku)) = row else {
        return Ok(Revoked::NotFound);
    };
    let was: KeyStatus = read_state(was)?;
    if was == KeyStatus::Revoked {
        return Ok(Revoked::Already);
    }
    revoke_id(tx, id).await?;
    Ok(Revoked::Yes { was, id, sku })
}

/// Revokes key `id`; `false` if it was revoked already (or is unknown).
pub(super) async fn revoke_id(tx: &mut Tx, id: i64) -> Result<bool, sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update license_keys set status = 'revoked' where id = ? and status <> 'revoked'",
        ))
        .bind(id)
        .execute(conn)
        .await
        .map(|done| done.rows_affected() == 1)
    })
}

/// Which of `keys` are in the pool already (under any SKU).
pub(super) async fn existing(db: &Db, keys: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    match db {
        // One JSON array: one text, prepared once per reader.
        Db::Sqlite { reader, .. } => {
            sqlx::query_scalar(
                "select license_key from license_keys
                  where license_key in (select value from json_each(?1))",
            )
            .bind(json_rows(keys)?)
            .fetch_all(reader)
            .await
        }
        // PostgreSQL takes the batch as one array: one parameter, one cheap
        // plan, instead of planning a thousand-value IN list for every batch.
        Db::Postgres(pool) => {
            sqlx::query_scalar("select license_key from license_keys where license_key = any($1)")
                .bind(keys)
                .fetch_all(pool)
                .await
        }
        Db::MySql(pool) => {
            let mut query = QueryBuilder::<MySql>::new(
                "select license_key from license_keys where license_key in ",
            );
            push_list(&mut query, keys.iter().copied());
            query
                .build_query_scalar()
                .persistent(false)
                .fetch_all(pool)
                .await
        }
    }
}

/// Inserts `keys` (none of them in the pool) for `sku` in one statement.
pub(super) async fn insert_many(
    db: &Db,
    sku: &Sku,
    keys: &[&str],
    now: i64,
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    match db {
        Db::Sqlite { writer, .. } => {
            insert_rows(sku, keys, now)
                .build()
                .persistent(false)
                .execute(writer)
                .await?;
        }
        // As one array, for the reason given in `existing`.
        Db::Postgres(pool) => {
            sqlx::query(
                "insert into license_keys (license_key, product_sku, imported_at)
                 select key, $2, $3 from unnest($1::text[]) as key",
            )
            .bind(keys)
            .bind(sku.as_str())
            .bind(now)
            .execute(pool)
            .await?;
        }
        Db::MySql(pool) => {
            insert_rows(sku, keys, now)
                .build()
                .persistent(false)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// `insert … values (?, ?, ?), …` for any backend that takes a value list.
fn insert_rows<DB>(sku: &Sku, keys: &[&str], now: i64) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut query =
        QueryBuilder::new("insert into license_keys (license_key, product_sku, imported_at) ");
    query.push_values(keys, |mut row, key| {
        row.push_bind(key.to_string())
            .push_bind(sku.as_str().to_string())
            .push_bind(now);
    });
    query
}

/// Brings the planner's statistics of `license_keys` up to date after an
/// import (PostgreSQL; the other backends keep theirs without being asked,
/// or plan vending from the index alone).
pub(super) async fn refresh_statistics(db: &Db) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(pool) => sqlx::query("analyze license_keys")
            .execute(pool)
            .await
            .map(drop),
        Db::Sqlite { .. } | Db::MySql(_) => Ok(()),
    }
}
