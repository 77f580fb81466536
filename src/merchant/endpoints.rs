//! Registering merchant endpoints and looking after them: what
//! `allot endpoints …` and `/v1/admin/endpoints…` do. Each endpoint has
//! its own signing secret; a rotation keeps the previous one signing for
//! [`ROTATION_OVERLAP`] so receivers can switch without missing a message.

use std::time::Duration;

use serde::Serialize;

use super::{endpoint_key_prefix, parse_patterns, signing};
use crate::{
    clock::{as_optional_rfc3339, as_rfc3339},
    db::Db,
    insert_returning_id, jobs, on_db, on_tx,
};

/// How long the previous secret keeps signing after `rotate-secret`.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// What `add` is given, checked with [`NewEndpoint::parse`].
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub events: String,
    pub description: String,
    pub include_keys: bool,
}

impl NewEndpoint {
    /// `events`: `None` subscribes to everything.
    pub fn parse(
        url: &str,
        events: Option<&str>,
        description: Option<&str>,
        include_keys: bool,
    ) -> Result<Self, String> {
        let url = url.trim();
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("{url:?} is not an http(s) URL"));
        }
        if url.len() > 2000 {
            return Err("the URL must be at most 2000 characters".into());
        }
        let description = description.unwrap_or_default().trim().to_string();
        if description.chars().count() > 500 || description.chars().any(char::is_control) {
            return Err("the description must be one line of at most 500 characters".into());
        }
        Ok(Self {
            url: url.to_string(),
            events: parse_patterns(events.unwrap_or("*"))?,
            description,
            include_keys,
        })
    }
}

/// An endpoint as operators see it (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: i64,
    pub url: String,
    pub description: String,
    /// Comma-separated event types and patterns (`*`, `order.*`).
    pub events: String,
    #[sqlx(try_from = "i16")]
    #[schema(value_type = bool)]
    pub include_keys: Flag,
    #[sqlx(try_from = "i16")]
    #[schema(value_type = bool)]
    pub enabled: Flag,
    pub disabled_reason: Option<String>,
    #[serde(serialize_with = "as_optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub failing_since: Option<i64>,
    #[serde(serialize_with = "as_optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success_at: Option<i64>,
    #[serde(serialize_with = "as_optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_failure_at: Option<i64>,
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A 0/1 column as a boolean (the same type on every backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Flag(pub bool);

impl From<i16> for Flag {
    fn from(value: i16) -> Self {
        Self(value != 0)
    }
}

const COLUMNS: &str = "id, url, description, events, include_keys, enabled, disabled_reason,
        failing_since, last_success_at, last_failure_at, created_at";

/// Registers an endpoint; its id and new signing secret.
pub async fn add(db: &Db, endpoint: &NewEndpoint, now: i64) -> Result<(i64, String), sqlx::Error> {
    let secret = signing::new_secret();
    let mut tx = db.begin().await?;
    let id = insert_returning_id!(
        &mut tx,
        "insert into endpoints (url, description, events, secret, include_keys, enabled, created_at, updated_at)
         values (?, ?, ?, ?, ?, 1, ?, ?)",
        [
            endpoint.url.as_str(),
            endpoint.description.as_str(),
            endpoint.events.as_str(),
            secret.as_str(),
            i16::from(endpoint.include_keys),
            now,
            now
        ]
    )?;
    tx.commit().await?;
    Ok((id, secret))
}

pub async fn list(db: &Db) -> Result<Vec<Endpoint>, sqlx::Error> {
    let select = format!("select {COLUMNS} from endpoints order by id");
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(select)).fetch_all(pool).await
    })
}

pub async fn find(db: &Db, id: i64) -> Result<Option<Endpoint>, sqlx::Error> {
    let select = format!("select {COLUMNS} from endpoints where id = ?");
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(select))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}

/// The secrets that sign for endpoint `id` at `now`: the current one, and
/// the previous one during a rotation.
pub(super) async fn signing_secrets(
    db: &Db,
    id: i64,
    now: i64,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    let row: Option<(String, Option<String>, Option<i64>)> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select secret, previous_secret, previous_until from endpoints where id = ?",
        ))
        .bind(id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|(secret, previous, until)| {
        let mut secrets = vec![secret];
        if let (Some(previous), Some(until)) = (previous, until)
            && until > now
        {
            secrets.push(previous);
        }
        secrets
    }))
}

/// The current secret of endpoint `id` (`allot endpoints secret`).
pub async fn secret(db: &Db, id: i64) -> Result<Option<String>, sqlx::Error> {
    Ok(signing_secrets(db, id, 0).await?.map(|mut s| s.remove(0)))
}

/// Enables or disables endpoint `id`; `false` if there is none. Enabling
/// forgets the failure streak, so the endpoint gets its full period again.
pub async fn set_enabled(
    db: &Db,
    id: i64,
    enabled: bool,
    reason: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = on_db!(db, write, |pool, sql| {
        sqlx::query(sql("update endpoints set enabled = ?, disabled_reason = ?,
                    failing_since = case when ? = 1 then null else failing_since end,
                    updated_at = ?
              where id = ?"))
        .bind(i16::from(enabled))
        .bind(if enabled { None } else { reason })
        .bind(i16::from(enabled))
        .bind(now)
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(done == 1)
}

/// A new secret for endpoint `id`; the old one keeps signing (as a second
/// signature) for [`ROTATION_OVERLAP`]. `None` if there is no such endpoint.
pub async fn rotate_secret(db: &Db, id: i64, now: i64) -> Result<Option<String>, sqlx::Error> {
    let secret = signing::new_secret();
    let until = now + ROTATION_OVERLAP.as_millis() as i64;
    let done = on_db!(db, write, |pool, sql| {
        sqlx::query(sql(
            "update endpoints set previous_secret = secret, previous_until = ?, secret = ?,
                    updated_at = ?
              where id = ?",
        ))
        .bind(until)
        .bind(secret.as_str())
        .bind(now)
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok((done == 1).then_some(secret))
}

/// Removes endpoint `id` with its attempt log; deliveries still queued for
/// it end without sending. `false` if there is none.
pub async fn remove(db: &Db, id: i64) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let removed = on_tx!(&mut tx, |conn, sql| {
        sqlx::query(sql("delete from endpoints where id = ?"))
            .bind(id)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })?;
    on_tx!(&mut tx, |conn, sql| {
        sqlx::query(sql("delete from endpoint_attempts where endpoint_id = ?"))
            .bind(id)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })?;
    tx.commit().await?;
    Ok(removed == 1)
}

/// Puts the dead deliveries of endpoint `id` back in the queue (after the
/// receiver is fixed); how many.
pub async fn redrive(db: &Db, id: i64, max_attempts: i32) -> Result<u64, sqlx::Error> {
    jobs::retry_dead_with_prefix(db, &endpoint_key_prefix(id), max_attempts).await
}

/// One delivery attempt, as `allot endpoints attempts` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = EndpointAttempt)]
pub struct AttemptRecord {
    pub event_id: i64,
    pub event_type: String,
    pub attempt: i32,
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub status: Option<i32>,
    pub duration_ms: i64,
    pub outcome: String,
    pub response: String,
}

/// The latest attempts to endpoint `id`, newest first.
pub async fn attempts(db: &Db, id: i64, limit: i64) -> Result<Vec<AttemptRecord>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select a.event_id, coalesce(e.event_type, '') as event_type, a.attempt, a.at,
                    a.status, a.duration_ms, a.outcome, a.response
               from endpoint_attempts a left join merchant_events e on e.id = a.event_id
              where a.endpoint_id = ? order by a.id desc limit ?",
        ))
        .bind(id)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

/// Delivery attempts since `since` per endpoint and outcome
/// (`delivered`, `retry`, `dead`), read by the attempts' time index.
pub async fn outcomes_since(db: &Db, since: i64) -> Result<Vec<(i64, String, i64)>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select endpoint_id, outcome, count(*) from endpoint_attempts
              where at >= ? group by endpoint_id, outcome",
        ))
        .bind(since)
        .fetch_all(pool)
        .await
    })
}

/// Forgets attempt logs and events older than `before`, keeping every
/// event a delivery not done yet still needs; how many rows went.
pub async fn prune(db: &Db, before: i64, batch: i64) -> Result<u64, sqlx::Error> {
    let oldest_needed = jobs::oldest_unfinished(db, "merchant_webhook").await?;
    let events_before = oldest_needed.map_or(before, |oldest| oldest.min(before));
    let mut pruned = 0;
    for (table, column, before) in [
        ("endpoint_attempts", "at", before),
        ("merchant_events", "created_at", events_before),
    ] {
        let select = format!("select id from {table} where {column} < ? order by {column} limit ?");
        let ids: Vec<i64> = on_db!(db, read, |pool, sql| {
            sqlx::query_scalar(sql(select))
                .bind(before)
                .bind(batch)
                .fetch_all(pool)
                .await
        })?;
        if ids.is_empty() {
            continue;
        }
        // Integers read from the database: safe to format into the text.
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let delete = format!("delete from {table} where id in ({})", list.join(", "));
        pruned += on_db!(db, write, |pool, sql| {
            sqlx::query(sql(delete))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
    }
    Ok(pruned)
}
