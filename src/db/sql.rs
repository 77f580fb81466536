//! The first of allot's three idioms for SQL in three dialects: one text
//! for every backend (the others: one `match` per statement that differs,
//! with an arm for each backend that runs it, and the PL/pgSQL files;
//! docs/architecture.md).
//!
//! - Statements that are the same everywhere but for placeholders are one
//!   text with `?` placeholders, run through [`on_tx!`](crate::on_tx) or
//!   [`on_db!`](crate::on_db), which number them for PostgreSQL.
//! - Row locks come from [`Backend::for_update`] and
//!   [`Backend::for_update_skip_locked`] (nothing on SQLite, whose write
//!   transaction already holds the database).
//! - "Insert unless it exists, tell me the new id" is
//!   [`insert_unless_exists!`](crate::insert_unless_exists) (MySQL has
//!   neither `ON CONFLICT DO NOTHING` nor `RETURNING`); a plain insert that
//!   tells the new id is [`insert_returning_id!`](crate::insert_returning_id).
//! - Statements built with `sqlx::QueryBuilder`, whose text differs with
//!   the number of rows, run with `persistent(false)`: each distinct text
//!   would otherwise stay prepared in the statement cache of every
//!   connection that ran it.

use std::{borrow::Cow, time::Duration};

use sqlx::AssertSqlSafe;

use super::{Backend, Tx};

/// Runs `$body` on whichever backend `$tx` is, with `$conn` the connection
/// and `$sql` adapting a `?`-placeholder statement to the backend.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident, $sql:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx) => {
                $crate::db_dialect!($sql, sql_as_is);
                let $conn = &mut **tx;
                $body
            }
            $crate::db::Tx::Postgres(tx) => {
                $crate::db_dialect!($sql, sql_for_postgres);
                let $conn = &mut **tx;
                $body
            }
            $crate::db::Tx::MySql(tx) => {
                $crate::db_dialect!($sql, sql_as_is);
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// Defines `$name` as the statement adapter of one dialect: a local fn, so
/// that it takes both `&'static str` and `String` (a generic fn pointer
/// could not).
#[doc(hidden)]
#[macro_export]
macro_rules! db_dialect {
    ($name:ident, $adapter:ident) => {
        #[allow(dead_code)]
        fn $name(
            sql: impl Into<::std::borrow::Cow<'static, str>>,
        ) -> ::sqlx::AssertSqlSafe<::std::borrow::Cow<'static, str>> {
            $crate::db::$adapter(sql)
        }
    };
}

/// Like [`on_tx!`] for a single statement on a pool. `read` uses SQLite's
/// reader pool, `write` its single writer; the servers have one pool.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $mode:ident, |$pool:ident, $sql:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite { writer: _writer, reader: _reader } => {
                $crate::db_dialect!($sql, sql_as_is);
                let $pool = $crate::on_db!(@pick $mode, _writer, _reader);
                $body
            }
            $crate::db::Db::Postgres(pool) => {
                $crate::db_dialect!($sql, sql_for_postgres);
                let $pool = pool;
                $body
            }
            $crate::db::Db::MySql(pool) => {
                $crate::db_dialect!($sql, sql_as_is);
                let $pool = pool;
                $body
            }
        }
    };
    (@pick write, $writer:ident, $reader:ident) => { $writer };
    (@pick read, $writer:ident, $reader:ident) => { $reader };
}

/// Inserts one row inside `$tx` unless it would break the unique key
/// `$conflict`; `Ok(Some(id))` for a new row, `Ok(None)` when it existed.
/// `$insert` is a plain `insert … values (?, …)` of a table whose key is `id`.
#[macro_export]
macro_rules! insert_unless_exists {
    ($tx:expr, $insert:literal, conflict $conflict:literal, [$($bind:expr),* $(,)?]) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx) => {
                sqlx::query_scalar::<_, i64>(concat!($insert, " on conflict ", $conflict, " do nothing returning id"))
                    $(.bind($bind))*
                    .fetch_optional(&mut **tx)
                    .await
            }
            $crate::db::Tx::Postgres(tx) => {
                sqlx::query_scalar::<_, i64>($crate::db::sql_for_postgres(concat!($insert, " on conflict ", $conflict, " do nothing returning id")))
                    $(.bind($bind))*
                    .fetch_optional(&mut **tx)
                    .await
            }
            // No "do nothing" that spares other errors (INSERT IGNORE would
            // swallow truncation too); a duplicate-key error fails only the
            // statement, not the transaction.
            $crate::db::Tx::MySql(tx) => {
                match sqlx::query($insert)$(.bind($bind))*.execute(&mut **tx).await {
                    Ok(done) => Ok(Some(done.last_insert_id() as i64)),
                    Err(e) if $crate::db::is_unique_violation(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    };
}

/// Inserts one row inside `$tx` and gives its new id (MySQL has no
/// `RETURNING`; it reports the id itself).
#[macro_export]
macro_rules! insert_returning_id {
    ($tx:expr, $insert:expr, [$($bind:expr),* $(,)?]) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx) => {
                sqlx::query_scalar::<_, i64>($crate::db::sql_as_is(format!("{} returning id", $insert)))
                    $(.bind($bind))*
                    .fetch_one(&mut **tx)
                    .await
            }
            $crate::db::Tx::Postgres(tx) => {
                sqlx::query_scalar::<_, i64>($crate::db::sql_for_postgres(format!("{} returning id", $insert)))
                    $(.bind($bind))*
                    .fetch_one(&mut **tx)
                    .await
            }
            $crate::db::Tx::MySql(tx) => sqlx::query($crate::db::sql_as_is($insert))
                $(.bind($bind))*
                .execute(&mut **tx)
                .await
                .map(|done| done.last_insert_id() as i64),
        }
    };
}

/// A statement for SQLite and MySQL, which both take `?`.
pub fn sql_as_is(sql: impl Into<Cow<'static, str>>) -> AssertSqlSafe<Cow<'static, str>> {
    AssertSqlSafe(sql.into())
}

/// `?` placeholders become `$1`, `$2`, …. Statements passed here never
/// contain a literal question mark.
pub fn sql_for_postgres(sql: impl Into<Cow<'static, str>>) -> AssertSqlSafe<Cow<'static, str>> {
    let sql = sql.into();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    AssertSqlSafe(Cow::Owned(out))
}

impl Backend {
    /// Appended to a `select` whose rows the transaction will change: the
    /// servers lock them until commit; SQLite's `BEGIN IMMEDIATE` already
    /// holds the whole database.
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres | Backend::MySql => " for update",
        }
    }

    /// Like [`Self::for_update`], but rows another transaction holds are
    /// skipped rather than waited for (queues, pools).
    pub fn for_update_skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres | Backend::MySql => " for update skip locked",
        }
    }
}

/// The statement broke a unique key (on every backend).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// Lock waits that gave up; the transaction rolled back, so a retry is safe.
pub fn is_contention(error: &sqlx::Error) -> bool {
    let Some(db_error) = error.as_database_error() else {
        return false;
    };
    // MySQL/MariaDB: lock wait timeout and deadlock, by error number (the
    // SQLSTATE of a lock wait timeout is the generic HY000).
    if let Some(mysql) = db_error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(mysql.number(), 1205 | 1213);
    }
    // SQLite: SQLITE_BUSY and its extended codes; PostgreSQL: serialization
    // failure, deadlock, lock not available.
    db_error.code().is_some_and(|code| {
        matches!(
            code.as_ref(),
            "5" | "261" | "517" | "40001" | "40P01" | "55P03"
        )
    })
}

/// The database went away or cannot take writes right now: the connection
/// broke, the server is shutting down or failing over, it is read-only (a
/// replica), out of connections, or its disk is full. Nothing was committed;
/// the client may try again shortly. Never the client's fault.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    use sqlx::Error::*;
    match error {
        // WorkerCrashed: sqlx lost the thread that runs a SQLite connection.
        PoolTimedOut | PoolClosed | Io(_) | Tls(_) | WorkerCrashed => true,
        Database(db_error) => {
            if let Some(mysql) = db_error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // Server shutdown, too many connections, connection killed
                // (MariaDB), read-only server or transaction.
                return matches!(mysql.number(), 1053 | 1040 | 1927 | 1290 | 1792 | 1836);
            }
            let code = db_error.code();
            let code = code.as_deref().unwrap_or_default();
            if db_error
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                // SQLite: read-only database, I/O error, disk full, cannot
                // open (primary codes, and extended codes built on them).
                return code
                    .parse::<i32>()
                    .is_ok_and(|n| matches!(n & 0xff, 8 | 10 | 13 | 14));
            }
            // PostgreSQL: connection exceptions (08…), admin or crash
            // shutdown and "cannot connect now" (57P01-03), a read-only
            // transaction on a replica (25006), insufficient resources (53…:
            // disk full, out of connections).
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
        }
        _ => false,
    }
}

/// An error a transaction fails with, as [`retry_on_contention`] reads it:
/// `sqlx::Error` for one that only runs statements, `db::Error` (`error`)
/// for one that also checks what they did.
pub trait Failure: std::fmt::Display {
    /// See [`is_contention`].
    fn is_contention(&self) -> bool;
}

impl Failure for sqlx::Error {
    fn is_contention(&self) -> bool {
        is_contention(self)
    }
}

/// Runs a transaction again when the database broke a lock conflict by
/// rolling it back (deadlock, lock wait timeout, SQLite busy); up to four
/// more times, with a short random pause so the rivals do not collide again.
pub async fn retry_on_contention<T, E, F, Fut>(mut run: F) -> Result<T, E>
where
    E: Failure,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        match run().await {
            Err(error) if error.is_contention() && tries < 4 => {
                tries += 1;
                tracing::debug!(%error, tries, "lock conflict; running the transaction again");
                let pause = rand::random_range(5..=20u64 * tries);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}

impl Tx {
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
            Tx::MySql(_) => Backend::MySql,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_placeholders_are_numbered() {
        let sql = super::sql_for_postgres("update t set a = ? where b = ? and c = ?");
        assert_eq!(sql.0, "update t set a = $1 where b = $2 and c = $3");
    }
}
