//! Dead-letter alerts. A job that dies enqueues, in the same transaction, a
//! digest job for the current alert window (`ALLOT_ALERT_INTERVAL`) keyed by
//! that window: a storm of failures is one email per window, not one per
//! job. The digest runs when its window closes and lists every job that died
//! in it. A digest that itself fails is logged and counted, never alerted
//! about, so alerts cannot loop.

use std::time::Duration;

use serde_json::json;

use super::{Job, NewJob, rfc3339, store};
use crate::{
    db::Db,
    mail::{Email, Mailer, SendError, templates},
};

pub const DIGEST_KIND: &str = "dead_letter_digest";

/// The digest job to enqueue when a job of `kind` dies at `now`; `None` for
/// the digest itself.
pub fn digest_for(kind: &str, now: i64, interval: Duration, max_attempts: i32) -> Option<NewJob> {
    if kind == DIGEST_KIND {
        return None;
    }
    let (start, end) = window(now, interval);
    Some(
        NewJob::new(DIGEST_KIND, json!({"from": start, "to": end}), max_attempts)
            .dedupe_key(format!("{DIGEST_KIND}:{start}"))
            .run_at(end),
    )
}

/// The alert window `now` falls in: [start, end), aligned to `interval`.
pub fn window(now: i64, interval: Duration) -> (i64, i64) {
    let width = (interval.as_millis() as i64).max(1);
    let start = now - now.rem_euclid(width);
    (start, start + width)
}

#[derive(serde::Deserialize)]
struct Window {
    from: i64,
    to: i64,
}

/// Sends the digest for the window in `payload` to `admin`.
pub(crate) async fn send_digest(
    db: &Db,
    mailer: &Mailer,
    from_address: &str,
    admin: Option<&str>,
    payload: &str,
    message_id: String,
) -> Result<(), super::worker::JobError> {
    use super::worker::JobError;
    let window: Window = serde_json::from_str(payload)
        .map_err(|e| JobError::Permanent(format!("bad digest payload: {e}")))?;
    let dead: Vec<Job> = store::dead_between(db, window.from, window.to)
        .await
        .map_err(|e| JobError::retry(format!("reading dead jobs: {e}")))?;
    if dead.is_empty() {
        return Ok(()); // all of them were redriven meanwhile
    }
    let Some(admin) = admin else {
        tracing::warn!(
            dead = dead.len(),
            "jobs died and ALLOT_ADMIN_EMAIL is not set; nobody is emailed"
        );
        return Ok(());
    };
    let jobs: Vec<_> = dead
        .iter()
        .map(|job| {
            json!({
                "id": job.id,
                "kind": job.kind,
                "attempts": job.attempts,
                "last_error": job.last_error.as_deref().unwrap_or("-"),
                "finished_at": job.finished_at.map(rfc3339).unwrap_or_default(),
            })
        })
        .collect();
    let context = json!({
        "jobs": jobs,
        "window_start": rfc3339(window.from),
        "window_end": rfc3339(window.to),
    });
    let rendered = templates::render("dead_letter_digest", &context)
        .map_err(|e| JobError::Permanent(format!("rendering the digest: {e}")))?;
    let email = Email {
        from: from_address.to_string(),
        to: admin.to_string(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        message_id,
    };
    mailer.send(&email).await.map_err(JobError::from)
}

impl From<SendError> for super::worker::JobError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Transient { error, retry_after } => Self::Retry { error, retry_after },
            SendError::Permanent(error) => Self::Permanent(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_digest_per_window_and_none_about_digests() {
        let minute = Duration::from_secs(60);
        let a = digest_for("email", 120_001, minute, 3).unwrap();
        let b = digest_for("email", 179_999, minute, 3).unwrap();
        let c = digest_for("email", 180_000, minute, 3).unwrap();
        assert_eq!(a.dedupe_key, b.dedupe_key);
        assert_ne!(a.dedupe_key, c.dedupe_key);
        assert_eq!(a.run_at, 180_000);
        assert!(digest_for(DIGEST_KIND, 120_001, minute, 3).is_none());
        assert_eq!(window(125_000, minute), (120_000, 180_000));
    }
}
