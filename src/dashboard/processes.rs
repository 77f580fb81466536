//! `/admin/processes`: the processes of the control channel (`allot ctl
//! processes`), each with buttons that send it `start`, `stop` or
//! `terminate` (asked first) and show what it answered.

use std::time::Duration;

use axum::{
    Form,
    extract::{State, rejection::FormRejection},
    http::StatusCode,
    response::Html,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Dashboard, fields, page, page::Problem, session::Session};
use crate::{clock::now_ms, control};

/// The longest the page waits for the answers before showing them.
const WAIT: Duration = Duration::from_secs(10);

/// What the buttons send.
const COMMANDS: [&str; 3] = ["start", "stop", "terminate"];

pub(super) fn routes() -> OpenApiRouter<Dashboard> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(command))
}

/// Live processes with their state.
#[utoipa::path(get, path = "/admin/processes", operation_id = "dashboardProcesses", tag = "dashboard",
    security(("dashboard_session" = [])),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
async fn show(session: Session, State(state): State<Dashboard>) -> Result<Html<String>, Problem> {
    processes_page(&session, &state, Value::Null).await
}

async fn processes_page(
    session: &Session,
    state: &Dashboard,
    result: Value,
) -> Result<Html<String>, Problem> {
    let now = now_ms();
    /// A row of the page: live ones get buttons.
    #[derive(Serialize)]
    struct Row {
        #[serde(flatten)]
        shown: control::Shown,
        live: bool,
    }
    let processes: Vec<Row> = control::list(&state.db)
        .await?
        .iter()
        .map(|process| Row {
            shown: process.shown(now),
            live: process.is_live(now),
        })
        .collect();
    page::render(
        "processes.html",
        json!({
            "csrf": session.csrf(),
            "nav": "processes",
            "processes": processes,
            "result": result,
        }),
    )
}

#[derive(Deserialize)]
struct Sending {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    command: String,
    /// A process id, or `all`.
    #[serde(default)]
    target: String,
    /// Set by the confirmation page's button (`terminate` asks first).
    #[serde(default)]
    confirmed: String,
}

/// Start, stop or terminate processes through the control channel.
#[utoipa::path(post, path = "/admin/processes/command", operation_id = "dashboardSendCommand", tag = "dashboard",
    security(("dashboard_session" = [])),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`command`, `target`, `confirmed` and `csrf`"),
    responses((status = 200, description = "Every target's answer", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`"), (status = 403, description = "The form's CSRF token is missing or wrong: nothing changed", content_type = "text/html", body = String)))]
async fn command(
    session: Session,
    State(state): State<Dashboard>,
    form: Result<Form<Sending>, FormRejection>,
) -> Result<Html<String>, Problem> {
    let form = fields(form)?;
    session.check(&form.csrf)?;
    if !COMMANDS.contains(&form.command.as_str()) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Unknown command",
            format!("The dashboard sends {}.", COMMANDS.join(", ")),
        ));
    }
    if form.command == "terminate" && form.confirmed != "yes" {
        let whom = if form.target == "all" {
            "every process".to_string()
        } else {
            format!("process {}", form.target)
        };
        return page::render(
            "confirm.html",
            json!({
                "csrf": session.csrf(),
                "nav": "processes",
                "question": format!("Terminate {whom}? Its in-flight jobs finish, then it exits; only a supervisor (systemd, compose) starts it again."),
                "action": "/admin/processes/command",
                "hidden": [["command", "terminate"], ["target", form.target], ["confirmed", "yes"]],
                "button": "Terminate",
                "back": "/admin/processes",
            }),
        );
    }
    let message = json!({ "command": form.command }).to_string();
    let sent = control::send(
        &state.db,
        &state.control,
        &message,
        &form.target,
        "dashboard",
        WAIT,
    )
    .await
    .map_err(|error| match error {
        control::SendError::Invalid(message) | control::SendError::NoTarget(message) => {
            Problem::new(StatusCode::NOT_FOUND, "No such process", message)
        }
        control::SendError::Database(error) => Problem::from(error),
    })?;
    let answers = control::collect(&state.db, &sent, WAIT).await?;
    tracing::info!(command = %form.command, target = %form.target, "command sent from the dashboard");
    let result = json!({ "command": form.command, "answers": answers });
    processes_page(&session, &state, result).await
}
