//! Who may deliver orders: the shared webhook token (compared in constant
//! time), checked by the [`WebhookToken`] extractor, and, for WooCommerce,
//! the delivery signature.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::{config::Secret, http::ApiError};

/// `ALLOT_WEBHOOK_TOKEN`, as route state: `None` turns intake off. Shared,
/// since the extractor takes its own copy for every request.
#[derive(Clone)]
pub struct ExpectedToken(pub Option<Arc<Secret>>);

/// Extractor: the request carries the webhook token. Put it first in a
/// handler's arguments, so that nothing else is read without it: 503 when
/// no token is configured, 401 when the request's is missing or wrong.
pub struct WebhookToken;

impl<S> FromRequestParts<S> for WebhookToken
where
    ExpectedToken: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let expected = ExpectedToken::from_ref(state);
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        require_token(expected.0.as_deref(), &query, &parts.headers)?;
        Ok(Self)
    }
}

fn require_token(
    expected: Option<&Secret>,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    use axum::http::StatusCode;
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_disabled",
            "order intake is off: set ALLOT_WEBHOOK_TOKEN and use it as ?token=… in the webhook URL",
        ));
    };
    if !token_matches(expected, presented_token(query, headers)) {
        metrics::counter!("allot_webhook_rejected_total", "reason" => "token").increment(1);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong token: pass ?token= with the value of ALLOT_WEBHOOK_TOKEN",
        ));
    }
    Ok(())
}

/// The token from `?token=`, else `Authorization: Bearer …`, else
/// `X-Allot-Token`.
fn presented_token<'a>(query: &'a [(String, String)], headers: &'a HeaderMap) -> Option<&'a str> {
    query
        .iter()
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.as_str())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")
        })
        .or_else(|| headers.get("x-allot-token")?.to_str().ok())
}

fn token_matches(expected: &Secret, presented: Option<&str>) -> bool {
    crate::http::secret_matches(expected, presented)
}

/// `X-WC-Webhook-Signature`: base64 of HMAC-SHA256(body) keyed with the
/// webhook's secret. Checked in constant time.
pub fn woocommerce_signature_valid(secret: &Secret, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(signature) = headers
        .get("x-wc-webhook-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
    else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// WooCommerce's setup ping: a form body `webhook_id=N`, sent unsigned.
pub fn is_woocommerce_ping(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    !text.starts_with('{')
        && serde_urlencoded::from_str::<Vec<(String, String)>>(text)
            .is_ok_and(|fields| fields.iter().any(|(name, _)| name == "webhook_id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let secret = Secret::from("s3cret".to_string());
        assert!(token_matches(&secret, Some("s3cret")));
        assert!(!token_matches(&secret, Some("s3cret ")));
        assert!(!token_matches(&secret, Some("")));
        assert!(!token_matches(&secret, None));
    }

    #[test]
    fn woocommerce_signatures_are_checked() {
        let secret = Secret::from("wc-secret".to_string());
        let body = br#"{"id":1}"#;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(b"wc-secret").unwrap();
        mac.update(body);
        let good = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("x-wc-webhook-signature", good.parse().unwrap());
        assert!(woocommerce_signature_valid(&secret, &headers, body));
        assert!(!woocommerce_signature_valid(
            &secret,
            &headers,
            br#"{"id":2}"#
        ));
        headers.insert("x-wc-webhook-signature", "bm9wZQ==".parse().unwrap());
        assert!(!woocommerce_signature_valid(&secret, &headers, body));
        assert!(!woocommerce_signature_valid(
            &secret,
            &HeaderMap::new(),
            body
        ));
    }

    #[test]
    fn the_setup_ping_is_recognised() {
        assert!(is_woocommerce_ping(b"webhook_id=12"));
        assert!(!is_woocommerce_ping(br#"{"webhook_id": 12}"#));
        assert!(!is_woocommerce_ping(b"hello"));
    }
}
