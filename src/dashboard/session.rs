//! Who may use the dashboard: the operator logs in once with
//! `ALLOT_ADMIN_TOKEN` (a form post, so the token is never in a URL, a
//! log or the browser's history) and gets a session cookie (`Secure`,
//! `HttpOnly`, `SameSite=Strict`, path `/admin`, twelve hours).
//!
//! The cookie is signed, not stored: `expiry.nonce.mac` with an HMAC under a
//! key derived from the admin token. Every instance behind a load balancer
//! accepts it without shared state, and changing the token ends every
//! session at once. Each session has a CSRF token (an HMAC of its nonce)
//! that every state-changing form carries; `SameSite=Strict` already keeps
//! other sites' forms from sending the cookie, the token also stops a form
//! planted on this origin's own pages by a bug elsewhere.

use std::time::Duration;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::header,
    http::request::Parts,
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use cookie::{Cookie, SameSite};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::page::Problem;
use crate::{clock::now_ms, config::Secret, http::AdminSecret};

pub(super) const COOKIE: &str = "allot_admin";

/// How long a login lasts.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Signs and checks sessions under a key that only the admin token gives.
struct Keyring {
    key: [u8; 32],
}

impl Keyring {
    fn new(token: &Secret) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"allot dashboard session v1\0");
        digest.update(token.expose().as_bytes());
        Self {
            key: digest.finalize().into(),
        }
    }

    fn mac(&self, parts: &[&str]) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A new session's cookie value, valid until `expires` (ms).
    fn issue(&self, expires: i64) -> String {
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let expires = expires.to_string();
        let mac = self.mac(&["session", &expires, &nonce]);
        format!("{expires}.{nonce}.{mac}")
    }

    /// The session `value` names, if this key signed it and it has not
    /// expired by `now`.
    fn open(&self, value: &str, now: i64) -> Option<Session> {
        let mut parts = value.splitn(3, '.');
        let (expires, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let expected = self.mac(&["session", expires, nonce]);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        if expires.parse::<i64>().ok()? <= now {
            return None;
        }
        Some(Session {
            csrf: self.mac(&["csrf", nonce]),
        })
    }
}

/// Extractor: a logged-in operator. Without a valid session a page
/// answers with a redirect to the login form; without a configured admin
/// token, with a page that says how to turn the dashboard on.
pub(super) struct Session {
    csrf: String,
}

impl Session {
    /// What this session's forms carry, as a hidden `csrf` field.
    pub(super) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Refuses a state-changing form that does not carry this session's
    /// token: it was forged, or is left from an earlier session.
    pub(super) fn check(&self, presented: &str) -> Result<(), Problem> {
        if bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            metrics::counter!("allot_admin_rejected_total").increment(1);
            Err(Problem::forged_form())
        }
    }
}

impl<S> FromRequestParts<S> for Session
where
    AdminSecret: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let AdminSecret(token) = AdminSecret::from_ref(state);
        let Some(token) = token else {
            return Err(Problem::disabled().into_response());
        };
        let keys = Keyring::new(&token);
        let now = now_ms();
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .filter(|cookie| cookie.name() == COOKIE)
            .find_map(|cookie| keys.open(cookie.value(), now))
            .ok_or_else(|| Redirect::to("/admin/login").into_response())
    }
}

/// The cookie of a new session for whoever presented `token`.
pub(super) fn start(token: &Secret) -> Cookie<'static> {
    let value = Keyring::new(token).issue(now_ms() + LIFETIME.as_millis() as i64);
    cookie(value, LIFETIME)
}

/// The cookie that ends a session in the browser.
pub(super) fn end() -> Cookie<'static> {
    cookie(String::new(), Duration::ZERO)
}

fn cookie(value: String, max_age: Duration) -> Cookie<'static> {
    Cookie::build((COOKIE, value))
        .path("/admin")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(token: &str) -> Keyring {
        Keyring::new(&Secret::from(token.to_string()))
    }

    #[test]
    fn a_session_opens_under_its_token_until_it_expires() {
        let keys = keyring("admin-token");
        let value = keys.issue(2_000);
        assert!(keys.open(&value, 1_999).is_some());
        assert!(keys.open(&value, 2_000).is_none(), "expired");
        assert!(keyring("other-token").open(&value, 1_000).is_none());
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let keys = keyring("admin-token");
        let value = keys.issue(2_000);
        let (_, rest) = value.split_once('.').unwrap();
        assert!(keys.open(&format!("9999999999999.{rest}"), 1_000).is_none());
        assert!(keys.open("", 1_000).is_none());
        assert!(keys.open("1.2", 1_000).is_none());
    }

    #[test]
    fn each_session_has_its_own_csrf_token() {
        let keys = keyring("admin-token");
        let one = keys.open(&keys.issue(2_000), 1_000).unwrap();
        let two = keys.open(&keys.issue(2_000), 1_000).unwrap();
        assert_ne!(one.csrf(), two.csrf());
        assert!(one.check(one.csrf()).is_ok());
        assert!(one.check(two.csrf()).is_err());
        assert!(one.check("").is_err());
    }
}
