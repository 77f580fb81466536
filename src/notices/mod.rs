//! Emails that belong to no order: the admin's dead-letter digest and
//! low-stock mail, and any templated email (`allot mail test`).
//!
//! Owns the [`Notice`] family of job kinds and what each says. Reads the
//! outbox (dead jobs) and sends through `mail`; it must not import `orders`
//! (order emails are `orders::notices`).
//!
//! Dead-letter alerts: a job that dies enqueues, in the same transaction, a
//! digest for the current alert window (`ALLOT_ALERT_INTERVAL`) keyed by that
//! window: a storm of failures is one email per window, not one per job. The
//! digest runs when its window closes and lists every job that died in it.
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
    /// Jobs that died in [from, to).
    #[serde(rename = "dead_letter_digest")]
    DeadLetterDigest { from: i64, to: i64 },
}

const DIGEST_KIND: &str = "dead_letter_digest";

impl Payload for Notice {
    const KINDS: &'static [&'static str] = &["email", "low_stock_alert", DIGEST_KIND];

    /// Admin alerts go before the queue of buyer emails.
    fn priority(&self) -> Priority {
        match self {
            Notice::Email { .. } => Priority::Normal,
            Notice::LowStock { .. } | Notice::DeadLetterDigest { .. } => Priority::Urgent,
        }
    }
}

/// What notices read when they are sent.
pub struct Context {
    pub db: Db,
    pub admin: Option<EmailAddress>,
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

/// The digest job to enqueue when a job of `kind` dies at `now`; `None` for
/// the digest itself.
pub fn digest_for(kind: &str, now: i64, interval: Duration, max_attempts: i32) -> Option<NewJob> {
    if kind == DIGEST_KIND {
        return None;
    }
    let (from, to) = window(now, interval);
    let notice = Notice::DeadLetterDigest { from, to };
    Some(
        NewJob::of(&notice, max_attempts)
            .until_done()
            .dedupe_key(format!("{DIGEST_KIND}:{from}"))
            .run_at(to),
    )
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
            Notice::DeadLetterDigest { from, to } => digest(cx, from, to).await,
        }
    }
}

async fn digest(cx: &Context, from: i64, to: i64) -> Result<Option<Letter>, JobError> {
    let dead = jobs::dead_between(&cx.db, from, to)
        .await
        .map_err(|e| JobError::retry(format!("reading dead jobs: {e}")))?;
    if dead.is_empty() {
        return Ok(None); // all of them were redriven meanwhile
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
        let a = digest_for("email", 120_001, minute, 3).unwrap();
        let b = digest_for("email", 179_999, minute, 3).unwrap();
        let c = digest_for("email", 180_000, minute, 3).unwrap();
        assert_eq!(a.dedupe_key, b.dedupe_key);
        assert_ne!(a.dedupe_key, c.dedupe_key);
        assert_eq!(a.run_at, 180_000);
        assert!(digest_for(DIGEST_KIND, 120_001, minute, 3).is_none());
    }

    #[test]
    fn payloads_keep_the_stored_shape() {
        let job = email_job("a@example.com", "test", json!({"address": "x"}), 3);
        assert_eq!(job.kind, "email");
        assert_eq!(
            job.payload,
            json!({"to": "a@example.com", "template": "test", "context": {"address": "x"}})
        );
        let digest = digest_for("email", 0, Duration::from_secs(60), 3).unwrap();
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
