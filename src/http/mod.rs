//! HTTP plumbing every capability's routes share: the error body
//! ([`ApiError`]), the JSON extractor ([`ApiJson`]), and the layers around
//! the whole router (request ids, body limits, request metrics, panics,
//! fallbacks).
//!
//! Owns no route and imports no capability; `app` merges the capabilities'
//! routers and hands the result to [`with_plumbing`].

mod admin_token;
mod error;
mod request_id;
mod serve;

use std::time::{Duration, Instant};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower_http::catch_panic::CatchPanicLayer;

pub use admin_token::{AdminSecret, AdminToken, secret_matches};
pub use error::{ApiError, ApiJson, DatabaseUnavailable, ErrorBody, too_large};
pub use serve::serve;

/// Wraps the merged routes: JSON 404/405, the body read in full and in time
/// before any handler runs (413, 408), request metrics, a 500 in our
/// format for a panic, and around all of it the request's id and span
/// (see `request_id`).
pub fn with_plumbing(routes: Router, limits: BodyLimits) -> Router {
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_bytes))
        .layer(middleware::from_fn_with_state(limits, read_body))
        .layer(middleware::from_fn(record_request))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an internal error occurred",
            )
            .into_response()
        }));
    request_id::follow_requests(routes)
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

/// What a client may send, and how slowly.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// Routes that take files (path, limit): not read here but by their
    /// handler, after it has checked who is sending (a file is larger than
    /// anyone should be able to make the server hold unasked); only a
    /// declared length over the limit is refused here.
    pub uploads: &'static [(&'static str, usize)],
    /// The whole body must arrive within this (`ALLOT_READ_TIMEOUT`).
    pub read_timeout: Duration,
}

/// Reads the whole body before any handler runs, so that a handler never
/// waits on a slow client while it holds a database connection or a lock.
///
/// A body whose declared length is over the limit is refused at once; a
/// client still writing when the server answers and closes sees a broken
/// pipe instead of the 413, so a moderately oversized body is drained first
/// (bounded in size and time). A chunked body is refused when it passes the
/// limit. A body that has not arrived within the read timeout (a client
/// trickling bytes to hold the connection) is a 408.
async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let upload = limits
        .uploads
        .iter()
        .find(|(path, _)| request.uri().path() == *path);
    if let Some((_, limit)) = upload {
        if declared.is_some_and(|length| length > *limit as u64) {
            return error::too_large().into_response();
        }
        return next.run(request).await;
    }
    let max_bytes = limits.max_bytes;
    if declared.is_some_and(|length| length > max_bytes as u64) {
        if declared.is_some_and(|length| length <= DRAIN_LIMIT as u64) {
            let drain = axum::body::to_bytes(request.into_body(), DRAIN_LIMIT);
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
        }
        return error::too_large().into_response();
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, max_bytes);
    let bytes = match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) if is_over_limit(&error) => return error::too_large().into_response(),
        Ok(Err(_)) => return error::broken_body().into_response(),
        Err(_) => {
            metrics::counter!("allot_http_slow_bodies_total").increment(1);
            return error::too_slow().into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn is_over_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
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
