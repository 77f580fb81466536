//! `GET /v1/orders/{source}/{order_id}`: an order's true state and history,
//! including whether the buyer's email went out. Orders hold buyers'
//! addresses, so the webhook token is required here too.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};

use super::OrderView;
use crate::{
    http::{ApiError, AppState},
    intake::{auth, normalize::Source},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/orders/{source}/{order_id}", get(show))
}

async fn show(
    State(state): State<AppState>,
    Path((source, order_id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Json<OrderView>, ApiError> {
    auth::require_token(
        state.settings.intake.webhook_token.as_ref(),
        &query,
        &headers,
    )?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "order_not_found",
            format!("no order {order_id:?} from {source:?}"),
        )
    };
    let parsed = Source::parse(&source).ok_or_else(not_found)?;
    super::find(&state.db, parsed, &order_id)
        .await
        .map_err(ApiError::from_database)?
        .map(Json)
        .ok_or_else(not_found)
}
