//! How a dashboard page is answered: its template rendered into the
//! layout, the headers every page carries, and the pages for what went
//! wrong ([`Problem`]). Templates and the stylesheet are compiled into the
//! binary: the dashboard works on a host without internet access.

use std::sync::OnceLock;

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Response},
};
use minijinja::{Environment, context};
use serde::Serialize;

use crate::http::ApiError;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("login.html", include_str!("templates/login.html")),
    ("problem.html", include_str!("templates/problem.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("job.html", include_str!("templates/job.html")),
    ("orders.html", include_str!("templates/orders.html")),
    ("order.html", include_str!("templates/order.html")),
    ("keys.html", include_str!("templates/keys.html")),
    ("processes.html", include_str!("templates/processes.html")),
    ("endpoints.html", include_str!("templates/endpoints.html")),
];

pub(super) const STYLESHEET: &str = include_str!("assets/allot.css");
/// The key import form's upload progress (the form works without it).
pub(super) const IMPORT_SCRIPT: &str = include_str!("assets/import.js");

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // `.html` templates escape every value (minijinja's default): an
        // order's email or a job's error shows as text, never as markup.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        // Block tags leave no blank lines behind them in the page.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters are valid");
        env.set_syntax(syntax);
        // `urlencode` leaves `/` as it is: an order id holding one would
        // split the path of its page.
        env.add_filter("path_segment", |text: String| path_segment(&text));
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("dashboard template {name} is invalid: {e}"));
        }
        env
    })
}

/// Renders page `name` with `context`. A template that does not render is
/// our bug: a 500 page, and the error in the log.
pub(super) fn render(name: &str, context: impl Serialize) -> Result<Html<String>, Problem> {
    environment()
        .get_template(name)
        .and_then(|template| template.render(minijinja::Value::from(minijinja::value::Serde(&context))))
        .map(Html)
        .map_err(|error| {
            tracing::error!(template = name, error = %format!("{error:#}"), "a dashboard page failed to render");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "This page could not be shown. The server's log says why.",
            )
        })
}

/// A page that says what went wrong and what to do about it.
#[derive(Debug)]
pub(super) struct Problem {
    status: StatusCode,
    title: &'static str,
    message: String,
    /// The answer the API would give, when the cause is the database:
    /// its headers (`Retry-After`) and extensions (the outage alarm's mark)
    /// are kept, only the body becomes a page.
    api: Option<Box<ApiError>>,
}

/// `text` as one segment of a URL's path: every byte but the unreserved
/// ones percent-encoded (RFC 3986), as the templates' `urlencode` does.
pub(super) fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl Problem {
    pub(super) fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
            api: None,
        }
    }

    pub(super) fn disabled() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The dashboard is off",
            "Set ALLOT_ADMIN_TOKEN and restart allot to turn the dashboard on.",
        )
    }

    pub(super) fn forged_form() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "This form was not accepted",
            "It did not come from this session's own page (it may be stale, or forged). Nothing was changed; go back, reload the page and try again.",
        )
    }

    pub(super) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", what)
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        Self::database(ApiError::from(error))
    }
}

impl From<crate::db::Error> for Problem {
    fn from(error: crate::db::Error) -> Self {
        Self::database(ApiError::from(error))
    }
}

impl Problem {
    /// The page for the API's answer `api` to a failure of the database.
    fn database(api: ApiError) -> Self {
        Self {
            status: api.status,
            title: "The database did not answer",
            message: api.message.clone(),
            api: Some(Box::new(api)),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = environment()
            .get_template("problem.html")
            .and_then(|t| t.render(context! { title => self.title, message => &self.message }))
            .unwrap_or_else(|_| self.message.clone());
        let mut response = match self.api {
            Some(api) => (*api).into_response(),
            None => self.status.into_response(),
        };
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(body);
        response
    }
}

/// Headers on every dashboard answer: nothing cached (pages show live
/// stock and secrets' whereabouts), nothing but our own stylesheet and
/// script loaded,
/// no framing (clickjacking), no referrer leaving the host.
pub(super) async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}
