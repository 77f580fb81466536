//! Forgetting what is done: done jobs (and, by cascade, their attempts)
//! older than `ALLOT_JOB_RETENTION` are deleted in small batches, so the
//! outbox does not grow forever and no delete holds locks for long. Dead
//! jobs are kept until someone redrives or discards them; the roll-up
//! (`rollup`) is trimmed to the same retention.

use crate::{db::Db, on_db};

/// Deletes up to `batch` done jobs that finished before `before`, oldest
/// first; how many.
pub async fn prune_done(db: &Db, before: i64, batch: i64) -> Result<u64, sqlx::Error> {
    let ids: Vec<i64> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql(
            "select id from jobs where state = 'done' and finished_at < ?
              order by finished_at limit ?",
        ))
        .bind(before)
        .bind(batch)
        .fetch_all(pool)
        .await
    })?;
    if ids.is_empty() {
        return Ok(0);
    }
    // The ids come from the database as integers: formatting them into
    // the statement cannot inject anything, and one statement per batch
    // works on every backend (MySQL refuses LIMIT inside IN (…)).
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let delete = format!(
        "delete from jobs where state = 'done' and id in ({})",
        list.join(", ")
    );
    let deleted = on_db!(db, write, |pool, sql| {
        sqlx::query(sql(delete))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })?;
    for trim in [
        "delete from job_stats where minute < ?",
        "delete from job_stats_hourly where hour < ?",
    ] {
        on_db!(db, write, |pool, sql| {
            sqlx::query(sql(trim))
                .bind(before)
                .execute(pool)
                .await
                .map(drop)
        })?;
    }
    Ok(deleted)
}

/// When the oldest job of `kind` that is not done yet was enqueued: what
/// it refers to must be kept.
pub async fn oldest_unfinished(db: &Db, kind: &str) -> Result<Option<i64>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql(
            // The states by name: PostgreSQL's index of unfinished jobs
            // (migration 0014) is partial, on exactly these.
            "select min(created_at) from jobs where kind = ? and state in ('queued', 'running', 'dead')",
        ))
        .bind(kind)
        .fetch_one(pool)
        .await
    })
}
