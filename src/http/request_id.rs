//! Following one request: each request has an id, `x-request-id`, the
//! client's own when it sent a usable one and a new UUID otherwise, and the
//! answer carries it back. The request is handled inside a `request` span
//! that names it (with the method and path; never the query string, which
//! may hold the webhook token), and as the work of that request
//! (`telemetry::serving`), so that the jobs it enqueues carry the id to
//! the worker that runs them.

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::{self, Next},
    response::Response,
};
use tower::{ServiceBuilder, util::MapRequestLayer};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tracing::Instrument;

use crate::telemetry;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id a client may choose.
const MAX_LEN: usize = 128;

/// Wraps `routes` (outermost, so that every answer, a panic's 500 too,
/// carries the id).
pub(super) fn follow_requests(routes: Router) -> Router {
    routes.layer(
        ServiceBuilder::new()
            .layer(MapRequestLayer::new(drop_unusable_id))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(middleware::from_fn(in_its_span)),
    )
}

/// A client's id goes into our logs and back out in the answer: one that
/// is not 1–128 visible ASCII characters (or that comes twice) is dropped
/// here, and the request gets a new id as if it had sent none.
fn drop_unusable_id(mut request: Request) -> Request {
    let mut sent = request.headers().get_all(&X_REQUEST_ID).iter();
    let usable = match (sent.next(), sent.next()) {
        (None, _) => true,
        (Some(id), None) => is_usable(id),
        (Some(_), Some(_)) => false,
    };
    if !usable {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    request
}

fn is_usable(id: &HeaderValue) -> bool {
    let id = id.as_bytes();
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// Runs the rest of the request in its `request` span, as its work.
async fn in_its_span(request: Request, next: Next) -> Response {
    let id: Option<Arc<str>> = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(Arc::from);
    let span = tracing::info_span!(
        "request",
        request_id = id.as_deref(),
        method = %request.method(),
        path = request.uri().path(),
    );
    telemetry::serving(id, next.run(request))
        .instrument(span)
        .await
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::StatusCode};
    use tower::ServiceExt as _;

    use super::*;

    /// Answers with the request id its handler's work names.
    async fn seen() -> String {
        telemetry::request_id()
            .map(|id| id.to_string())
            .unwrap_or_default()
    }

    /// The id the answer carries, and the one the handler saw.
    async fn ids(sent: &[&[u8]]) -> (String, String) {
        let routes = Router::new().fallback(seen);
        let mut request = Request::builder().uri("/seen?token=secret");
        for id in sent {
            request = request.header(X_REQUEST_ID, HeaderValue::from_bytes(id).unwrap());
        }
        let response = follow_requests(routes)
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answered = response.headers()[X_REQUEST_ID]
            .to_str()
            .unwrap()
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (answered, String::from_utf8(body.to_vec()).unwrap())
    }

    fn is_uuid(id: &str) -> bool {
        id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    }

    #[tokio::test]
    async fn a_clients_usable_id_is_kept_and_echoed() {
        let id = "shop-7f3a/9c:delivery#1";
        assert_eq!(
            ids(&[id.as_bytes()]).await,
            (id.to_string(), id.to_string())
        );
        let longest = "x".repeat(MAX_LEN);
        assert_eq!(ids(&[longest.as_bytes()]).await.0, longest);
    }

    #[tokio::test]
    async fn a_request_without_an_id_gets_a_new_one() {
        let (answered, seen) = ids(&[]).await;
        assert!(is_uuid(&answered), "{answered}");
        assert_eq!(seen, answered);
        assert_ne!(ids(&[]).await.0, answered, "each request its own id");
    }

    #[tokio::test]
    async fn an_unusable_id_is_replaced() {
        let too_long = "x".repeat(MAX_LEN + 1);
        let unusable: [&[&[u8]]; 6] = [
            &[b""],
            &[b"two words"],
            &[b"tab\there"],
            &["caf\u{e9}".as_bytes()],
            &[too_long.as_bytes()],
            &[b"one", b"two"],
        ];
        for sent in unusable {
            let (answered, seen) = ids(sent).await;
            assert!(is_uuid(&answered), "{sent:?} answered {answered}");
            assert_eq!(seen, answered);
        }
    }
}
