//! The outbox: durable jobs committed with the business change that needs
//! them, run by workers with leases, retries and dead letters.
//!
//! Owns the `jobs` and `job_attempts` tables and nothing else. It is generic:
//! it never looks inside a payload and imports no capability. A family of
//! job kinds is a serde-tagged enum implementing [`Payload`], run by a
//! [`Handler`] registered in [`Handlers`] by the composition root (`app`).
//!
//! - this file: what a job is and how it is enqueued;
//! - `handler`: the [`Handler`] contract, [`JobError`], the registry;
//! - `retry`: when a failed attempt runs again;
//! - `store`: the SQL of leasing and recording attempts;
//! - `admin`: listing, redriving and discarding jobs (CLI, statistics);
//! - `worker`: the loop that leases, runs and records;
//! - `completer`: done attempts recorded many per transaction;
//! - `handoff`: jobs this process enqueues, born leased to its own worker;
//! - `retention`: pruning done jobs after `ALLOT_JOB_RETENTION`;
//! - `rollup`: what finished per minute, for statistics that never scan;
//! - `steering`: pausing and resuming a worker, and what it reports;
//! - `wake`: PostgreSQL `LISTEN/NOTIFY`, so idle workers start at once.
//!
//! Times are Unix epoch milliseconds, passed in by the caller so that tests
//! can move the clock without sleeping.

mod admin;
mod attempts;
mod completer;
mod handler;
mod handoff;
mod postgres;
mod retention;
mod retry;
pub mod rollup;
mod steering;
mod store;
mod wake;
mod worker;

use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    clock::{as_optional_rfc3339, as_rfc3339, now_ms},
    db::{Db, Step, Tx},
};

pub use admin::{
    Browse, Discarded, attempts, browse, dead_between, discard, find, list, retry_dead,
    retry_dead_with_prefix, unfinished_by_kind,
};
pub use attempts::AttemptOutcome;
pub use handler::{BoxFuture, Handler, Handlers, JobError, Leased, NOOP_KIND, decode};
pub use handoff::{Handoff, Reservation};
pub use retention::{oldest_unfinished, prune_done};
pub use retry::{MAX_RETRY_AFTER, RetryPolicy};
pub use steering::Steering;
pub use worker::{Worker, WorkerEvent};

crate::stored_state! {
    /// Where a job of the outbox stands (`jobs.state`).
    pub enum JobState: "job state" {
        Queued = "queued",
        Running = "running",
        Done = "done",
        Dead = "dead",
    }
}

/// Which due jobs a worker leases first. A backlog of buyer emails must not
/// hold back the admin's alert about a sell-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    #[default]
    Normal = 0,
    /// Leased before any normal job that is due.
    Urgent = 1,
}

impl Priority {
    /// The order workers lease in.
    pub const HIGHEST_FIRST: [Priority; 2] = [Priority::Urgent, Priority::Normal];
}

/// A family of job kinds: a serde enum tagged
/// `#[serde(tag = "kind", content = "payload")]`, whose tag is what the
/// `kind` column stores and whose content is the `payload` column.
pub trait Payload: Serialize + DeserializeOwned + Send + Sync {
    /// Every tag of the enum: the kinds its handler runs.
    const KINDS: &'static [&'static str];

    /// How soon this job runs among those due at the same time.
    fn priority(&self) -> Priority {
        Priority::Normal
    }
}

/// The `max_attempts` of a job without an attempt budget ([`NewJob::until_done`]).
pub const UNLIMITED_ATTEMPTS: i32 = i32::MAX;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: Value,
    /// Enqueueing a job whose key exists already does nothing.
    pub dedupe_key: Option<String>,
    pub run_at: i64,
    pub max_attempts: i32,
    pub priority: Priority,
    /// The request this job serves (its `x-request-id`), stored with it so
    /// that the worker running it, in any process, names the request on
    /// the attempt's log lines.
    pub request_id: Option<Arc<str>>,
}

impl NewJob {
    /// A job built while a request is served names that request (see
    /// [`crate::telemetry::request_id`]).
    pub fn new(kind: &str, payload: Value, max_attempts: i32) -> Self {
        Self {
            kind: kind.to_string(),
            payload,
            dedupe_key: None,
            run_at: 0,
            max_attempts,
            priority: Priority::Normal,
            request_id: crate::telemetry::request_id(),
        }
    }

    /// The job for one value of a [`Payload`] family.
    pub fn of<P: Payload>(payload_of: &P, max_attempts: i32) -> Self {
        let mut tagged = serde_json::to_value(payload_of).unwrap_or(Value::Null);
        let kind = tagged["kind"].as_str().unwrap_or_default().to_string();
        let payload = tagged
            .get_mut("payload")
            .map(Value::take)
            .unwrap_or(Value::Null);
        debug_assert!(P::KINDS.contains(&kind.as_str()), "{kind} not in KINDS");
        Self {
            priority: payload_of.priority(),
            ..Self::new(&kind, payload, max_attempts)
        }
    }

    /// No attempt budget: the job retries until it succeeds, waiting at
    /// most `ALLOT_ALERT_INTERVAL` between attempts (or what the provider's
    /// `Retry-After` asks). For alerts about failures, which must not be
    /// lost to the same failure (an SMTP outage that kills the mail also
    /// keeps failing the digest that reports it). A permanent error still
    /// ends it.
    pub fn until_done(mut self) -> Self {
        self.max_attempts = UNLIMITED_ATTEMPTS;
        self
    }

    /// This job as the worker it was born leased to sees it (see
    /// `handoff`): stored as `id`, enqueued at `now`, in its first attempt.
    pub fn born_leased(&self, id: i64, now: i64) -> Leased {
        Leased {
            id,
            kind: self.kind.clone(),
            payload: self.payload.to_string(),
            attempt: 1,
            max_attempts: self.max_attempts,
            created_at: now,
            request_id: self.request_id.as_deref().map(String::from),
        }
    }

    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// This job with dedupe key `key`, as [`enqueue_many_handed`] takes it.
    pub fn keyed(self, key: impl Into<String>) -> KeyedJob {
        KeyedJob(self.dedupe_key(key))
    }

    pub fn run_at(mut self, at: i64) -> Self {
        self.run_at = at;
        self
    }

    /// Serves request `id`: for a job built away from the request's task
    /// (an order batch's key emails).
    pub fn request_id(mut self, id: Option<Arc<str>>) -> Self {
        self.request_id = id;
        self
    }
}

/// A job that has a dedupe key: [`enqueue_many_handed`] finds the id of
/// each job it inserted by its key, so it takes only these. It reads as
/// the [`NewJob`] it is, which cannot be changed to lose its key.
#[derive(Debug, Clone)]
pub struct KeyedJob(NewJob);

impl KeyedJob {
    pub fn key(&self) -> &str {
        // Set by `NewJob::keyed`, the only way to make one.
        self.0.dedupe_key.as_deref().unwrap_or_default()
    }

    /// See [`NewJob::request_id`].
    pub fn request_id(self, id: Option<Arc<str>>) -> Self {
        Self(self.0.request_id(id))
    }

    pub fn into_job(self) -> NewJob {
        self.0
    }
}

impl std::ops::Deref for KeyedJob {
    type Target = NewJob;

    fn deref(&self) -> &NewJob {
        &self.0
    }
}

/// A value as part of a dedupe key (a 255-character column): as is when
/// short, else a hash of it, so that any SKU or name can scope a key.
pub fn dedupe_part(value: &str) -> String {
    use sha2::{Digest, Sha256};
    if value.len() <= 96 {
        return value.to_string();
    }
    let digest = Sha256::digest(value.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds `job` to the outbox inside the caller's transaction: it commits with
/// the caller's change or not at all. `Ok(None)`: the dedupe key existed.
pub async fn enqueue(tx: &mut Tx, job: &NewJob, now: i64) -> Result<Option<i64>, sqlx::Error> {
    store::insert(tx, job, now.max(0)).await
}

/// Adds many jobs of one kind in one statement inside the caller's
/// transaction (on a backend that places batches step by step: see
/// `db::Step`), each with a dedupe key ([`KeyedJob`]): ids in the order of
/// `jobs`, `None` for a job whose key exists already. On MySQL, which
/// cannot skip a duplicate in a multi-row insert without hiding other
/// errors, an existing key is an error instead (the caller's transaction
/// must not commit).
/// `handoff`'s worker, in this process, may take them without leasing them
/// (see `handoff`): as many as it has room for are inserted leased to it.
/// Call [`Handed::deliver`] once
/// the transaction has committed.
pub async fn enqueue_many_handed(
    step: Step<'_>,
    jobs: &[KeyedJob],
    now: i64,
    handoff: Option<&Handoff>,
) -> Result<(Vec<Option<i64>>, Handed), sqlx::Error> {
    let now = now.max(0);
    let one_kind = jobs
        .first()
        .filter(|first| jobs.iter().all(|j| j.kind == first.kind));
    let reservation = match (handoff, one_kind) {
        (Some(handoff), Some(first)) => Some(handoff.reserve(&first.kind, jobs.len())),
        _ => None,
    };
    let reservation = reservation.filter(|r| r.granted() > 0);
    let ids = store::insert_many(step, jobs, now, reservation.as_ref()).await?;
    let granted = reservation.as_ref().map_or(0, Reservation::granted);
    let leased = jobs
        .iter()
        .zip(&ids)
        .take(granted)
        .filter_map(|(job, id)| Some(job.born_leased((*id)?, now)))
        .collect();
    let handed = match reservation {
        Some(reservation) => reservation.handed(leased),
        None => Handed::default(),
    };
    Ok((ids, handed))
}

/// Jobs inserted leased to this process's worker, to hand over once
/// their transaction has committed (dropped otherwise: the promise is
/// given back, and nothing was stored).
#[derive(Default)]
pub struct Handed {
    reservation: Option<Reservation>,
    jobs: Vec<Leased>,
}

impl Handed {
    /// After the commit: the worker starts them.
    pub fn deliver(self) {
        if let Some(reservation) = self.reservation {
            reservation.deliver(self.jobs);
        }
    }
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
    #[sqlx(try_from = "String")]
    pub state: JobState,
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
