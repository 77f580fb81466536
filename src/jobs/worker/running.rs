//! The loop `allot serve` and `allot worker` run: it keeps up to
//! `ALLOT_WORKER_CONCURRENCY` attempts running from the jobs leased ahead
//! (`ahead`) and those handed over at birth (`handoff`), does the
//! housekeeping once per poll interval, obeys pause and resume, and on
//! shutdown gives running attempts their grace and the rest back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{
    Worker,
    ahead::{Ahead, Leasing},
};
use crate::{
    clock::now_ms,
    jobs::{admin, wake},
};

impl Worker {
    /// Runs until `shutdown`: then stops leasing, gives in-flight jobs
    /// `grace` to finish, and releases the rest back to the queue. The
    /// PostgreSQL wake-up listener runs beside the loop and ends with it.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let wake = Arc::new(Notify::new());
        let listen = wake::listen(self.inner.db.clone(), wake.clone(), shutdown.clone());
        tokio::join!(listen, self.work(wake, shutdown, grace));
    }

    async fn work(self, wake: Arc<Notify>, shutdown: CancellationToken, grace: Duration) {
        let inner = self.inner;
        let concurrency = inner.jobs.concurrency;
        let slots = Arc::new(Semaphore::new(concurrency));
        // Attempts running or whose outcomes wait to be recorded: room for
        // two full batches of outcomes, so that quick jobs are not held to
        // what one small batch per commit can record.
        let recording = Arc::new(Semaphore::new((4 * concurrency).max(1024)));
        let in_flight: Arc<Mutex<HashMap<i64, i32>>> = Arc::default();
        // A slot freed by an attempt that ended: the next job starts then,
        // not once the attempt's outcome is recorded (which waits for a
        // batch), or quick jobs would run at the pace of outcome batches.
        let freed = Arc::new(Notify::new());
        let mut ahead = Ahead::new(concurrency);
        let handoff = inner.handoff.clone();
        let mut handed = handoff.receiver().await;
        let mut tasks = JoinSet::new();
        let mut tick = tokio::time::interval(inner.jobs.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(worker = %inner.id, concurrency, "worker started");

        // Housekeeping (expired leases, gauges) runs once per poll interval,
        // busy or idle, rather than before every batch.
        let mut housekeeping_due = Instant::now();
        while !shutdown.is_cancelled() {
            while let Some(finished) = tasks.try_join_next() {
                log_task_failure(finished);
                ahead.job_ended();
            }
            if Instant::now() >= housekeeping_due {
                housekeeping_due = Instant::now() + inner.jobs.poll_interval;
                if let Err(error) = inner.expire_leases(now_ms()).await {
                    metrics::counter!("allot_worker_errors_total").increment(1);
                    tracing::error!(error = %format!("{error:#}"), "requeueing expired leases failed");
                }
                admin::publish_gauges(&inner.db).await;
                inner.db.publish_pool_gauges();
                inner.steering.publish_gauges();
            }
            while let Ok(job) = handed.try_recv() {
                ahead.accept(job);
            }
            if inner.steering.is_paused() {
                // Paused by the operator: lease nothing, give back what waits,
                // let what runs finish; the housekeeping above goes on.
                handoff.close();
                inner.release_all(&mut ahead).await;
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = inner.steering.resumed() => {}
                    _ = tick.tick() => {}
                    Some(finished) = tasks.join_next(), if !tasks.is_empty() => log_task_failure(finished),
                }
                continue;
            }
            if let Some(leasing) = ahead.try_lease() {
                log_lease_failure(leasing);
            }
            let running = concurrency - slots.available_permits();
            ahead.refill(&inner, running);
            if ahead.backlogged() {
                handoff.close();
            } else {
                handoff.offer(ahead.room(running));
            }
            while !ahead.is_empty() {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let Some((job, leased_at)) = ahead.pop() else {
                    break;
                };
                // Half its lease spent waiting (slow jobs held the slots):
                // give it back rather than risk its lease running out mid-run
                // and a second worker running it too.
                if leased_at.elapsed() * 2 >= inner.jobs.lease {
                    inner.release(job.id, job.attempt).await;
                    continue;
                }
                in_flight.lock().unwrap().insert(job.id, job.attempt);
                let (inner, in_flight) = (inner.clone(), in_flight.clone());
                let (recording, freed) = (recording.clone(), freed.clone());
                inner.steering.started_one();
                tasks.spawn(async move {
                    let id = job.id;
                    // The slot is free once the attempt ends, while its outcome
                    // waits to be recorded with others; at most `recording`
                    // outcomes wait at once, and the task (which shutdown
                    // waits for) ends only once its outcome is written.
                    let held = recording.acquire_owned().await.expect("semaphore open");
                    inner
                        .process_then(job, now_ms(), move || {
                            drop(permit);
                            freed.notify_one();
                        })
                        .await;
                    drop(held);
                    in_flight.lock().unwrap().remove(&id);
                    inner.steering.finished_one();
                });
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = wake.notified(), if ahead.is_empty() => ahead.woken(),
                () = freed.notified() => {}
                _ = tick.tick() => ahead.woken(),
                leasing = ahead.next_lease(), if ahead.is_leasing() => log_lease_failure(leasing),
                Some(job) = handed.recv() => ahead.accept(job),
                Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                    log_task_failure(finished);
                    ahead.job_ended();
                }
            }
        }
        handoff.close();
        while let Ok(job) = handed.try_recv() {
            ahead.accept(job);
        }
        inner.release_all(&mut ahead).await;

        let running = tasks.len();
        if running > 0 {
            tracing::info!(
                running,
                ?grace,
                "worker stopping; waiting for in-flight jobs"
            );
        }
        // Past the grace period the remaining sends are cut off (their
        // leases are released below, so another worker takes them up).
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                () = &mut deadline => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Handed over during the grace period: given back too.
        while let Ok(job) = handed.try_recv() {
            inner.release(job.id, job.attempt).await;
        }
        let unfinished: Vec<(i64, i32)> = in_flight.lock().unwrap().drain().collect();
        for (job_id, attempt) in unfinished {
            inner.release(job_id, attempt).await;
        }
        tracing::info!(worker = %inner.id, "worker stopped");
    }
}

/// A lease that failed is logged and counted; the next is tried at the
/// next poll.
fn log_lease_failure(leasing: Leasing) {
    if let Leasing::Failed(error) = leasing {
        metrics::counter!("allot_worker_errors_total").increment(1);
        tracing::error!(error = %format!("{error:#}"), "leasing jobs failed; retrying at the next poll");
    }
}

/// A job task only fails by panicking (`process` records every error).
fn log_task_failure(finished: Result<(), tokio::task::JoinError>) {
    if let Err(error) = finished {
        metrics::counter!("allot_worker_errors_total").increment(1);
        tracing::error!(%error, "a job task panicked; its job runs again when the lease expires");
    }
}
