//! Merchant webhooks out: the shop's other systems (CRM, LMS, Slack bot,
//! accounting) told what happened, signed per Standard Webhooks.
//!
//! Owns the `endpoints`, `merchant_events` and `endpoint_attempts` tables.
//! Capabilities call [`emit`] (or [`subscribers`] then [`publish`], when
//! the event's data costs a read) inside the transaction of the change an event
//! announces (the outbox): the event row and one delivery job per
//! subscribed endpoint commit with the change or not at all. It imports the
//! outbox, the key bank (for endpoints that asked for keys) and `notices`;
//! it must not import `orders` or `payments`, which import it.
//!
//! - this file: the event types, subscriptions and [`emit`];
//! - `endpoints`: registering, listing, disabling, rotating secrets (SQL);
//! - `signing`: Standard Webhooks secrets and signatures;
//! - `deliver`: the job that POSTs one event to one endpoint, records the
//!   attempt and disables an endpoint that keeps failing;
//! - `routes`: `/v1/admin/endpoints…`, the same as `allot endpoints`.

mod deliver;
pub mod endpoints;
pub mod routes;
pub mod signing;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    db::Tx,
    insert_returning_id,
    jobs::{self, NewJob, Payload},
    on_tx,
};

pub use deliver::{Courier, DeliverySettings};
pub use endpoints::{Endpoint, NewEndpoint};

/// Every event a merchant can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "order.fulfilled",
    "order.awaiting_stock",
    "order.needs_attention",
    "order.refunded",
    "stock.low",
    "stock.sold_out",
    "key.revoked",
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
];

/// Whether a subscription (`*`, `order.*`, `order.fulfilled`) covers `event`.
pub fn subscribed(patterns: &str, event: &str) -> bool {
    patterns.split(',').map(str::trim).any(|pattern| {
        pattern == "*"
            || pattern == event
            || pattern
                .strip_suffix(".*")
                .is_some_and(|prefix| event.split_once('.').is_some_and(|(p, _)| p == prefix))
    })
}

/// Checks a `--events` list: known types and `group.*` patterns, or `*`.
/// The normalized list, comma-separated.
pub fn parse_patterns(list: &str) -> Result<String, String> {
    let patterns: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if patterns.is_empty() {
        return Err("name at least one event, or * for all".into());
    }
    for pattern in &patterns {
        let known = *pattern == "*"
            || EVENT_TYPES.contains(pattern)
            || pattern.strip_suffix(".*").is_some_and(|group| {
                EVENT_TYPES
                    .iter()
                    .any(|e| e.split_once('.').is_some_and(|(g, _)| g == group))
            });
        if !known {
            return Err(format!(
                "unknown event {pattern:?}: use {}, a group such as order.*, or *",
                EVENT_TYPES.join(", ")
            ));
        }
    }
    Ok(patterns.join(","))
}

/// An event to announce: its type, its `data`, and the key it concerns
/// (never copied into `data`; added at send time for endpoints that asked).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub data: Value,
    pub license_key_id: Option<i64>,
}

impl Event {
    pub fn new(kind: &'static str, data: Value) -> Self {
        debug_assert!(EVENT_TYPES.contains(&kind), "{kind} is not an event type");
        Self {
            kind,
            data,
            license_key_id: None,
        }
    }

    pub fn with_key(mut self, key_id: Option<i64>) -> Self {
        self.license_key_id = key_id;
        self
    }
}

/// The job kind that delivers one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum Delivery {
    #[serde(rename = "merchant_webhook")]
    MerchantWebhook { endpoint: i64, event: i64 },
}

impl Payload for Delivery {
    const KINDS: &'static [&'static str] = &["merchant_webhook"];
}

/// The dedupe key of the delivery of `event` to `endpoint`, and the prefix
/// shared by all of one endpoint's (redrive per endpoint).
fn delivery_key(endpoint: i64, event: i64) -> String {
    format!("{}{event}", endpoint_key_prefix(endpoint))
}

pub(crate) fn endpoint_key_prefix(endpoint: i64) -> String {
    format!("merchant_webhook:{endpoint}:")
}

/// The enabled endpoints subscribed to events of type `kind`: read in the
/// caller's transaction, so an event is fanned out to exactly the
/// endpoints registered when its change commits.
pub async fn subscribers(tx: &mut Tx, kind: &str) -> Result<Vec<i64>, sqlx::Error> {
    let enabled: Vec<(i64, String)> = on_tx!(tx, |conn, sql| {
        sqlx::query_as(sql("select id, events from endpoints where enabled = 1"))
            .fetch_all(conn)
            .await
    })?;
    Ok(enabled
        .into_iter()
        .filter(|(_, patterns)| subscribed(patterns, kind))
        .map(|(id, _)| id)
        .collect())
}

/// Writes `event` and one delivery job for each of `targets` (from
/// [`subscribers`]) inside the caller's transaction.
pub async fn publish(
    tx: &mut Tx,
    targets: &[i64],
    event: &Event,
    now: i64,
    max_attempts: i32,
) -> Result<(), sqlx::Error> {
    if targets.is_empty() {
        return Ok(());
    }
    let payload = event.data.to_string();
    let event_id = insert_returning_id!(
        &mut *tx,
        "insert into merchant_events (event_type, payload, license_key_id, created_at)
         values (?, ?, ?, ?)",
        [event.kind, payload.as_str(), event.license_key_id, now]
    )?;
    for endpoint in targets {
        let job = NewJob::of(
            &Delivery::MerchantWebhook {
                endpoint: *endpoint,
                event: event_id,
            },
            max_attempts,
        )
        .dedupe_key(delivery_key(*endpoint, event_id));
        jobs::enqueue(tx, &job, now).await?;
    }
    metrics::counter!("allot_merchant_events_total", "type" => event.kind).increment(1);
    Ok(())
}

/// [`subscribers`] then [`publish`]: announces `event` inside the caller's
/// transaction; nothing is written when no endpoint subscribed to it.
pub async fn emit(
    tx: &mut Tx,
    event: &Event,
    now: i64,
    max_attempts: i32,
) -> Result<(), sqlx::Error> {
    let targets = subscribers(tx, event.kind).await?;
    publish(tx, &targets, event, now, max_attempts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_types_groups_and_all() {
        assert!(subscribed("*", "order.fulfilled"));
        assert!(subscribed("order.*", "order.refunded"));
        assert!(!subscribed("order.*", "stock.low"));
        assert!(subscribed("stock.low,order.fulfilled", "order.fulfilled"));
        assert!(!subscribed("order.fulfilled", "order.fulfilled_x"));
        assert!(!subscribed("ord.*", "order.fulfilled"));
    }

    #[test]
    fn event_lists_are_checked() {
        assert_eq!(
            parse_patterns(" order.fulfilled , payment.*").unwrap(),
            "order.fulfilled,payment.*"
        );
        assert!(parse_patterns("order.shipped").is_err());
        assert!(parse_patterns("nope.*").is_err());
        assert!(parse_patterns(" , ").is_err());
    }
}
