//! `/admin/endpoints`: the merchant endpoints (`allot endpoints list`)
//! with how their deliveries went over the last day, and a button to
//! disable or enable each. Never a signing secret.

use std::collections::HashMap;

use axum::{
    Form, Router,
    extract::{Path, State, rejection::FormRejection, rejection::PathRejection},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Dashboard, fields, page, page::Problem, session::Session};
use crate::{clock::now_ms, merchant::endpoints};

/// The window delivery success is counted over.
const DAY_MS: i64 = 86_400_000;

pub(super) fn routes() -> Router<Dashboard> {
    Router::new()
        .route("/admin/endpoints", get(list))
        .route("/admin/endpoints/{id}/enabled", post(set_enabled))
}

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
