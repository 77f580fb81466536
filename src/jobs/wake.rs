//! Waking idle workers the moment a job is due, where the database can say
//! so: PostgreSQL `NOTIFY allot_jobs` at commit, `LISTEN` in each worker.
//! Polling (`ALLOT_WORKER_POLL_INTERVAL`) stays the fallback, and the only
//! mechanism on SQLite and MySQL/MariaDB.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, Tx};

const CHANNEL: &str = "allot_jobs";

/// Inside a transaction: delivered at commit, never for a rolled-back job.
pub(super) async fn notify_in(tx: &mut Tx) -> Result<(), sqlx::Error> {
    if let Tx::Postgres(tx) = tx {
        sqlx::query("select pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// After a change made outside a transaction (a redrive).
pub(super) async fn notify(db: &Db) -> Result<(), sqlx::Error> {
    if let Db::Postgres(pool) = db {
        sqlx::query("select pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Wakes `wake` on every notification until `shutdown`. Returns at once on
/// the backends without `LISTEN`.
pub(super) async fn listen(db: Db, wake: Arc<Notify>, shutdown: CancellationToken) {
    let Db::Postgres(pool) = db else {
        return;
    };
    let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "LISTEN unavailable; workers fall back to polling");
            return;
        }
    };
    if let Err(error) = listener.listen(CHANNEL).await {
        tracing::warn!(%error, "LISTEN unavailable; workers fall back to polling");
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = listener.recv() => match received {
                Ok(_) => wake.notify_one(),
                Err(error) => {
                    // recv() reconnects on the next call; don't spin meanwhile.
                    tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
        }
    }
}
