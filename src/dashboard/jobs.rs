//! `/admin/jobs`: the outbox by state and kind, newest first, a page at a
//! time; one job with its attempt log; retry a dead job, retry every dead
//! job, discard a job. Each action asks on a page of its own first.

use axum::{
    Form,
    extract::{
        Path, Query, State, rejection::FormRejection, rejection::PathRejection,
        rejection::QueryRejection,
    },
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    Confirmed, Dashboard, PAGE, fields, one_page, page, page::Problem, query, session::Session,
};
use crate::jobs::{self, Browse, Discarded, JobState};

pub(super) fn routes() -> OpenApiRouter<Dashboard> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(confirm_retry_all, retry_all))
        .routes(routes!(show))
        .routes(routes!(confirm_retry, retry))
        .routes(routes!(confirm_discard, discard))
}

/// The list's filters, as the form and the "older" link send them.
#[derive(Deserialize)]
struct Filter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    kind: String,
    before: Option<i64>,
    /// What the last action did, said once above the list.
    notice: Option<String>,
}

/// Jobs, newest first, a keyset page at a time.
#[utoipa::path(get, path = "/admin/jobs", operation_id = "dashboardJobs", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("state" = Option<String>, Query, description = "`queued`, `running`, `done` or `dead`"), ("kind" = Option<String>, Query, description = "A job kind"), ("before" = Option<i64>, Query, description = "Show jobs with smaller ids (the next page)")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
async fn list(
    session: Session,
    State(state): State<Dashboard>,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Result<Html<String>, Problem> {
    let filter = query(filter)?;
    let job_state = match filter.state.as_str() {
        "" => None,
        other => Some(other.parse::<JobState>().map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "Unknown job state",
                format!("{other:?} is not a job state: queued, running, done or dead."),
            )
        })?),
    };
    let kind = Some(filter.kind.trim().to_string()).filter(|k| !k.is_empty());
    let browse = Browse {
        state: job_state,
        kind: kind.clone(),
        before: filter.before,
    };
    let found = jobs::browse(&state.db, &browse, PAGE + 1).await?;
    let (shown, older) = one_page(found, |row| row.id);
    let unfinished = jobs::unfinished_by_kind(&state.db).await?;
    let dead = dead_count(&unfinished);
    let mut kinds: Vec<String> = unfinished
        .into_iter()
        .map(|(_, kind, _)| kind)
        .chain(kind.clone())
        .collect();
    kinds.sort();
    kinds.dedup();
    page::render(
        "jobs.html",
        json!({
            "csrf": session.csrf(),
            "nav": "jobs",
            "jobs": shown,
            "state": filter.state,
            "kind": kind.unwrap_or_default(),
            "kinds": kinds,
            "states": JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "older": older,
            "first_page": filter.before.is_none(),
            "dead": dead,
            "notice": notice(filter.notice.as_deref()),
        }),
    )
}

/// The sentence for a `notice` code a redirect carried; unknown codes say
/// nothing (the URL is the client's to edit).
fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "retried" => "The job is queued again; a worker runs it shortly.",
        "retried-none" => "Nothing was retried: the job is no longer dead.",
        "discarded" => "The job was discarded.",
        "retried-all" => "Every dead job is queued again.",
        _ => return None,
    })
}

/// Dead jobs, of every kind, in what `jobs::unfinished_by_kind` counted.
fn dead_count(unfinished: &[(JobState, String, i64)]) -> i64 {
    unfinished
        .iter()
        .filter(|(state, _, _)| *state == JobState::Dead)
        .map(|(_, _, n)| n)
        .sum()
}

fn job_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, Problem> {
    path.map(|Path(id)| id)
        .map_err(|_| Problem::not_found("Job ids are numbers; there is no such job."))
}

async fn job(state: &Dashboard, id: i64) -> Result<jobs::Job, Problem> {
    jobs::find(&state.db, id).await?.ok_or_else(|| {
        Problem::not_found(format!(
            "There is no job {id} (it may have been discarded or pruned)."
        ))
    })
}

#[derive(Deserialize)]
struct Shown {
    notice: Option<String>,
}

/// One job and its attempt log.
#[utoipa::path(get, path = "/admin/jobs/{id}", operation_id = "dashboardJob", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("id" = i64, Path, description = "The job's id")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`"), (status = 404, description = "No such job", content_type = "text/html", body = String)))]
async fn show(
    session: Session,
    State(state): State<Dashboard>,
    path: Result<Path<i64>, PathRejection>,
    shown: Result<Query<Shown>, QueryRejection>,
) -> Result<Html<String>, Problem> {
    let id = job_id(path)?;
    let job = job(&state, id).await?;
    let attempts = jobs::attempts(&state.db, id).await?;
    let shown = query(shown)?;
    page::render(
        "job.html",
        json!({
            "csrf": session.csrf(),
            "nav": "jobs",
            "job": job,
            "attempts": attempts,
            "notice": notice(shown.notice.as_deref()),
        }),
    )
}

/// The page that asks before an action: `question`, then a button that
/// posts to `action` (with the CSRF token) and a way back.
fn confirm(
    session: &Session,
    question: String,
    action: String,
    button: &str,
    back: String,
) -> Result<Html<String>, Problem> {
    page::render(
        "confirm.html",
        json!({
            "csrf": session.csrf(),
            "nav": "jobs",
            "question": question,
            "action": action,
            "button": button,
            "back": back,
        }),
    )
}

/// Asks before retrying a dead job.
#[utoipa::path(get, path = "/admin/jobs/{id}/retry", operation_id = "dashboardConfirmRetryJob", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("id" = i64, Path, description = "The job's id")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
async fn confirm_retry(
    session: Session,
    State(state): State<Dashboard>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Html<String>, Problem> {
    let id = job_id(path)?;
    let job = job(&state, id).await?;
    confirm(
        &session,
        format!(
            "Retry job {id} ({}) with a fresh budget of {} attempts?",
            job.kind, state.max_attempts
        ),
        format!("/admin/jobs/{id}/retry"),
        "Retry",
        format!("/admin/jobs/{id}"),
    )
}

/// Retry a dead job with a fresh attempt budget.
#[utoipa::path(post, path = "/admin/jobs/{id}/retry", operation_id = "dashboardRetryJob", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("id" = i64, Path, description = "The job's id")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`"),
    responses((status = 303, description = "Done: to the page that shows the result (or, not signed in, to `/admin/login`)"), (status = 403, description = "The form's CSRF token is missing or wrong: nothing changed", content_type = "text/html", body = String)))]
async fn retry(
    session: Session,
    State(state): State<Dashboard>,
    path: Result<Path<i64>, PathRejection>,
    form: Result<Form<Confirmed>, FormRejection>,
) -> Result<Response, Problem> {
    let id = job_id(path)?;
    session.check(&fields(form)?.csrf)?;
    let requeued = jobs::retry_dead(&state.db, Some(id), state.max_attempts).await?;
    let notice = if requeued == 1 {
        "retried"
    } else {
        "retried-none"
    };
    tracing::info!(job_id = id, requeued, "dead job retried from the dashboard");
    Ok(Redirect::to(&format!("/admin/jobs/{id}?notice={notice}")).into_response())
}

/// Asks before retrying every dead job.
#[utoipa::path(get, path = "/admin/jobs/retry-dead", operation_id = "dashboardConfirmRetryDead", tag = "dashboard",
    security(("dashboard_session" = [])),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
async fn confirm_retry_all(
    session: Session,
    State(state): State<Dashboard>,
) -> Result<Html<String>, Problem> {
    let dead = dead_count(&jobs::unfinished_by_kind(&state.db).await?);
    confirm(
        &session,
        format!(
            "Retry all {dead} dead jobs, each with a fresh budget of {} attempts?",
            state.max_attempts
        ),
        "/admin/jobs/retry-dead".into(),
        "Retry all dead jobs",
        "/admin/jobs?state=dead".into(),
    )
}

/// Retry every dead job.
#[utoipa::path(post, path = "/admin/jobs/retry-dead", operation_id = "dashboardRetryDead", tag = "dashboard",
    security(("dashboard_session" = [])),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`"),
    responses((status = 303, description = "Done: to the page that shows the result (or, not signed in, to `/admin/login`)"), (status = 403, description = "The form's CSRF token is missing or wrong: nothing changed", content_type = "text/html", body = String)))]
async fn retry_all(
    session: Session,
    State(state): State<Dashboard>,
    form: Result<Form<Confirmed>, FormRejection>,
) -> Result<Response, Problem> {
    session.check(&fields(form)?.csrf)?;
    let requeued = jobs::retry_dead(&state.db, None, state.max_attempts).await?;
    tracing::info!(requeued, "every dead job retried from the dashboard");
    Ok(Redirect::to("/admin/jobs?state=queued&notice=retried-all").into_response())
}

/// Asks before discarding a job.
#[utoipa::path(get, path = "/admin/jobs/{id}/discard", operation_id = "dashboardConfirmDiscardJob", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("id" = i64, Path, description = "The job's id")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
async fn confirm_discard(
    session: Session,
    State(state): State<Dashboard>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Html<String>, Problem> {
    let id = job_id(path)?;
    let job = job(&state, id).await?;
    confirm(
        &session,
        format!(
            "Discard job {id} ({}, {})? It is deleted with its attempt log and never runs again.",
            job.kind, job.state
        ),
        format!("/admin/jobs/{id}/discard"),
        "Discard",
        format!("/admin/jobs/{id}"),
    )
}

/// Delete a job that is not running.
#[utoipa::path(post, path = "/admin/jobs/{id}/discard", operation_id = "dashboardDiscardJob", tag = "dashboard",
    security(("dashboard_session" = [])),
    params(("id" = i64, Path, description = "The job's id")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`"),
    responses((status = 303, description = "Done: to the page that shows the result (or, not signed in, to `/admin/login`)"), (status = 409, description = "The job is running", content_type = "text/html", body = String), (status = 403, description = "The form's CSRF token is missing or wrong: nothing changed", content_type = "text/html", body = String)))]
async fn discard(
    session: Session,
    State(state): State<Dashboard>,
    path: Result<Path<i64>, PathRejection>,
    form: Result<Form<Confirmed>, FormRejection>,
) -> Result<Response, Problem> {
    let id = job_id(path)?;
    session.check(&fields(form)?.csrf)?;
    match jobs::discard(&state.db, id).await? {
        Discarded::Yes => {
            tracing::info!(job_id = id, "job discarded from the dashboard");
            Ok(Redirect::to("/admin/jobs?notice=discarded").into_response())
        }
        Discarded::NotFound => Err(Problem::not_found(format!("There is no job {id}."))),
        Discarded::Running => Err(Problem::new(
            StatusCode::CONFLICT,
            "The job is running",
            format!(
                "A worker is running job {id} right now; discarding it would race the delivery. Try again once it has finished."
            ),
        )),
    }
}
