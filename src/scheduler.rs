//! Timed work inside `allot serve`, started and stopped by `app`:
//! - the low-stock check, on `ALLOT_LOW_STOCK_CRON` (UTC): one email per SKU
//!   under `ALLOT_LOW_STOCK_THRESHOLD` per run. The job's dedupe key names
//!   the run, so several `serve` processes sharing a database still send
//!   one;
//! - the restock sweep, every worker poll interval: orders waiting for a SKU
//!   that has keys again are fulfilled, oldest first, whoever added the keys
//!   (`allot keys import` does it at once; this catches the rest).
//!
//! - housekeeping, every 30 s: finished minutes rolled up for `/v1/stats`,
//!   done jobs and old attempt logs pruned after `ALLOT_JOB_RETENTION`.
//!
//! Owns when things run, not what they do: the work itself belongs to
//! `keys`, `notices` and `orders`. No table of its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::{
    background::{Loops, Pulse},
    clock::now_ms,
    config::Settings,
    db::Db,
    jobs, keys,
    merchant::{self, Event},
    notices::low_stock_job,
    orders::Fulfilment,
};
use serde_json::json;

/// Enqueues a low-stock email (and tells merchants `stock.low`) for each
/// SKU with fewer than `threshold` available keys, for the run at `run_at`. A second call for the same run
/// adds nothing. Returns the SKUs alerted about in this call.
pub async fn check_low_stock(
    db: &Db,
    threshold: i64,
    run_at: i64,
    max_attempts: i32,
) -> anyhow::Result<Vec<String>> {
    let mut alerted = Vec::new();
    let low: Vec<_> = keys::stock(db)
        .await?
        .into_iter()
        .filter(|s| s.available < threshold)
        .collect();
    if low.is_empty() {
        return Ok(alerted);
    }
    let mut tx = db.begin().await?;
    for stock in low {
        let job = low_stock_job(
            &stock.product_sku,
            stock.available,
            threshold,
            run_at,
            max_attempts,
        );
        if jobs::enqueue(&mut tx, &job, run_at).await?.is_some() {
            let event = Event::new(
                "stock.low",
                json!({"sku": stock.product_sku, "available": stock.available, "threshold": threshold}),
            );
            merchant::emit(&mut tx, &event, run_at, max_attempts).await?;
            alerted.push(stock.product_sku);
        }
    }
    tx.commit().await?;
    Ok(alerted)
}

/// What each kind of timed work reports its rounds through.
#[derive(Clone)]
pub struct Pulses {
    low_stock: Pulse,
    restock: Pulse,
    housekeeping: Pulse,
}

impl Pulses {
    pub fn new(loops: &Loops) -> Self {
        Self {
            low_stock: loops.pulse("low_stock_check"),
            restock: loops.pulse("restock_sweep"),
            housekeeping: loops.pulse("housekeeping"),
        }
    }
}

/// Runs the timed work until `shutdown`.
pub async fn run(
    db: Db,
    settings: Settings,
    fulfilment: Fulfilment,
    pulses: Pulses,
    shutdown: CancellationToken,
) {
    let cron = settings.intake.low_stock_cron.clone();
    let threshold = settings.intake.low_stock_threshold;
    let max_attempts = settings.jobs.max_attempts();
    let mut sweep = tokio::time::interval(settings.jobs.poll_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention = settings.jobs.retention;
    let mut next = next_run(&cron, Utc::now());
    loop {
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {
                let run_at = next.timestamp_millis();
                match check_low_stock(&db, threshold, run_at, max_attempts).await {
                    Ok(skus) => {
                        pulses.low_stock.ok();
                        if !skus.is_empty() {
                            tracing::warn!(?skus, threshold, "low stock; the admin is emailed");
                        }
                    }
                    Err(error) => {
                        let error = format!("{error:#}");
                        pulses.low_stock.failed(&error);
                        tracing::error!(%error, "the low-stock check failed");
                    }
                }
                // Runs missed while this one was late are skipped, not caught up.
                next = next_run(&cron, next.max(Utc::now()));
            }
            _ = housekeeping.tick() => {
                match keep_house(&db, retention, now_ms()).await {
                    Ok(_) => pulses.housekeeping.ok(),
                    Err(error) => {
                        pulses.housekeeping.failed(&error.to_string());
                        tracing::error!(%error, "rolling up statistics or pruning failed; trying again at the next tick");
                    }
                }
            }
            _ = sweep.tick() => {
                match fulfilment.fulfil_all_waiting(now_ms()).await {
                    Ok(_) => pulses.restock.ok(),
                    Err(error) => {
                        pulses.restock.failed(&error.to_string());
                        tracing::error!(%error, "fulfilling waiting orders failed; trying again at the next tick");
                    }
                }
            }
        }
    }
}

/// How often statistics are rolled up and old rows pruned.
const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// Rows deleted per statement when pruning, and statements per tick: a
/// backlog of old rows drains over a few ticks without long locks.
const PRUNE_BATCH: i64 = 1000;
const PRUNE_BATCHES_PER_TICK: usize = 20;

/// Rolls the finished minutes up into `job_stats`, prunes done jobs,
/// attempt logs and merchant events older than `retention`, and on SQLite
/// cuts the write-ahead log back.
pub async fn keep_house(db: &Db, retention: Duration, now: i64) -> Result<u64, sqlx::Error> {
    jobs::rollup::roll_up(db, now).await?;
    if !crate::db::checkpoint(db).await? {
        tracing::debug!("readers held up the checkpoint of the write-ahead log; next time");
    }
    let before = now - retention.as_millis() as i64;
    let mut pruned = 0;
    for _ in 0..PRUNE_BATCHES_PER_TICK {
        let done = jobs::prune_done(db, before, PRUNE_BATCH).await?
            + merchant::endpoints::prune(db, before, PRUNE_BATCH).await?;
        pruned += done;
        if done == 0 {
            break;
        }
    }
    if pruned > 0 {
        tracing::info!(pruned, "pruned rows older than ALLOT_JOB_RETENTION");
        metrics::counter!("allot_rows_pruned_total").increment(pruned);
    }
    Ok(pruned)
}

/// The first run strictly after `after`.
fn next_run(cron: &croner::Cron, after: DateTime<Utc>) -> DateTime<Utc> {
    cron.find_next_occurrence(&after, false)
        .unwrap_or_else(|error| {
            tracing::error!(%error, "ALLOT_LOW_STOCK_CRON has no next run; the low-stock check is off");
            DateTime::<Utc>::MAX_UTC
        })
}
