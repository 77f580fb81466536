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
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Payments, Receipt, generic, stripe};
use crate::{
    clock::now_ms,
    config::{PaymentSettings, Secret},
    http::{ApiError, ErrorBody},
    intake::normalize::Source,
    merchant::signing::{self, Refused},
};

#[derive(Clone)]
struct Intake {
    payments: Payments,
    stripe_secret: Option<Secret>,
    stripe_skus: std::collections::BTreeMap<String, String>,
    payment_key: Option<Vec<u8>>,
}

pub fn router(payments: Payments, settings: &PaymentSettings) -> OpenApiRouter {
    let state = Intake {
        payments,
        stripe_secret: settings.stripe_webhook_secret.clone(),
        stripe_skus: settings.stripe_skus.clone(),
        payment_key: settings
            .payment_webhook_secret
            .as_ref()
            .and_then(|s| signing::key_of(s.expose())),
    };
    OpenApiRouter::new()
        .routes(routes!(from_stripe))
        .routes(routes!(from_any_provider))
        .with_state(state)
}

/// The answer to a request whose signature does not hold; `header` names
/// what was checked, `secret` the setting it was checked against.
fn refused(problem: Refused, header: &str, secret: &str) -> ApiError {
    let (reason, status, code, message) = match problem {
        Refused::Malformed => (
            "signature",
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            format!("{header} is missing or malformed"),
        ),
        Refused::Stale => (
            "stale",
            StatusCode::UNAUTHORIZED,
            "stale_signature",
            format!(
                "{header}'s timestamp is more than 5 minutes from now: a replay, or a clock that is off"
            ),
        ),
        Refused::Mismatch => (
            "signature",
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("{header} does not match the body and {secret}"),
        ),
    };
    metrics::counter!("allot_webhook_rejected_total", "reason" => reason).increment(1);
    ApiError::new(status, code, message)
}

/// A Stripe event (`checkout.session.completed`, `…async_payment_succeeded`,
/// `charge.refunded`, …). The signature is the authentication; a signed
/// event is never refused for its content.
#[utoipa::path(post, path = "/v1/webhooks/stripe", operation_id = "receiveStripeEvent", tag = "payments",
    security(("stripe_signature" = [])),
    request_body(content = serde_json::Value, description = "The Stripe event, byte for byte as signed", content_type = "application/json"),
    responses(
        (status = 200, description = "What was done", body = Receipt),
        (status = 400, description = "`invalid_signature`: `Stripe-Signature` missing or malformed", body = ErrorBody),
        (status = 401, description = "`stale_signature` (more than 5 minutes from now), `bad_signature`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`stripe_disabled` (no `ALLOT_STRIPE_WEBHOOK_SECRET`), `database_unavailable`", body = ErrorBody),
    ))]
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
    stripe::verify(secret.expose(), header, &body, now / 1000)
        .map_err(|problem| refused(problem, "Stripe-Signature", "ALLOT_STRIPE_WEBHOOK_SECRET"))?;
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

/// A payment event from any provider, signed per Standard Webhooks.
#[utoipa::path(post, path = "/v1/webhooks/payments", operation_id = "receivePaymentEvent", tag = "payments",
    security(("standard_webhooks" = [])),
    params(
        ("webhook-id" = String, Header, description = "The event's id (also the idempotency key)"),
        ("webhook-timestamp" = String, Header, description = "Unix seconds; more than 5 minutes from now is refused"),
    ),
    request_body(content = serde_json::Value, description = "`{\"type\": \"payment.succeeded\"|\"payment.refunded\", \"data\": {…}}` (see the reference)", content_type = "application/json"),
    responses(
        (status = 200, description = "What was done", body = Receipt),
        (status = 400, description = "`invalid_signature` (headers missing or malformed), `invalid_event` (names what is missing)", body = ErrorBody),
        (status = 401, description = "`stale_signature`, `bad_signature`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`payments_disabled` (no `ALLOT_PAYMENT_WEBHOOK_SECRET`), `database_unavailable`", body = ErrorBody),
    ))]
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
    let id = signing::verify(key, &headers, &body, now / 1000, stripe::TOLERANCE).map_err(
        |problem| {
            refused(
                problem,
                "webhook-signature (with webhook-id and webhook-timestamp)",
                "ALLOT_PAYMENT_WEBHOOK_SECRET",
            )
        },
    )?;
    let event = generic::parse(&body, &id)
        .map_err(|problem| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", problem))?;
    Ok(Json(intake.payments.receive(event, &body, now).await?))
}
