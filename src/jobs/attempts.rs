//! The attempt log, `job_attempts`: one row per attempt, written once,
//! when the attempt ends (`done`, `retry`, `dead`, `lease_expired`), in
//! the transaction that records the job's outcome. A running attempt is
//! the job's own row (`state = 'running'`, its number in `attempts`, its
//! worker in `locked_by`, leased at `updated_at`). An attempt row opened at
//! the lease and closed at the outcome cost every job a second version of
//! that row and of its three index entries (docs/benchmarks.md).

use sqlx::{MySql, QueryBuilder};

use crate::db::{Tx, json_rows};

crate::stored_state! {
    /// How an attempt ended (`job_attempts.outcome`).
    pub enum AttemptOutcome: "attempt outcome" {
        Done = "done",
        Retry = "retry",
        Dead = "dead",
        /// Its worker stopped before reporting (killed or crashed).
        LeaseExpired = "lease_expired",
    }
}

/// A finished attempt to record as done (in batches, `completer`; on
/// PostgreSQL in one statement, `postgres`).
pub(super) struct Done {
    pub job_id: i64,
    pub attempt: i32,
    pub finished_at: i64,
    pub duration_ms: i64,
}

/// An attempt that ended.
pub(super) struct Ended<'a> {
    pub job_id: i64,
    pub attempt: i32,
    pub worker: &'a str,
    pub started_at: i64,
    pub finished_at: i64,
    pub outcome: AttemptOutcome,
    pub error: Option<&'a str>,
    pub duration_ms: Option<i64>,
}

/// Logs the attempts `ended` in one statement.
pub(super) async fn log(tx: &mut Tx, ended: &[Ended<'_>]) -> Result<(), sqlx::Error> {
    if ended.is_empty() {
        return Ok(());
    }
    match tx {
        // The rows as one JSON array, one prepared statement for every
        // batch (see `db::json_rows`).
        Tx::Sqlite(conn) => {
            type Row<'a> = (
                i64,
                i32,
                &'a str,
                i64,
                i64,
                &'a str,
                Option<&'a str>,
                Option<i64>,
            );
            let rows: Vec<Row> = ended
                .iter()
                .map(|e| {
                    (
                        e.job_id,
                        e.attempt,
                        e.worker,
                        e.started_at,
                        e.finished_at,
                        e.outcome.as_str(),
                        e.error,
                        e.duration_ms,
                    )
                })
                .collect();
            sqlx::query(
                "insert into job_attempts (job_id, attempt, worker, started_at, finished_at,
                                           outcome, error, duration_ms)
                 select a.value ->> 0, a.value ->> 1, a.value ->> 2, a.value ->> 3,
                        a.value ->> 4, a.value ->> 5, a.value ->> 6, a.value ->> 7
                   from json_each(?1) a",
            )
            .bind(json_rows(&rows)?)
            .execute(&mut **conn)
            .await?;
        }
        // One array per column: one prepared statement for every batch.
        Tx::Postgres(conn) => {
            sqlx::query(
                "insert into job_attempts (job_id, attempt, worker, started_at, finished_at,
                                           outcome, error, duration_ms)
                 select * from unnest($1::bigint[], $2::integer[], $3::text[], $4::bigint[],
                                      $5::bigint[], $6::text[], $7::text[], $8::bigint[])",
            )
            .bind(ended.iter().map(|e| e.job_id).collect::<Vec<_>>())
            .bind(ended.iter().map(|e| e.attempt).collect::<Vec<_>>())
            .bind(ended.iter().map(|e| e.worker).collect::<Vec<_>>())
            .bind(ended.iter().map(|e| e.started_at).collect::<Vec<_>>())
            .bind(ended.iter().map(|e| e.finished_at).collect::<Vec<_>>())
            .bind(ended.iter().map(|e| e.outcome.as_str()).collect::<Vec<_>>())
            .bind(ended.iter().map(|e| e.error).collect::<Vec<_>>())
            .bind(ended.iter().map(|e| e.duration_ms).collect::<Vec<_>>())
            .execute(&mut **conn)
            .await?;
        }
        // Its shape follows the batch size: only the one-row shape (every
        // retry, dead letter and expired lease) is kept among the prepared
        // statements; the others would push out those used again.
        Tx::MySql(conn) => {
            let mut insert = QueryBuilder::<MySql>::new(
                "insert into job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, duration_ms) ",
            );
            insert.push_values(ended, |mut row, e| {
                row.push_bind(e.job_id)
                    .push_bind(e.attempt)
                    .push_bind(e.worker)
                    .push_bind(e.started_at)
                    .push_bind(e.finished_at)
                    .push_bind(e.outcome.as_str())
                    .push_bind(e.error)
                    .push_bind(e.duration_ms);
            });
            insert
                .build()
                .persistent(ended.len() == 1)
                .execute(&mut **conn)
                .await?;
        }
    }
    Ok(())
}
