//! `/admin/orders`: orders newest first, by state, found by email address
//! or order id; one order with its history, its key email's delivery and,
//! for an order that needs attention, the body as it was received.

use axum::{
    extract::{Path, Query, State, rejection::PathRejection, rejection::QueryRejection},
    http::StatusCode,
    response::Html,
};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Dashboard, PAGE, one_page, page, page::Problem, query, session::Session};
use crate::{intake::normalize::Source, orders};

/// The states an order can be in, as the filter offers them.
const STATES: [&str; 4] = ["fulfilled", "awaiting_stock", "needs_attention", "refunded"];

pub(super) fn routes() -> OpenApiRouter<Dashboard> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
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

/// Orders, newest first, found by email or order id and filtered by state.
#[utoipa::path(get, path = "/admin/orders", operation_id = "dashboardOrders", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("q" = Option<String>, Query, description = "An email address or an order id"), ("state" = Option<String>, Query, description = "An order state"), ("before" = Option<i64>, Query, description = "The next page")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
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

/// One order: its history, its key email and the body received.
#[utoipa::path(get, path = "/admin/orders/{source}/{order_id}", operation_id = "dashboardOrder", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("source" = String, Path, description = "Where it came from"), ("order_id" = String, Path, description = "The shop's order id")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`"), (status = 404, description = "No such order", content_type = "text/html", body = String)))]
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
