//! Emails that belong to no order: the admin's dead-letter digest and
//! low-stock mail, and any templated email (`allot mail test`).
//!
//! Owns the [`Notice`] family of job kinds and what each says. Reads the
//! outbox (dead jobs) and sends through `mail`; it must not import `orders`
//! (order emails are `orders::notices`).
//!
//! Dead-letter alerts: a job that dies enqueues, in the same transaction, an
//! urgent alert and a digest for the current alert window
//! (`ALLOT_ALERT_INTERVAL`), both keyed by that window: the first death of a
//! window is told at once (like a sell-out), and a storm of failures is one
//! more email when the window closes, listing every other job that died in
//! it.
//! A digest never alerts about itself, so alerts cannot loop; instead it has
//! no attempt budget: through an outage it keeps trying (at least once per
//! window) and is sent once mail works again, so the admin still learns
//! what died while mail was down.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    clock::{rfc3339, window},
    db::Db,
    jobs::{self, JobError, NewJob, Payload, Priority},
    keys::IssuedKeys,
    mail::{Compose, Letter},
    text::EmailAddress,
};

/// The job kinds of this family; the tag is the `kind` column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum Notice {
    /// Template `template` rendered with `context`, to `to`.
    #[serde(rename = "email")]
    Email {
        to: String,
        template: String,
        #[serde(default)]
        context: Value,
    },
    /// A SKU's pool is under the threshold (one per SKU per check).
    #[serde(rename = "low_stock_alert")]
    LowStock {
        sku: String,
        available: i64,
        threshold: i64,
    },
    /// Jobs that died in [from, to), after the first.
    #[serde(rename = "dead_letter_digest")]
    DeadLetterDigest { from: i64, to: i64 },
    /// The first job that died in [from, to), at once.
    #[serde(rename = "dead_letter_alert")]
    DeadLetterAlert { from: i64, to: i64 },
}

const DIGEST_KIND: &str = "dead_letter_digest";
const ALERT_KIND: &str = "dead_letter_alert";

impl Payload for Notice {
    const KINDS: &'static [&'static str] = &["email", "low_stock_alert", DIGEST_KIND, ALERT_KIND];

    /// Admin alerts go before the queue of buyer emails.
    fn priority(&self) -> Priority {
        match self {
            Notice::Email { .. } => Priority::Normal,
            Notice::LowStock { .. }
            | Notice::DeadLetterDigest { .. }
            | Notice::DeadLetterAlert { .. } => Priority::Urgent,
        }
    }
}

/// What notices read when they are sent.
pub struct Context {
    pub db: Db,
    pub admin: Option<EmailAddress>,
    /// The keys of key emails, read together when several send at once.
    pub keys: IssuedKeys,
}

/// A job that renders `template` with `context` and mails it to `to`;
/// enqueue it in the transaction of the change it announces.
pub fn email_job(to: &str, template: &str, context: Value, max_attempts: i32) -> NewJob {
    let notice = Notice::Email {
        to: to.to_string(),
        template: template.to_string(),
        context,
    };
    NewJob::of(&notice, max_attempts)
}

/// One low-stock email for `sku` for the check that ran at `run_at`.
pub fn low_stock_job(
    sku: &str,
    available: i64,
    threshold: i64,
    run_at: i64,
    max_attempts: i32,
) -> NewJob {
    let notice = Notice::LowStock {
        sku: sku.to_string(),
        available,
        threshold,
    };
    NewJob::of(&notice, max_attempts).dedupe_key(format!(
        "low_stock_alert:{}:{run_at}",
        jobs::dedupe_part(sku)
    ))
}

/// The alerts to enqueue when a job of `kind` dies at `now`: the urgent
/// alert (a no-op after the first death of the window, by its dedupe key)
/// and the window's digest. None about the alerts themselves.
pub fn digest_for(kind: &str, now: i64, interval: Duration, max_attempts: i32) -> Vec<NewJob> {
    if kind == DIGEST_KIND || kind == ALERT_KIND {
        return Vec::new();
    }
    let (from, to) = window(now, interval);
    let urgent = NewJob::of(&Notice::DeadLetterAlert { from, to }, max_attempts)
        .until_done()
        .dedupe_key(format!("{ALERT_KIND}:{from}"));
    let digest = NewJob::of(&Notice::DeadLetterDigest { from, to }, max_attempts)
        .until_done()
        .dedupe_key(format!("{DIGEST_KIND}:{from}"))
        .run_at(to);
    vec![urgent, digest]
}

impl Compose for Notice {
    type Context = Context;

    async fn compose(self, cx: &Context) -> Result<Option<Letter>, JobError> {
        match self {
            Notice::Email {
                to,
                template,
                context,
            } => Ok(Some(Letter {
                to,
                template,
                context,
            })),
            Notice::LowStock {
                sku,
                available,
                threshold,
            } => Ok(admin_letter(
                cx,
                "low_stock",
                json!({"sku": sku, "available": available, "threshold": threshold}),
            )),
            Notice::DeadLetterDigest { from, to } => digest(cx, from, to, false).await,
            Notice::DeadLetterAlert { from, to } => digest(cx, from, to, true).await,
        }
    }
}

/// `first`: the urgent alert, about the first job that died in the
/// window; else the digest, about the others (the first was told at once).
async fn digest(cx: &Context, from: i64, to: i64, first: bool) -> Result<Option<Letter>, JobError> {
    let mut dead = jobs::dead_between(&cx.db, from, to)
        .await
        .map_err(|e| JobError::retry(format!("reading dead jobs: {e}")))?;
    if first {
        dead.truncate(1);
    } else if !dead.is_empty() {
        dead.remove(0);
    }
    if dead.is_empty() {
        return Ok(None); // redriven meanwhile, or nothing after the first
    }
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
        "urgent": first,
        "window_start": rfc3339(from),
        "window_end": rfc3339(to),
    });
    Ok(admin_letter(cx, "dead_letter_digest", context))
}

/// A letter to the admin, or `None` (logged) when no admin is configured.
pub fn admin_letter_to(
    admin: Option<&EmailAddress>,
    template: &str,
    context: Value,
) -> Option<Letter> {
    let Some(admin) = admin else {
        tracing::warn!(
            template,
            "an admin alert is due and ALLOT_ADMIN_EMAIL is not set; nobody is emailed"
        );
        return None;
    };
    Some(Letter {
        to: admin.as_str().to_string(),
        template: template.to_string(),
        context,
    })
}

fn admin_letter(cx: &Context, template: &str, context: Value) -> Option<Letter> {
    admin_letter_to(cx.admin.as_ref(), template, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_digest_per_window_and_none_about_digests() {
        let minute = Duration::from_secs(60);
        let a = digest_for("email", 120_001, minute, 3);
        let b = digest_for("email", 179_999, minute, 3);
        let c = digest_for("email", 180_000, minute, 3);
        assert_eq!(a[0].dedupe_key, b[0].dedupe_key);
        assert_eq!(a[1].dedupe_key, b[1].dedupe_key);
        assert_ne!(a[1].dedupe_key, c[1].dedupe_key);
        assert_eq!(a[0].run_at, 0, "the first death is told at once");
        assert_eq!(a[1].run_at, 180_000, "the others when the window closes");
        assert!(digest_for(DIGEST_KIND, 120_001, minute, 3).is_empty());
        assert!(digest_for(ALERT_KIND, 120_001, minute, 3).is_empty());
    }

    #[test]
    fn payloads_keep_the_stored_shape() {
        let job = email_job("a@example.com", "test", json!({"address": "x"}), 3);
        assert_eq!(job.kind, "email");
        assert_eq!(
            job.payload,
            json!({"to": "a@example.com", "template": "test", "context": {"address": "x"}})
        );
        let digest = digest_for("email", 0, Duration::from_secs(60), 3).remove(1);
        assert_eq!(digest.kind, DIGEST_KIND);
        assert_eq!(digest.payload, json!({"from": 0, "to": 60_000}));
    }

    #[test]
    fn long_skus_are_hashed_in_dedupe_keys() {
        let long = "x".repeat(255);
        let job = low_stock_job(&long, 1, 10, 1_700_000_000_000, 3);
        assert!(job.dedupe_key.unwrap().len() < 100);
        assert!(
            low_stock_job("course-101", 1, 10, 5, 3)
                .dedupe_key
                .unwrap()
                .contains("course-101")
        );
    }
}
