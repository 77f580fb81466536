//! What operators do with jobs (`allot jobs …`, statistics): list, show,
//! redrive the dead, discard. Every statement is one text with `?`
//! placeholders through `on_db!`.

use super::{Attempt, Job, JobState};
use crate::{
    clock::now_ms,
    db::{Db, read_state},
    on_db,
};

/// `select` of the columns of [`Job`] `from jobs`, followed by `$rest`.
macro_rules! select_jobs {
    ($rest:literal) => {
        concat!(
            "select id, kind, state, attempts, max_attempts, last_error, run_at, dedupe_key, created_at, finished_at from jobs ",
            $rest
        )
    };
}

/// Jobs, newest first; of one state, or all.
pub async fn list(db: &Db, state: Option<JobState>, limit: i64) -> Result<Vec<Job>, sqlx::Error> {
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

/// Which jobs a page of the dashboard lists.
#[derive(Debug, Clone, Default)]
pub struct Browse {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    /// Keyset: only jobs with a smaller id (the last one of the page before).
    pub before: Option<i64>,
}

/// Jobs matching `browse`, newest first, at most `limit`. Seeks by id,
/// never skips rows with `OFFSET`: one page costs the same on page 1 and
/// page 10,000. With a state, the `(state, kind)` index finds the queued,
/// running and dead; done jobs (the most) are found walking ids down.
pub async fn browse(db: &Db, browse: &Browse, limit: i64) -> Result<Vec<Job>, sqlx::Error> {
    let mut filters = Vec::new();
    if browse.state.is_some() {
        filters.push("state = ?");
    }
    if browse.kind.is_some() {
        filters.push("kind = ?");
    }
    if browse.before.is_some() {
        filters.push("id < ?");
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("where {}", filters.join(" and "))
    };
    let select = format!("{} {filter} order by id desc limit ?", select_jobs!(""));
    on_db!(db, read, |pool, sql| {
        let mut query = sqlx::query_as::<_, Job>(sql(select.clone()));
        if let Some(state) = browse.state {
            query = query.bind(state.as_str());
        }
        if let Some(kind) = &browse.kind {
            query = query.bind(kind.as_str());
        }
        if let Some(before) = browse.before {
            query = query.bind(before);
        }
        query.bind(limit).fetch_all(pool).await
    })
}

pub async fn find(db: &Db, id: i64) -> Result<Option<Job>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(select_jobs!("where id = ?")))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}

/// Dead jobs that died in `[from, to)`, oldest first.
pub async fn dead_between(db: &Db, from: i64, to: i64) -> Result<Vec<Job>, sqlx::Error> {
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

/// Every attempt of a job, in order.
pub async fn attempts(db: &Db, job_id: i64) -> Result<Vec<Attempt>, sqlx::Error> {
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

/// Puts dead jobs back in the queue with a fresh budget of `max_attempts`:
/// one job, or every dead job. Their attempt history stays in
/// `job_attempts`; the new run counts from 1 again. Returns how many were
/// requeued.
pub async fn retry_dead(db: &Db, id: Option<i64>, max_attempts: i32) -> Result<u64, sqlx::Error> {
    requeue_dead(db, Dead::Id(id), max_attempts).await
}

/// Like [`retry_dead`] for the dead jobs whose dedupe key starts with
/// `prefix` (one endpoint's deliveries, say).
pub async fn retry_dead_with_prefix(
    db: &Db,
    prefix: &str,
    max_attempts: i32,
) -> Result<u64, sqlx::Error> {
    requeue_dead(db, Dead::KeyPrefix(prefix), max_attempts).await
}

/// Which dead jobs to requeue: one (`Some`) or all, or by dedupe key.
enum Dead<'a> {
    Id(Option<i64>),
    KeyPrefix(&'a str),
}

async fn requeue_dead(db: &Db, which: Dead<'_>, max_attempts: i32) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    let (filter, id, prefix) = match which {
        Dead::Id(id) => ("(? is null or id = ?)", id, None),
        Dead::KeyPrefix(prefix) => ("substr(dedupe_key, 1, ?) = ?", None, Some(prefix)),
    };
    let update = format!(
        "update jobs set state = 'queued', attempts = 0, max_attempts = ?, run_at = ?,
                finished_at = null, updated_at = ?
          where state = 'dead' and {filter}"
    );
    // Two binds for the filter either way: the id twice, or the prefix's
    // length (an i32: PostgreSQL's substr takes integers) and the prefix.
    let length = prefix.map(|p| p.chars().count() as i32);
    let done = on_db!(db, write, |pool, sql| {
        let query = sqlx::query(sql(update))
            .bind(max_attempts)
            .bind(now)
            .bind(now);
        let query = match prefix {
            Some(prefix) => query.bind(length).bind(prefix),
            None => query.bind(id).bind(id),
        };
        query.execute(pool).await.map(|done| done.rows_affected())
    })?;
    super::wake::notify(db).await?;
    Ok(done)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Discarded {
    Yes,
    NotFound,
    /// A worker holds it right now; discarding would race the delivery.
    Running,
}

/// Deletes a job that is not running.
pub async fn discard(db: &Db, id: i64) -> Result<Discarded, sqlx::Error> {
    let Some(job) = find(db, id).await? else {
        return Ok(Discarded::NotFound);
    };
    if job.state == JobState::Running {
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
pub(super) async fn stats(
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

/// Jobs waiting, running or dead, by state and kind (`/v1/stats`; done
/// jobs are counted by `rollup`, which never scans the outbox).
pub async fn unfinished_by_kind(db: &Db) -> Result<Vec<(JobState, String, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql("select state, kind, count(*) from jobs
              where state in ('queued', 'running', 'dead') group by state, kind"))
        .fetch_all(pool)
        .await
    })?;
    rows.into_iter()
        .map(|(state, kind, n)| Ok((read_state(state)?, kind, n)))
        .collect()
}

/// Sets the queue gauges of `/metrics` (jobs per state, age of the oldest
/// due job); a failure to read them is logged, never fatal.
pub(super) async fn publish_gauges(db: &Db) {
    match stats(db, now_ms()).await {
        Ok((counts, oldest_due)) => {
            for state in JobState::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == state.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("allot_jobs", "state" => state.as_str()).set(n as f64);
            }
            let age = oldest_due.map_or(0.0, |due| (now_ms() - due).max(0) as f64 / 1000.0);
            metrics::gauge!("allot_job_oldest_due_age_seconds").set(age);
        }
        Err(error) => tracing::warn!(%error, "could not read job statistics"),
    }
    match unfinished_by_kind(db).await {
        Ok(counts) => publish_by_kind(&counts),
        Err(error) => tracing::warn!(%error, "could not read job statistics per kind"),
    }
}

/// `allot_jobs_by_kind{kind,state}` for the queued, running and dead jobs
/// (index-backed counts; done jobs are the roll-up's). A kind and state
/// seen before and absent now is set to 0, not left at its last value.
fn publish_by_kind(counts: &[(JobState, String, i64)]) {
    use std::{collections::BTreeSet, sync::Mutex};
    static SEEN: Mutex<BTreeSet<(String, &'static str)>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for &(ref kind, state) in seen.iter() {
        if !counts
            .iter()
            .any(|(s, k, _)| s.as_str() == state && k == kind)
        {
            metrics::gauge!("allot_jobs_by_kind", "kind" => kind.clone(), "state" => state)
                .set(0.0);
        }
    }
    for (state, kind, n) in counts {
        metrics::gauge!("allot_jobs_by_kind", "kind" => kind.clone(), "state" => state.as_str())
            .set(*n as f64);
        seen.insert((kind.clone(), state.as_str()));
    }
}
