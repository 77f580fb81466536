//! Done jobs recorded in batches: the attempts of one worker that succeed
//! while an earlier success is being recorded are recorded together, in
//! one transaction of three statements, or one statement on PostgreSQL
//! ([`crate::batch`]; a batch of few waits up to 20 ms for more, see
//! [`LINGER`]).
//! Retries and dead letters, which are rare and carry an error each, are
//! still recorded one by one.
//!
//! Each job task waits for its outcome to be written before it ends (its
//! slot is free already), so the worker's shutdown, which waits for its
//! tasks, flushes every outcome. What a crash loses before a flush is an
//! outcome, never a job: the job runs again once its lease expires (at
//! least once, as always; deliveries carry stable ids).

use std::collections::HashSet;

use sqlx::{MySql, QueryBuilder};
use tokio_util::task::TaskTracker;

use super::{
    JobState,
    attempts::{self, AttemptOutcome, Done},
};
use crate::{
    batch::{Batcher, Decide},
    db::{Db, Step, json_rows, push_case, push_list},
};

/// The most outcomes one transaction records.
const MAX_BATCH: usize = 512;

/// How long a batch of fewer than [`LINGER_FILL`] outcomes waits for more.
/// While key emails trickle out during a sale, each outcome was otherwise
/// its own statement and commit, which takes the database (SQLite's one
/// writer, PostgreSQL's WAL flush) from the orders: 20 ms rather than 5 ms
/// raised webhook orders/s by about a quarter on both backends, no-op
/// jobs/s staying within the noise of single runs (docs/benchmarks.md). A flood fills a batch at once and
/// does not wait; a finished job's slot is free meanwhile, only its record
/// waits.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);
const LINGER_FILL: usize = 64;

/// `Ok(false)`: the lease was lost (it expired and another worker took
/// the job), so nothing was written for it. An error is the database's.
pub(super) type Recorded = Result<bool, String>;

/// Records one worker's done attempts. Cheap to clone.
#[derive(Clone)]
pub(super) struct Completer {
    batches: Batcher<Recorder>,
}

struct Recorder {
    db: Db,
    worker: String,
}

impl Completer {
    pub(super) fn new(db: Db, worker: &str) -> Self {
        let recorder = Recorder {
            db,
            worker: worker.to_string(),
        };
        // The runners' tasks are awaited through the job tasks that wait
        // for their answers.
        let tasks = TaskTracker::new();
        let runtime = recorder.db.writer_runtime();
        Self {
            batches: Batcher::new(recorder, tasks, MAX_BATCH, "allot_job_outcome_batch_size")
                .lingering(LINGER, LINGER_FILL)
                .on(runtime),
        }
    }

    pub(super) async fn record(&self, done: Done) -> Recorded {
        self.batches
            .submit(&(), done)
            .await
            .unwrap_or_else(|| Err("the outcome batch was interrupted".into()))
    }
}

impl Decide for Recorder {
    /// One batch of a worker's outcomes in flight: a second one beside it
    /// (jobs by id, in two shards) only waited for SQLite's writer, and on
    /// PostgreSQL made two commits of what one holds.
    type Key = ();
    type Request = Done;
    type Answer = Recorded;

    async fn decide(&self, _: &(), batch: Vec<Done>) -> Vec<Recorded> {
        match record_done(&self.db, &self.worker, &batch).await {
            Ok(held) => batch
                .iter()
                .map(|done| Ok(held.contains(&done.job_id)))
                .collect(),
            Err(error) => {
                let said = error.to_string();
                batch.iter().map(|_| Err(said.clone())).collect()
            }
        }
    }
}

/// Marks done the jobs of `batch` whose lease `worker` still holds, and
/// logs their attempts; the ids it marked. On PostgreSQL one statement
/// (see `postgres`).
async fn record_done(db: &Db, worker: &str, batch: &[Done]) -> Result<HashSet<i64>, sqlx::Error> {
    match db {
        Db::Postgres(pool) => super::postgres::record_done(pool, worker, batch).await,
        Db::Sqlite { .. } | Db::MySql(_) => record_done_step_by_step(db, worker, batch).await,
    }
}

/// [`record_done`] on SQLite and MySQL.
async fn record_done_step_by_step(
    db: &Db,
    worker: &str,
    batch: &[Done],
) -> Result<HashSet<i64>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let held = still_held(tx.steps(), worker, batch).await?;
    let mine: Vec<&Done> = batch.iter().filter(|d| held.contains(&d.job_id)).collect();
    if mine.is_empty() {
        tx.rollback().await?;
        return Ok(held);
    }
    mark_done(tx.steps(), &mine).await?;
    let ended: Vec<attempts::Ended> = mine
        .iter()
        .map(|d| attempts::Ended {
            job_id: d.job_id,
            attempt: d.attempt,
            worker,
            started_at: d.finished_at - d.duration_ms,
            finished_at: d.finished_at,
            outcome: AttemptOutcome::Done,
            error: None,
            duration_ms: Some(d.duration_ms),
        })
        .collect();
    attempts::log(&mut tx, &ended).await?;
    tx.commit().await?;
    Ok(held)
}

/// Marks `mine` done, each at its own time.
async fn mark_done(step: Step<'_>, mine: &[&Done]) -> Result<(), sqlx::Error> {
    match step {
        // The rows as one JSON array, one prepared statement for every
        // batch (see `db::json_rows`).
        Step::Sqlite(conn) => {
            let rows: Vec<(i64, i64)> = mine.iter().map(|d| (d.job_id, d.finished_at)).collect();
            sqlx::query(
                "update jobs set state = 'done', last_error = null, locked_until = null,
                        locked_by = null, finished_at = d.value ->> 1, updated_at = d.value ->> 1
                   from json_each(?1) d where jobs.id = d.value ->> 0",
            )
            .bind(json_rows(&rows)?)
            .execute(conn)
            .await?;
        }
        // Its shape follows the batch: not kept as a prepared statement.
        Step::MySql(conn) => {
            let mut update = QueryBuilder::<MySql>::new(
                "update jobs set state = 'done', last_error = null, locked_until = null, locked_by = null",
            );
            let finished = || mine.iter().map(|d| (d.job_id, d.finished_at));
            update.push(", finished_at = ");
            push_case(&mut update, "id", finished());
            update.push(", updated_at = ");
            push_case(&mut update, "id", finished());
            update.push(" where id in ");
            push_list(&mut update, mine.iter().map(|d| d.job_id));
            update.build().persistent(false).execute(conn).await?;
        }
    }
    Ok(())
}

/// Which jobs of `batch` are still running under `worker` at the attempt
/// that finished, locked until the transaction ends (SQLite: its write
/// lock). Looked up by id alone and checked here.
async fn still_held(
    step: Step<'_>,
    worker: &str,
    batch: &[Done],
) -> Result<HashSet<i64>, sqlx::Error> {
    let rows: Vec<(i64, String, Option<String>, i32)> = match step {
        // The ids as one JSON array, one prepared statement for every
        // batch (see `db::json_rows`).
        Step::Sqlite(conn) => {
            let ids: Vec<i64> = batch.iter().map(|d| d.job_id).collect();
            sqlx::query_as(
                "select id, state, locked_by, attempts from jobs
                  where id in (select value from json_each(?1))",
            )
            .bind(json_rows(&ids)?)
            .fetch_all(conn)
            .await?
        }
        Step::MySql(conn) => {
            let mut select = QueryBuilder::<MySql>::new(
                "select id, state, locked_by, attempts from jobs where id in ",
            );
            push_list(&mut select, batch.iter().map(|d| d.job_id));
            select.push(" for update");
            select
                .build_query_as()
                .persistent(false)
                .fetch_all(conn)
                .await?
        }
    };
    let held: HashSet<(i64, i32)> = rows
        .into_iter()
        .filter(|(_, state, locked_by, _)| {
            matches!(state.parse(), Ok(JobState::Running)) && locked_by.as_deref() == Some(worker)
        })
        .map(|(id, _, _, attempts)| (id, attempts))
        .collect();
    Ok(batch
        .iter()
        .filter(|d| held.contains(&(d.job_id, d.attempt)))
        .map(|d| d.job_id)
        .collect())
}
