//! What the client sees when something went wrong:
//! `{"error": "<machine_code>", "message": "<human text>"}`. Capabilities map
//! their own errors to [`ApiError`] in their `routes.rs`; database failures
//! map here, once.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (with 503 and 429).
    pub retry_after: Option<u32>,
    /// What the database said, when it was unreachable or refused writes:
    /// put on the response as [`DatabaseUnavailable`].
    outage: Option<String>,
}

/// A response extension: this request failed because the database was
/// unreachable or could not take writes. Whoever must hear of outages (the
/// admin's alarm) watches responses for it; the client sees only the 503.
#[derive(Debug, Clone)]
pub struct DatabaseUnavailable(pub String);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            outage: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

/// A failure of ours or of the database: logged in full, shown vaguely.
/// Lock contention and a database that went away are 503 with
/// `Retry-After`: nothing was committed, and trying again will work.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::from(&error)
    }
}

/// The same, for an error that several requests share (a failed batch).
impl From<&sqlx::Error> for ApiError {
    fn from(error: &sqlx::Error) -> Self {
        let contention = crate::db::is_contention(error);
        Self::database(error, contention, crate::db::is_unavailable(error))
    }
}

/// The same; a request left unanswered reads as unavailable.
impl From<crate::db::Error> for ApiError {
    fn from(error: crate::db::Error) -> Self {
        Self::database(&error, error.is_contention(), error.is_unavailable())
    }
}

impl ApiError {
    fn database(error: &dyn std::fmt::Display, contention: bool, unavailable: bool) -> Self {
        if contention {
            tracing::warn!(error = %error, "database lock contention");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_busy",
                "the database is busy; nothing was changed, try again",
            )
            .retry_after(1);
        }
        if unavailable {
            tracing::error!(error = %error, "database unavailable");
            let mut unavailable = Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is not reachable right now; nothing was changed, try again shortly",
            )
            .retry_after(5);
            unavailable.outage = Some(error.to_string());
            return unavailable;
        }
        tracing::error!(error = %error, "database error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred",
        )
    }
}

/// The body of every error answer (named `Error` in the OpenAPI document).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// A stable machine-readable code, such as `out_of_stock`.
    #[schema(value_type = String, example = "out_of_stock")]
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(cause) = self.outage {
            response.extensions_mut().insert(DatabaseUnavailable(cause));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            // The unread rest of the body makes this connection unusable;
            // say so, or the client reuses it and fails its next request.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// `axum::Json`, but every rejection is a 400 (or 413) in our error format:
/// clients that send the wrong content type or broken JSON made a mistake,
/// and the message tells them which.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    use JsonRejection::*;
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    match rejection {
        MissingJsonContentType(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_content_type",
            "expected a JSON body with Content-Type: application/json",
        ),
        JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "the body is not valid JSON: {}",
                inner_message(&e.body_text())
            ),
        ),
        JsonDataError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            inner_message(&e.body_text()),
        ),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            other.body_text(),
        ),
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than this server accepts (ALLOT_MAX_BODY_BYTES)",
    )
}

/// The client stopped sending its body, or sent a broken one (chunked
/// encoding that does not parse).
pub fn broken_body() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "incomplete_body",
        "the request body could not be read to its end",
    )
}

/// The body did not arrive within `ALLOT_READ_TIMEOUT`.
pub fn too_slow() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body did not arrive in time (ALLOT_READ_TIMEOUT)",
    )
}

/// axum prefixes serde's message with its own sentence; keep serde's part,
/// which names the field ("amount: invalid type: string \"x\", expected i64").
fn inner_message(text: &str) -> String {
    text.split_once(": ")
        .map_or(text, |(_, rest)| rest)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db;

    #[test]
    fn an_unanswered_request_is_unavailable_and_a_broken_rule_internal() {
        let unanswered = ApiError::from(db::Error::Unanswered);
        assert_eq!(
            (unanswered.status, unanswered.code, unanswered.retry_after),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                Some(5)
            )
        );
        assert!(unanswered.outage.is_some());

        let shared = ApiError::from(db::Error::from(sqlx::Error::PoolTimedOut).clone());
        assert_eq!(shared.code, "database_unavailable");

        let broken = ApiError::from(db::Error::Broken("a rule".into()));
        assert_eq!(
            (broken.status, broken.code, broken.outage),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None)
        );
    }
}
