//! `POST /v1/webhooks/{source}?token=…[&sku=…]`: shop webhooks in.
//!
//! Checks run cheapest and most certain first: the token (nothing is read
//! or stored without it), the source, the body size, WooCommerce's setup
//! ping and signature. After that the answer is 200 whatever the payload
//! or the stock: only a failure of ours (the database) is a 5xx, which
//! the shop retries.

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::{Value, json};

use super::{auth, normalize::Source};
use crate::{
    http::{ApiError, AppState},
    jobs::now_ms,
    keys::Sku,
    orders::Receipt,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/webhooks/{source}", post(receive))
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
    State(state): State<AppState>,
    Path(source): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
    let intake = &state.settings.intake;
    auth::require_token(intake.webhook_token.as_ref(), &query, &headers)?;
    let source = Source::parse(&source).ok_or_else(|| {
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
    // Bodies without a declared length are cut off here; declared ones
    // over the limit were refused before the handler ran.
    let body = axum::body::to_bytes(body, state.settings.max_body_bytes)
        .await
        .map_err(|_| crate::http::too_large())?;
    if source == Source::WooCommerce {
        if auth::is_woocommerce_ping(&body) {
            tracing::info!("WooCommerce webhook ping answered");
            return Ok(Answer::Ping);
        }
        if let Some(secret) = &intake.woocommerce_secret
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
        .await
        .map_err(ApiError::from_database)?;
    Ok(Answer::Receipt(receipt))
}
