//! Outbox SQL. Statements that differ by dialect are written out per
//! backend (the dedupe insert, the lease scan); the rest is one text with `?`
//! placeholders that `on_tx!`/`on_db!` adapt for PostgreSQL.

use crate::{
    db::{Backend, Db, Tx},
    on_db, on_tx,
};

use super::{Attempt, Discarded, Job, JobState, NewJob};

/// `select` of the columns of [`Job`] `from jobs`, followed by `$rest`.
macro_rules! select_jobs {
    ($rest:literal) => {
        concat!(
            "select id, kind, state, attempts, max_attempts, last_error, run_at, dedupe_key, created_at, finished_at from jobs ",
            $rest
        )
    };
}

pub(crate) async fn insert(
    tx: &mut Tx,
    job: &NewJob,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let payload = job.payload.to_string();
    let run_at = if job.run_at > 0 { job.run_at } else { now };
    match tx {
        // SQLite and PostgreSQL: the conflict on the dedupe key returns no row.
        Tx::Sqlite(tx) => {
            sqlx::query_scalar(
                "insert into jobs (kind, payload, dedupe_key, max_attempts, run_at, created_at, updated_at)
                 values (?, ?, ?, ?, ?, ?, ?) on conflict (dedupe_key) do nothing returning id",
            )
            .bind(&job.kind)
            .bind(&payload)
            .bind(&job.dedupe_key)
            .bind(job.max_attempts)
            .bind(run_at)
            .bind(now)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await
        }
        Tx::Postgres(tx) => {
            let id: Option<i64> = sqlx::query_scalar(
                "insert into jobs (kind, payload, dedupe_key, max_attempts, run_at, created_at, updated_at)
                 values ($1, $2, $3, $4, $5, $6, $6) on conflict (dedupe_key) do nothing returning id",
            )
            .bind(&job.kind)
            .bind(&payload)
            .bind(&job.dedupe_key)
            .bind(job.max_attempts)
            .bind(run_at)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
            if id.is_some() {
                // Delivered at commit, never for a rolled-back job: wakes idle workers.
                sqlx::query("select pg_notify('allot_jobs', '')")
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(id)
        }
        // MySQL has no "do nothing" that spares other errors (INSERT IGNORE
        // would swallow them all); a duplicate-key error only fails the
        // statement, not the transaction.
        Tx::MySql(tx) => {
            let inserted = sqlx::query(
                "insert into jobs (kind, payload, dedupe_key, max_attempts, run_at, created_at, updated_at)
                 values (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&job.kind)
            .bind(&payload)
            .bind(&job.dedupe_key)
            .bind(job.max_attempts)
            .bind(run_at)
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await;
            match inserted {
                Ok(done) => Ok(Some(done.last_insert_id() as i64)),
                Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

/// A job leased to this worker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LeasedJob {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    /// This attempt's number, from 1.
    #[sqlx(rename = "attempts")]
    pub attempt: i32,
    pub max_attempts: i32,
    pub created_at: i64,
}

/// Leases up to `limit` due jobs in one short transaction. On the servers the
/// scan skips rows other workers have locked; SQLite's single writer needs
/// no such clause.
pub(crate) async fn lease(
    db: &Db,
    worker: &str,
    limit: i64,
    now: i64,
    locked_until: i64,
) -> Result<Vec<LeasedJob>, sqlx::Error> {
    let select = match db.backend() {
        Backend::Sqlite => {
            "select id, kind, payload, attempts, max_attempts, created_at from jobs
              where state = 'queued' and run_at <= ? order by run_at, id limit ?"
        }
        Backend::Postgres | Backend::MySql => {
            "select id, kind, payload, attempts, max_attempts, created_at from jobs
              where state = 'queued' and run_at <= ? order by run_at, id limit ?
              for update skip locked"
        }
    };
    let mut tx = db.begin().await?;
    let mut jobs: Vec<LeasedJob> = on_tx!(&mut tx, |conn, sql| {
        sqlx::query_as(sql(select))
            .bind(now)
            .bind(limit)
            .fetch_all(conn)
            .await
    })?;
    for job in &mut jobs {
        job.attempt += 1;
        on_tx!(&mut tx, |conn, sql| {
            sqlx::query(sql(
                "update jobs set state = 'running', attempts = ?, locked_until = ?, locked_by = ?, updated_at = ?
                  where id = ?",
            ))
            .bind(job.attempt)
            .bind(locked_until)
            .bind(worker)
            .bind(now)
            .bind(job.id)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        on_tx!(&mut tx, |conn, sql| {
            sqlx::query(sql(
                "insert into job_attempts (job_id, attempt, worker, started_at) values (?, ?, ?, ?)",
            ))
            .bind(job.id)
            .bind(job.attempt)
            .bind(worker)
            .bind(now)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
    }
    tx.commit().await?;
    Ok(jobs)
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
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
    fn name(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Released => "released",
        }
    }
}

/// Who holds which attempt of a job: the identity every outcome update checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease<'a> {
    pub job_id: i64,
    pub attempt: i32,
    pub worker: &'a str,
}

/// Records the outcome of an attempt if its worker still holds the lease;
/// `alert` is enqueued in the same transaction when the job dies.
/// `Ok(false)`: the lease was lost (it expired and another worker took the
/// job), so this outcome is stale and nothing was written.
pub(crate) async fn finish(
    db: &Db,
    lease: Lease<'_>,
    outcome: &Outcome,
    now: i64,
    duration_ms: i64,
    alert: Option<&NewJob>,
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
        return Ok(false); // dropping `tx` rolls back
    }
    match outcome {
        Outcome::Released => {
            on_tx!(&mut tx, |conn, sql| {
                sqlx::query(sql(
                    "delete from job_attempts where job_id = ? and attempt = ?",
                ))
                .bind(job_id)
                .bind(attempt)
                .execute(conn)
                .await
                .map(|done| done.rows_affected())
            })?;
        }
        _ => {
            let error = match outcome {
                Outcome::Retry { error, .. } | Outcome::Dead { error } => Some(error.as_str()),
                _ => None,
            };
            close_attempt(
                &mut tx,
                job_id,
                attempt,
                outcome.name(),
                error,
                now,
                Some(duration_ms),
            )
            .await?;
        }
    }
    if let (Outcome::Dead { .. }, Some(alert)) = (outcome, alert) {
        insert(&mut tx, alert, now).await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn close_attempt(
    tx: &mut Tx,
    job_id: i64,
    attempt: i32,
    outcome: &str,
    error: Option<&str>,
    now: i64,
    duration_ms: Option<i64>,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn, sql| {
        sqlx::query(sql(
            "update job_attempts set finished_at = ?, outcome = ?, error = ?, duration_ms = ?
              where job_id = ? and attempt = ? and finished_at is null",
        ))
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(duration_ms)
        .bind(job_id)
        .bind(attempt)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ExpiredLease {
    id: i64,
    kind: String,
    attempts: i32,
    max_attempts: i32,
}

/// Jobs whose worker stopped reporting (killed, crashed, partitioned) become
/// claimable again, or dead when that was their last attempt. Returns
/// (requeued, dead).
pub(crate) async fn expire_leases(
    db: &Db,
    now: i64,
    alert_for: impl Fn(&str) -> Option<NewJob>,
) -> Result<(u64, u64), sqlx::Error> {
    let select = match db.backend() {
        Backend::Sqlite => {
            "select id, kind, attempts, max_attempts from jobs where state = 'running' and locked_until < ?"
        }
        Backend::Postgres | Backend::MySql => {
            "select id, kind, attempts, max_attempts from jobs where state = 'running' and locked_until < ?
              for update skip locked"
        }
    };
    let mut tx = db.begin().await?;
    let expired: Vec<ExpiredLease> = on_tx!(&mut tx, |conn, sql| {
        sqlx::query_as(sql(select)).bind(now).fetch_all(conn).await
    })?;
    if expired.is_empty() {
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
            .bind(if last { "dead" } else { "queued" })
            .bind(error)
            .bind(now)
            .bind(last.then_some(now))
            .bind(now)
            .bind(job.id)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        close_attempt(
            &mut tx,
            job.id,
            job.attempts,
            "lease_expired",
            Some(error),
            now,
            None,
        )
        .await?;
        if last {
            dead += 1;
            if let Some(alert) = alert_for(&job.kind) {
                insert(&mut tx, &alert, now).await?;
            }
        } else {
            requeued += 1;
        }
    }
    tx.commit().await?;
    Ok((requeued, dead))
}

pub(crate) async fn list(
    db: &Db,
    state: Option<JobState>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    match state {
        Some(state) => on_db!(db, read, |pool, sql| {
            sqlx::query_as(sql(select_jobs!(
                "where state = ? order by id desc limit ?"
            )))
            .bind(state.as_str())
            .bind(limit)
            .fetch_all(pool)
            .await
        }),
        None => on_db!(db, read, |pool, sql| {
            sqlx::query_as(sql(select_jobs!("order by id desc limit ?")))
                .bind(limit)
                .fetch_all(pool)
                .await
        }),
    }
}

pub(crate) async fn find(db: &Db, id: i64) -> Result<Option<Job>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(select_jobs!("where id = ?")))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}

/// Dead jobs that died in `[from, to)`, oldest first.
pub(crate) async fn dead_between(db: &Db, from: i64, to: i64) -> Result<Vec<Job>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(select_jobs!(
            "where state = 'dead' and finished_at >= ? and finished_at < ? order by finished_at, id"
        )))
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
    })
}

pub(crate) async fn attempts(db: &Db, job_id: i64) -> Result<Vec<Attempt>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select attempt, worker, started_at, outcome, error, duration_ms
               from job_attempts where job_id = ? order by id",
        ))
        .bind(job_id)
        .fetch_all(pool)
        .await
    })
}

/// Requeues dead jobs with a fresh budget of `max_attempts`. Their attempt
/// history stays in `job_attempts`; the new run counts from 1 again.
pub(crate) async fn redrive(
    db: &Db,
    id: Option<i64>,
    now: i64,
    max_attempts: i32,
) -> Result<u64, sqlx::Error> {
    let done = match id {
        Some(id) => on_db!(db, write, |pool, sql| {
            sqlx::query(sql(
                "update jobs set state = 'queued', attempts = 0, max_attempts = ?, run_at = ?,
                        finished_at = null, updated_at = ?
                  where state = 'dead' and id = ?",
            ))
            .bind(max_attempts)
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?,
        None => on_db!(db, write, |pool, sql| {
            sqlx::query(sql(
                "update jobs set state = 'queued', attempts = 0, max_attempts = ?, run_at = ?,
                        finished_at = null, updated_at = ?
                  where state = 'dead'",
            ))
            .bind(max_attempts)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?,
    };
    if let Db::Postgres(pool) = db {
        sqlx::query("select pg_notify('allot_jobs', '')")
            .execute(pool)
            .await
            .map(|done| done.rows_affected())?;
    }
    Ok(done)
}

pub(crate) async fn delete(db: &Db, id: i64) -> Result<Discarded, sqlx::Error> {
    let Some(job) = find(db, id).await? else {
        return Ok(Discarded::NotFound);
    };
    if job.state == JobState::Running.as_str() {
        return Ok(Discarded::Running);
    }
    let deleted = on_db!(db, write, |pool, sql| {
        sqlx::query(sql("delete from jobs where id = ? and state <> 'running'"))
            .bind(id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(if deleted == 1 {
        Discarded::Yes
    } else {
        Discarded::Running
    })
}

/// Jobs per state, and when the longest-waiting due job became due.
pub(crate) async fn stats(
    db: &Db,
    now: i64,
) -> Result<(Vec<(String, i64)>, Option<i64>), sqlx::Error> {
    let counts: Vec<(String, i64)> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql("select state, count(*) from jobs group by state"))
            .fetch_all(pool)
            .await
    })?;
    let oldest: Option<i64> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql(
            "select min(run_at) from jobs where state = 'queued' and run_at <= ?",
        ))
        .bind(now)
        .fetch_one(pool)
        .await
    })?;
    Ok((counts, oldest))
}
