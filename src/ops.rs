//! Operations endpoints: `/healthz` (the process answers), `/readyz` (the
//! database answers), `/metrics` (Prometheus text format), and the
//! process-wide metrics recorder they read. Owns no table and imports no
//! capability: readiness asks `db` and the process's background loops
//! only, so mail being down never makes the service "not ready".

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    background::{Health, Loops},
    db::Db,
    http::{ApiError, ErrorBody},
};

pub fn router(db: Db, loops: Loops) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(render_metrics))
        .with_state((db, loops))
}

/// The answer of `/healthz`.
#[derive(Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The answer of `/readyz` when ready.
#[derive(Serialize, ToSchema)]
struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// How each background loop of the process is doing, by name.
    loops: BTreeMap<&'static str, Health>,
}

/// The process answers (it does not ask the database).
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "The process answers", body = Alive)))]
async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Ready when the database answers and no background loop is down; the
/// answer shows how each loop is doing.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready, with how each background loop is doing", body = Ready),
        (status = 503, description = "`database_unavailable` or `background_loop_down` (`Retry-After`)", body = ErrorBody),
    ))]
async fn readyz(State((db, loops)): State<(Db, Loops)>) -> Result<impl IntoResponse, ApiError> {
    let down = loops.down();
    if !down.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "background_loop_down",
            format!(
                "a background loop crashed and is being started again: {}",
                down.join(", ")
            ),
        )
        .retry_after(5));
    }
    match db.ping().await {
        Ok(()) => Ok(Json(Ready {
            status: "ready",
            loops: loops.snapshot(),
        })),
        Err(error) => {
            tracing::warn!(%error, "readiness check: database not reachable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is not reachable",
            )
            .retry_after(5))
        }
    }
}

/// Every metric in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
        content_type = "text/plain; version=0.0.4")))]
async fn render_metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

/// Installs the recorder now: what the process records before anything
/// renders `/metrics` (the control state set at start) is kept, not lost.
pub fn install_metrics() {
    metrics_handle();
}

/// The process-wide Prometheus recorder, installed on first use. The
/// `metrics` macros write to one global recorder, so every `Application` in
/// a process (several in tests) shares it.
fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let latency_buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}

/// Histograms keep raw samples until upkeep folds them into buckets; without
/// this, memory grows with traffic between scrapes.
pub async fn metrics_upkeep(shutdown: CancellationToken) {
    let handle = metrics_handle();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            () = shutdown.cancelled() => return,
        }
    }
}
