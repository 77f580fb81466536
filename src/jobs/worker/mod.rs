//! Workers: lease due jobs in one short transaction, do the work outside any
//! transaction, record the outcome in a second short one (done attempts
//! together with those that finish meanwhile, see `completer`).
//!
//! [`Worker::run_once`] is one unit of work (lease a batch, run it, record
//! it), which tests drive step by step with a clock of their choosing;
//! [`Worker::run`] (in `running`) is the loop `allot serve` and `allot
//! worker` run.
//! What a job does is its [`super::Handler`]'s business; this file only
//! knows kinds, leases and outcomes.

mod ahead;
mod running;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::task::JoinSet;
use tracing::Instrument;

use self::ahead::Ahead;
use super::{
    JobError, RetryPolicy,
    attempts::Done,
    completer::Completer,
    handler::{Handlers, Leased},
    handoff::Handoff,
    steering::Steering,
    store::{self, Lease, Outcome},
};
use crate::{
    clock::{now_ms, rfc3339},
    config::JobSettings,
    db::Db,
};

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
    /// Upper bound for one attempt; past it the attempt is a retry.
    attempt_timeout: Duration,
    handlers: Handlers,
    policy: RetryPolicy,
    steering: Steering,
    /// Done attempts, recorded in batches.
    completer: Completer,
    /// Jobs this process enqueues, born leased to this worker.
    handoff: Handoff,
}

impl Worker {
    /// A worker that runs the kinds `handlers` knows; any other kind is
    /// dead at once.
    pub fn new(db: Db, jobs: &JobSettings, attempt_timeout: Duration, handlers: Handlers) -> Self {
        let host = crate::telemetry::hostname();
        let id = format!(
            "{host}:{}:{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let completer = Completer::new(db.clone(), &id);
        let handoff = Handoff::new(&id, jobs.lease, handlers.kinds());
        Self {
            inner: Arc::new(Inner {
                db,
                id,
                jobs: jobs.clone(),
                attempt_timeout,
                handlers,
                policy: RetryPolicy {
                    schedule: jobs.retry_schedule.clone(),
                },
                steering: Steering::default(),
                completer,
                handoff,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Where this process hands the jobs it enqueues straight to this
    /// worker (see `handoff`).
    pub fn handoff(&self) -> Handoff {
        self.inner.handoff.clone()
    }

    /// Pauses and resumes this worker; reads what it is doing.
    pub fn steering(&self) -> Steering {
        self.inner.steering.clone()
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
}

impl Inner {
    async fn lease(&self, limit: usize, now: i64) -> anyhow::Result<Vec<Leased>> {
        let until = now + self.jobs.lease.as_millis() as i64;
        store::lease(&self.db, &self.id, limit as i64, now, until)
            .await
            .context("leasing jobs")
    }

    async fn expire_leases(&self, now: i64) -> anyhow::Result<()> {
        let (requeued, dead) =
            store::expire_leases(&self.db, now, |kind| self.handlers.alert_for(kind, now))
                .await
                .context("requeueing expired leases")?;
        if requeued + dead > 0 {
            metrics::counter!("allot_job_leases_expired_total").increment(requeued + dead);
            tracing::warn!(requeued, dead, "took back jobs whose lease expired");
        }
        Ok(())
    }

    /// Runs one leased job and records its outcome. Never returns an error:
    /// whatever fails is recorded, logged and counted.
    async fn process(&self, job: Leased, leased_at: i64) -> Option<WorkerEvent> {
        self.process_then(job, leased_at, || {}).await
    }

    /// [`Self::process`], calling `attempted` once the attempt has ended,
    /// before its outcome is recorded.
    async fn process_then(
        &self,
        job: Leased,
        leased_at: i64,
        attempted: impl FnOnce(),
    ) -> Option<WorkerEvent> {
        let span = tracing::info_span!(
            "job",
            job_id = job.id,
            kind = %job.kind,
            attempt = job.attempt,
            request_id = job.request_id.as_deref(),
            // The order the job serves: only its handler, which reads the
            // payload, knows it, and records it here.
            order = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let timeout = self.attempt_timeout;
            let result = match tokio::time::timeout(timeout, self.execute(&job)).await {
                Ok(result) => result,
                Err(_) => Err(JobError::retry(format!("timed out after {timeout:?}"))),
            };
            let elapsed = started.elapsed();
            let now = leased_at + elapsed.as_millis() as i64;
            let outcome = self.outcome(&job, result, now);
            attempted();
            self.record(&job, outcome, now, elapsed).await
        }
        .instrument(span)
        .await
    }

    async fn execute(&self, job: &Leased) -> Result<(), JobError> {
        match self.handlers.get(&job.kind) {
            Some(handler) => handler.run(job).await,
            None => Err(JobError::Permanent(format!(
                "no worker knows job kind {:?}",
                job.kind
            ))),
        }
    }

    fn outcome(&self, job: &Leased, result: Result<(), JobError>, now: i64) -> Outcome {
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
                let mut delay = self.policy.delay(job.attempt, retry_after);
                if job.max_attempts == super::UNLIMITED_ATTEMPTS {
                    // An alert without a budget tries again at least once per
                    // alert window, so it goes out soon after the outage ends.
                    let cap = self
                        .jobs
                        .alert_interval
                        .max(retry_after.unwrap_or_default());
                    delay = delay.min(cap);
                }
                Outcome::Retry {
                    at: now + delay.as_millis() as i64,
                    error,
                }
            }
        }
    }

    async fn record(
        &self,
        job: &Leased,
        outcome: Outcome,
        now: i64,
        elapsed: Duration,
    ) -> Option<WorkerEvent> {
        let alerts = match &outcome {
            Outcome::Dead { .. } => self.handlers.alert_for(&job.kind, now),
            _ => Vec::new(),
        };
        let name = outcome.name();
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
        let recorded = match outcome {
            Outcome::Done => {
                let done = Done {
                    job_id: job.id,
                    attempt: job.attempt,
                    finished_at: now,
                    duration_ms: elapsed.as_millis() as i64,
                };
                self.completer.record(done).await
            }
            _ => store::finish(
                &self.db,
                lease,
                &outcome,
                now,
                elapsed.as_millis() as i64,
                &alerts,
            )
            .await
            .map_err(|error| error.to_string()),
        };
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
                self.steering.record_done();
                let latency = (now - job.created_at).max(0) as f64 / 1000.0;
                metrics::histogram!("allot_job_delivery_latency_seconds", "kind" => kind)
                    .record(latency);
                tracing::info!("job done");
                Some(WorkerEvent::Done { job_id: job.id })
            }
            Outcome::Retry { at, error } => {
                self.steering.record_error(&error);
                tracing::warn!(%error, retry_at = %rfc3339(at), "attempt failed; will retry");
                Some(WorkerEvent::Retry { job_id: job.id, at })
            }
            Outcome::Dead { error } => {
                self.steering.record_error(&error);
                tracing::error!(%error, "job is dead");
                Some(WorkerEvent::Dead { job_id: job.id })
            }
            Outcome::Released => None,
        }
    }

    /// Gives back every leased job that has not started.
    async fn release_all(&self, ahead: &mut Ahead) {
        for job in ahead.take_all().await {
            self.release(job.id, job.attempt).await;
        }
    }

    async fn release(&self, job_id: i64, attempt: i32) {
        let now = now_ms();
        let lease = Lease {
            job_id,
            attempt,
            worker: &self.id,
        };
        match store::finish(&self.db, lease, &Outcome::Released, now, 0, &[]).await {
            Ok(_) => tracing::info!(job_id, "released an unfinished job back to the queue"),
            Err(error) => {
                tracing::error!(job_id, %error, "could not release the job; it runs again when its lease expires")
            }
        }
    }
}
