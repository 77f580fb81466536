//! `/admin/orders`: orders newest first, by state, found by email address
//! or order id; one order with its history, its key email's delivery and,
//! for an order that needs attention, the body as it was received.

use axum::{
    Router,
    extract::{Path, Query, State, rejection::PathRejection, rejection::QueryRejection},
    http::StatusCode,
    response::Html,
    routing::get,
};
use serde::Deserialize;
use serde_json::json;

use super::{Dashboard, PAGE, one_page, page, page::Problem, query, session::Session};
use crate::{intake::normalize::Source, orders};

/// The states an order can be in, as the filter offers them.
const STATES: [&str; 4] = ["fulfilled", "awaiting_stock", "needs_attention", "refunded"];

pub(super) fn routes() -> Router<Dashboard> {
    Router::new()
        .route("/admin/orders", get(list))
        .route("/admin/orders/{source}/{order_id}", get(show))
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default)]
    state: String,
    /// An email address (it has an `@`) or an order id.
    #[serde(default)]
    q: String,
    before: Option<i64>,
}

async fn list(
    session: Session,
    State(state): State<Dashboard>,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Result<Html<String>, Problem> {
    let filter = query(filter)?;
    if !filter.state.is_empty() && !STATES.contains(&filter.state.as_str()) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Unknown order state",
            format!(
                "{:?} is not an order state: {}.",
                filter.state,
                STATES.join(", ")
            ),
        ));
    }
    let q = filter.q.trim().to_string();
    let (email, order_id) = match q.as_str() {
        "" => (None, None),
        q if q.contains('@') => (Some(q.to_string()), None),
        q => (None, Some(q.to_string())),
    };
    let browse = orders::Browse {
        state: Some(filter.state.clone()).filter(|s| !s.is_empty()),
        email,
        order_id,
        before: filter.before,
    };
    let found = orders::browse(&state.db, &browse, PAGE + 1).await?;
    let (shown, older) = one_page(found, |row| row.id);
    page::render(
        "orders.html",
        json!({
            "csrf": session.csrf(),
            "nav": "orders",
            "orders": shown,
            "state": filter.state,
            "q": q,
            "states": STATES,
            "older": older,
            "first_page": filter.before.is_none(),
        }),
    )
}

async fn show(
    session: Session,
    State(state): State<Dashboard>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Html<String>, Problem> {
    let missing = || Problem::not_found("There is no such order.");
    let Path((source, order_id)) = path.map_err(|_| missing())?;
    let source = Source::parse(&source).ok_or_else(missing)?;
    let order = orders::find(&state.db, source, &order_id)
        .await?
        .ok_or_else(missing)?;
    page::render(
        "order.html",
        json!({
            "csrf": session.csrf(),
            "nav": "orders",
            "order": order,
        }),
    )
}
