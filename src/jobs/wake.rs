//! Waking idle workers the moment a job is due, where the database can say
//! so: PostgreSQL `NOTIFY allot_jobs` at commit, `LISTEN` in each worker.
//! Polling (`ALLOT_WORKER_POLL_INTERVAL`) stays the fallback, and the only
//! mechanism on SQLite and MySQL/MariaDB.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{self, Db, Tx};

const CHANNEL: &str = "allot_jobs";

/// Inside a transaction: delivered at commit, never for a rolled-back job.
pub(super) async fn notify_in(tx: &mut Tx) -> Result<(), sqlx::Error> {
    db::notify_in(tx, CHANNEL).await
}

/// After a change made outside a transaction (a redrive).
pub(super) async fn notify(db: &Db) -> Result<(), sqlx::Error> {
    db::notify(db, CHANNEL).await
}

/// Wakes `wake` on every notification until `shutdown`.
pub(super) async fn listen(db: Db, wake: Arc<Notify>, shutdown: CancellationToken) {
    db::listen(db, CHANNEL, wake, shutdown).await
}
