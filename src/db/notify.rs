//! Wake-ups where the database can send them: PostgreSQL `NOTIFY` at
//! commit, `LISTEN` in whoever waits. Waiters poll as well, and only poll on
//! SQLite and MySQL/MariaDB, which have no such thing.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Db, Tx};

/// Inside a transaction: delivered at commit, never for a rollback.
pub async fn notify_in(tx: &mut Tx, channel: &str) -> Result<(), sqlx::Error> {
    match tx {
        Tx::Postgres(tx) => sqlx::query("select pg_notify($1, '')")
            .bind(channel)
            .execute(&mut **tx)
            .await
            .map(drop),
        Tx::Sqlite(_) | Tx::MySql(_) => Ok(()),
    }
}

/// After a change made outside a transaction.
pub async fn notify(db: &Db, channel: &str) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(pool) => sqlx::query("select pg_notify($1, '')")
            .bind(channel)
            .execute(pool)
            .await
            .map(drop),
        Db::Sqlite { .. } | Db::MySql(_) => Ok(()),
    }
}

/// Wakes `wake` on every notification on `channel` until `shutdown`.
/// Returns at once on the backends without `LISTEN`, or if it cannot
/// listen (the waiter's polling carries on alone).
pub async fn listen(db: Db, channel: &str, wake: Arc<Notify>, shutdown: CancellationToken) {
    let Db::Postgres(pool) = db else {
        return;
    };
    let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, channel, "LISTEN unavailable; falling back to polling");
            return;
        }
    };
    if let Err(error) = listener.listen(channel).await {
        tracing::warn!(%error, channel, "LISTEN unavailable; falling back to polling");
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = listener.recv() => match received {
                // A stored permit: a wake-up between two polls is not lost.
                Ok(_) => wake.notify_one(),
                Err(error) => {
                    // recv() reconnects on the next call; don't spin meanwhile.
                    tracing::warn!(%error, channel, "LISTEN connection lost; reconnecting");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
        }
    }
}
