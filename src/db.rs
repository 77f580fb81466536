//! Connection pools and migrations for the three backends.
//!
//! Each capability keeps its own SQL per backend next to its logic (see
//! `coupons::store`); this module only knows how to connect, migrate and ping.

use std::{borrow::Cow, str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    AssertSqlSafe, Executor, MySql, MySqlPool, PgPool, Postgres, Sqlite, SqlitePool, Transaction,
    mysql::MySqlPoolOptions,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::config::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite allows one writer at a time. Writes go through a one-connection
    /// pool so that writers in this process queue on the pool instead of
    /// spinning on SQLITE_BUSY; `BEGIN IMMEDIATE` (see [`Db::SQLITE_BEGIN`])
    /// still serialises writers from other processes on the same file.
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl Db {
    /// Takes the write lock at `BEGIN`, so a transaction that reads then writes
    /// can never fail half-way with SQLITE_BUSY on lock upgrade.
    pub const SQLITE_BEGIN: &'static str = "BEGIN IMMEDIATE";

    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let url = settings.database_url.as_str();
        let backend = Backend::from_url(url).context("ALLOT_DATABASE_URL: unsupported scheme")?;
        let max = settings.database_max_connections;
        let acquire = settings.database_acquire_timeout;
        let db = match backend {
            Backend::Sqlite => connect_sqlite(url, max, acquire).await?,
            Backend::Postgres => Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(acquire)
                    .connect(url)
                    .await
                    .context("cannot connect to PostgreSQL (ALLOT_DATABASE_URL)")?,
            ),
            Backend::MySql => Db::MySql(
                MySqlPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(acquire)
                    // Each statement must see rows committed by the transaction
                    // that held a lock before us; REPEATABLE READ would show an
                    // older snapshot to plain reads that follow a locking read.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&mysql_url(url))
                    .await
                    .context("cannot connect to MySQL/MariaDB (ALLOT_DATABASE_URL)")?,
            ),
        };
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
            Db::MySql(_) => Backend::MySql,
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite { writer, .. } => sqlx::migrate!("migrations/sqlite").run(writer).await,
            Db::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
            Db::MySql(pool) => sqlx::migrate!("migrations/mysql").run(pool).await,
        }
        .context("applying migrations")
    }

    /// Is our database answering? Used by `/readyz`. It reads one of our own
    /// tables: a server that answers `select 1` on a connection whose
    /// database was dropped is not ready.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        const PING: &str = "select 1 from _sqlx_migrations limit 1";
        match self {
            Db::Sqlite { reader, .. } => reader.execute(PING).await.map(drop),
            Db::Postgres(pool) => pool.execute(PING).await.map(drop),
            Db::MySql(pool) => pool.execute(PING).await.map(drop),
        }
    }

    /// Starts a write transaction (SQLite: on the writer, `BEGIN IMMEDIATE`).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite { writer, .. } => Tx::Sqlite(writer.begin_with(Self::SQLITE_BEGIN).await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Db::MySql(pool) => Tx::MySql(pool.begin().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
            Db::MySql(pool) => pool.close().await,
        }
    }
}

/// sqlx only knows the `mysql://` scheme; `mariadb://` is accepted as a courtesy.
fn mysql_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => format!("mysql://{rest}"),
        _ => url.to_string(),
    }
}

async fn connect_sqlite(url: &str, max: u32, acquire: Duration) -> anyhow::Result<Db> {
    let options = SqliteConnectOptions::from_str(url)
        .context("ALLOT_DATABASE_URL: not a valid SQLite URL")?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable across process crashes in WAL mode; only a power
        // loss can lose the last commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(acquire.max(Duration::from_secs(30)))
        .connect_with(options.clone())
        .await
        .context("cannot open the SQLite database (ALLOT_DATABASE_URL)")?;
    let reader = SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire)
        .connect_with(options.read_only(true))
        .await
        .context("cannot open the SQLite database (ALLOT_DATABASE_URL)")?;
    Ok(Db::Sqlite { writer, reader })
}

/// An open write transaction on any backend: what a business change and the
/// outbox jobs announcing it commit in, together or not at all.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
    MySql(Transaction<'static, MySql>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
            Tx::MySql(tx) => tx.commit().await,
        }
    }
}

/// Runs `$body` on whichever backend `$tx` is, with `$conn` the connection
/// and `$sql` adapting a `?`-placeholder statement to the backend. For
/// statements that are the same SQL everywhere but for placeholders; where
/// the dialects really differ, match on [`Tx`] and write each one out.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident, $sql:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx) => {
                let ($conn, $sql) = (&mut **tx, $crate::db::sql_as_is);
                $body
            }
            $crate::db::Tx::Postgres(tx) => {
                let ($conn, $sql) = (&mut **tx, $crate::db::sql_for_postgres);
                $body
            }
            $crate::db::Tx::MySql(tx) => {
                let ($conn, $sql) = (&mut **tx, $crate::db::sql_as_is);
                $body
            }
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
                let ($pool, $sql) = ($crate::on_db!(@pick $mode, _writer, _reader), $crate::db::sql_as_is);
                $body
            }
            $crate::db::Db::Postgres(pool) => {
                let ($pool, $sql) = (pool, $crate::db::sql_for_postgres);
                $body
            }
            $crate::db::Db::MySql(pool) => {
                let ($pool, $sql) = (pool, $crate::db::sql_as_is);
                $body
            }
        }
    };
    (@pick write, $writer:ident, $reader:ident) => { $writer };
    (@pick read, $writer:ident, $reader:ident) => { $reader };
}

pub fn sql_as_is(sql: &'static str) -> AssertSqlSafe<Cow<'static, str>> {
    AssertSqlSafe(Cow::Borrowed(sql))
}

/// `?` placeholders become `$1`, `$2`, …. Statements passed here never
/// contain a literal question mark.
pub fn sql_for_postgres(sql: &'static str) -> AssertSqlSafe<Cow<'static, str>> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_placeholders_are_numbered() {
        let sql = super::sql_for_postgres("update t set a = ? where b = ? and c = ?");
        assert_eq!(sql.0, "update t set a = $1 where b = $2 and c = $3");
    }
}
