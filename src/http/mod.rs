//! HTTP plumbing every capability's routes share: the error body
//! ([`ApiError`]), the JSON extractor ([`ApiJson`]), and the layers around
//! the whole router (body limits, request metrics, panics, fallbacks).
//!
//! Owns no route and imports no capability; `app` merges the capabilities'
//! routers and hands the result to [`with_plumbing`].

mod error;

use std::time::{Duration, Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ApiJson, too_large};

/// Wraps the merged routes: JSON 404/405, the body limit (413 before any
/// handler reads), request metrics, and a 500 in our format for a panic.
pub fn with_plumbing(routes: Router, max_body_bytes: usize) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            max_body_bytes,
            refuse_oversized,
        ))
        .layer(middleware::from_fn(record_request))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an internal error occurred",
            )
            .into_response()
        }))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept this method",
    )
}

/// Bodies up to this size are read and discarded before a 413 is sent.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses a body whose declared length is over the limit. A client still
/// writing when the server answers and closes sees a broken pipe instead of
/// the 413, so a moderately oversized body is drained first (bounded in size
/// and time); beyond that, the connection is simply closed.
async fn refuse_oversized(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => {
            if length <= DRAIN_LIMIT as u64 {
                let drain = axum::body::to_bytes(request.into_body(), DRAIN_LIMIT);
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
            }
            error::too_large().into_response()
        }
        _ => next.run(request).await,
    }
}

/// Counts requests and records latency by route template (never the raw
/// path, which would let clients create unbounded label values).
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("allot_http_requests_total", &labels).increment(1);
    metrics::histogram!("allot_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
