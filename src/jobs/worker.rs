//! Workers: lease due jobs in one short transaction, do the work outside any
//! transaction, record the outcome in a second short one.
//!
//! [`Worker::run_once`] is one unit of work (lease a batch, run it, record
//! it), which tests drive step by step with a clock of their choosing;
//! [`Worker::run`] is the loop `allot serve` and `allot worker` run.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Deserialize;
use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    RetryPolicy, alerts,
    store::{self, Lease, LeasedJob, Outcome},
};
use crate::{
    config::{JobSettings, MailSettings, Settings},
    db::Db,
    mail::{self, Email, Mailer, templates},
    orders::notices,
};

pub const NOOP_KIND: &str = "noop";

/// Why a job did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Theirs: try again on the retry schedule (no sooner than `retry_after`).
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Ours, or final: dead letter at once.
    Permanent(String),
}

impl JobError {
    pub fn retry(error: impl Into<String>) -> Self {
        Self::Retry {
            error: error.into(),
            retry_after: None,
        }
    }
}

/// What a finished attempt led to, for callers that watch (tests, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    Done { job_id: i64 },
    Retry { job_id: i64, at: i64 },
    Dead { job_id: i64 },
    LeaseLost { job_id: i64 },
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    id: String,
    jobs: JobSettings,
    mail: MailSettings,
    mailer: Mailer,
    policy: RetryPolicy,
}

impl Worker {
    pub fn new(db: Db, settings: &Settings) -> anyhow::Result<Self> {
        let mailer = Mailer::from_settings(&settings.mail)?;
        let host = hostname();
        let id = format!(
            "{host}:{}:{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                id,
                jobs: settings.jobs.clone(),
                mail: settings.mail.clone(),
                mailer,
                policy: RetryPolicy {
                    schedule: settings.jobs.retry_schedule.clone(),
                },
            }),
        })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Requeues expired leases, leases up to `ALLOT_WORKER_CONCURRENCY` due
    /// jobs, runs them concurrently and records every outcome. Returns what
    /// happened to each.
    pub async fn run_once(&self, now: i64) -> anyhow::Result<Vec<WorkerEvent>> {
        self.inner.expire_leases(now).await?;
        let jobs = self.inner.lease(self.inner.jobs.concurrency, now).await?;
        let mut tasks = JoinSet::new();
        for job in jobs {
            let inner = self.inner.clone();
            tasks.spawn(async move { inner.process(job, now).await });
        }
        let mut events = Vec::new();
        while let Some(result) = tasks.join_next().await {
            events.extend(result.context("job task panicked")?);
        }
        Ok(events)
    }

    /// Runs until `shutdown`: then stops leasing, gives in-flight jobs
    /// `grace` to finish, and releases the rest back to the queue.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let inner = self.inner;
        let wake = Arc::new(Notify::new());
        if let Db::Postgres(pool) = &inner.db {
            tokio::spawn(listen_for_jobs(
                pool.clone(),
                wake.clone(),
                shutdown.clone(),
            ));
        }
        let slots = Arc::new(Semaphore::new(inner.jobs.concurrency));
        let in_flight: Arc<Mutex<HashMap<i64, i32>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let mut tick = tokio::time::interval(inner.jobs.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(worker = %inner.id, concurrency = inner.jobs.concurrency, "worker started");

        // Housekeeping (expired leases, gauges) runs once per poll interval,
        // busy or idle, rather than before every batch.
        let mut housekeeping_due = Instant::now();
        while !shutdown.is_cancelled() {
            while let Some(finished) = tasks.try_join_next() {
                log_task_failure(finished);
            }
            if Instant::now() >= housekeeping_due {
                housekeeping_due = Instant::now() + inner.jobs.poll_interval;
                if let Err(error) = inner.expire_leases(super::now_ms()).await {
                    metrics::counter!("allot_worker_errors_total").increment(1);
                    tracing::error!(error = %format!("{error:#}"), "requeueing expired leases failed");
                }
                inner.publish_stats().await;
            }
            let free = slots.available_permits();
            let mut leased = 0;
            if free > 0 {
                let now = super::now_ms();
                match inner.lease(free, now).await {
                    Ok(jobs) => {
                        leased = jobs.len();
                        for job in jobs {
                            let permit =
                                slots.clone().acquire_owned().await.expect("semaphore open");
                            in_flight.lock().unwrap().insert(job.id, job.attempt);
                            let (inner, in_flight) = (inner.clone(), in_flight.clone());
                            tasks.spawn(async move {
                                let id = job.id;
                                inner.process(job, now).await;
                                in_flight.lock().unwrap().remove(&id);
                                drop(permit);
                            });
                        }
                    }
                    Err(error) => {
                        metrics::counter!("allot_worker_errors_total").increment(1);
                        tracing::error!(error = %format!("{error:#}"), "leasing jobs failed; retrying at the next poll");
                    }
                }
            }
            // A full batch means more may be due: lease again at once.
            if free > 0 && leased == free {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = wake.notified() => {}
                _ = tick.tick() => {}
                Some(finished) = tasks.join_next(), if !tasks.is_empty() => log_task_failure(finished),
            }
        }

        let running = tasks.len();
        if running > 0 {
            tracing::info!(
                running,
                ?grace,
                "worker stopping; waiting for in-flight jobs"
            );
        }
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
        let unfinished: Vec<(i64, i32)> = in_flight.lock().unwrap().drain().collect();
        for (job_id, attempt) in unfinished {
            inner.release(job_id, attempt).await;
        }
        tracing::info!(worker = %inner.id, "worker stopped");
    }
}

#[derive(Deserialize)]
struct EmailPayload {
    to: String,
    template: String,
    #[serde(default)]
    context: serde_json::Value,
}

impl Inner {
    async fn lease(&self, limit: usize, now: i64) -> anyhow::Result<Vec<LeasedJob>> {
        let until = now + self.jobs.lease.as_millis() as i64;
        store::lease(&self.db, &self.id, limit as i64, now, until)
            .await
            .context("leasing jobs")
    }

    async fn expire_leases(&self, now: i64) -> anyhow::Result<()> {
        let (requeued, dead) =
            store::expire_leases(&self.db, now, |kind| self.alert_for(kind, now))
                .await
                .context("requeueing expired leases")?;
        if requeued + dead > 0 {
            metrics::counter!("allot_job_leases_expired_total").increment(requeued + dead);
            tracing::warn!(requeued, dead, "took back jobs whose lease expired");
        }
        Ok(())
    }

    fn alert_for(&self, kind: &str, now: i64) -> Option<super::NewJob> {
        alerts::digest_for(
            kind,
            now,
            self.jobs.alert_interval,
            self.jobs.max_attempts(),
        )
    }

    /// Runs one leased job and records its outcome. Never returns an error:
    /// whatever fails is recorded, logged and counted.
    async fn process(&self, job: LeasedJob, leased_at: i64) -> Option<WorkerEvent> {
        let span =
            tracing::info_span!("job", job_id = job.id, kind = %job.kind, attempt = job.attempt);
        async {
            let started = Instant::now();
            let timeout = self.mail.send_timeout;
            let result = match tokio::time::timeout(timeout, self.execute(&job)).await {
                Ok(result) => result,
                Err(_) => Err(JobError::retry(format!("timed out after {timeout:?}"))),
            };
            let elapsed = started.elapsed();
            let now = leased_at + elapsed.as_millis() as i64;
            let outcome = self.outcome(&job, result, now);
            self.record(&job, outcome, now, elapsed).await
        }
        .instrument(span)
        .await
    }

    async fn execute(&self, job: &LeasedJob) -> Result<(), JobError> {
        match job.kind.as_str() {
            mail::EMAIL_KIND => {
                let payload: EmailPayload = serde_json::from_str(&job.payload)
                    .map_err(|e| JobError::Permanent(format!("bad email payload: {e}")))?;
                self.deliver(job, payload.to, &payload.template, payload.context)
                    .await
            }
            kind if notices::KINDS.contains(&kind) => {
                let letter = notices::prepare(
                    &self.db,
                    kind,
                    &job.payload,
                    self.mail.admin_email.as_deref(),
                )
                .await?;
                match letter {
                    Some(letter) => {
                        self.deliver(job, letter.to, letter.template, letter.context)
                            .await
                    }
                    None => Ok(()),
                }
            }
            alerts::DIGEST_KIND => {
                alerts::send_digest(
                    &self.db,
                    &self.mailer,
                    &self.mail.from,
                    self.mail.admin_email.as_deref(),
                    &job.payload,
                    self.message_id(job),
                )
                .await
            }
            NOOP_KIND => Ok(()),
            other => Err(JobError::Permanent(format!(
                "no worker knows job kind {other:?}"
            ))),
        }
    }

    /// Renders `template` and sends it to `to`.
    async fn deliver(
        &self,
        job: &LeasedJob,
        to: String,
        template: &str,
        mut context: serde_json::Value,
    ) -> Result<(), JobError> {
        // Read at send time, so a new logo applies to queued mail too.
        if let Some(context) = context.as_object_mut() {
            context
                .entry("logo_url")
                .or_insert_with(|| serde_json::json!(self.mail.logo_url));
        }
        let rendered = templates::render(template, &context)
            .map_err(|e| JobError::Permanent(format!("rendering template {template:?}: {e}")))?;
        let email = Email {
            from: self.mail.from.clone(),
            to,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            message_id: self.message_id(job),
        };
        self.mailer.send(&email).await.map_err(JobError::from)
    }

    /// Stable across retries of one job, unique across jobs and databases.
    fn message_id(&self, job: &LeasedJob) -> String {
        let domain = self
            .mail
            .from
            .rsplit_once('@')
            .map_or("localhost", |(_, d)| d.trim_end_matches('>'));
        format!("allot.job-{}.{}@{domain}", job.id, job.created_at)
    }

    fn outcome(&self, job: &LeasedJob, result: Result<(), JobError>, now: i64) -> Outcome {
        match result {
            Ok(()) => Outcome::Done,
            Err(JobError::Permanent(error)) => Outcome::Dead { error },
            Err(JobError::Retry { error, .. }) if job.attempt >= job.max_attempts => {
                Outcome::Dead {
                    error: format!("gave up after {} attempts: {error}", job.attempt),
                }
            }
            Err(JobError::Retry { error, retry_after }) => {
                // A job's budget was fixed when it was enqueued; past the end
                // of this worker's schedule the last delay repeats.
                let delay = self.policy.delay(job.attempt, retry_after);
                Outcome::Retry {
                    at: now + delay.as_millis() as i64,
                    error,
                }
            }
        }
    }

    async fn record(
        &self,
        job: &LeasedJob,
        outcome: Outcome,
        now: i64,
        elapsed: Duration,
    ) -> Option<WorkerEvent> {
        let alert = match &outcome {
            Outcome::Dead { .. } => self.alert_for(&job.kind, now),
            _ => None,
        };
        let name = match &outcome {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Released => "released",
        };
        let kind = job.kind.clone();
        metrics::counter!("allot_job_attempts_total", "kind" => kind.clone(), "outcome" => name)
            .increment(1);
        metrics::histogram!("allot_job_attempt_duration_seconds", "kind" => kind.clone())
            .record(elapsed.as_secs_f64());
        let lease = Lease {
            job_id: job.id,
            attempt: job.attempt,
            worker: &self.id,
        };
        let recorded = store::finish(
            &self.db,
            lease,
            &outcome,
            now,
            elapsed.as_millis() as i64,
            alert.as_ref(),
        )
        .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                metrics::counter!("allot_job_leases_lost_total").increment(1);
                tracing::warn!(
                    "lease expired before the outcome was recorded; another worker owns the job now"
                );
                return Some(WorkerEvent::LeaseLost { job_id: job.id });
            }
            Err(error) => {
                metrics::counter!("allot_worker_errors_total").increment(1);
                tracing::error!(%error, outcome = name, "could not record the outcome; the job runs again when its lease expires");
                return None;
            }
        }
        match outcome {
            Outcome::Done => {
                let latency = (now - job.created_at).max(0) as f64 / 1000.0;
                metrics::histogram!("allot_job_delivery_latency_seconds", "kind" => kind)
                    .record(latency);
                tracing::info!("job done");
                Some(WorkerEvent::Done { job_id: job.id })
            }
            Outcome::Retry { at, error } => {
                tracing::warn!(%error, retry_at = %super::rfc3339(at), "attempt failed; will retry");
                Some(WorkerEvent::Retry { job_id: job.id, at })
            }
            Outcome::Dead { error } => {
                tracing::error!(%error, "job is dead");
                Some(WorkerEvent::Dead { job_id: job.id })
            }
            Outcome::Released => None,
        }
    }

    async fn release(&self, job_id: i64, attempt: i32) {
        let now = super::now_ms();
        let lease = Lease {
            job_id,
            attempt,
            worker: &self.id,
        };
        match store::finish(&self.db, lease, &Outcome::Released, now, 0, None).await {
            Ok(_) => tracing::info!(job_id, "released an unfinished job back to the queue"),
            Err(error) => {
                tracing::error!(job_id, %error, "could not release the job; it runs again when its lease expires")
            }
        }
    }

    async fn publish_stats(&self) {
        match store::stats(&self.db, super::now_ms()).await {
            Ok((counts, oldest_due)) => {
                for state in super::JobState::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == state.as_str())
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!("allot_jobs", "state" => state.as_str()).set(n as f64);
                }
                let age =
                    oldest_due.map_or(0.0, |due| (super::now_ms() - due).max(0) as f64 / 1000.0);
                metrics::gauge!("allot_job_oldest_due_age_seconds").set(age);
            }
            Err(error) => tracing::warn!(%error, "could not read job statistics"),
        }
    }
}

/// A job task only fails by panicking (`process` records every error).
fn log_task_failure(finished: Result<(), tokio::task::JoinError>) {
    if let Err(error) = finished {
        metrics::counter!("allot_worker_errors_total").increment(1);
        tracing::error!(%error, "a job task panicked; its job runs again when the lease expires");
    }
}

/// PostgreSQL wakes idle workers the moment a job commits; polling remains
/// the fallback (and the only mechanism on the other backends).
async fn listen_for_jobs(pool: sqlx::PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "LISTEN unavailable; workers fall back to polling");
            return;
        }
    };
    if let Err(error) = listener.listen("allot_jobs").await {
        tracing::warn!(%error, "LISTEN unavailable; workers fall back to polling");
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = listener.recv() => match received {
                Ok(_) => wake.notify_one(),
                Err(error) => {
                    // recv() reconnects on the next call; don't spin meanwhile.
                    tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}
