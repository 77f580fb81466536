//! Who may use the admin routes: `Authorization: Bearer <ALLOT_ADMIN_TOKEN>`,
//! compared in constant time. Without a configured token the admin routes
//! are off (503) rather than open.

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{StatusCode, header, request::Parts},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::Secret;

/// `ALLOT_ADMIN_TOKEN`, as route state: `None` turns the admin routes off.
#[derive(Clone)]
pub struct AdminSecret(pub Option<Secret>);

/// Extractor: the request carries the admin token. Put it first in a
/// handler's arguments, so that nothing else is read without it.
pub struct AdminToken;

impl<S> FromRequestParts<S> for AdminToken
where
    AdminSecret: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let AdminSecret(expected) = AdminSecret::from_ref(state);
        let Some(expected) = expected else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "admin_disabled",
                "the admin API is off: set ALLOT_ADMIN_TOKEN and send it as Authorization: Bearer …",
            ));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !secret_matches(&expected, presented) {
            metrics::counter!("allot_admin_rejected_total").increment(1);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the admin token as Authorization: Bearer …",
            ));
        }
        Ok(Self)
    }
}

/// Whether `presented` is `expected`, in constant time. Digests first:
/// equal lengths, so the comparison's time says nothing about the secret's
/// length either.
pub fn secret_matches(expected: &Secret, presented: Option<&str>) -> bool {
    presented.is_some_and(|presented| {
        let expected = Sha256::digest(expected.expose().as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        bool::from(expected.ct_eq(&presented))
    })
}
