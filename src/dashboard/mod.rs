//! The operator's window: `/admin`, server-rendered pages over what the
//! CLI and the admin API already do, behind `ALLOT_ADMIN_TOKEN` (see
//! `session`). Pages read with keyset pagination, never `OFFSET`, so they
//! stay quick with a million jobs; every change is a form post that
//! carries the session's CSRF token, and a destructive one asks first on
//! a page of its own (no script needed).
//!
//! Owns no table; nothing imports it but `app` (which also gives the key
//! import route its larger body limit, [`KEY_FILE_LIMIT`]).

mod endpoints;
mod jobs;
mod keys;
mod orders;
mod overview;
mod page;
mod processes;
mod session;

use axum::{
    Form,
    extract::{FromRef, Query, State, rejection::FormRejection, rejection::QueryRejection},
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use self::{page::Problem, session::Session};
use crate::{
    config::ControlSettings,
    db::Db,
    http::{AdminSecret, secret_matches},
    orders::Fulfilment,
};

/// What the pages need.
#[derive(Clone)]
struct Dashboard {
    db: Db,
    /// Serves the orders that waited for a SKU once its keys are imported.
    fulfilment: Fulfilment,
    /// How commands reach the processes.
    control: ControlSettings,
    admin: AdminSecret,
    /// `ALLOT_LOW_STOCK_THRESHOLD`: SKUs at or below it are highlighted.
    low_stock: i64,
    /// The attempt budget a retried dead job gets.
    max_attempts: i32,
}

impl FromRef<Dashboard> for AdminSecret {
    fn from_ref(state: &Dashboard) -> Self {
        state.admin.clone()
    }
}

pub use keys::{KEY_FILE_LIMIT, KEY_IMPORT_PATH};

pub fn router(
    db: Db,
    fulfilment: Fulfilment,
    control: &ControlSettings,
    low_stock: i64,
    max_attempts: i32,
) -> OpenApiRouter {
    let state = Dashboard {
        db,
        fulfilment,
        admin: AdminSecret(control.admin_token.clone()),
        control: control.clone(),
        low_stock,
        max_attempts,
    };
    OpenApiRouter::new()
        .routes(routes!(overview::show))
        .routes(routes!(to_overview))
        .routes(routes!(login_form, login))
        .routes(routes!(logout))
        .routes(routes!(stylesheet))
        .routes(routes!(import_script))
        .merge(orders::routes())
        .merge(keys::routes())
        .merge(processes::routes())
        .merge(endpoints::routes())
        .merge(jobs::routes())
        .layer(middleware::from_fn(page::secure_headers))
        .with_state(state)
}

/// A form's fields, or a page saying the post was not a form this
/// dashboard sends.
fn fields<T>(form: Result<Form<T>, FormRejection>) -> Result<T, Problem> {
    form.map(|Form(fields)| fields).map_err(|rejection| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "This form could not be read",
            format!("{rejection}. Nothing was changed."),
        )
    })
}

/// A page's query string, or a 400 page for one it never links to.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    query.map(|Query(fields)| fields).map_err(|rejection| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "This address could not be read",
            rejection.body_text(),
        )
    })
}

/// Rows per page of every list.
const PAGE: i64 = 50;

/// A list's page from a read of `PAGE + 1` rows: the rows to show, and the
/// id below which the "Older" link starts (none on the last page).
fn one_page<T>(mut rows: Vec<T>, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<i64>) {
    if rows.len() as i64 <= PAGE {
        return (rows, None);
    }
    rows.truncate(PAGE as usize);
    let older = rows.last().map(id);
    (rows, older)
}

/// A form that only carries the CSRF token.
#[derive(Deserialize)]
struct Confirmed {
    #[serde(default)]
    csrf: String,
}

/// `/admin/` is `/admin`.
#[utoipa::path(get, path = "/admin/", operation_id = "dashboardOverviewSlash", tag = "dashboard",
    responses((status = 308, description = "To `/admin`")))]
async fn to_overview() -> Redirect {
    Redirect::permanent("/admin")
}

/// The dashboard's stylesheet (compiled into the binary).
#[utoipa::path(get, path = "/admin/assets/allot.css", operation_id = "dashboardStylesheet", tag = "dashboard",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        page::STYLESHEET,
    )
        .into_response()
}

/// The key import form's upload progress (compiled into the binary).
#[utoipa::path(get, path = "/admin/assets/import.js", operation_id = "dashboardImportScript", tag = "dashboard",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
async fn import_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        page::IMPORT_SCRIPT,
    )
        .into_response()
}

/// The sign-in form.
#[utoipa::path(get, path = "/admin/login", operation_id = "dashboardLoginForm", tag = "dashboard",
    responses(
        (status = 200, description = "The form", content_type = "text/html", body = String),
        (status = 503, description = "No `ALLOT_ADMIN_TOKEN`: the dashboard is off", content_type = "text/html", body = String),
    ))]
async fn login_form(State(state): State<Dashboard>) -> Result<Response, Problem> {
    if state.admin.0.is_none() {
        return Err(Problem::disabled());
    }
    Ok(page::render("login.html", json!({}))?.into_response())
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    token: String,
}

/// Sign in with `ALLOT_ADMIN_TOKEN`: sets the session cookie (Secure,
/// HttpOnly, SameSite=Strict, 12 hours).
#[utoipa::path(post, path = "/admin/login", operation_id = "dashboardLogin", tag = "dashboard",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`token`"),
    responses(
        (status = 303, description = "Signed in: `Set-Cookie` and to `/admin`"),
        (status = 401, description = "Not the admin token: the form again", content_type = "text/html", body = String),
        (status = 503, description = "No `ALLOT_ADMIN_TOKEN`: the dashboard is off", content_type = "text/html", body = String),
    ))]
async fn login(
    State(state): State<Dashboard>,
    form: Result<Form<Login>, FormRejection>,
) -> Result<Response, Problem> {
    let Some(token) = state.admin.0 else {
        return Err(Problem::disabled());
    };
    let Login { token: presented } = fields(form)?;
    if !secret_matches(&token, Some(presented.trim())) {
        metrics::counter!("allot_admin_rejected_total").increment(1);
        let page = page::render(
            "login.html",
            json!({ "error": "That is not the admin token (ALLOT_ADMIN_TOKEN)." }),
        )?;
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let cookie = session::start(&token);
    Ok((
        [(header::SET_COOKIE, cookie.to_string())],
        Redirect::to("/admin"),
    )
        .into_response())
}

/// Sign out: the session cookie is cleared.
#[utoipa::path(post, path = "/admin/logout", operation_id = "dashboardLogout", tag = "dashboard",
    security(("dashboard_session" = [])),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`"),
    responses(
        (status = 303, description = "Signed out: to `/admin/login`"),
        (status = 403, description = "The form's CSRF token is missing or wrong", content_type = "text/html", body = String),
    ))]
async fn logout(
    session: Session,
    form: Result<Form<Confirmed>, FormRejection>,
) -> Result<Response, Problem> {
    session.check(&fields(form)?.csrf)?;
    Ok((
        [(header::SET_COOKIE, session::end().to_string())],
        Redirect::to("/admin/login"),
    )
        .into_response())
}
