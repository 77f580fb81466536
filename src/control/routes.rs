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
    Json, Router,
    extract::{FromRef, Path, RawQuery, State},
    http::StatusCode,
    routing::get,
};
use serde_json::{Value, json};

use super::{channel, registry, send};
use crate::{
    clock::now_ms,
    config::ControlSettings,
    db::Db,
    http::{AdminSecret, AdminToken, ApiError, ApiJson},
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

pub fn router(db: Db, settings: &ControlSettings) -> Router {
    let state = Control {
        db,
        admin: AdminSecret(settings.admin_token.clone()),
        settings: settings.clone(),
    };
    Router::new()
        .route("/v1/admin/processes", get(processes))
        .route("/v1/admin/commands", get(history).post(command))
        .route("/v1/admin/commands/{id}", get(one_command))
        .with_state(state)
}

async fn processes(_: AdminToken, State(control): State<Control>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let list: Vec<Value> = registry::list(&control.db)
        .await?
        .iter()
        .map(|process| process.shown(now))
        .collect();
    Ok(Json(json!({ "processes": list })))
}

async fn command(
    _: AdminToken,
    State(control): State<Control>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
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
    let unanswered: Vec<&str> = answers
        .iter()
        .filter(|a| !a.answered())
        .map(|a| a.process.as_str())
        .collect();
    Ok(Json(json!({
        "command_id": sent.command_id,
        "command": sent.command.name(),
        "target": target,
        "replies": answers,
        "unanswered": unanswered,
    })))
}

async fn history(
    _: AdminToken,
    State(control): State<Control>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "commands": commands })))
}

async fn one_command(
    _: AdminToken,
    State(control): State<Control>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let Some(command) = channel::find(&control.db, id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no command {id}"),
        ));
    };
    let replies = channel::replies(&control.db, id).await?;
    Ok(Json(json!({ "command": command, "replies": replies })))
}
