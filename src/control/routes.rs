//! The control channel over HTTP, behind `ALLOT_ADMIN_TOKEN`, for scripts
//! and the dashboard: the same commands as `allot ctl`, the same record.
//!
//! - `GET  /v1/admin/processes`: the registry (`state` is `gone` for a
//!   silent process);
//! - `POST /v1/admin/commands`: `{"command": "ping", "target": "all",
//!   "timeout": "5s"}` (plus `x` and `msg` for `calculate`): sends, waits,
//!   answers with every target's reply and who did not answer;
//! - `GET  /v1/admin/commands[?limit=N]`, `GET /v1/admin/commands/{id}`:
//!   the record of what was sent and answered.

use std::time::Duration;

use axum::{
    Json,
    extract::{FromRef, Path, RawQuery, State},
    http::StatusCode,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{channel, registry, send};
use crate::{
    clock::now_ms,
    config::ControlSettings,
    db::Db,
    http::{AdminSecret, AdminToken, ApiError, ApiJson, ErrorBody},
};

/// The longest a request waits for replies; slower ones are reported as
/// not answered yet (their replies land in the record).
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Control {
    db: Db,
    admin: AdminSecret,
    settings: ControlSettings,
}

impl FromRef<Control> for AdminSecret {
    fn from_ref(state: &Control) -> Self {
        state.admin.clone()
    }
}

pub fn router(db: Db, settings: &ControlSettings) -> OpenApiRouter {
    let state = Control {
        db,
        admin: AdminSecret(settings.admin_token.clone()),
        settings: settings.clone(),
    };
    OpenApiRouter::new()
        .routes(routes!(processes))
        .routes(routes!(history, command))
        .routes(routes!(one_command))
        .with_state(state)
}

/// `/v1/admin/processes`.
#[derive(Serialize, ToSchema)]
struct ProcessList {
    processes: Vec<registry::Shown>,
}

/// A control command: `ping`, `status`, `start`, `stop`, `terminate`, or
/// `calculate` (with `x` and `msg`).
#[allow(dead_code)]
#[derive(ToSchema)]
struct CommandBody {
    #[schema(example = "ping")]
    command: String,
    /// `all` (default), `role=serve`, `role=worker`, `host=NAME`, or
    /// process ids separated by commas.
    target: Option<String>,
    /// How long to wait for replies, up to 60 s (default 5 s).
    #[schema(example = "5s")]
    timeout: Option<String>,
    /// `calculate` only: the number.
    x: Option<i64>,
    /// `calculate` only: a message echoed back.
    msg: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Sent {
    command_id: i64,
    command: &'static str,
    target: String,
    replies: Vec<send::Answer>,
    /// Process ids that did not answer in time.
    unanswered: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct History {
    commands: Vec<channel::CommandRecord>,
}

#[derive(Serialize, ToSchema)]
struct OneCommand {
    command: channel::CommandRecord,
    replies: Vec<channel::ReplyRecord>,
}

const ADMIN_401: &str = "`unauthorized`";

/// The process registry (`state` is `gone` for a silent process).
#[utoipa::path(get, path = "/v1/admin/processes", operation_id = "listProcesses", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every registered process", body = ProcessList),
        (status = 401, description = ADMIN_401, body = ErrorBody),
        (status = 503, description = "`admin_disabled`, `database_unavailable`", body = ErrorBody),
    ))]
async fn processes(
    _: AdminToken,
    State(control): State<Control>,
) -> Result<Json<ProcessList>, ApiError> {
    let now = now_ms();
    let processes = registry::list(&control.db)
        .await?
        .iter()
        .map(|process| process.shown(now))
        .collect();
    Ok(Json(ProcessList { processes }))
}

/// Send a command, wait for the targets' replies (up to `timeout`) and
/// answer with each reply and who did not answer.
#[utoipa::path(post, path = "/v1/admin/commands", operation_id = "sendCommand", tag = "admin",
    security(("admin_token" = [])),
    request_body = CommandBody,
    responses(
        (status = 200, description = "Sent; every target's reply", body = Sent),
        (status = 400, description = "`invalid_command` (recorded, nothing sent), `malformed_json`, `invalid_content_type`", body = ErrorBody),
        (status = 401, description = ADMIN_401, body = ErrorBody),
        (status = 404, description = "`no_such_process`", body = ErrorBody),
        (status = 503, description = "`admin_disabled`, `database_unavailable`", body = ErrorBody),
    ))]
async fn command(
    _: AdminToken,
    State(control): State<Control>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Sent>, ApiError> {
    let invalid =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_command", message);
    let Value::Object(mut message) = body else {
        return Err(invalid(
            "the body must be a JSON object like {\"command\": \"ping\"}".into(),
        ));
    };
    let target = match message.remove("target") {
        None => "all".to_string(),
        Some(Value::String(target)) => target,
        Some(_) => return Err(invalid("target must be a string".into())),
    };
    let timeout = match message.remove("timeout") {
        None => None,
        Some(Value::String(text)) => Some(
            humantime::parse_duration(&text)
                .ok()
                .filter(|t| *t <= MAX_WAIT)
                .ok_or_else(|| invalid(format!("timeout must be a duration up to {MAX_WAIT:?}")))?,
        ),
        Some(_) => return Err(invalid("timeout must be a string like \"5s\"".into())),
    };
    let text = Value::Object(message).to_string();
    // The deadline for targets to start it: the wait, or what `ctl` would use.
    let deadline = timeout.unwrap_or_else(|| {
        crate::control::Command::parse(&text, control.settings.calculate_max)
            .map(|command| send::default_timeout(&command))
            .unwrap_or(Duration::from_secs(5))
    });
    let sent = send::send(
        &control.db,
        &control.settings,
        &text,
        &target,
        "admin api",
        deadline,
    )
    .await
    .map_err(|error| match error {
        send::SendError::Invalid(message) => invalid(message),
        send::SendError::NoTarget(message) => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_process", message)
        }
        send::SendError::Database(error) => error.into(),
    })?;
    let answers = send::collect(&control.db, &sent, deadline.min(MAX_WAIT)).await?;
    let unanswered: Vec<String> = answers
        .iter()
        .filter(|a| !a.answered())
        .map(|a| a.process.clone())
        .collect();
    let answer = Sent {
        command_id: sent.command_id,
        command: sent.command.name(),
        target,
        replies: answers,
        unanswered,
    };
    Ok(Json(answer))
}

/// The latest commands, newest first.
#[utoipa::path(get, path = "/v1/admin/commands", operation_id = "listCommands", tag = "admin",
    security(("admin_token" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "How many (default 50)")),
    responses(
        (status = 200, description = "The record", body = History),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = ADMIN_401, body = ErrorBody),
        (status = 503, description = "`admin_disabled`, `database_unavailable`", body = ErrorBody),
    ))]
async fn history(
    _: AdminToken,
    State(control): State<Control>,
    RawQuery(query): RawQuery,
) -> Result<Json<History>, ApiError> {
    let pairs: Vec<(String, String)> = query
        .and_then(|q| serde_urlencoded::from_str(&q).ok())
        .unwrap_or_default();
    let limit = match pairs.iter().find(|(key, _)| key == "limit") {
        None => 50,
        Some((_, value)) => value
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "limit must be a number from 1 to 500",
                )
            })?,
    };
    let commands = channel::history(&control.db, limit).await?;
    Ok(Json(History { commands }))
}

/// One command and every target's reply row.
#[utoipa::path(get, path = "/v1/admin/commands/{id}", operation_id = "showCommand", tag = "admin",
    security(("admin_token" = [])),
    params(("id" = i64, Path, description = "The command's id")),
    responses(
        (status = 200, description = "The command", body = OneCommand),
        (status = 401, description = ADMIN_401, body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`admin_disabled`, `database_unavailable`", body = ErrorBody),
    ))]
async fn one_command(
    _: AdminToken,
    State(control): State<Control>,
    Path(id): Path<i64>,
) -> Result<Json<OneCommand>, ApiError> {
    let Some(command) = channel::find(&control.db, id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no command {id}"),
        ));
    };
    let replies = channel::replies(&control.db, id).await?;
    Ok(Json(OneCommand { command, replies }))
}
