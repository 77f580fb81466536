//! `GET /v1/stats`: orders, stock, the queue and deliveries, computed from
//! the database on every request (never from in-process counters, which
//! drift between processes and reset on restart), and safe on an empty
//! database: every rate and percentile is a number or `null`, never NaN or
//! a division by zero.
//!
//! Reads `orders`, `keys` and the outbox's roll-up (`jobs::rollup`), which
//! keeps the answer fast with millions of jobs: done jobs are never
//! counted by scanning `jobs`. Owns no table; `app` serves it, and the
//! dashboard shows it.

use std::{collections::BTreeMap, time::Duration};

use axum::{Json, extract::State};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    clock::{now_ms, rfc3339},
    db::Db,
    http::{AdminSecret, AdminToken, ApiError, ErrorBody},
    jobs::{self, AttemptOutcome, JobState, rollup},
    keys,
    orders::{self, OrderState},
};

/// The windows deliveries are reported over.
pub const WINDOWS: [(&str, Duration); 3] = [
    ("5m", Duration::from_secs(300)),
    ("1h", Duration::from_secs(3600)),
    ("1d", Duration::from_secs(86_400)),
];

#[derive(Clone)]
struct StatsState {
    db: Db,
    admin: AdminSecret,
}

impl axum::extract::FromRef<StatsState> for AdminSecret {
    fn from_ref(state: &StatsState) -> Self {
        state.admin.clone()
    }
}

pub fn router(db: Db, admin: AdminSecret) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(show))
        .with_state(StatsState { db, admin })
}

/// Orders, stock, the queue and deliveries over the last 5 minutes, hour
/// and day, computed from the database.
#[utoipa::path(get, path = "/v1/stats", operation_id = "showStats", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The figures", body = Stats),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 503, description = "`admin_disabled` (no `ALLOT_ADMIN_TOKEN`), `database_unavailable`", body = ErrorBody),
    ))]
async fn show(_: AdminToken, State(state): State<StatsState>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(figures(&state.db, now_ms()).await?))
}

/// What `/v1/stats` answers (the API tests check real answers against
/// its schema).
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// RFC 3339.
    generated_at: String,
    orders: OrderStats,
    /// Keys per SKU.
    keys: Vec<keys::Stock>,
    jobs: JobStats,
    /// `5m`, `1h` and `1d`.
    windows: BTreeMap<String, Window>,
}

#[derive(Debug, Serialize, ToSchema)]
struct OrderStats {
    /// Every state (`fulfilled`, `awaiting_stock`, `needs_attention`,
    /// `refunded`, …) with its count, zeros included.
    by_state: BTreeMap<String, i64>,
    total: i64,
    /// Fulfilled over all orders not refunded; `null` with no orders.
    fulfilment_rate: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct JobStats {
    /// `queued`, `running` and `dead`.
    by_state: BTreeMap<String, i64>,
    /// Per job kind, unfinished jobs by state.
    by_kind: BTreeMap<String, BTreeMap<String, i64>>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Window {
    deliveries: Deliveries,
    /// `null` with no deliveries.
    success_rate: Option<f64>,
    /// Enqueue to done; `null` with no deliveries.
    latency_ms: Percentiles,
    throughput_per_s: f64,
}

#[derive(Debug, Serialize, ToSchema)]
struct Deliveries {
    succeeded: i64,
    failed: i64,
    by_kind: BTreeMap<String, KindDeliveries>,
}

#[derive(Debug, Serialize, ToSchema)]
struct KindDeliveries {
    succeeded: i64,
    failed: i64,
}

#[derive(Debug, Serialize, ToSchema)]
struct Percentiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// `a / b`, or `null` when `b` is zero.
fn ratio(a: i64, b: i64) -> Option<f64> {
    (b != 0).then(|| a as f64 / b as f64)
}

/// Everything `/v1/stats` answers, as of `now`, as JSON (the dashboard's
/// overview reads it so).
pub async fn compute(db: &Db, now: i64) -> Result<Value, sqlx::Error> {
    let stats = figures(db, now).await?;
    // Cannot fail: every map is keyed by text, and a float that is not
    // finite becomes null.
    Ok(serde_json::to_value(stats).unwrap_or_default())
}

/// Everything `/v1/stats` answers, as of `now`.
pub async fn figures(db: &Db, now: i64) -> Result<Stats, sqlx::Error> {
    let mut by_state: BTreeMap<String, i64> =
        OrderState::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    for (state, n) in orders::count_by_state(db).await? {
        by_state.insert(state, n);
    }
    let total: i64 = by_state.values().sum();
    let fulfilled = by_state[OrderState::Fulfilled.as_str()];
    // Refunded orders were served or taken back: they are not pending.
    let served_or_pending = total - by_state[OrderState::Refunded.as_str()];

    let stock = keys::stock(db).await?;

    let mut jobs_by_state: BTreeMap<&str, i64> =
        [JobState::Queued, JobState::Running, JobState::Dead]
            .into_iter()
            .map(|state| (state.as_str(), 0))
            .collect();
    let mut jobs_by_kind: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (state, kind, n) in jobs::unfinished_by_kind(db).await? {
        if let Some(count) = jobs_by_state.get_mut(state.as_str()) {
            *count += n;
        }
        *jobs_by_kind
            .entry(kind)
            .or_default()
            .entry(state.to_string())
            .or_default() += n;
    }

    let progress = rollup::progress(db).await?;
    let mut windows = BTreeMap::new();
    for (name, width) in WINDOWS {
        windows.insert(name.to_string(), window(db, now, width, progress).await?);
    }
    Ok(Stats {
        generated_at: rfc3339(now),
        orders: OrderStats {
            by_state,
            total,
            fulfilment_rate: ratio(fulfilled, served_or_pending),
        },
        keys: stock,
        jobs: JobStats {
            by_state: jobs_by_state
                .into_iter()
                .map(|(state, n)| (state.to_string(), n))
                .collect(),
            by_kind: jobs_by_kind,
        },
        windows,
    })
}

/// Deliveries that finished in the last `width`: how many succeeded and
/// failed (per kind too), latency percentiles (enqueue to done) and
/// throughput.
async fn window(
    db: &Db,
    now: i64,
    width: Duration,
    progress: rollup::Progress,
) -> Result<Window, sqlx::Error> {
    let finished = rollup::finished_since(db, now - width.as_millis() as i64, progress).await?;
    let (mut succeeded, mut failed) = (0i64, 0i64);
    let mut latency: Vec<(i32, i64)> = Vec::new();
    let mut by_kind: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for row in &finished {
        let entry = by_kind.entry(row.kind.clone()).or_default();
        if row.outcome == AttemptOutcome::Done {
            succeeded += row.count;
            entry.0 += row.count;
            latency.push((row.bucket, row.count));
        } else {
            failed += row.count;
            entry.1 += row.count;
        }
    }
    let by_kind = by_kind
        .into_iter()
        .map(|(kind, (succeeded, failed))| (kind, KindDeliveries { succeeded, failed }))
        .collect();
    let percentile = |q| rollup::quantile(&latency, q).map(|ms| (ms * 10.0).round() / 10.0);
    Ok(Window {
        deliveries: Deliveries {
            succeeded,
            failed,
            by_kind,
        },
        success_rate: ratio(succeeded, succeeded + failed),
        latency_ms: Percentiles {
            p50: percentile(0.50),
            p95: percentile(0.95),
            p99: percentile(0.99),
        },
        throughput_per_s: succeeded as f64 / width.as_secs_f64(),
    })
}
