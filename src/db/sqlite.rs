//! SQLite in WAL mode: one writer connection, a pool of readers, and the
//! checkpoints that keep the write-ahead log from growing without bound.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Connection, Executor,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{Db, cannot};

/// The write-ahead log is cut back to this size whenever it restarts (the
/// default keeps its largest size for ever).
const WAL_SIZE_LIMIT: &str = "67108864"; // 64 MiB

/// Each reader's page cache, in KiB (negative: SQLite's unit for KiB).
/// A reader's cache is emptied whenever a commit came since its last read,
/// which under load is every read, so a large one only holds memory; the
/// heap of a soak grew by SQLite's default 2 MiB per reader as the caches
/// filled. The writer keeps the default.
const READER_CACHE_KIB: &str = "-512";

pub(super) async fn connect(url: &str, max: u32, acquire: Duration) -> anyhow::Result<Db> {
    let parse_fail = cannot("open the SQLite database");
    let options = SqliteConnectOptions::from_str(url).map_err(&parse_fail)?;
    let path = options.get_filename().to_path_buf();
    // SQLite says only "unable to open database file"; the file system
    // says why (read-only, no such directory, permission denied).
    let fail = move |error: sqlx::Error| match unwritable(&path) {
        Some(why) => anyhow::anyhow!(
            "cannot open the SQLite database (ALLOT_DATABASE_URL): {}: {why}",
            path.display()
        ),
        None => parse_fail(error),
    };
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: every commit is on disk before it returns. NORMAL would
        // survive a process crash but could lose, on power loss, orders
        // already answered 200 to the shop.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("journal_size_limit", WAL_SIZE_LIMIT);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(acquire.max(Duration::from_secs(30)))
        // In-process: no server can end the connection.
        .test_before_acquire(false)
        // A statement that fails with "disk full" or an I/O error makes
        // SQLite roll the transaction back by itself; sqlx's own ROLLBACK
        // then fails and it goes on counting the transaction as open, so
        // every later BEGIN on this connection would fail, until a restart.
        // Such a connection is closed instead (the ping runs after the
        // queued rollback), and the next write opens a fresh one. A
        // connection that counts no transaction (committed, or its rollback
        // already run) has none queued: it goes back without the round trip.
        .after_release(|conn, _| {
            Box::pin(async move {
                if !conn.is_in_transaction() {
                    return Ok(true);
                }
                conn.ping().await?;
                Ok(!conn.is_in_transaction())
            })
        })
        .connect_with(options.clone())
        .await
        .map_err(&fail)?;
    let reader = SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire)
        .test_before_acquire(false)
        .connect_with(
            options
                .read_only(true)
                .pragma("cache_size", READER_CACHE_KIB),
        )
        .await
        .map_err(&fail)?;
    Ok(Db::Sqlite { writer, reader })
}

/// Why the SQLite file at `path` (or, before it exists, its directory)
/// cannot be written, if it cannot: allot must write to serve.
fn unwritable(path: &std::path::Path) -> Option<std::io::Error> {
    let opened = if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
    } else {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        probe_dir(dir)
    };
    opened.err()
}

/// Creates and removes a file in `dir`.
fn probe_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".allot-probe-{}", std::process::id()));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a checkpoint waits for readers before it gives up until the
/// next one: writes queue behind it meanwhile.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(250);

/// Copies the write-ahead log into the database and truncates it. SQLite's own checkpoints after each commit never wait:
/// with reads always under way (a flash sale), some reader always holds an
/// older snapshot, the log can never restart, and it grows by every write
/// (200 MB in five minutes of the soak). This one waits up to
/// [`CHECKPOINT_WAIT`] for the readers of the moment to finish; readers
/// that start meanwhile read the database file and do not hold it up.
/// `Ok(false)`: readers did not finish in time; the next call tries again.
/// Nothing to do on the servers.
pub async fn checkpoint(db: &Db) -> Result<bool, sqlx::Error> {
    let Db::Sqlite { writer, .. } = db else {
        return Ok(true);
    };
    let mut conn = writer.acquire().await?;
    let wait = format!("pragma busy_timeout = {}", CHECKPOINT_WAIT.as_millis());
    conn.execute(sqlx::AssertSqlSafe(wait)).await?;
    // One row: busy (1 when readers held it up), log frames, frames copied.
    let outcome = sqlx::query_as::<_, (i64, i64, i64)>("pragma wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await;
    let restore = format!("pragma busy_timeout = {}", BUSY_TIMEOUT.as_millis());
    if let Err(error) = conn.execute(sqlx::AssertSqlSafe(restore)).await {
        // A writer that gives up after 250 ms would fail writes that wait
        // for other processes: this connection is not used again.
        conn.close_on_drop();
        return Err(error);
    }
    let (busy, _, _) = outcome?;
    Ok(busy == 0)
}

/// A runtime on a thread of its own for the tasks that chain transactions
/// on SQLite's one writer (the group-commit runners): each statement of
/// theirs is a hop to the connection's thread and back, and on the main
/// runtime every return waited in line behind the HTTP tasks. Started on
/// first use; it lives as long as the process.
pub(super) fn writer_runtime() -> tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("allot-sqlite-writer")
                .build()
                .expect("a runtime for the SQLite writer");
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("allot-sqlite-writer".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .expect("a thread for the SQLite writer");
            handle
        })
        .clone()
}
