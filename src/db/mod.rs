//! Connection pools, transactions and migrations for the three backends.
//!
//! Owns how allot reaches its database and the idiom every capability
//! writes its SQL in ([`sql`]). It owns no table: each capability keeps its
//! queries next to its logic (`coupons::store`, `keys::store`, …). It must
//! not import any capability.
//!
//! Statements only SQLite and MySQL run (PostgreSQL runs those steps in
//! PL/pgSQL or in one statement) take a [`Step`] (`steps`).
//!
//! What a failure is beyond what sqlx can say (one shared by a batch, a
//! request left unanswered, a rule the database broke) is [`Error`]
//! (`error`).

mod error;
mod lists;
mod notify;
mod settings;
mod sql;
mod sqlite;
mod state;
mod steps;

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    Connection, Executor, MySql, MySqlConnection, MySqlPool, PgConnection, PgPool, Postgres,
    Sqlite, SqlitePool, Transaction,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use error::Error;
pub use lists::{json_rows, push_case, push_list};
pub use notify::{listen, notify, notify_in};
pub use settings::DatabaseSettings;
pub use sql::{
    Failure, is_contention, is_unavailable, is_unique_violation, retry_on_contention, sql_as_is,
    sql_for_postgres,
};
pub use sqlite::checkpoint;
pub use state::{UnknownState, read_state};
pub use steps::Step;

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
    /// spinning on SQLITE_BUSY; `BEGIN IMMEDIATE` (see [`Db::begin`]) still
    /// serialises writers from other processes on the same file.
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
    const SQLITE_BEGIN: &'static str = "BEGIN IMMEDIATE";

    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let url = settings.url.as_str();
        let backend = Backend::from_url(url).context("ALLOT_DATABASE_URL: unsupported scheme")?;
        let max = settings.max_connections;
        let acquire = settings.acquire_timeout;
        // The pools do not ping a connection before handing it out: that is
        // a round trip on every transaction. A connection the server ended
        // (failover, restart) fails its first statement with an I/O error,
        // which answers 503 with Retry-After (`is_unavailable`) and which
        // sqlx's check on release then drops from the pool; background loops
        // try again on their next turn.
        let db = match backend {
            Backend::Sqlite => sqlite::connect(url, max, acquire).await?,
            Backend::Postgres => {
                let fail = cannot("connect to PostgreSQL");
                let options = PgConnectOptions::from_str(url).map_err(&fail)?;
                probe::<PgConnection>(&options, acquire, &fail).await?;
                Db::Postgres(
                    PgPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(acquire)
                        .test_before_acquire(false)
                        .connect_with(options)
                        .await
                        .map_err(&fail)?,
                )
            }
            Backend::MySql => {
                let fail = cannot("connect to MySQL/MariaDB");
                let options = MySqlConnectOptions::from_str(&mysql_url(url)).map_err(&fail)?;
                probe::<MySqlConnection>(&options, acquire, &fail).await?;
                Db::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(acquire)
                        .test_before_acquire(false)
                        // Each statement must see rows committed by the transaction
                        // that held a lock before us; REPEATABLE READ would show an
                        // older snapshot to plain reads that follow a locking read.
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute(
                                    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                                )
                                .await?;
                                Ok(())
                            })
                        })
                        .connect_with(options)
                        .await
                        .map_err(&fail)?,
                )
            }
        };
        Ok(db)
    }

    /// Connects and applies the migrations: what every command does first.
    pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let db = Self::connect(settings).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Where tasks that chain write transactions (the group-commit
    /// runners) should run: on SQLite a runtime of their own (see
    /// `sqlite::writer_runtime`), elsewhere the caller's.
    pub fn writer_runtime(&self) -> Option<tokio::runtime::Handle> {
        match self {
            Db::Sqlite { .. } => Some(sqlite::writer_runtime()),
            Db::Postgres(_) | Db::MySql(_) => None,
        }
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
        .map_err(|error| {
            use sqlx::migrate::MigrateError::*;
            let cause = match &error {
                Execute(error) => describe(error),
                ExecuteMigration(error, version) => {
                    format!("migration {version}: {}", describe(error))
                }
                other => other.to_string(),
            };
            anyhow::anyhow!("applying migrations: {cause}")
        })
    }

    /// Sets the pool gauges of `/metrics`: connections open, in use and
    /// the most allowed, per pool (`main`; SQLite: `writer` and `reader`).
    pub fn publish_pool_gauges(&self) {
        fn publish<DB: sqlx::Database>(name: &'static str, pool: &sqlx::Pool<DB>) {
            let open = pool.size() as f64;
            let idle = pool.num_idle() as f64;
            let max = pool.options().get_max_connections() as f64;
            metrics::gauge!("allot_db_connections", "pool" => name, "state" => "in_use")
                .set((open - idle).max(0.0));
            metrics::gauge!("allot_db_connections", "pool" => name, "state" => "idle").set(idle);
            metrics::gauge!("allot_db_connections_max", "pool" => name).set(max);
        }
        match self {
            Db::Sqlite { writer, reader } => {
                publish("writer", writer);
                publish("reader", reader);
            }
            Db::Postgres(pool) => publish("main", pool),
            Db::MySql(pool) => publish("main", pool),
        }
    }

    /// Is our database answering? Used by `/readyz`. It reads one of our own
    /// tables: a server that answers `select 1` on a connection whose
    /// database was dropped is not ready.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        const PING: &str = "select 1 from _sqlx_migrations limit 1";
        crate::on_db!(self, read, |pool, _sql| pool.execute(PING).await.map(drop))
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

/// One direct connection before the pool: a refused connection, a wrong
/// password or an unknown database is reported as itself, at once, rather
/// than as the pool's "timed out".
async fn probe<C: Connection>(
    options: &C::Options,
    timeout: Duration,
    fail: &impl Fn(sqlx::Error) -> anyhow::Error,
) -> anyhow::Result<()> {
    match tokio::time::timeout(timeout, C::connect_with(options)).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(fail(error)),
        Err(_) => Err(fail(sqlx::Error::PoolTimedOut)),
    }
}

/// `cannot {what} (ALLOT_DATABASE_URL): {cause}`, the cause said once.
fn cannot(what: &'static str) -> impl Fn(sqlx::Error) -> anyhow::Error {
    move |error| anyhow::anyhow!("cannot {what} (ALLOT_DATABASE_URL): {}", describe(&error))
}

/// One line for a person: the database's own message without sqlx's
/// prefixes or PostgreSQL's source-file line numbers.
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db_error) => db_error.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "no connection within ALLOT_DATABASE_ACQUIRE_TIMEOUT".into(),
        other => other.to_string(),
    }
}

/// sqlx only knows the `mysql://` scheme; `mariadb://` is accepted as a courtesy.
fn mysql_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => format!("mysql://{rest}"),
        _ => url.to_string(),
    }
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

    /// Ends the transaction now, writing nothing. Dropping it would too,
    /// but later: sqlx sends that rollback from a task of its own once the
    /// connection goes back to the pool, and until then the rows the
    /// transaction read `FOR UPDATE` stay locked, so the caller's next
    /// statement (a lease with `SKIP LOCKED`, on another connection) could
    /// pass over them. A transaction that locked rows and returns early
    /// without writing ends here.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
            Tx::MySql(tx) => tx.rollback().await,
        }
    }
}
