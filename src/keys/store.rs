//! Key bank SQL. The vend differs by backend and is written out; the rest is
//! one text with `?` placeholders adapted by `on_tx!`/`on_db!`.

use sqlx::AssertSqlSafe;

use super::{Assignment, LicenseKey, Revoked, Sku, Stock, Vended};
use crate::{
    db::{Db, Tx},
    on_db, on_tx,
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
) -> Result<Option<Vended>, sqlx::Error> {
    // The row lock makes a lost race impossible; should the update still
    // find the key taken, pick again rather than hand it out twice.
    for _ in 0..3 {
        let Some(picked) = pick_oldest(tx, sku).await? else {
            return Ok(None);
        };
        let assigned = on_tx!(tx, |conn, sql| {
            sqlx::query(sql(
                "update license_keys set status = 'assigned', assigned_to_email = ?, assigned_order_id = ?,
                        assigned_coupon_code = ?, assigned_at = ?
                  where id = ? and status = 'available'",
            ))
            .bind(to.email)
            .bind(to.order_id)
            .bind(to.coupon_code)
            .bind(now)
            .bind(picked.id)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        if assigned == 1 {
            return Ok(Some(Vended {
                id: picked.id,
                key: LicenseKey(picked.license_key),
            }));
        }
        tracing::warn!(
            key_id = picked.id,
            "a key picked for vending was taken meanwhile; picking again"
        );
    }
    Err(sqlx::Error::Protocol(
        "could not vend a key after three attempts".into(),
    ))
}

/// The oldest available key of the SKU. On the servers, rows other
/// transactions hold are skipped rather than waited for; the index
/// (status, product_sku, id) makes this a range scan, without which
/// MariaDB's SKIP LOCKED would lock every row it reads.
async fn pick_oldest(tx: &mut Tx, sku: &Sku) -> Result<Option<Picked>, sqlx::Error> {
    match tx {
        Tx::Sqlite(tx) => {
            sqlx::query_as(
                "select id, license_key from license_keys
                  where status = 'available' and product_sku = ? order by id limit 1",
            )
            .bind(sku.as_str())
            .fetch_optional(&mut **tx)
            .await
        }
        Tx::Postgres(tx) => {
            sqlx::query_as(
                "select id, license_key from license_keys
                  where status = 'available' and product_sku = $1 order by id limit 1
                  for update skip locked",
            )
            .bind(sku.as_str())
            .fetch_optional(&mut **tx)
            .await
        }
        Tx::MySql(tx) => {
            sqlx::query_as(
                "select id, license_key from license_keys
                  where status = 'available' and product_sku = ? order by id limit 1
                  for update skip locked",
            )
            .bind(sku.as_str())
            .fetch_optional(&mut **tx)
            .await
        }
    }
}

pub(super) async fn revoke(db: &Db, key: &LicenseKey) -> Result<Revoked, sqlx::Error> {
    let status: Option<String> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql("select status from license_keys where license_key = ?"))
            .bind(key.expose())
            .fetch_optional(pool)
            .await
    })?;
    let was = match status.as_deref() {
        None => return Ok(Revoked::NotFound),
        Some("revoked") => return Ok(Revoked::Already),
        Some(was) => was.to_string(),
    };
    on_db!(db, write, |pool, sql| {
        sqlx::query(sql(
            "update license_keys set status = 'revoked' where license_key = ?",
        ))
        .bind(key.expose())
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(Revoked::Yes { was })
}

/// `?, ?, …` for `n` values (SQLite and MySQL; PostgreSQL binds arrays).
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Which of `keys` are in the pool already (under any SKU).
pub(super) async fn existing(db: &Db, keys: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // PostgreSQL takes the batch as one array: one parameter, one cheap plan,
    // instead of planning a thousand-value IN list for every batch.
    if let Db::Postgres(pool) = db {
        return sqlx::query_scalar(
            "select license_key from license_keys where license_key = any($1)",
        )
        .bind(keys)
        .fetch_all(pool)
        .await;
    }
    let sql = format!(
        "select license_key from license_keys where license_key in ({})",
        placeholders(keys.len())
    );
    on_db!(db, read, |pool, _sql| {
        let mut query = sqlx::query_scalar(AssertSqlSafe(sql.clone()));
        for key in keys {
            query = query.bind(*key);
        }
        query.fetch_all(pool).await
    })
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
    if let Db::Postgres(pool) = db {
        return sqlx::query(
            "insert into license_keys (license_key, product_sku, imported_at)
             select key, $2, $3 from unnest($1::text[]) as key",
        )
        .bind(keys)
        .bind(sku.as_str())
        .bind(now)
        .execute(pool)
        .await
        .map(drop);
    }
    let rows = vec![format!("({})", placeholders(3)); keys.len()];
    let sql = format!(
        "insert into license_keys (license_key, product_sku, imported_at) values {}",
        rows.join(", ")
    );
    on_db!(db, write, |pool, _sql| {
        let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
        for key in keys {
            query = query.bind(*key).bind(sku.as_str()).bind(now);
        }
        query.execute(pool).await.map(drop)
    })
}
