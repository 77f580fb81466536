//! The flash-sale coupon contract:
//! `POST /api/coupons`, `POST /api/coupons/claim`, `GET /api/coupons/{name}`.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::{Amount, Coupon, CouponName, UserId};
use crate::http::{ApiError, ApiJson, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/coupons", post(create))
        // The static segment wins over `{name}`, so GET on it must still show
        // the coupon that happens to be named "claim".
        .route("/api/coupons/claim", post(claim).get(show_named_claim))
        .route("/api/coupons/{name}", get(show))
}

#[derive(Deserialize)]
struct CreateCoupon {
    name: String,
    amount: i64,
}

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateCoupon>,
) -> Result<(StatusCode, Json<Coupon>), ApiError> {
    let name = CouponName::parse(body.name)?;
    let amount = Amount::parse(body.amount)?;
    let coupon = super::create(&state.db, &name, amount).await?;
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
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ClaimCoupon>,
) -> Result<Json<Claimed>, ApiError> {
    let user = UserId::parse(body.user_id)?;
    let name = CouponName::parse(body.coupon_name).map_err(|e| rename_field(e, "coupon_name"))?;
    super::claim(&state.db, &name, &user).await?;
    Ok(Json(Claimed {
        status: "claimed",
        coupon_name: name.as_str().to_string(),
        user_id: user.as_str().to_string(),
    }))
}

/// The claim body calls the coupon's name `coupon_name`; say so in errors.
fn rename_field(error: super::CouponError, field: &str) -> super::CouponError {
    match error {
        super::CouponError::Invalid(msg) => {
            super::CouponError::Invalid(msg.replacen("name", field, 1))
        }
        other => other,
    }
}

async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Coupon>, ApiError> {
    // A name that could never have been created cannot exist.
    let name = CouponName::parse(name).map_err(|_| super::CouponError::NotFound)?;
    Ok(Json(super::show(&state.db, &name).await?))
}

async fn show_named_claim(state: State<AppState>) -> Result<Json<Coupon>, ApiError> {
    show(state, Path("claim".to_string())).await
}
