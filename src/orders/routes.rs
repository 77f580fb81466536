//! The order routes:
//! - `POST /v1/webhooks/{source}?token=…[&sku=…]`: shop webhooks in;
//! - `GET /v1/orders/{source}/{order_id}`: an order's true state and
//!   history. Orders hold buyers' addresses, so the token is required here
//!   too.
//!
//! Intake checks run cheapest and most certain first: the token (nothing is
//! read or stored without it), the source, the body size, WooCommerce's
//! setup ping and signature. After that the answer is 200 whatever the
//! payload or the stock: only a failure of ours (the database) is a 5xx,
//! which the shop retries.

use std::sync::Arc;

use axum::{
    Json,
    body::Body,
    extract::{FromRef, Path, Query, State},
    http::{HeaderMap, StatusCode},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Fulfilment, OrderView, Receipt};
use crate::{
    clock::now_ms,
    config::{Secret, Settings},
    db::Db,
    http::{ApiError, ErrorBody, too_large},
    intake::{
        auth::{self, ExpectedToken, WebhookToken},
        normalize::Source,
    },
    keys::Sku,
    text::BoundedText,
};

/// Shared by the routes' handlers: axum hands each request its own copy of
/// the state, so the routes hold it behind one `Arc` rather than cloning
/// the fulfilment's settings (the service SKUs' map) at every request.
struct OrdersState {
    db: Db,
    fulfilment: Fulfilment,
    token: ExpectedToken,
    woocommerce_secret: Option<Secret>,
    max_body_bytes: usize,
}

impl FromRef<Arc<OrdersState>> for ExpectedToken {
    fn from_ref(state: &Arc<OrdersState>) -> Self {
        state.token.clone()
    }
}

pub fn router(db: Db, fulfilment: Fulfilment, settings: &Settings) -> OpenApiRouter {
    let state = OrdersState {
        db,
        fulfilment,
        token: ExpectedToken(settings.intake.webhook_token.clone().map(Arc::new)),
        woocommerce_secret: settings.intake.woocommerce_secret.clone(),
        max_body_bytes: settings.max_body_bytes,
    };
    OpenApiRouter::new()
        .routes(routes!(receive))
        .routes(routes!(show))
        .with_state(Arc::new(state))
}

/// The answer: a [`Receipt`], or `{"status": "ping"}`.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookAnswer)]
#[serde(untagged)]
enum Answer {
    Receipt(Receipt),
    Ping(Ping),
}

/// The answer to WooCommerce's setup ping.
#[derive(Serialize, ToSchema)]
struct Ping {
    status: PingStatus,
}

/// Always `ping`: what tells this answer from a receipt.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum PingStatus {
    Ping,
}

/// Take a shop's webhook delivery: each order in it is fulfilled (a key
/// vended and emailed), found a duplicate, kept waiting for stock, or set
/// aside for a person. After the checks below, the answer is 200 whatever
/// the payload or the stock; only a failure of ours is a 5xx, which the
/// shop retries.
#[utoipa::path(post, path = "/v1/webhooks/{source}", operation_id = "receiveShopWebhook", tag = "orders",
    security(("webhook_token_query" = []), ("webhook_token_header" = []), ("webhook_bearer" = [])),
    params(
        ("source" = String, Path, description = "`amelia`, `bookly`, `woocommerce` or `generic`"),
        ("sku" = Option<String>, Query, description = "The SKU for orders that name none (and no `ALLOT_SERVICE_SKUS` entry)"),
        ("X-WC-Webhook-Signature" = Option<String>, Header, description = "WooCommerce's signature, checked when `ALLOT_WOOCOMMERCE_SECRET` is set"),
    ),
    request_body(content = serde_json::Value, description = "The shop's payload as it sends it (see `tests/fixtures/webhooks`)", content_type = "application/json"),
    responses(
        (status = 200, description = "What happened to each order; `status` is the one most needing a person. WooCommerce's setup ping: `{\"status\": \"ping\"}`", body = Answer),
        (status = 400, description = "`invalid_sku` (the URL's)", body = ErrorBody),
        (status = 401, description = "`unauthorized` (token missing or wrong; nothing stored), `bad_signature`", body = ErrorBody),
        (status = 404, description = "`unknown_source`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`webhooks_disabled` (no `ALLOT_WEBHOOK_TOKEN`), `database_unavailable`, `database_busy`", body = ErrorBody),
    ))]
async fn receive(
    _: WebhookToken,
    State(state): State<Arc<OrdersState>>,
    Path(source): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Answer>, ApiError> {
    let source = Source::parse(&source)
        .filter(|s| s.is_shop())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_source",
                format!("unknown source {source:?}: use amelia, bookly, woocommerce or generic"),
            )
        })?;
    let sku = match query.iter().find(|(name, _)| name == "sku") {
        None => None,
        Some((_, sku)) => Some(Sku::parse(sku).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_sku",
                format!("?sku=: {e}"),
            )
        })?),
    };
    // The plumbing has already read the whole body within the size and
    // time limits (`http::read_body`); this only takes it out of `Body`.
    let body = axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| too_large())?;
    if source == Source::WooCommerce {
        if auth::is_woocommerce_ping(&body) {
            tracing::info!("WooCommerce webhook ping answered");
            return Ok(Json(Answer::Ping(Ping {
                status: PingStatus::Ping,
            })));
        }
        if let Some(secret) = &state.woocommerce_secret
            && !auth::woocommerce_signature_valid(secret, &headers, &body)
        {
            metrics::counter!("allot_webhook_rejected_total", "reason" => "signature").increment(1);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "X-WC-Webhook-Signature does not match the body and ALLOT_WOOCOMMERCE_SECRET",
            ));
        }
    }
    let receipt = state
        .fulfilment
        .receive(source, &body, sku.as_ref(), now_ms())
        .await?;
    // One line per delivery, in the request's span: its order ids lead to
    // its request id, and that to the order's batch and key email.
    let order_ids: Vec<&str> = receipt.orders.iter().map(|o| o.order_id.as_str()).collect();
    tracing::info!(
        source = source.as_str(),
        status = receipt.status.as_str(),
        order_ids = order_ids.join(","),
        "webhook delivery received"
    );
    Ok(Json(Answer::Receipt(receipt)))
}

/// An order's true state, its history and its key email's delivery. Never
/// the key.
#[utoipa::path(get, path = "/v1/orders/{source}/{order_id}", operation_id = "showOrder", tag = "orders",
    security(("webhook_token_query" = []), ("webhook_token_header" = []), ("webhook_bearer" = [])),
    params(
        ("source" = String, Path, description = "Where the order came from: `amelia`, `bookly`, `woocommerce`, `generic`, `stripe`, `payments`"),
        ("order_id" = String, Path, description = "The shop's order id"),
    ),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 503, description = "`webhooks_disabled`, `database_unavailable`", body = ErrorBody),
    ))]
async fn show(
    _: WebhookToken,
    State(state): State<Arc<OrdersState>>,
    Path((source, order_id)): Path<(String, String)>,
) -> Result<Json<OrderView>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "order_not_found",
            format!("no order {order_id:?} from {source:?}"),
        )
    };
    let parsed = Source::parse(&source).ok_or_else(not_found)?;
    // An id that intake would have refused (NUL, too long…) names no order,
    // and must not reach SQL, where PostgreSQL would fail on it.
    let order_id = BoundedText::identifier("order id", &order_id).map_err(|_| not_found())?;
    super::find(&state.db, parsed, order_id.as_str())
        .await?
        .map(Json)
        .ok_or_else(not_found)
}
