//! `/admin/endpoints`: the merchant endpoints (`allot endpoints list`)
//! with how their deliveries went over the last day, and a button to
//! disable or enable each. Never a signing secret.

use std::collections::HashMap;

use axum::{
    Form,
    extract::{Path, State, rejection::FormRejection, rejection::PathRejection},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Dashboard, fields, page, page::Problem, session::Session};
use crate::{clock::now_ms, merchant::endpoints};

/// The window delivery success is counted over.
const DAY_MS: i64 = 86_400_000;

pub(super) fn routes() -> OpenApiRouter<Dashboard> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(set_enabled))
}

/// Merchant endpoints with their last day's delivery success.
#[utoipa::path(get, path = "/admin/endpoints", operation_id = "dashboardEndpoints", tag = "dashboard",
    security(("dashboard_session" = [])),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
async fn list(session: Session, State(state): State<Dashboard>) -> Result<Response, Problem> {
    let now = now_ms();
    let mut outcomes: HashMap<i64, (i64, i64)> = HashMap::new();
    for (id, outcome, n) in endpoints::outcomes_since(&state.db, now - DAY_MS).await? {
        let counted = outcomes.entry(id).or_default();
        if outcome == "delivered" {
            counted.0 += n;
        } else {
            counted.1 += n;
        }
    }
    let rows: Vec<Value> = endpoints::list(&state.db)
        .await?
        .into_iter()
        .map(|endpoint| {
            let (delivered, failed) = outcomes.get(&endpoint.id).copied().unwrap_or_default();
            let rate = (delivered + failed > 0)
                .then(|| (delivered as f64 * 1000.0 / (delivered + failed) as f64).round() / 10.0);
            json!({
                "endpoint": endpoint,
                "delivered": delivered,
                "failed": failed,
                "success_percent": rate,
            })
        })
        .collect();
    Ok(page::render(
        "endpoints.html",
        json!({ "csrf": session.csrf(), "nav": "endpoints", "endpoints": rows }),
    )?
    .into_response())
}

#[derive(Deserialize)]
struct Enabled {
    #[serde(default)]
    csrf: String,
    /// `yes` or `no`.
    #[serde(default)]
    enabled: String,
}

/// Disable or enable an endpoint.
#[utoipa::path(post, path = "/admin/endpoints/{id}/enabled", operation_id = "dashboardSetEndpointEnabled", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("id" = i64, Path, description = "The endpoint's id")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`enabled` (`yes` or `no`) and `csrf`"),
    responses((status = 303, description = "Done: to `/admin/endpoints` (or, not signed in, to `/admin/login`)"), (status = 404, description = "No such endpoint", content_type = "text/html", body = String), (status = 403, description = "The form's CSRF token is missing or wrong: nothing changed", content_type = "text/html", body = String)))]
async fn set_enabled(
    session: Session,
    State(state): State<Dashboard>,
    path: Result<Path<i64>, PathRejection>,
    form: Result<Form<Enabled>, FormRejection>,
) -> Result<Response, Problem> {
    let missing = || Problem::not_found("There is no such endpoint.");
    let Path(id) = path.map_err(|_| missing())?;
    let form = fields(form)?;
    session.check(&form.csrf)?;
    let enabled = form.enabled == "yes";
    let reason = "disabled on the dashboard";
    if !endpoints::set_enabled(&state.db, id, enabled, Some(reason), now_ms()).await? {
        return Err(missing());
    }
    tracing::info!(endpoint = id, enabled, "endpoint switched on the dashboard");
    Ok(Redirect::to("/admin/endpoints").into_response())
}
