//! `/admin/orders`: orders newest first, by state, found by email address
//! or order id; one order with its history, its key email's delivery and,
//! for an order that needs attention, the body as it was received and a
//! button that takes it in again once its cause is fixed.

use axum::{
    Form,
    extract::{
        Path, Query, State,
        rejection::{FormRejection, PathRejection, QueryRejection},
    },
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Dashboard, PAGE, fields, one_page, page, page::Problem, query, session::Session};
use crate::{clock::now_ms, intake::normalize::Source, keys::Sku, orders};

pub(super) fn routes() -> OpenApiRouter<Dashboard> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(retry_intake))
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
    let states: Vec<&str> = orders::OrderState::ALL.iter().map(|s| s.as_str()).collect();
    if !filter.state.is_empty() && filter.state.parse::<orders::OrderState>().is_err() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Unknown order state",
            format!(
                "{:?} is not an order state: {}.",
                filter.state,
                states.join(", ")
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
            "states": states,
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
    shown: Result<Query<Shown>, QueryRejection>,
) -> Result<Html<String>, Problem> {
    let (source, order_id) = order_path(path)?;
    let shown = query(shown)?;
    let order = orders::find(&state.db, source, &order_id)
        .await?
        .ok_or_else(missing)?;
    page::render(
        "order.html",
        json!({
            "csrf": session.csrf(),
            "nav": "orders",
            "order": order,
            "notice": notice(shown.notice.as_deref()),
        }),
    )
}

fn missing() -> Problem {
    Problem::not_found("There is no such order.")
}

fn order_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Source, String), Problem> {
    let Path((source, order_id)) = path.map_err(|_| missing())?;
    Ok((Source::parse(&source).ok_or_else(missing)?, order_id))
}

#[derive(Deserialize)]
struct Shown {
    notice: Option<String>,
}

/// What the order page says after the order was taken in again (the code
/// is the order's new status; anything else says nothing).
fn notice(code: Option<&str>) -> Option<&'static str> {
    use orders::Status;
    let code = code?;
    let status = Status::ALL.into_iter().find(|s| s.as_str() == code)?;
    Some(match status {
        Status::Fulfilled => "Taken in again: fulfilled, and the key email is queued.",
        Status::AwaitingStock => "Taken in again: it waits for keys of its SKU.",
        Status::NeedsAttention => {
            "Taken in again, and it still needs attention: see the problem below."
        }
        Status::Ignored => {
            "Taken in again: the shop says it is not paid or was cancelled, so nothing was sold."
        }
        Status::Refunded => "Taken in again: it was refunded meanwhile.",
        Status::Duplicate => "A delivery of the shop took it in meanwhile; nothing more was done.",
    })
}

#[derive(Deserialize)]
struct RetryIntake {
    #[serde(default)]
    csrf: String,
    /// As the webhook URL's `?sku=`: for an order that named none.
    #[serde(default)]
    sku: String,
}

/// Take an order that needs attention in again, from the body it was
/// received with, once its cause is fixed.
#[utoipa::path(post, path = "/admin/orders/{source}/{order_id}/retry", operation_id = "dashboardRetryIntake", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("source" = String, Path, description = "Where it came from"), ("order_id" = String, Path, description = "The shop's order id")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`, and `sku` (optional: the SKU for an order that names none, as the webhook URL's `?sku=`)"),
    responses((status = 303, description = "Taken in: to the order's page, which says how it went (or, not signed in, to `/admin/login`)"), (status = 400, description = "Not a SKU", content_type = "text/html", body = String), (status = 403, description = "The form's CSRF token is missing or wrong: nothing changed", content_type = "text/html", body = String), (status = 404, description = "No such order", content_type = "text/html", body = String), (status = 409, description = "The order does not need attention (any more): nothing was done", content_type = "text/html", body = String)))]
async fn retry_intake(
    session: Session,
    State(state): State<Dashboard>,
    path: Result<Path<(String, String)>, PathRejection>,
    form: Result<Form<RetryIntake>, FormRejection>,
) -> Result<Response, Problem> {
    let (source, order_id) = order_path(path)?;
    let form = fields(form)?;
    session.check(&form.csrf)?;
    let sku = match form.sku.trim() {
        "" => None,
        sku => Some(Sku::parse(sku).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "This SKU cannot be used",
                format!("{e}. Nothing was changed."),
            )
        })?),
    };
    let Some(receipt) = state
        .fulfilment
        .retry_intake(source, &order_id, sku.as_ref(), now_ms())
        .await?
    else {
        orders::find(&state.db, source, &order_id)
            .await?
            .ok_or_else(missing)?;
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "This order does not need attention",
            "Only an order that needs attention can be taken in again; nothing was done.",
        ));
    };
    let status = receipt
        .orders
        .iter()
        .find(|placed| placed.order_id == order_id)
        .map_or(receipt.status, |placed| placed.status);
    tracing::info!(
        source = source.as_str(),
        status = status.as_str(),
        "order taken in again from the dashboard"
    );
    let page = format!(
        "/admin/orders/{}/{}?notice={}",
        source.as_str(),
        page::path_segment(&order_id),
        status.as_str()
    );
    Ok(Redirect::to(&page).into_response())
}
