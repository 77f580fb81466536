//! PostgreSQL's lease and done-recording, each one statement run on its
//! own (its own transaction): data-modifying `with` clauses lock, update
//! and log a whole batch in one round trip, where the portable versions in
//! `store` and `completer` take a transaction of five or six. The outbox
//! drain on PostgreSQL is bounded by those round trips and commits, not by
//! the work in them.

use std::collections::HashSet;

use sqlx::PgPool;

use super::{Priority, handler::Leased};

/// Leases up to `limit` due jobs, urgent ones first, as `store::lease`
/// does: each priority one range scan of the claim index, rows other
/// workers hold skipped, `attempts + 1` taken under the row lock, all in
/// one statement (the attempt is logged when it ends, see `attempts`).
///
/// The leased rows are updated through `= any(array(…))`, a lookup of
/// each id in the primary key: with `in (select …)` the planner, on the
/// statistics of a table that a sale had filled since its last analyse,
/// hashed the ids and scanned every job.
///
/// The statement is planned anew each time, not kept prepared: a plan
/// cached while the table was a few pages (a new database, the first
/// seconds of a sale) scans every job, and stays cached until the table is
/// analysed, which autovacuum does not do for a minute or more. In 10 s of
/// `allot bench orders` on a fresh database such a plan read 4.9 million
/// rows in 340 scans. Planned each time, the lookup follows the table's
/// current size (PostgreSQL scales its statistics by the pages the table
/// has now); planning costs a fraction of a millisecond per batch.
pub(super) async fn lease(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    now: i64,
    locked_until: i64,
) -> Result<Vec<Leased>, sqlx::Error> {
    const LEASE: &str = "
        with urgent as (
            select id from jobs
             where state = 'queued' and priority = $1 and run_at <= $3
             order by run_at, id limit $4 for update skip locked
        ), normal as (
            select id from jobs
             where state = 'queued' and priority = $2 and run_at <= $3
             order by run_at, id limit $4 - (select count(*) from urgent)
               for update skip locked
        ), leased as (
            update jobs set state = 'running', attempts = attempts + 1,
                   locked_until = $5, locked_by = $6, updated_at = $3
             where id = any(array(select id from urgent union all select id from normal))
            returning id, kind, payload, attempts, max_attempts, created_at, request_id, priority,
                      run_at
        )
        select id, kind, payload, attempts, max_attempts, created_at, request_id from leased
         order by priority desc, run_at, id";
    sqlx::query_as(LEASE)
        .persistent(false)
        .bind(Priority::Urgent as i16)
        .bind(Priority::Normal as i16)
        .bind(now)
        .bind(limit)
        .bind(locked_until)
        .bind(worker)
        .fetch_all(pool)
        .await
}

/// Marks done the jobs whose lease `worker` still holds at the attempt
/// that finished, and logs those attempts; the ids it marked. One
/// statement: the update re-checks the lease on the row it locks (at READ
/// COMMITTED, against the newest version), so a job another worker took
/// over meanwhile is left alone.
pub(super) async fn record_done(
    pool: &PgPool,
    worker: &str,
    done: &[super::attempts::Done],
) -> Result<HashSet<i64>, sqlx::Error> {
    const DONE: &str = "
        with finished (id, attempt, finished_at, duration_ms) as (
            select * from unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[])
        ), closed as (
            update jobs j set state = 'done', last_error = null, locked_until = null,
                   locked_by = null, finished_at = f.finished_at, updated_at = f.finished_at
              from finished f
             where j.id = f.id and j.state = 'running' and j.locked_by = $5
               and j.attempts = f.attempt
            returning j.id
        ), logged as (
            insert into job_attempts (job_id, attempt, worker, started_at, finished_at,
                                      outcome, duration_ms)
            select f.id, f.attempt, $5, f.finished_at - f.duration_ms, f.finished_at,
                   'done', f.duration_ms
              from finished f
             where f.id in (select id from closed)
        )
        select id from closed";
    let ids: Vec<i64> = done.iter().map(|d| d.job_id).collect();
    let attempts: Vec<i32> = done.iter().map(|d| d.attempt).collect();
    let finished: Vec<i64> = done.iter().map(|d| d.finished_at).collect();
    let durations: Vec<i64> = done.iter().map(|d| d.duration_ms).collect();
    let closed: Vec<i64> = sqlx::query_scalar(DONE)
        .bind(ids)
        .bind(attempts)
        .bind(finished)
        .bind(durations)
        .bind(worker)
        .fetch_all(pool)
        .await?;
    Ok(closed.into_iter().collect())
}
