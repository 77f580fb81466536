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

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRef, Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{Fulfilment, OrderView, Receipt};
use crate::{
    clock::now_ms,
    config::{Secret, Settings},
    db::Db,
    http::{ApiError, too_large},
    intake::{
        auth::{self, ExpectedToken, WebhookToken},
        normalize::Source,
    },
    keys::Sku,
    text::BoundedText,
};

#[derive(Clone)]
struct OrdersState {
    db: Db,
    fulfilment: Fulfilment,
    token: ExpectedToken,
    woocommerce_secret: Option<Secret>,
    max_body_bytes: usize,
}

impl FromRef<OrdersState> for ExpectedToken {
    fn from_ref(state: &OrdersState) -> Self {
        state.token.clone()
    }
}

pub fn router(db: Db, fulfilment: Fulfilment, settings: &Settings) -> Router {
    let state = OrdersState {
        db,
        fulfilment,
        token: ExpectedToken(settings.intake.webhook_token.clone()),
        woocommerce_secret: settings.intake.woocommerce_secret.clone(),
        max_body_bytes: settings.max_body_bytes,
    };
    Router::new()
        .route("/v1/webhooks/{source}", post(receive))
        .route("/v1/orders/{source}/{order_id}", get(show))
        .with_state(state)
}

/// The answer: a [`Receipt`], or `{"status": "ping"}`.
enum Answer {
    Receipt(Receipt),
    Ping,
}

impl axum::response::IntoResponse for Answer {
    fn into_response(self) -> axum::response::Response {
        let body: Value = match self {
            Answer::Receipt(receipt) => json!(receipt),
            Answer::Ping => json!({"status": "ping"}),
        };
        (StatusCode::OK, Json(body)).into_response()
    }
}

async fn receive(
    _: WebhookToken,
    State(state): State<OrdersState>,
    Path(source): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
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
            return Ok(Answer::Ping);
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
    Ok(Answer::Receipt(receipt))
}

async fn show(
    _: WebhookToken,
    State(state): State<OrdersState>,
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
