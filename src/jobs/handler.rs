//! The contract between the outbox and the code that does the work: a
//! [`Handler`] runs the jobs of its kinds and says how an attempt ended
//! ([`JobError`]: theirs, retry later; ours or final, dead at once).
//!
//! Adding a job kind means a variant in a [`Payload`] family and the code
//! that runs it in that family's handler; the worker does not change.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use serde_json::{Value, json};

use super::{NewJob, Payload};

/// What [`Handler::run`] returns (handlers are called through `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// A job leased to a worker: what a handler is given.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Leased {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    /// This attempt's number, from 1.
    #[sqlx(rename = "attempts")]
    pub attempt: i32,
    pub max_attempts: i32,
    pub created_at: i64,
    /// The request the job serves, if one enqueued it.
    pub request_id: Option<String>,
}

/// Runs the jobs of some kinds. Called outside any transaction; whatever it
/// sends must tolerate being sent twice (a lease can expire mid-send).
pub trait Handler: Send + Sync {
    /// The kinds this handler runs (for a family, `P::KINDS`).
    fn kinds(&self) -> &'static [&'static str];
    /// One attempt of `job`.
    fn run<'a>(&'a self, job: &'a Leased) -> BoxFuture<'a, Result<(), JobError>>;
}

/// The value of family `P` that `job` holds. A payload that does not parse
/// is our bug, and dead at once.
pub fn decode<P: Payload>(job: &Leased) -> Result<P, JobError> {
    let bad = |e: serde_json::Error| JobError::Permanent(format!("bad {} payload: {e}", job.kind));
    let payload: Value = serde_json::from_str(&job.payload).map_err(bad)?;
    serde_json::from_value(json!({"kind": job.kind, "payload": payload})).map_err(bad)
}

/// The kind that does nothing: for benchmarks of the outbox itself.
pub const NOOP_KIND: &str = "noop";

struct Noop;

impl Handler for Noop {
    fn kinds(&self) -> &'static [&'static str] {
        &[NOOP_KIND]
    }

    fn run<'a>(&'a self, _job: &'a Leased) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }
}

type DeadLetterAlert = dyn Fn(&str, i64) -> Vec<NewJob> + Send + Sync;

/// Which handler runs which kind, and what to enqueue when a job dies.
#[derive(Clone)]
pub struct Handlers {
    by_kind: HashMap<&'static str, Arc<dyn Handler>>,
    dead_letter_alert: Option<Arc<DeadLetterAlert>>,
}

impl Default for Handlers {
    fn default() -> Self {
        Self::new()
    }
}

impl Handlers {
    /// A registry that knows [`NOOP_KIND`] only.
    pub fn new() -> Self {
        let handlers = Self {
            by_kind: HashMap::new(),
            dead_letter_alert: None,
        };
        handlers.with(Noop)
    }

    /// Registers `handler` for its kinds. Two handlers for one kind is a
    /// wiring mistake, found at start-up.
    pub fn with(mut self, handler: impl Handler + 'static) -> Self {
        let handler: Arc<dyn Handler> = Arc::new(handler);
        for kind in handler.kinds() {
            let before = self.by_kind.insert(kind, handler.clone());
            assert!(before.is_none(), "two handlers for job kind {kind:?}");
        }
        self
    }

    /// The jobs `alert(kind, now)` gives are enqueued in the transaction
    /// that marks a job of `kind` dead (for example, the admin's urgent
    /// alert and the digest of the window).
    pub fn alert_dead_with(
        mut self,
        alert: impl Fn(&str, i64) -> Vec<NewJob> + Send + Sync + 'static,
    ) -> Self {
        self.dead_letter_alert = Some(Arc::new(alert));
        self
    }

    pub(super) fn kinds(&self) -> std::collections::HashSet<&'static str> {
        self.by_kind.keys().copied().collect()
    }

    pub(super) fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.by_kind.get(kind)
    }

    pub(super) fn alert_for(&self, kind: &str, now: i64) -> Vec<NewJob> {
        self.dead_letter_alert
            .as_ref()
            .map(|f| f(kind, now))
            .unwrap_or_default()
    }
}
