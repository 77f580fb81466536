//! `allot bench jobs`: no-op jobs drained through the real worker loop
//! (lease a batch ahead, run, record outcomes in batches) on
//! `ALLOT_DATABASE_URL`, with `--connections` as the worker's concurrency.
//! All jobs are enqueued first (500 per transaction, not timed); the figure
//! is jobs done per second from the worker's start to the last job done.
//! Verified afterwards: every job done, each after exactly one attempt,
//! whose record is closed.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio_util::sync::CancellationToken;

use super::{Checks, Options, Verdict, load::Tally};
use crate::{
    app,
    clock::now_ms,
    config::Settings,
    db::Db,
    jobs::{self, NOOP_KIND, NewJob},
    on_db,
};

/// Jobs enqueued per second of `--duration`: more than any backend drains
/// here, so the run measures draining, not an empty queue.
const JOBS_PER_SECOND: f64 = 5_000.0;

pub(super) async fn run(
    settings: &Settings,
    db: &Db,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<(Tally, Verdict)> {
    let total =
        (options.duration.as_secs_f64() * JOBS_PER_SECOND).clamp(1_000.0, 1_000_000.0) as i64;
    progress.set_message("enqueueing");
    let ids = enqueue(db, total).await?;

    let mut settings = settings.clone();
    settings.jobs.concurrency = options.connections;
    let worker = app::worker(db.clone(), &settings)?;
    let shutdown = CancellationToken::new();
    progress.set_message("jobs");
    let started_ms = now_ms();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(shutdown.clone(), Duration::from_secs(5)));
    // Enqueued for the duration at a rate no backend reaches here, so
    // draining takes longer; a worker that stalls is reported, not awaited.
    let deadline = started + options.duration * 10 + Duration::from_secs(30);
    let mut left = total;
    while left > 0 && Instant::now() < deadline {
        // Seldom enough not to slow the drain it watches.
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = count_left(db, ids).await?;
        progress.set_position((total - left) as u64);
    }
    shutdown.cancel();
    running.await?;

    let finished_ms = last_done(db, ids).await?.unwrap_or(started_ms);
    let mut tally = Tally {
        elapsed: Duration::from_millis((finished_ms - started_ms).max(1) as u64),
        ..Tally::default()
    };
    tally.latencies_us = latencies_us(db, ids).await?;
    let left = total - tally.ok() as i64;
    if left > 0 {
        tally.errors.insert("not done in time".into(), left as u64);
    }
    let verdict = verify(db, total, ids).await?;
    Ok((tally, verdict))
}

/// The ids of this run's jobs, first and last: nothing else enqueues
/// `noop` jobs, so the range holds this run's and no other's.
type Ids = (i64, i64);

async fn enqueue(db: &Db, total: i64) -> anyhow::Result<Ids> {
    let now = now_ms();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut left = total;
    while left > 0 {
        let n = left.min(500);
        let mut tx = db.begin().await?;
        for _ in 0..n {
            let job = NewJob::new(NOOP_KIND, serde_json::json!({}), 3);
            if let Some(id) = jobs::enqueue(&mut tx, &job, now).await? {
                first = first.min(id);
                last = last.max(id);
            }
        }
        tx.commit().await?;
        left -= n;
    }
    Ok((first, last))
}

/// Jobs of the run not done yet: read by the state index, which holds
/// few rows once most are done.
async fn count_left(db: &Db, (first, last): Ids) -> Result<i64, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql(
            "select count(*) from jobs where state in ('queued', 'running') and id between ? and ?",
        ))
        .bind(first)
        .bind(last)
        .fetch_one(pool)
        .await
    })
}

async fn last_done(db: &Db, (first, last): Ids) -> Result<Option<i64>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql(
            "select max(finished_at) from jobs where id between ? and ? and kind = 'noop'",
        ))
        .bind(first)
        .bind(last)
        .fetch_one(pool)
        .await
    })
}

/// Enqueue to done of each job done, sorted (all were enqueued at once).
async fn latencies_us(db: &Db, (first, last): Ids) -> Result<Vec<u64>, sqlx::Error> {
    let mut ms: Vec<i64> = on_db!(db, read, |pool, sql| {
        sqlx::query_scalar(sql("select finished_at - created_at from jobs
              where id between ? and ? and kind = 'noop' and state = 'done'"))
        .bind(first)
        .bind(last)
        .fetch_all(pool)
        .await
    })?;
    ms.sort_unstable();
    Ok(ms.into_iter().map(|m| m.max(0) as u64 * 1000).collect())
}

async fn verify(db: &Db, total: i64, (first, last): Ids) -> anyhow::Result<Verdict> {
    let (jobs, done, attempts, one_attempt, closed): (i64, i64, i64, i64, i64) =
        on_db!(db, read, |pool, sql| {
            sqlx::query_as(sql("select count(distinct j.id),
                        count(distinct case when j.state = 'done' then j.id end),
                        count(a.id),
                        count(distinct case when j.attempts = 1 then j.id end),
                        count(case when a.outcome = 'done' and a.finished_at is not null then 1 end)
                   from jobs j left join job_attempts a on a.job_id = j.id
                  where j.id between ? and ? and j.kind = 'noop'"))
            .bind(first)
            .bind(last)
            .fetch_one(pool)
            .await
        })?;
    let mut checks = Checks::default();
    checks.check(jobs == total, format!("{jobs} of {total} jobs enqueued"));
    checks.check(done == jobs, format!("{done} of {jobs} jobs done"));
    checks.check(
        one_attempt == jobs && attempts == jobs,
        format!("{attempts} attempts recorded for {jobs} jobs ({one_attempt} after one attempt)"),
    );
    checks.check(
        closed == done,
        format!("{closed} attempts closed as done for {done} done jobs"),
    );
    Ok(checks.verdict())
}
