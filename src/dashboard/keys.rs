//! `/admin/keys`: stock per SKU, a key file imported (then the orders that
//! waited for that SKU are served, oldest first, as `allot keys import`
//! does), and a key revoked after a confirmation. License keys travel only
//! in form bodies, never in a URL, and are never logged.

use axum::{
    Form,
    extract::{
        DefaultBodyLimit, Multipart, State, multipart::MultipartRejection, rejection::FormRejection,
    },
    http::StatusCode,
    response::Html,
};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt},
    routes,
};

use super::{Dashboard, fields, page, page::Problem, session::Session};
use crate::{
    clock::now_ms,
    keys::{self, LicenseKey, Revoked, Sku},
    orders,
};

/// Where the import form posts. The HTTP plumbing leaves its body to the
/// handler, which reads it (up to [`KEY_FILE_LIMIT`], within
/// [`UPLOAD_TIMEOUT`]) only once the session is checked.
pub const KEY_IMPORT_PATH: &str = "/admin/keys/import";

/// The largest key file the dashboard takes: about a million keys of 30
/// characters. Larger files go through `allot keys import`.
pub const KEY_FILE_LIMIT: usize = 32 * 1024 * 1024;

/// How long an upload may take to arrive: a 32 MiB file over a slow link.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

pub(super) fn routes() -> OpenApiRouter<Dashboard> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(import).layer(DefaultBodyLimit::max(KEY_FILE_LIMIT)))
        .routes(routes!(revoke))
}

/// Stock per SKU, the key import form and revocation.
#[utoipa::path(get, path = "/admin/keys", operation_id = "dashboardKeys", tag = "dashboard",
    security(("dashboard_session" = [])),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
async fn show(session: Session, State(state): State<Dashboard>) -> Result<Html<String>, Problem> {
    stock_page(&session, &state, json!(null)).await
}

/// The keys page, with what the last action did (`result`, or null).
async fn stock_page(
    session: &Session,
    state: &Dashboard,
    result: serde_json::Value,
) -> Result<Html<String>, Problem> {
    let stock = keys::stock(&state.db).await?;
    page::render(
        "keys.html",
        json!({
            "csrf": session.csrf(),
            "nav": "keys",
            "stock": stock,
            "low_stock": state.low_stock,
            "result": result,
            "limit_mib": KEY_FILE_LIMIT / (1024 * 1024),
        }),
    )
}

fn bad_form(why: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "This import could not be read",
        format!("{}. Nothing was imported.", why.into()),
    )
}

/// The import form's fields: the session's token, the SKU, the file.
async fn import_form(
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(String, String, Vec<u8>), Problem> {
    let mut multipart = multipart.map_err(|rejection| bad_form(rejection.body_text()))?;
    let (mut csrf, mut sku, mut file) = (String::new(), String::new(), None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| bad_form(error.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|error| bad_form(error.body_text()))?;
        match name.as_str() {
            "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
            "sku" => sku = String::from_utf8_lossy(&bytes).trim().to_string(),
            "file" => file = Some(bytes.to_vec()),
            _ => {}
        }
    }
    let file = file.ok_or_else(|| bad_form("The form carried no file"))?;
    Ok((csrf, sku, file))
}

/// Import a key file (up to 32 MiB) for a SKU, then serve the orders waiting for it.
#[utoipa::path(post, path = "/admin/keys/import", operation_id = "dashboardImportKeys", tag = "dashboard",
    security(("dashboard_session" = [])),
    request_body(content = String, content_type = "multipart/form-data", description = "`csrf`, `sku` and `file` (CSV with a `license_key` column, or one key per line)"),
    responses((status = 200, description = "What was imported and skipped, and the orders served", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`"), (status = 403, description = "The form's CSRF token is missing or wrong: nothing changed", content_type = "text/html", body = String), (status = 413, description = "The file is over 32 MiB", content_type = "text/html", body = String)))]
async fn import(
    session: Session,
    State(state): State<Dashboard>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Html<String>, Problem> {
    let (csrf, sku, file) = tokio::time::timeout(UPLOAD_TIMEOUT, import_form(multipart))
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "The upload took too long",
                "The file did not arrive within five minutes. Nothing was imported.",
            )
        })??;
    session.check(&csrf)?;
    let sku = Sku::parse(&sku).map_err(|error| bad_form(error.to_string()))?;
    // The importer reads a file line by line (the CLI's path): the upload
    // is written to a private temporary file first.
    let written = tempfile::NamedTempFile::new().and_then(|temp| {
        std::fs::write(temp.path(), &file)?;
        Ok(temp)
    });
    let temp = written.map_err(|error| {
        tracing::error!(%error, "could not write an uploaded key file to a temporary file");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The upload could not be stored",
            "The server could not write a temporary file; its log says why. Nothing was imported.",
        )
    })?;
    let report = keys::import::import_file(
        &state.db,
        temp.path(),
        &sku,
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .map_err(|error| match error.downcast::<sqlx::Error>() {
        Ok(error) => Problem::from(error),
        Err(error) => bad_form(format!("{error:#}")),
    })?;
    let served = state.fulfilment.fulfil_waiting(&sku, now_ms()).await?;
    tracing::info!(
        sku = sku.as_str(),
        imported = report.imported,
        served,
        "keys imported from the dashboard"
    );
    let result = json!({
        "kind": "imported",
        "sku": sku.as_str(),
        "imported": report.imported,
        "served": served,
        "blank": report.blank.len(),
        "trimmed": report.trimmed.len(),
        "duplicate_in_file": report.duplicate_in_file.len(),
        "already_in_pool": report.already_in_pool.len(),
        "invalid": report.invalid.iter().take(20).map(|(line, why)| json!({"line": line, "why": why})).collect::<Vec<_>>(),
        "invalid_count": report.invalid.len(),
    });
    stock_page(&session, &state, result).await
}

#[derive(Deserialize)]
struct Revoke {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    /// Set by the confirmation page's button.
    #[serde(default)]
    confirmed: String,
}

/// Take a key out of circulation.
#[utoipa::path(post, path = "/admin/keys/revoke", operation_id = "dashboardRevokeKey", tag = "dashboard",
    security(("dashboard_session" = [])),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`key`, `confirmed` and `csrf`"),
    responses((status = 200, description = "The result, or the confirmation asked first", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`"), (status = 403, description = "The form's CSRF token is missing or wrong: nothing changed", content_type = "text/html", body = String)))]
async fn revoke(
    session: Session,
    State(state): State<Dashboard>,
    form: Result<Form<Revoke>, FormRejection>,
) -> Result<Html<String>, Problem> {
    let form = fields(form)?;
    session.check(&form.csrf)?;
    let key = LicenseKey::parse(form.key.trim()).map_err(|error| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "Not a license key",
            error.to_string(),
        )
    })?;
    if form.confirmed != "yes" {
        return page::render(
            "confirm.html",
            json!({
                "csrf": session.csrf(),
                "nav": "keys",
                "question": "Revoke this key? It is never vended again, and merchant endpoints hear key.revoked.",
                "detail": key.expose(),
                "action": "/admin/keys/revoke",
                "hidden": [["key", key.expose()], ["confirmed", "yes"]],
                "button": "Revoke",
                "back": "/admin/keys",
            }),
        );
    }
    let result = match orders::revoke_key(&state.db, &key, state.max_attempts, now_ms()).await? {
        Revoked::Yes { was, sku, .. } => {
            tracing::info!(sku, %was, "key revoked from the dashboard");
            json!({"kind": "revoked", "sku": sku, "was": was})
        }
        Revoked::Already => json!({"kind": "already_revoked"}),
        Revoked::NotFound => json!({"kind": "not_found"}),
    };
    stock_page(&session, &state, result).await
}
