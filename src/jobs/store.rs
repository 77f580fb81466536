//! The SQL of the job life cycle: insert, lease, record an outcome, take
//! back expired leases. One text with `?` placeholders through
//! `on_tx!`/`on_db!`, row locks from `Backend`; a batch is one JSON array on
//! SQLite and a `QueryBuilder` list on MySQL (PostgreSQL's are in
//! `postgres`), in one `match` each.

use super::{
    JobState, KeyedJob, NewJob, Priority,
    attempts::{self, AttemptOutcome},
    handler::Leased,
    handoff::Reservation,
};
use sqlx::{MySql, QueryBuilder};

use crate::{
    db::{Db, Step, Tx, json_rows, push_list},
    insert_unless_exists, on_tx,
};

pub(super) async fn insert(
    tx: &mut Tx,
    job: &NewJob,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let payload = job.payload.to_string();
    let run_at = if job.run_at > 0 { job.run_at } else { now };
    let id = insert_unless_exists!(
        &mut *tx,
        "insert into jobs (kind, payload, dedupe_key, max_attempts, priority, run_at, created_at, updated_at, request_id)
         values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        conflict "(dedupe_key)",
        [&job.kind, &payload, &job.dedupe_key, job.max_attempts, job.priority as i16, run_at, now, now, job.request_id.as_deref()]
    )?;
    if id.is_some() {
        super::wake::notify_in(tx).await?;
    }
    Ok(id)
}

/// See [`super::enqueue_many_handed`]. No wake-up is sent: the backends
/// that run this have no `NOTIFY`.
pub(super) async fn insert_many(
    step: Step<'_>,
    jobs: &[KeyedJob],
    now: i64,
    handed: Option<&Reservation>,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&str> = jobs.iter().map(KeyedJob::key).collect();
    let payloads: Vec<String> = jobs.iter().map(|job| job.payload.to_string()).collect();
    let run_at = |job: &KeyedJob| if job.run_at > 0 { job.run_at } else { now };
    // The first `granted` jobs are born leased to the worker that reserved
    // them (see `handoff`): running, their first attempt started.
    let (granted, worker, locked_until) = match handed {
        Some(r) => (r.granted(), Some(r.worker()), Some(r.locked_until(now))),
        None => (0, None, None),
    };
    let inserted: Vec<(i64, String)> = match step {
        // The rows as one JSON array, one prepared statement for every
        // batch (see `db::json_rows`).
        Step::Sqlite(conn) => {
            type Row<'a> = (&'a str, &'a str, &'a str, i32, i16, i64, Option<&'a str>);
            let rows: Vec<Row> = jobs
                .iter()
                .zip(&payloads)
                .map(|(job, payload)| {
                    (
                        job.kind.as_str(),
                        payload.as_str(),
                        job.key(),
                        job.max_attempts,
                        job.priority as i16,
                        run_at(job),
                        job.request_id.as_deref(),
                    )
                })
                .collect();
            sqlx::query_as(
                "insert into jobs (state, attempts, locked_until, locked_by, kind, payload, dedupe_key,
                                   max_attempts, priority, run_at, created_at, updated_at, request_id)
                 select case when j.key < ?1 then 'running' else 'queued' end,
                        case when j.key < ?1 then 1 else 0 end,
                        case when j.key < ?1 then ?2 end, case when j.key < ?1 then ?3 end,
                        j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
                        j.value ->> 5, ?4, ?4, j.value ->> 6
                   from json_each(?5) j where true order by j.key
                 on conflict (dedupe_key) do nothing returning id, dedupe_key",
            )
            .bind(granted as i64)
            .bind(locked_until)
            .bind(worker)
            .bind(now)
            .bind(json_rows(&rows)?)
            .fetch_all(conn)
            .await?
        }
        // The statement's shape follows the number of jobs: not kept among
        // the connection's prepared statements, where it would push out
        // those that are used again. No `returning`: the ids are read back
        // by key.
        Step::MySql(conn) => {
            let mut insert = QueryBuilder::<MySql>::new(
                "insert into jobs (state, attempts, locked_until, locked_by, kind, payload, dedupe_key, max_attempts, priority, run_at, created_at, updated_at, request_id) ",
            );
            let rows = jobs.iter().zip(&payloads).enumerate();
            insert.push_values(rows, |mut row, (i, (job, payload))| {
                let leased = i < granted;
                row.push_bind(
                    if leased {
                        JobState::Running
                    } else {
                        JobState::Queued
                    }
                    .as_str(),
                )
                .push_bind(i32::from(leased))
                .push_bind(locked_until.filter(|_| leased))
                .push_bind(worker.filter(|_| leased))
                .push_bind(job.kind.as_str())
                .push_bind(payload.as_str())
                .push_bind(job.key())
                .push_bind(job.max_attempts)
                .push_bind(job.priority as i16)
                .push_bind(run_at(job))
                .push_bind(now)
                .push_bind(now)
                .push_bind(job.request_id.as_deref());
            });
            insert.build().persistent(false).execute(&mut *conn).await?;
            let mut select =
                QueryBuilder::<MySql>::new("select id, dedupe_key from jobs where dedupe_key in ");
            push_list(&mut select, keys.iter().copied());
            select
                .build_query_as()
                .persistent(false)
                .fetch_all(conn)
                .await?
        }
    };
    let ids: std::collections::HashMap<String, i64> =
        inserted.into_iter().map(|(id, key)| (key, id)).collect();
    Ok(keys.iter().map(|key| ids.get(*key).copied()).collect())
}

/// Leases up to `limit` due jobs in one short transaction of a few
/// statements, however many it leases (on PostgreSQL, one statement: see
/// `postgres`).
pub(super) async fn lease(
    db: &Db,
    worker: &str,
    limit: i64,
    now: i64,
    locked_until: i64,
) -> Result<Vec<Leased>, sqlx::Error> {
    match db {
        Db::Postgres(pool) => super::postgres::lease(pool, worker, limit, now, locked_until).await,
        Db::Sqlite { .. } | Db::MySql(_) => {
            lease_step_by_step(db, worker, limit, now, locked_until).await
        }
    }
}

/// [`lease`] on SQLite and MySQL. On the servers the scan skips rows other
/// workers have locked; SQLite's single writer needs no such clause.
async fn lease_step_by_step(
    db: &Db,
    worker: &str,
    limit: i64,
    now: i64,
    locked_until: i64,
) -> Result<Vec<Leased>, sqlx::Error> {
    let select = format!(
        "select id, kind, payload, attempts, max_attempts, created_at, request_id from jobs
          where state = 'queued' and priority = ? and run_at <= ? order by run_at, id limit ?{}",
        db.backend().for_update_skip_locked()
    );
    let mut tx = db.begin().await?;
    // Urgent jobs first, then the rest: one index range scan each.
    let mut jobs: Vec<Leased> = Vec::new();
    for priority in Priority::HIGHEST_FIRST {
        let room = limit - jobs.len() as i64;
        if room <= 0 {
            break;
        }
        let batch: Vec<Leased> = on_tx!(&mut tx, |conn, sql| {
            sqlx::query_as(sql(select.clone()))
                .bind(priority as i16)
                .bind(now)
                .bind(room)
                .fetch_all(conn)
                .await
        })?;
        jobs.extend(batch);
    }
    if jobs.is_empty() {
        tx.rollback().await?;
        return Ok(jobs);
    }
    // One statement for the whole batch: the rows are locked (SQLite: the
    // write lock), so `attempts + 1` is the attempt each job sees.
    match tx.steps() {
        // The ids as one JSON array: one prepared statement for every
        // batch (see `db::json_rows`).
        Step::Sqlite(conn) => {
            let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
            sqlx::query(
                "update jobs set state = 'running', attempts = attempts + 1, locked_until = ?1,
                        locked_by = ?2, updated_at = ?3
                  where id in (select value from json_each(?4))",
            )
            .bind(locked_until)
            .bind(worker)
            .bind(now)
            .bind(json_rows(&ids)?)
            .execute(conn)
            .await?;
        }
        // Its list of ids follows the batch: not kept among the
        // connection's prepared statements.
        Step::MySql(conn) => {
            let mut update = QueryBuilder::<MySql>::new(
                "update jobs set state = 'running', attempts = attempts + 1, locked_until = ",
            );
            update
                .push_bind(locked_until)
                .push(", locked_by = ")
                .push_bind(worker)
                .push(", updated_at = ")
                .push_bind(now)
                .push(" where id in ");
            push_list(&mut update, jobs.iter().map(|job| job.id));
            update.build().persistent(false).execute(conn).await?;
        }
    }
    for job in &mut jobs {
        job.attempt += 1;
    }
    tx.commit().await?;
    Ok(jobs)
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Done,
    Retry {
        at: i64,
        error: String,
    },
    Dead {
        error: String,
    },
    /// Given back unfinished (shutdown): the attempt does not count.
    Released,
}

impl Outcome {
    /// As the attempt log records it; a released attempt leaves no row.
    pub(super) fn logged(&self) -> Option<AttemptOutcome> {
        match self {
            Outcome::Done => Some(AttemptOutcome::Done),
            Outcome::Retry { .. } => Some(AttemptOutcome::Retry),
            Outcome::Dead { .. } => Some(AttemptOutcome::Dead),
            Outcome::Released => None,
        }
    }

    /// As metrics name it.
    pub(super) fn name(&self) -> &'static str {
        self.logged().map_or("released", AttemptOutcome::as_str)
    }
}

/// Who holds which attempt of a job: the identity every outcome update checks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease<'a> {
    pub job_id: i64,
    pub attempt: i32,
    pub worker: &'a str,
}

/// Records the outcome of an attempt if its worker still holds the lease;
/// `alert` is enqueued in the same transaction when the job dies.
/// `Ok(false)`: the lease was lost (it expired and another worker took the
/// job), so this outcome is stale and nothing was written.
pub(super) async fn finish(
    db: &Db,
    lease: Lease<'_>,
    outcome: &Outcome,
    now: i64,
    duration_ms: i64,
    alerts: &[NewJob],
) -> Result<bool, sqlx::Error> {
    let Lease {
        job_id,
        attempt,
        worker,
    } = lease;
    let mut tx = db.begin().await?;
    let updated = on_tx!(&mut tx, |conn, sql| {
        let query = match outcome {
            Outcome::Done => sqlx::query(sql(
                "update jobs set state = 'done', last_error = null, finished_at = ?,
                        locked_until = null, locked_by = null, updated_at = ?
                  where id = ? and state = 'running' and locked_by = ? and attempts = ?",
            ))
            .bind(now),
            Outcome::Retry { at, error } => sqlx::query(sql(
                "update jobs set state = 'queued', run_at = ?, last_error = ?,
                        locked_until = null, locked_by = null, updated_at = ?
                  where id = ? and state = 'running' and locked_by = ? and attempts = ?",
            ))
            .bind(*at)
            .bind(error.as_str()),
            Outcome::Dead { error } => sqlx::query(sql(
                "update jobs set state = 'dead', last_error = ?, finished_at = ?,
                        locked_until = null, locked_by = null, updated_at = ?
                  where id = ? and state = 'running' and locked_by = ? and attempts = ?",
            ))
            .bind(error.as_str())
            .bind(now),
            Outcome::Released => sqlx::query(sql(
                "update jobs set state = 'queued', attempts = attempts - 1,
                        locked_until = null, locked_by = null, updated_at = ?
                  where id = ? and state = 'running' and locked_by = ? and attempts = ?",
            )),
        };
        query
            .bind(now)
            .bind(job_id)
            .bind(worker)
            .bind(attempt)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })?;
    if updated == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    // A released attempt does not count: it leaves no row.
    if let Some(logged) = outcome.logged() {
        let error = match outcome {
            Outcome::Retry { error, .. } | Outcome::Dead { error } => Some(error.as_str()),
            _ => None,
        };
        let ended = attempts::Ended {
            job_id,
            attempt,
            worker,
            started_at: now - duration_ms,
            finished_at: now,
            outcome: logged,
            error,
            duration_ms: Some(duration_ms),
        };
        attempts::log(&mut tx, &[ended]).await?;
    }
    if let Outcome::Dead { .. } = outcome {
        for alert in alerts {
            insert(&mut tx, alert, now).await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

#[derive(sqlx::FromRow)]
struct ExpiredLease {
    id: i64,
    kind: String,
    attempts: i32,
    max_attempts: i32,
    locked_by: Option<String>,
    /// When the lease was taken: nothing else writes a running job.
    updated_at: i64,
}

/// Jobs whose worker stopped reporting (killed, crashed, partitioned) become
/// claimable again, or dead when that was their last attempt. Returns
/// (requeued, dead).
pub(super) async fn expire_leases(
    db: &Db,
    now: i64,
    alerts_for: impl Fn(&str) -> Vec<NewJob>,
) -> Result<(u64, u64), sqlx::Error> {
    let select = format!(
        "select id, kind, attempts, max_attempts, locked_by, updated_at from jobs
          where state = 'running' and locked_until < ?{}",
        db.backend().for_update_skip_locked()
    );
    let mut tx = db.begin().await?;
    let expired: Vec<ExpiredLease> = on_tx!(&mut tx, |conn, sql| {
        sqlx::query_as(sql(select)).bind(now).fetch_all(conn).await
    })?;
    if expired.is_empty() {
        tx.rollback().await?;
        return Ok((0, 0));
    }
    let error =
        "lease expired: the worker stopped before reporting an outcome (killed or crashed?)";
    let (mut requeued, mut dead) = (0, 0);
    for job in &expired {
        let last = job.attempts >= job.max_attempts;
        on_tx!(&mut tx, |conn, sql| {
            sqlx::query(sql(
                "update jobs set state = ?, last_error = ?, run_at = ?, finished_at = ?,
                        locked_until = null, locked_by = null, updated_at = ?
                  where id = ?",
            ))
            .bind(
                if last {
                    JobState::Dead
                } else {
                    JobState::Queued
                }
                .as_str(),
            )
            .bind(error)
            .bind(now)
            .bind(last.then_some(now))
            .bind(now)
            .bind(job.id)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        let ended = attempts::Ended {
            job_id: job.id,
            attempt: job.attempts,
            worker: job.locked_by.as_deref().unwrap_or_default(),
            started_at: job.updated_at,
            finished_at: now,
            outcome: AttemptOutcome::LeaseExpired,
            error: Some(error),
            duration_ms: None,
        };
        attempts::log(&mut tx, &[ended]).await?;
        if last {
            dead += 1;
            for alert in alerts_for(&job.kind) {
                insert(&mut tx, &alert, now).await?;
            }
        } else {
            requeued += 1;
        }
    }
    tx.commit().await?;
    Ok((requeued, dead))
}
