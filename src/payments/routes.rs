//! The payment routes. The signature is the authentication: nothing is
//! read, stored or answered beyond the refusal until it holds.
//!
//! - `POST /v1/webhooks/stripe`: `Stripe-Signature` against
//!   `ALLOT_STRIPE_WEBHOOK_SECRET`;
//! - `POST /v1/webhooks/payments`: Standard Webhooks headers against
//!   `ALLOT_PAYMENT_WEBHOOK_SECRET`.
//!
//! Both answer 503 while their secret is unset, 400 for a missing or
//! malformed signature header, 401 for a stale or wrong signature, and
//! otherwise 200 with a [`Receipt`](super::Receipt): a provider's event is
//! never refused for its content (Stripe would retry it for days).

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};

use super::{Payments, Receipt, generic, stripe};
use crate::{
    clock::now_ms,
    config::{PaymentSettings, Secret},
    http::ApiError,
    intake::normalize::Source,
    merchant::signing,
};

#[derive(Clone)]
struct Intake {
    payments: Payments,
    stripe_secret: Option<Secret>,
    stripe_skus: std::collections::BTreeMap<String, String>,
    payment_key: Option<Vec<u8>>,
}

pub fn router(payments: Payments, settings: &PaymentSettings) -> Router {
    let state = Intake {
        payments,
        stripe_secret: settings.stripe_webhook_secret.clone(),
        stripe_skus: settings.stripe_skus.clone(),
        payment_key: settings
            .payment_webhook_secret
            .as_ref()
            .and_then(|s| signing::key_of(s.expose())),
    };
    Router::new()
        .route("/v1/webhooks/stripe", post(from_stripe))
        .route("/v1/webhooks/payments", post(from_any_provider))
        .with_state(state)
}

fn refused(
    reason: &'static str,
    status: StatusCode,
    code: &'static str,
    message: &str,
) -> ApiError {
    metrics::counter!("allot_webhook_rejected_total", "reason" => reason).increment(1);
    ApiError::new(status, code, message.to_string())
}

async fn from_stripe(
    State(intake): State<Intake>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let Some(secret) = &intake.stripe_secret else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stripe_disabled",
            "Stripe intake is off: set ALLOT_STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_…)",
        ));
    };
    let now = now_ms();
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    match stripe::verify(secret.expose(), header, &body, now / 1000) {
        Ok(()) => {}
        Err(stripe::Refused::Malformed) => {
            return Err(refused(
                "signature",
                StatusCode::BAD_REQUEST,
                "invalid_signature",
                "Stripe-Signature is missing or has no t= and v1= parts",
            ));
        }
        Err(stripe::Refused::Stale) => {
            return Err(refused(
                "stale",
                StatusCode::UNAUTHORIZED,
                "stale_signature",
                "Stripe-Signature's timestamp is more than 5 minutes from now: a replay, or a clock that is off",
            ));
        }
        Err(stripe::Refused::Mismatch) => {
            return Err(refused(
                "signature",
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "Stripe-Signature does not match the body and ALLOT_STRIPE_WEBHOOK_SECRET",
            ));
        }
    }
    let receipt = match stripe::parse(&body, &intake.stripe_skus) {
        Ok(event) => intake.payments.receive(event, &body, now).await?,
        // Signed by Stripe, yet unreadable: kept for a person, never refused.
        Err(problem) => {
            intake
                .payments
                .unreadable(Source::Stripe, &body, &problem, now)
                .await?
        }
    };
    Ok(Json(receipt))
}

async fn from_any_provider(
    State(intake): State<Intake>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let Some(key) = &intake.payment_key else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "payments_disabled",
            "payment intake is off: set ALLOT_PAYMENT_WEBHOOK_SECRET (whsec_…) and sign events per Standard Webhooks",
        ));
    };
    let now = now_ms();
    let id = match signing::verify(key, &headers, &body, now / 1000, stripe::TOLERANCE) {
        Ok(id) => id,
        Err(problem @ signing::Refused::Malformed) => {
            return Err(refused(
                "signature",
                StatusCode::BAD_REQUEST,
                "invalid_signature",
                problem.describe(),
            ));
        }
        Err(problem @ signing::Refused::Stale) => {
            return Err(refused(
                "stale",
                StatusCode::UNAUTHORIZED,
                "stale_signature",
                problem.describe(),
            ));
        }
        Err(problem @ signing::Refused::Mismatch) => {
            return Err(refused(
                "signature",
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                problem.describe(),
            ));
        }
    };
    let event = generic::parse(&body, &id)
        .map_err(|problem| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", problem))?;
    Ok(Json(intake.payments.receive(event, &body, now).await?))
}
