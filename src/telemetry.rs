//! Structured logs on stderr: readable text by default, one JSON object per
//! line with `ALLOT_LOG_FORMAT=json`. `RUST_LOG` overrides the levels.
//!
//! One id follows a request through the work it causes: the HTTP plumbing
//! gives each request an id (`x-request-id`) and runs it in a `request`
//! span that carries it, and as the work of that request ([`serving`]), so
//! a job enqueued meanwhile records it ([`request_id`]) and the worker that
//! runs the job names it on the attempt's span. Every line of JSON output
//! lists its enclosing spans with their fields, so one search for the id
//! finds each line of the request, of the batch that placed its order and
//! of its jobs.

use std::{future::Future, io::IsTerminal, sync::Arc};

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    // sqlx logs statements at info; bound values are never logged, but the
    // noise is, so keep it to warnings (slow statements) by default.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // The span list puts the request id of every enclosing span (the
        // request, the order batch, the job attempt) on each line.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(true)
            .try_init(),
    };
}

tokio::task_local! {
    /// The request whose work this task does (see [`serving`]).
    static REQUEST_ID: Arc<str>;
}

/// Runs `work` as the work of request `id` (its `x-request-id`): what it
/// enqueues names that request ([`request_id`]). The HTTP plumbing runs
/// each request's handler so; work that a request hands to another task
/// (an order batch) carries the id there and runs its part of the work so
/// too. With `None`, `work` runs as it is.
pub async fn serving<F: Future>(id: Option<Arc<str>>, work: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id, work).await,
        None => work.await,
    }
}

/// The id of the request whose work the current task does, if any.
pub fn request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// This machine's name, as logs, leases and the process registry show it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
