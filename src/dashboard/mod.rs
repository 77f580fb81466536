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
    Form, Router,
    extract::{FromRef, Query, State, rejection::FormRejection, rejection::QueryRejection},
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;

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
) -> Router {
    let state = Dashboard {
        db,
        fulfilment,
        admin: AdminSecret(control.admin_token.clone()),
        control: control.clone(),
        low_stock,
        max_attempts,
    };
    Router::new()
        .route("/admin", get(overview::show))
        .route("/admin/", get(|| async { Redirect::permanent("/admin") }))
        .route("/admin/login", get(login_form).post(login))
        .route("/admin/logout", axum::routing::post(logout))
        .route("/admin/assets/allot.css", get(stylesheet))
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
