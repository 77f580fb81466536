//! The flash-sale coupon contract:
//! `POST /api/coupons`, `POST /api/coupons/claim`, `GET /api/coupons/{name}`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Amount, Combiner, Coupon, CouponError, CouponName, UserId};
use crate::{
    db::Db,
    http::{ApiError, ApiJson, ErrorBody},
};

/// One [`Combiner`] per router: claims of this process on a coupon share
/// its transactions.
pub fn router(db: Db, tasks: TaskTracker) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create))
        // The static segment wins over `{name}`, so GET on it must still show
        // the coupon that happens to be named "claim".
        .routes(routes!(claim, show_named_claim))
        .routes(routes!(show))
        .with_state(Combiner::new(db, tasks))
}

impl From<CouponError> for ApiError {
    fn from(error: CouponError) -> Self {
        let message = error.to_string();
        match error {
            CouponError::Invalid(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            CouponError::AlreadyExists => {
                Self::new(StatusCode::CONFLICT, "already_exists", message)
            }
            CouponError::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            CouponError::AlreadyClaimed => {
                Self::new(StatusCode::CONFLICT, "already_claimed", message)
            }
            CouponError::OutOfStock => Self::new(StatusCode::CONFLICT, "out_of_stock", message),
            CouponError::Database(e) => e.as_ref().into(),
            CouponError::Interrupted => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "interrupted",
                "the claim was interrupted; nothing was changed, try again",
            )
            .retry_after(1),
        }
    }
}

#[derive(Deserialize, ToSchema)]
struct CreateCoupon {
    /// 1 to 255 characters, no control characters, no surrounding spaces.
    #[schema(example = "PROMO_SUPER")]
    name: String,
    /// Units to hand out, at least 1.
    #[schema(minimum = 1, example = 100)]
    amount: i64,
}

/// Create a coupon with `amount` units.
#[utoipa::path(post, path = "/api/coupons", operation_id = "createCoupon", tag = "coupons",
    request_body = CreateCoupon,
    responses(
        (status = 201, description = "Created", body = Coupon),
        (status = 400, description = "`invalid_request` (amount below 1, bad name, wrong types, missing fields), `malformed_json`, `invalid_content_type`", body = ErrorBody),
        (status = 409, description = "`already_exists`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
    ))]
async fn create(
    State(claims): State<Combiner>,
    ApiJson(body): ApiJson<CreateCoupon>,
) -> Result<(StatusCode, Json<Coupon>), ApiError> {
    let name = CouponName::parse(body.name)?;
    let amount = Amount::parse(body.amount)?;
    let coupon = super::create(claims.db(), &name, amount).await?;
    Ok((StatusCode::CREATED, Json(coupon)))
}

#[derive(Deserialize, ToSchema)]
struct ClaimCoupon {
    #[schema(example = "user_12345")]
    user_id: String,
    #[schema(example = "PROMO_SUPER")]
    coupon_name: String,
}

#[derive(Serialize, ToSchema)]
struct Claimed {
    /// Always `claimed`.
    #[schema(value_type = String, example = "claimed")]
    status: &'static str,
    coupon_name: String,
    user_id: String,
}

/// Claim one unit for a user: each user gets at most one unit of a coupon.
#[utoipa::path(post, path = "/api/coupons/claim", operation_id = "claimCoupon", tag = "coupons",
    request_body = ClaimCoupon,
    responses(
        (status = 200, description = "Claimed", body = Claimed),
        (status = 400, description = "`invalid_request`, `malformed_json`, `invalid_content_type`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such coupon", body = ErrorBody),
        (status = 409, description = "`already_claimed` (decided before stock) or `out_of_stock`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`interrupted`, `database_busy` or `database_unavailable`: nothing was changed, try again (`Retry-After`)", body = ErrorBody),
    ))]
async fn claim(
    State(claims): State<Combiner>,
    ApiJson(body): ApiJson<ClaimCoupon>,
) -> Result<Json<Claimed>, ApiError> {
    let user = UserId::parse(body.user_id)?;
    let name = CouponName::parse(body.coupon_name).map_err(|e| rename_field(e, "coupon_name"))?;
    super::claim(&claims, &name, &user).await?;
    Ok(Json(Claimed {
        status: "claimed",
        coupon_name: name.as_str().to_string(),
        user_id: user.as_str().to_string(),
    }))
}

/// The claim body calls the coupon's name `coupon_name`; say so in errors.
fn rename_field(error: CouponError, field: &str) -> CouponError {
    match error {
        CouponError::Invalid(msg) => CouponError::Invalid(msg.replacen("name", field, 1)),
        other => other,
    }
}

/// A coupon's stock and who claimed it, in claim order.
#[utoipa::path(get, path = "/api/coupons/{name}", operation_id = "showCoupon", tag = "coupons",
    params(("name" = String, Path, description = "The coupon's name")),
    responses(
        (status = 200, description = "The coupon", body = Coupon),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn show(
    State(claims): State<Combiner>,
    Path(name): Path<String>,
) -> Result<Json<Coupon>, ApiError> {
    // A name that could never have been created cannot exist.
    let name = CouponName::parse(name).map_err(|_| CouponError::NotFound)?;
    Ok(Json(super::show(claims.db(), &name).await?))
}

/// The coupon named `claim` (the claim route's own path, read).
#[utoipa::path(get, path = "/api/coupons/claim", operation_id = "showCouponNamedClaim", tag = "coupons",
    responses(
        (status = 200, description = "The coupon named `claim`", body = Coupon),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn show_named_claim(state: State<Combiner>) -> Result<Json<Coupon>, ApiError> {
    show(state, Path("claim".to_string())).await
}
