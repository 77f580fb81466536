//! The machine-readable contract: `GET /openapi.json` (OpenAPI 3.1) and
//! `GET /docs`, an interactive reference to it.
//!
//! The document is generated from the routes themselves: every capability
//! registers its handlers through `utoipa_axum`'s `routes!`, which takes the
//! method and path from the handler's `#[utoipa::path]`, so a route cannot
//! be served without its entry, nor documented at a path it is not served
//! at. This module adds what belongs to no route: the title, the tags, the
//! error body and the security schemes. The reference page is Swagger UI,
//! compiled into the binary (`utoipa-swagger-ui`'s `vendored` feature): it
//! loads nothing from another host, so it works on an offline machine.
//!
//! Imports no capability; `app` hands it the document the routers made.

use axum::Router;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, Object, RefOr, Required, Type,
        header::HeaderBuilder,
        path::{ParameterBuilder, ParameterIn},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::http::ErrorBody;

/// Where the document and the reference page are served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
pub const DOCS_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "allot",
        description = "Flash-sale fulfilment: coupons claimed exactly once, license keys sold from shop and payment webhooks, the outbox that emails every buyer, merchant webhooks, and the operator's control channel. Every error answer is `{\"error\": \"<machine_code>\", \"message\": \"<human text>\"}`; a 503 carries `Retry-After` when trying again will work.",
        license(name = "See the repository")
    ),
    paths(document, reference_redirect, reference),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "coupons", description = "The flash-sale coupon API"),
        (name = "orders", description = "Shop webhooks in (WooCommerce, Amelia, Bookly, generic JSON) and the orders they made"),
        (name = "payments", description = "Signed payment events (Stripe, Standard Webhooks)"),
        (name = "admin", description = "Statistics and the control channel, behind `ALLOT_ADMIN_TOKEN`"),
        (name = "merchant endpoints", description = "Where allot posts signed events, behind `ALLOT_ADMIN_TOKEN`"),
        (name = "operations", description = "Liveness, readiness, metrics and this document"),
        (name = "dashboard", description = "The operator's pages in the browser (HTML), behind a session from signing in with `ALLOT_ADMIN_TOKEN`"),
    )
)]
struct Contract;

/// The part of the document no route contributes; the routers merge their
/// paths and schemas into it.
pub fn contract() -> openapi::OpenApi {
    Contract::openapi()
}

/// `document` with the request id on every operation: each may send
/// `X-Request-Id` and each answer carries one (`http::request_id` does it
/// for every route, so it is said here once rather than by each route).
pub fn with_request_ids(mut document: openapi::OpenApi) -> openapi::OpenApi {
    const NAME: &str = "X-Request-Id";
    let sent = ParameterBuilder::new()
        .name(NAME)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The request's id for the logs and the jobs it enqueues; kept if it is 1 to 128 visible ASCII characters (`!` to `~`), else a new UUID replaces it",
        ))
        .schema(Some(Object::with_type(Type::String)))
        .build();
    let echoed = HeaderBuilder::new()
        .schema(Some(Object::with_type(Type::String)))
        .description(Some(
            "The request's id: the one sent, or the UUID made for it",
        ))
        .build();
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().filter_map(Option::as_mut) {
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            parameters.push(RefOr::T(sent.clone()));
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    let header = RefOr::T(echoed.clone());
                    response.headers.insert(NAME.to_string(), header);
                }
            }
        }
    }
    document
}

/// The security schemes the routes name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let header = |name, description| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        let bearer = |description| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        let schemes = [
            (
                "webhook_token_query",
                SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                    "token",
                    "ALLOT_WEBHOOK_TOKEN as `?token=`",
                ))),
            ),
            (
                "webhook_token_header",
                header("X-Allot-Token", "ALLOT_WEBHOOK_TOKEN in a header"),
            ),
            (
                "webhook_bearer",
                bearer("ALLOT_WEBHOOK_TOKEN as `Authorization: Bearer …`"),
            ),
            (
                "admin_token",
                bearer(
                    "ALLOT_ADMIN_TOKEN as `Authorization: Bearer …` (compared in constant time)",
                ),
            ),
            (
                "stripe_signature",
                header(
                    "Stripe-Signature",
                    "Stripe's signature of the body under ALLOT_STRIPE_WEBHOOK_SECRET",
                ),
            ),
            (
                "standard_webhooks",
                header(
                    "webhook-signature",
                    "A Standard Webhooks signature under ALLOT_PAYMENT_WEBHOOK_SECRET, with `webhook-id` and `webhook-timestamp`",
                ),
            ),
            (
                "dashboard_session",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    "allot_admin",
                    "The session cookie set by signing in at /admin/login; forms also carry its CSRF token",
                ))),
            ),
        ];
        for (name, scheme) in schemes {
            components.add_security_scheme(name, scheme);
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapiDocument", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
#[allow(dead_code)] // Served by `SwaggerUi`; the function only carries the entry.
fn document() {}

/// The interactive API reference's address without its slash.
#[utoipa::path(get, path = "/docs", operation_id = "apiReferenceRedirect", tag = "operations",
    responses((status = 303, description = "To `/docs/`")))]
#[allow(dead_code)] // Served by `SwaggerUi`; the function only carries the entry.
fn reference_redirect() {}

/// The interactive API reference (Swagger UI, served from the binary).
#[utoipa::path(get, path = "/docs/", operation_id = "apiReference", tag = "operations",
    responses((status = 200, description = "The reference page; its scripts and styles are under `/docs/`", content_type = "text/html", body = String)))]
#[allow(dead_code)] // Served by `SwaggerUi`; the function only carries the entry.
fn reference() {}

/// `/openapi.json` and `/docs` (which redirects to `/docs/`).
pub fn router(document: openapi::OpenApi) -> Router {
    // Swagger UI would otherwise send the document to a public validator
    // to show a badge: nothing leaves the host.
    let config = Config::new([DOCUMENT_PATH])
        .validator_url("none")
        .try_it_out_enabled(true)
        .persist_authorization(false);
    SwaggerUi::new(DOCS_PATH)
        .url(DOCUMENT_PATH, document)
        .config(config)
        .into()
}
