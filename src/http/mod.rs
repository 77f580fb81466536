//! The HTTP server: binds its listener up front (port 0 in tests), serves the
//! capability routers, and shuts down gracefully when told.

mod error;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ApiJson, too_large};

use crate::{config::Settings, db::Db, jobs::Worker, orders::Fulfilment};

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub fulfilment: Fulfilment,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Worker,
    settings: Settings,
}

impl Application {
    /// Connects to the database, applies migrations and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::connect(&settings).await?;
        db.migrate().await?;
        let worker = Worker::new(db.clone(), &settings)?;
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("ALLOT_LISTEN: cannot listen on {}", settings.listen))?;
        let fulfilment = Fulfilment::new(db.clone(), &settings);
        Ok(Self {
            listener,
            state: AppState {
                db,
                settings: Arc::new(settings.clone()),
                fulfilment,
            },
            worker,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// Serves HTTP and runs the job worker until `shutdown` is cancelled,
    /// then lets in-flight requests and jobs finish for up to
    /// `ALLOT_SHUTDOWN_GRACE` before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let db = self.state.db.clone();
        let grace = self.settings.shutdown_grace;
        let scheduler = tokio::spawn(crate::scheduler::run(
            db.clone(),
            self.settings.clone(),
            self.state.fulfilment.clone(),
            shutdown.clone(),
        ));
        let app = router(self.state, self.settings.max_body_bytes);
        for warning in self.settings.warnings() {
            tracing::warn!("{warning}");
        }
        tracing::info!(%addr, backend = db.backend().name(), "listening");

        let worker = tokio::spawn(self.worker.run(shutdown.clone(), grace));
        let upkeep = tokio::spawn(crate::ops::metrics_upkeep(shutdown.clone()));
        let server = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = server => served.context("HTTP server failed")?,
            () = deadline => tracing::warn!(?grace, "in-flight requests did not finish within the shutdown grace period"),
        }
        upkeep.abort();
        scheduler.abort();
        if let Err(error) = worker.await {
            tracing::error!(%error, "worker task failed");
        }
        db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(crate::coupons::router())
        .merge(crate::intake::routes::router())
        .merge(crate::orders::routes::router())
        .merge(crate::ops::router())
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
        .with_state(state)
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
