//! Delivering one event to one endpoint: sign, POST with a timeout, sort
//! the answer, record the attempt, and disable an endpoint that has failed
//! for longer than `ALLOT_ENDPOINT_DISABLE_AFTER` (the admin is mailed).
//!
//! Answers sort as for the mail providers: 2xx delivered; 408, 409, 429,
//! 5xx, timeouts and refused connections retry on the schedule (honouring
//! `Retry-After`); any other answer, including redirects (not followed, so
//! a URL cannot bounce requests elsewhere) and 410 Gone, is dead at once.
//! The `webhook-id` is the same on every attempt, so receivers can drop
//! repeats; the timestamp and signature are those of the attempt.

use std::time::{Duration, Instant};

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use super::{Delivery, endpoints, signing};
use crate::{
    clock::{now_ms, rfc3339},
    db::Db,
    jobs::{self, BoxFuture, Handler, JobError, Leased},
    keys, notices, on_db, on_tx,
    text::EmailAddress,
};

/// How deliveries behave (from settings).
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// One attempt, connect to last byte.
    pub timeout: Duration,
    /// An endpoint failing without a success for this long is disabled.
    pub disable_after: Duration,
    /// The attempt budget of alerts this enqueues.
    pub max_attempts: i32,
}

/// The handler of [`Delivery`] jobs.
pub struct Courier {
    db: Db,
    client: reqwest::Client,
    settings: DeliverySettings,
    admin: Option<EmailAddress>,
}

/// How much of an answer is kept in the attempt log.
const EXCERPT_BYTES: usize = 1024;

impl Courier {
    pub fn new(
        db: Db,
        settings: DeliverySettings,
        admin: Option<EmailAddress>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("allot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            db,
            client,
            settings,
            admin,
        })
    }
}

impl Handler for Courier {
    fn kinds(&self) -> &'static [&'static str] {
        <Delivery as jobs::Payload>::KINDS
    }

    fn run<'a>(&'a self, job: &'a Leased) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.deliver(job))
    }
}

fn read(error: sqlx::Error) -> JobError {
    JobError::retry(format!("reading the database: {error}"))
}

/// What the endpoint said, or why it said nothing.
struct Answer {
    status: Option<u16>,
    excerpt: String,
    verdict: Result<(), JobError>,
}

impl Courier {
    async fn deliver(&self, job: &Leased) -> Result<(), JobError> {
        let Delivery::MerchantWebhook { endpoint, event } = jobs::decode(job)?;
        let now = now_ms();
        let Some(target) = endpoints::find(&self.db, endpoint).await.map_err(read)? else {
            tracing::info!(endpoint, event, "endpoint removed; delivery dropped");
            return Ok(());
        };
        if !target.enabled.0 {
            return Err(JobError::Permanent(format!(
                "endpoint {endpoint} is disabled; enable it, then `allot endpoints redrive {endpoint}`"
            )));
        }
        let secrets = endpoints::signing_secrets(&self.db, endpoint, now)
            .await
            .map_err(read)?
            .unwrap_or_default();
        let body = self.body(event, target.include_keys.0).await?;
        let id = format!("msg_{event}_{endpoint}");
        let timestamp = now / 1000;
        let signature: Vec<String> = secrets
            .iter()
            .filter_map(|secret| signing::key_of(secret))
            .map(|key| signing::sign(&key, &id, timestamp, body.as_bytes()))
            .collect();
        let started = Instant::now();
        let sent = self
            .client
            .post(&target.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature.join(" "))
            .body(body)
            .send()
            .await;
        let answer = answer(sent).await;
        let duration = started.elapsed();
        let last = job.attempt >= job.max_attempts;
        let outcome = match &answer.verdict {
            Ok(()) => "delivered",
            Err(JobError::Retry { .. }) if !last => "retry",
            Err(_) => "dead",
        };
        metrics::counter!("allot_merchant_deliveries_total", "outcome" => outcome).increment(1);
        metrics::histogram!("allot_merchant_delivery_duration_seconds")
            .record(duration.as_secs_f64());
        let attempt = Attempt {
            endpoint,
            event,
            job: job.id,
            number: job.attempt,
            at: now,
            status: answer.status,
            duration_ms: duration.as_millis() as i64,
            outcome,
            response: &answer.excerpt,
        };
        if let Err(error) = self
            .record(&attempt, answer.verdict.is_ok(), &target.url)
            .await
        {
            // The outcome itself is recorded with the job; only the log
            // line of this attempt is missing.
            tracing::warn!(endpoint, event, %error, "could not record a delivery attempt");
        }
        answer.verdict
    }

    /// `{"type", "timestamp", "data"}`, with the license key in `data` for
    /// endpoints that asked for it.
    async fn body(&self, event: i64, include_keys: bool) -> Result<String, JobError> {
        let stored: Option<(String, String, Option<i64>, i64)> =
            on_db!(&self.db, read, |pool, sql| {
                sqlx::query_as(sql("select event_type, payload, license_key_id, created_at
                       from merchant_events where id = ?"))
                .bind(event)
                .fetch_optional(pool)
                .await
            })
            .map_err(read)?;
        let Some((kind, payload, key_id, created_at)) = stored else {
            return Err(JobError::Permanent(format!(
                "event {event} is no longer kept"
            )));
        };
        let mut data: Value = serde_json::from_str(&payload)
            .map_err(|e| JobError::Permanent(format!("event {event} is not JSON: {e}")))?;
        if include_keys
            && let Some(key_id) = key_id
            && let Some(issued) = keys::issued(&self.db, key_id).await.map_err(read)?
            && let Some(object) = data.as_object_mut()
        {
            object.insert("license_key".into(), json!(issued.key.expose()));
        }
        Ok(json!({"type": kind, "timestamp": rfc3339(created_at), "data": data}).to_string())
    }
}

/// Sorts the endpoint's answer, keeping the start of its body.
async fn answer(sent: reqwest::Result<reqwest::Response>) -> Answer {
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            let why = if error.is_timeout() {
                "timed out".to_string()
            } else if error.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            };
            return Answer {
                status: None,
                excerpt: why.clone(),
                verdict: Err(JobError::retry(why)),
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(EXCERPT_BYTES);
    let excerpt: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let error = format!("endpoint answered {status}: {}", excerpt.trim());
    let verdict = if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
        )
    {
        Err(JobError::Retry { error, retry_after })
    } else if status.is_redirection() {
        Err(JobError::Permanent(format!(
            "endpoint answered {status}: redirects are not followed; register the final URL"
        )))
    } else {
        Err(JobError::Permanent(error))
    };
    // The log keeps what a person needs: the answer's start, or the error
    // (which names the status).
    let excerpt = match &verdict {
        Ok(()) => excerpt,
        Err(JobError::Retry { error, .. } | JobError::Permanent(error)) => error.clone(),
    };
    Answer {
        status: Some(status.as_u16()),
        excerpt,
        verdict,
    }
}

struct Attempt<'a> {
    endpoint: i64,
    event: i64,
    job: i64,
    number: i32,
    at: i64,
    status: Option<u16>,
    duration_ms: i64,
    outcome: &'a str,
    response: &'a str,
}

impl Courier {
    /// The attempt's row and the endpoint's health, in one transaction; an
    /// endpoint failing for too long is disabled and the admin told.
    async fn record(&self, a: &Attempt<'_>, delivered: bool, url: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        on_tx!(&mut tx, |conn, sql| {
            sqlx::query(sql(
                "insert into endpoint_attempts
                    (endpoint_id, event_id, job_id, attempt, at, status, duration_ms, outcome, response)
                 values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(a.endpoint)
            .bind(a.event)
            .bind(a.job)
            .bind(a.number)
            .bind(a.at)
            .bind(a.status.map(i32::from))
            .bind(a.duration_ms)
            .bind(a.outcome)
            .bind(a.response)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        if delivered {
            on_tx!(&mut tx, |conn, sql| {
                sqlx::query(sql(
                    "update endpoints set failing_since = null, last_success_at = ? where id = ?",
                ))
                .bind(a.at)
                .bind(a.endpoint)
                .execute(conn)
                .await
                .map(|done| done.rows_affected())
            })?;
            return tx.commit().await;
        }
        let cutoff = a.at - self.settings.disable_after.as_millis() as i64;
        let reason = format!(
            "failing since before {}; last attempt: {}",
            rfc3339(cutoff),
            a.response.chars().take(200).collect::<String>()
        );
        on_tx!(&mut tx, |conn, sql| {
            sqlx::query(sql(
                "update endpoints set failing_since = coalesce(failing_since, ?), last_failure_at = ?
                  where id = ?",
            ))
            .bind(a.at)
            .bind(a.at)
            .bind(a.endpoint)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        let disabled = on_tx!(&mut tx, |conn, sql| {
            sqlx::query(sql(
                "update endpoints set enabled = 0, disabled_reason = ?, updated_at = ?
                  where id = ? and enabled = 1 and failing_since <= ?",
            ))
            .bind(&reason)
            .bind(a.at)
            .bind(a.endpoint)
            .bind(cutoff)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })? == 1;
        if disabled {
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            tracing::warn!(endpoint = a.endpoint, %host, "endpoint disabled: it kept failing");
            metrics::counter!("allot_endpoints_disabled_total").increment(1);
            match &self.admin {
                Some(admin) => {
                    let context = json!({
                        "endpoint": a.endpoint,
                        "host": host,
                        "reason": reason,
                        "disable_after": humantime::format_duration(self.settings.disable_after).to_string(),
                    });
                    let job = notices::email_job(
                        admin.as_str(),
                        "endpoint_disabled",
                        context,
                        self.settings.max_attempts,
                    )
                    .dedupe_key(format!("endpoint_disabled:{}:{}", a.endpoint, a.at));
                    jobs::enqueue(&mut tx, &job, a.at).await?;
                }
                None => tracing::warn!(
                    "ALLOT_ADMIN_EMAIL is not set: nobody is told that an endpoint was disabled"
                ),
            }
        }
        tx.commit().await
    }
}
