//! Merchant endpoints over HTTP, behind `ALLOT_ADMIN_TOKEN`: the same as
//! `allot endpoints …`.
//!
//! - `GET    /v1/admin/endpoints`: every endpoint (never a secret);
//! - `POST   /v1/admin/endpoints`: `{"url", "events"?: […], "description"?,
//!   "include_keys"?}` → 201 with the endpoint and its `secret`;
//! - `GET    /v1/admin/endpoints/{id}`: one endpoint and its latest attempts;
//! - `GET    /v1/admin/endpoints/{id}/secret`;
//! - `POST   /v1/admin/endpoints/{id}/{disable|enable|rotate-secret|redrive}`;
//! - `DELETE /v1/admin/endpoints/{id}`.

use axum::{
    Json, Router,
    extract::{FromRef, Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::endpoints::{self, NewEndpoint};
use crate::{
    clock::now_ms,
    db::Db,
    http::{AdminSecret, AdminToken, ApiError, ApiJson},
};

#[derive(Clone)]
struct Admin {
    db: Db,
    admin: AdminSecret,
    max_attempts: i32,
}

impl FromRef<Admin> for AdminSecret {
    fn from_ref(state: &Admin) -> Self {
        state.admin.clone()
    }
}

pub fn router(db: Db, admin: AdminSecret, max_attempts: i32) -> Router {
    let state = Admin {
        db,
        admin,
        max_attempts,
    };
    Router::new()
        .route("/v1/admin/endpoints", get(list).post(add))
        .route("/v1/admin/endpoints/{id}", get(show).delete(remove))
        .route("/v1/admin/endpoints/{id}/secret", get(secret))
        .route("/v1/admin/endpoints/{id}/{action}", post(act))
        .with_state(state)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "endpoint_not_found",
        format!("no endpoint {id:?}"),
    )
}

/// An id from the path; anything but a number names no endpoint.
fn endpoint_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| not_found(id))
}

async fn list(_: AdminToken, State(admin): State<Admin>) -> Result<Json<Value>, ApiError> {
    let endpoints = endpoints::list(&admin.db).await?;
    Ok(Json(json!({ "endpoints": endpoints })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    url: String,
    #[serde(default)]
    events: Option<Events>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    include_keys: bool,
}

/// `["order.fulfilled", "stock.*"]` or `"order.fulfilled,stock.*"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Events {
    List(Vec<String>),
    Text(String),
}

async fn add(
    _: AdminToken,
    State(admin): State<Admin>,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let events = body.events.map(|events| match events {
        Events::List(list) => list.join(","),
        Events::Text(text) => text,
    });
    let new = NewEndpoint::parse(
        &body.url,
        events.as_deref(),
        body.description.as_deref(),
        body.include_keys,
    )
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_endpoint", e))?;
    let (id, secret) = endpoints::add(&admin.db, &new, now_ms()).await?;
    let endpoint = endpoints::find(&admin.db, id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "endpoint": endpoint, "secret": secret })),
    ))
}

async fn show(
    _: AdminToken,
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = endpoint_id(&id)?;
    let endpoint = endpoints::find(&admin.db, n)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let attempts = endpoints::attempts(&admin.db, n, 50).await?;
    Ok(Json(json!({ "endpoint": endpoint, "attempts": attempts })))
}

async fn secret(
    _: AdminToken,
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let secret = endpoints::secret(&admin.db, endpoint_id(&id)?)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(json!({ "secret": secret })))
}

async fn remove(
    _: AdminToken,
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if endpoints::remove(&admin.db, endpoint_id(&id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

async fn act(
    _: AdminToken,
    State(admin): State<Admin>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let n = endpoint_id(&id)?;
    let now = now_ms();
    let db = &admin.db;
    let exists = |found: bool| if found { Ok(()) } else { Err(not_found(&id)) };
    let answer = match action.as_str() {
        "disable" => {
            exists(
                endpoints::set_enabled(db, n, false, Some("disabled by an operator"), now).await?,
            )?;
            json!({ "endpoint": endpoints::find(db, n).await? })
        }
        "enable" => {
            exists(endpoints::set_enabled(db, n, true, None, now).await?)?;
            json!({ "endpoint": endpoints::find(db, n).await? })
        }
        "rotate-secret" => {
            let secret = endpoints::rotate_secret(db, n, now)
                .await?
                .ok_or_else(|| not_found(&id))?;
            json!({ "secret": secret, "previous_valid_for": "24h" })
        }
        "redrive" => {
            exists(endpoints::find(db, n).await?.is_some())?;
            json!({ "requeued": endpoints::redrive(db, n, admin.max_attempts).await? })
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_action",
                format!("no action {other:?}: use disable, enable, rotate-secret or redrive"),
            ));
        }
    };
    Ok(Json(answer))
}
