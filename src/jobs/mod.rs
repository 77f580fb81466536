//! The outbox: durable jobs committed with the business change that needs
//! them, delivered by workers with leases, retries, dead letters and alerts.
//!
//! - this file: what a job is, enqueueing, the retry policy;
//! - `store`: the SQL, per backend where the dialects differ;
//! - `worker`: leasing, running and recording jobs; the worker loop;
//! - `alerts`: the dead-letter digest sent to the admin.
//!
//! Times are Unix epoch milliseconds, passed in by the caller so that tests
//! can move the clock without sleeping.

pub mod alerts;
pub(crate) mod store;
pub mod worker;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::db::{Db, Tx};

pub use worker::{JobError, Worker, WorkerEvent};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 4] = [Self::Queued, Self::Running, Self::Done, Self::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    /// Enqueueing a job whose key exists already does nothing.
    pub dedupe_key: Option<String>,
    pub run_at: i64,
    pub max_attempts: i32,
}

impl NewJob {
    pub fn new(kind: &str, payload: serde_json::Value, max_attempts: i32) -> Self {
        Self {
            kind: kind.to_string(),
            payload,
            dedupe_key: None,
            run_at: 0,
            max_attempts,
        }
    }

    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn run_at(mut self, at: i64) -> Self {
        self.run_at = at;
        self
    }
}

/// Adds `job` to the outbox inside the caller's transaction: it commits with
/// the caller's change or not at all. `Ok(None)`: the dedupe key existed.
pub async fn enqueue(tx: &mut Tx, job: &NewJob, now: i64) -> Result<Option<i64>, sqlx::Error> {
    store::insert(tx, job, now.max(0)).await
}

/// Enqueues one job in a transaction of its own.
pub async fn enqueue_now(db: &Db, job: &NewJob) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let id = enqueue(&mut tx, job, now_ms()).await?;
    tx.commit().await?;
    Ok(id)
}

/// A job as `allot jobs list` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    #[serde(serialize_with = "as_rfc3339")]
    pub run_at: i64,
    pub dedupe_key: Option<String>,
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: i64,
    #[serde(serialize_with = "as_optional_rfc3339")]
    pub finished_at: Option<i64>,
}

/// One attempt of a job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub attempt: i32,
    pub worker: String,
    #[serde(serialize_with = "as_rfc3339")]
    pub started_at: i64,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

pub fn rfc3339(ms: i64) -> String {
    // humantime formats years up to 9999 only (and panics beyond).
    const YEAR_9999_END: i64 = 253_402_300_799_999;
    let time = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, YEAR_9999_END) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

fn as_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

fn as_optional_rfc3339<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

pub async fn list(db: &Db, state: Option<JobState>, limit: i64) -> Result<Vec<Job>, sqlx::Error> {
    store::list(db, state, limit).await
}

pub async fn find(db: &Db, id: i64) -> Result<Option<Job>, sqlx::Error> {
    store::find(db, id).await
}

pub async fn attempts(db: &Db, job_id: i64) -> Result<Vec<Attempt>, sqlx::Error> {
    store::attempts(db, job_id).await
}

/// Puts dead jobs back in the queue with a fresh budget of `max_attempts`:
/// one job, or every dead job. Returns how many were requeued.
pub async fn retry_dead(db: &Db, id: Option<i64>, max_attempts: i32) -> Result<u64, sqlx::Error> {
    store::redrive(db, id, now_ms(), max_attempts).await
}

#[derive(Debug, PartialEq, Eq)]
pub enum Discarded {
    Yes,
    NotFound,
    /// A worker holds it right now; discarding would race the delivery.
    Running,
}

pub async fn discard(db: &Db, id: i64) -> Result<Discarded, sqlx::Error> {
    store::delete(db, id).await
}

/// How long to wait before attempt `attempts + 1`, after `attempts` failed.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub schedule: Vec<Duration>,
}

/// A provider's Retry-After is honoured up to this much.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based), with ±20 %
    /// jitter so that a burst of failures does not retry in lockstep, and
    /// never shorter than a Retry-After the provider gave (capped).
    pub fn delay(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.schedule.len().saturating_sub(1));
        let base = self
            .schedule
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let jitter = rand::random_range(0.8..=1.2);
        let delay = base.mul_f64(jitter);
        match retry_after {
            Some(after) => delay.max(after.min(MAX_RETRY_AFTER)),
            None => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_far_out_format_without_panicking() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert!(rfc3339(i64::MAX).starts_with("9999-12-31"));
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(300),
            ],
        }
    }

    #[test]
    fn delays_follow_the_schedule_within_jitter() {
        for (attempt, base) in [(1, 10.0), (2, 60.0), (3, 300.0), (9, 300.0)] {
            for _ in 0..100 {
                let delay = policy().delay(attempt, None).as_secs_f64();
                assert!(
                    (base * 0.8..=base * 1.2).contains(&delay),
                    "attempt {attempt}: {delay}"
                );
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let long = policy().delay(1, Some(Duration::from_secs(3600)));
        assert_eq!(long, Duration::from_secs(3600));
        let absurd = policy().delay(1, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(absurd, MAX_RETRY_AFTER);
        let short = policy().delay(2, Some(Duration::from_secs(1)));
        assert!(short >= Duration::from_secs(48), "{short:?}");
    }
}
