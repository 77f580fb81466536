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
    Json,
    extract::{FromRef, Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::endpoints::{self, Endpoint, NewEndpoint};
use crate::{
    clock::now_ms,
    db::Db,
    http::{AdminSecret, AdminToken, ApiError, ApiJson, ErrorBody},
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

pub fn router(db: Db, admin: AdminSecret, max_attempts: i32) -> OpenApiRouter {
    let state = Admin {
        db,
        admin,
        max_attempts,
    };
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(show, remove))
        .routes(routes!(secret))
        .routes(routes!(act))
        .with_state(state)
}

// What the routes answer (the API tests check real answers against these
// schemas); `Added` and `Acted` are built as JSON.

#[derive(Serialize, ToSchema)]
struct EndpointList {
    endpoints: Vec<Endpoint>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
struct Added {
    endpoint: Endpoint,
    /// The signing secret, `whsec_…`: shown here and by `…/secret` only.
    secret: String,
}

#[derive(Serialize, ToSchema)]
struct EndpointDetail {
    endpoint: Endpoint,
    /// The latest 50 delivery attempts, newest first.
    attempts: Vec<endpoints::AttemptRecord>,
}

#[derive(Serialize, ToSchema)]
struct SigningSecret {
    secret: String,
}

/// `disable` and `enable`: `{"endpoint"}`; `rotate-secret`: `{"secret",
/// "previous_valid_for"}`; `redrive`: `{"requeued"}`.
#[allow(dead_code)]
#[derive(ToSchema)]
struct Acted {
    endpoint: Option<Endpoint>,
    secret: Option<String>,
    /// How long the previous secret still signs, `24h`.
    previous_valid_for: Option<String>,
    /// Dead deliveries queued again.
    requeued: Option<i64>,
}

const NOT_FOUND: &str = "`endpoint_not_found`";
const REFUSED: &str = "`unauthorized`";
const OFF: &str = "`admin_disabled`, `database_unavailable`";

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

/// Every endpoint (never a secret).
#[utoipa::path(get, path = "/v1/admin/endpoints", operation_id = "listEndpoints", tag = "merchant endpoints",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The endpoints", body = EndpointList),
        (status = 401, description = REFUSED, body = ErrorBody),
        (status = 503, description = OFF, body = ErrorBody),
    ))]
async fn list(_: AdminToken, State(admin): State<Admin>) -> Result<Json<EndpointList>, ApiError> {
    let endpoints = endpoints::list(&admin.db).await?;
    Ok(Json(EndpointList { endpoints }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddBody {
    /// Where events are posted (`https://…`, or `http://` on a private
    /// network).
    #[schema(example = "https://merchant.example/hooks/allot")]
    url: String,
    /// Event types or groups (`order.*`); default all.
    #[serde(default)]
    events: Option<Events>,
    #[serde(default)]
    description: Option<String>,
    /// Key events carry the license key (off by default).
    #[serde(default)]
    include_keys: bool,
}

/// `["order.fulfilled", "stock.*"]` or `"order.fulfilled,stock.*"`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
enum Events {
    List(Vec<String>),
    Text(String),
}

/// Register an endpoint; the answer carries its signing secret.
#[utoipa::path(post, path = "/v1/admin/endpoints", operation_id = "addEndpoint", tag = "merchant endpoints",
    security(("admin_token" = [])),
    request_body = AddBody,
    responses(
        (status = 201, description = "Registered", body = Added),
        (status = 400, description = "`invalid_endpoint`, `invalid_request`, `malformed_json`, `invalid_content_type`", body = ErrorBody),
        (status = 401, description = REFUSED, body = ErrorBody),
        (status = 503, description = OFF, body = ErrorBody),
    ))]
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

/// One endpoint and its latest delivery attempts.
#[utoipa::path(get, path = "/v1/admin/endpoints/{id}", operation_id = "showEndpoint", tag = "merchant endpoints",
    security(("admin_token" = [])),
    params(("id" = i64, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointDetail),
        (status = 401, description = REFUSED, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = OFF, body = ErrorBody),
    ))]
async fn show(
    _: AdminToken,
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<EndpointDetail>, ApiError> {
    let n = endpoint_id(&id)?;
    let endpoint = endpoints::find(&admin.db, n)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let attempts = endpoints::attempts(&admin.db, n, 50).await?;
    Ok(Json(EndpointDetail { endpoint, attempts }))
}

/// The endpoint's current signing secret.
#[utoipa::path(get, path = "/v1/admin/endpoints/{id}/secret", operation_id = "showEndpointSecret", tag = "merchant endpoints",
    security(("admin_token" = [])),
    params(("id" = i64, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The secret", body = SigningSecret),
        (status = 401, description = REFUSED, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = OFF, body = ErrorBody),
    ))]
async fn secret(
    _: AdminToken,
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<SigningSecret>, ApiError> {
    let secret = endpoints::secret(&admin.db, endpoint_id(&id)?)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(SigningSecret { secret }))
}

/// Remove the endpoint and its attempt log; deliveries still queued for
/// it end unsent.
#[utoipa::path(delete, path = "/v1/admin/endpoints/{id}", operation_id = "removeEndpoint", tag = "merchant endpoints",
    security(("admin_token" = [])),
    params(("id" = i64, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = REFUSED, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = OFF, body = ErrorBody),
    ))]
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

/// `disable` or `enable` sending to it (enabling forgets its failure
/// streak), `rotate-secret` (the old one still signs for 24 hours), or
/// `redrive` its dead deliveries with a fresh attempt budget.
#[utoipa::path(post, path = "/v1/admin/endpoints/{id}/{action}", operation_id = "actOnEndpoint", tag = "merchant endpoints",
    security(("admin_token" = [])),
    params(
        ("id" = i64, Path, description = "The endpoint's id"),
        ("action" = String, Path, description = "`disable`, `enable`, `rotate-secret` or `redrive`"),
    ),
    responses(
        (status = 200, description = "Done", body = Acted),
        (status = 401, description = REFUSED, body = ErrorBody),
        (status = 404, description = "`endpoint_not_found`, `unknown_action`", body = ErrorBody),
        (status = 503, description = OFF, body = ErrorBody),
    ))]
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
