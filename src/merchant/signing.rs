//! Standard Webhooks (<https://www.standardwebhooks.com>): secrets
//! `whsec_<base64>`, and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, several space-separated during a secret rotation.
//! Used to sign what merchants receive and to check what payment providers
//! send to `POST /v1/webhooks/payments`.

use std::time::Duration;

use axum::http::HeaderMap;
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A fresh signing secret: 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_…` secret (the prefix is optional, as the
/// reference implementations accept it); `None` if it is not base64.
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.trim().strip_prefix(PREFIX).unwrap_or(secret.trim());
    STANDARD.decode(encoded).ok().filter(|key| !key.is_empty())
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> hmac::Hmac<Sha256> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `v1,<signature>` of message `id` sent at `timestamp` (Unix seconds).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = mac(key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(signature))
}

/// Why a signed request (Standard Webhooks here, Stripe's in `payments`)
/// was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A header is missing or unreadable.
    Malformed,
    /// The timestamp is outside the tolerance: stale, or a replay.
    Stale,
    /// No `v1` signature matches.
    Mismatch,
}

/// Checks a Standard Webhooks request against `key`: the message id it
/// names, if the signature holds. Constant-time comparison of each `v1`.
pub fn verify(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
    tolerance: Duration,
) -> Result<String, Refused> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(Refused::Malformed)
    };
    let id = header("webhook-id")?;
    let timestamp: i64 = header("webhook-timestamp")?
        .parse()
        .map_err(|_| Refused::Malformed)?;
    let signatures = header("webhook-signature")?;
    if now_secs.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(Refused::Stale);
    }
    let matches = signatures
        .split(' ')
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|sig| STANDARD.decode(sig).ok())
        .any(|sig| mac(key, id, timestamp, body).verify_slice(&sig).is_ok());
    if matches {
        Ok(id.to_string())
    } else {
        Err(Refused::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's test suite.
    #[test]
    fn signs_like_the_specification() {
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verifies_any_signature_within_tolerance() {
        let key = key_of(&new_secret()).unwrap();
        let other = key_of(&new_secret()).unwrap();
        let body = b"{}";
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        headers.insert("webhook-timestamp", "1000".parse().unwrap());
        let both = format!(
            "{} {}",
            sign(&other, "msg_1", 1000, body),
            sign(&key, "msg_1", 1000, body)
        );
        headers.insert("webhook-signature", both.parse().unwrap());
        let five_minutes = Duration::from_secs(300);
        assert_eq!(
            verify(&key, &headers, body, 1100, five_minutes),
            Ok("msg_1".into())
        );
        assert_eq!(
            verify(&key, &headers, b"{ }", 1100, five_minutes),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(&key, &headers, body, 1400, five_minutes),
            Err(Refused::Stale)
        );
        headers.remove("webhook-id");
        assert_eq!(
            verify(&key, &headers, body, 1000, five_minutes),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn secrets_round_trip() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(key_of(&secret).unwrap().len(), 32);
        assert!(key_of("whsec_not base64!").is_none());
    }
}
