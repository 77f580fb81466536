//! The admin hears when the database refuses requests: down, failing over,
//! out of disk, read-only.
//!
//! Owns the outage alarm. Every other alert goes through the outbox, which
//! lives in the database, so it cannot report that the database is gone:
//! this one is kept in memory and sent straight through the mail transport.
//! It watches the answers the HTTP plumbing marks [`DatabaseUnavailable`],
//! mails the admin once the first one is seen, and at most once per
//! `ALLOT_ALERT_INTERVAL` while the outage lasts. A send that fails (mail
//! may be down too) is tried again every 30 s (or interval, if shorter)
//! until it goes out. It must not touch the database.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use serde_json::json;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    clock::{now_ms, rfc3339},
    http::DatabaseUnavailable,
    mail::{Letter, Postman},
    text::EmailAddress,
};

/// Cheap to clone; one per process.
#[derive(Clone, Default)]
pub struct OutageAlarm {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<Outage>,
    wake: Notify,
}

/// What was refused since the last mail.
#[derive(Default)]
struct Outage {
    /// Epoch ms of the first refusal not yet reported.
    since: Option<i64>,
    refused: u64,
    cause: String,
}

impl OutageAlarm {
    /// A request was refused because of the database; never blocks.
    pub fn report(&self, cause: &str) {
        {
            let mut outage = self.inner.state.lock().expect("outage state");
            outage.since.get_or_insert_with(now_ms);
            outage.refused += 1;
            cause.clone_into(&mut outage.cause);
        }
        metrics::counter!("allot_database_unavailable_total").increment(1);
        self.inner.wake.notify_one();
    }

    /// Mails `admin` about refusals until `shutdown`; without an admin the
    /// refusals are only logged (each one is, where it happens).
    pub async fn run(
        self,
        postman: Arc<Postman>,
        admin: Option<EmailAddress>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let Some(admin) = admin else {
            // Nothing to send; a loop ends only with the process.
            shutdown.cancelled().await;
            return;
        };
        let mut quiet_until: Option<Instant> = None;
        loop {
            if !self.pending() {
                tokio::select! {
                    () = self.inner.wake.notified() => {}
                    () = shutdown.cancelled() => return,
                }
            }
            if let Some(until) = quiet_until {
                // Collect what else is refused until the interval is over.
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            let Some((since, refused, cause)) = self.take() else {
                continue;
            };
            let letter = Letter {
                to: admin.as_str().to_string(),
                template: "database_unavailable".into(),
                context: json!({"since": rfc3339(since), "refused": refused, "cause": cause}),
            };
            // One id per episode, so a transport that took a mail it then
            // failed to confirm does not show it twice.
            let message_id = format!("allot.outage-{since}@{}", postman.from_domain());
            match postman.send(letter, message_id).await {
                Ok(()) => {
                    tracing::warn!(refused, "the admin was told the database refuses requests");
                    quiet_until = Some(Instant::now() + interval);
                }
                Err(error) => {
                    tracing::error!(%error, "cannot mail the admin about the database outage");
                    self.put_back(since, refused, &cause);
                    quiet_until = Some(Instant::now() + interval.min(Duration::from_secs(30)));
                }
            }
        }
    }

    fn pending(&self) -> bool {
        self.inner
            .state
            .lock()
            .expect("outage state")
            .since
            .is_some()
    }

    fn take(&self) -> Option<(i64, u64, String)> {
        let mut outage = self.inner.state.lock().expect("outage state");
        let since = outage.since.take()?;
        let refused = std::mem::take(&mut outage.refused);
        Some((since, refused, std::mem::take(&mut outage.cause)))
    }

    /// An unsent report goes back, merged with what came meanwhile.
    fn put_back(&self, since: i64, refused: u64, cause: &str) {
        let mut outage = self.inner.state.lock().expect("outage state");
        outage.since = Some(outage.since.map_or(since, |later| later.min(since)));
        outage.refused += refused;
        if outage.cause.is_empty() {
            cause.clone_into(&mut outage.cause);
        }
    }
}

/// Middleware: reports every answer the plumbing marked as a database
/// outage.
pub async fn watch(State(alarm): State<OutageAlarm>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(DatabaseUnavailable(cause)) = response.extensions().get() {
        alarm.report(cause);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_add_up_until_taken_and_an_unsent_report_is_kept() {
        let alarm = OutageAlarm::default();
        assert!(alarm.take().is_none());
        alarm.report("disk full");
        alarm.report("database or disk is full");
        let (since, refused, cause) = alarm.take().unwrap();
        assert_eq!((refused, cause.as_str()), (2, "database or disk is full"));
        assert!(alarm.take().is_none(), "reported once");

        alarm.put_back(since, refused, "database or disk is full");
        alarm.report("connection reset");
        let (again, refused, _) = alarm.take().unwrap();
        assert_eq!((again, refused), (since, 3), "the episode keeps its start");
    }
}
