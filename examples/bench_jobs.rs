//! Outbox throughput: jobs per second through lease → no-op work → record,
//! with several workers racing on one database.
//!
//! Usage: bench_jobs DATABASE_URL [JOBS] [WORKERS] [CONCURRENCY]
//! The database should be fresh (scripts/bench-jobs.sh makes one per backend).

use std::time::Instant;

use allot::{
    app,
    clock::now_ms,
    config::Settings,
    db::Db,
    jobs::{self, NOOP_KIND, NewJob},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "sqlite:///tmp/allot-bench.db".into());
    let total: usize = args.get(2).map_or(Ok(20_000), |a| a.parse())?;
    let workers: usize = args.get(3).map_or(Ok(4), |a| a.parse())?;
    let concurrency: usize = args.get(4).map_or(Ok(32), |a| a.parse())?;

    let mut settings = Settings::for_database(url.clone());
    settings.database.max_connections = (workers as u32 * 2).max(4);
    settings.jobs.concurrency = concurrency;
    let db = Db::open(&settings.database).await?;

    let started = Instant::now();
    let now = now_ms();
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        let mut tx = db.begin().await?;
        for _ in chunk {
            jobs::enqueue(
                &mut tx,
                &NewJob::new(NOOP_KIND, serde_json::json!({}), 3),
                now,
            )
            .await?;
        }
        tx.commit().await?;
    }
    let enqueue = started.elapsed();

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let worker = app::worker(db.clone(), &settings)?;
        tasks.spawn(async move {
            let mut done = 0usize;
            loop {
                let events = worker.run_once(now_ms()).await?;
                if events.is_empty() {
                    return anyhow::Ok(done);
                }
                done += events.len();
            }
        });
    }
    let mut processed = 0;
    while let Some(result) = tasks.join_next().await {
        processed += result??;
    }
    let work = started.elapsed();
    let left = jobs::list(&db, Some(jobs::JobState::Queued), 1)
        .await?
        .len();

    println!(
        "{backend}: enqueued {total} in {enq:.2}s ({enq_rate:.0}/s, 500 per commit); processed {processed} with {workers} workers x {concurrency} in {work:.2}s = {rate:.0} jobs/s; left queued: {left}",
        backend = db.backend().name(),
        enq = enqueue.as_secs_f64(),
        enq_rate = total as f64 / enqueue.as_secs_f64(),
        work = work.as_secs_f64(),
        rate = processed as f64 / work.as_secs_f64(),
    );
    db.close().await;
    Ok(())
}
