//! The flash-sale coupon contract:
//! `POST /api/coupons`, `POST /api/coupons/claim`, `GET /api/coupons/{name}`.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use super::{Amount, Combiner, Coupon, CouponError, CouponName, UserId};
use crate::{
    db::Db,
    http::{ApiError, ApiJson},
};

/// One [`Combiner`] per router: claims of this process on a coupon share
/// its transactions.
pub fn router(db: Db, tasks: TaskTracker) -> Router {
    Router::new()
        .route("/api/coupons", post(create))
        // The static segment wins over `{name}`, so GET on it must still show
        // the coupon that happens to be named "claim".
        .route("/api/coupons/claim", post(claim).get(show_named_claim))
        .route("/api/coupons/{name}", get(show))
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

#[derive(Deserialize)]
struct CreateCoupon {
    name: String,
    amount: i64,
}

async fn create(
    State(claims): State<Combiner>,
    ApiJson(body): ApiJson<CreateCoupon>,
) -> Result<(StatusCode, Json<Coupon>), ApiError> {
    let name = CouponName::parse(body.name)?;
    let amount = Amount::parse(body.amount)?;
    let coupon = super::create(claims.db(), &name, amount).await?;
    Ok((StatusCode::CREATED, Json(coupon)))
}

#[derive(Deserialize)]
struct ClaimCoupon {
    user_id: String,
    coupon_name: String,
}

#[derive(Serialize)]
struct Claimed {
    status: &'static str,
    coupon_name: String,
    user_id: String,
}

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

async fn show(
    State(claims): State<Combiner>,
    Path(name): Path<String>,
) -> Result<Json<Coupon>, ApiError> {
    // A name that could never have been created cannot exist.
    let name = CouponName::parse(name).map_err(|_| CouponError::NotFound)?;
    Ok(Json(super::show(claims.db(), &name).await?))
}

async fn show_named_claim(state: State<Combiner>) -> Result<Json<Coupon>, ApiError> {
    show(state, Path("claim".to_string())).await
}
