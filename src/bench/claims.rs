//! `allot bench claims`: new users claiming one hot coupon, as fast as
//! they can. Verified afterwards: every 200 is a claim row, no user holds
//! two, and stock plus claims is the coupon's amount.

use std::collections::HashSet;

use indicatif::ProgressBar;
use serde_json::json;

use super::{Checks, Options, Target, Verdict, load};
use crate::coupons::{self, Amount, CouponName};

/// Large enough that the run never sells out: the figure is granted
/// claims per second.
const STOCK: i64 = 1_000_000_000;

pub(super) async fn run(
    target: &Target,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<(load::Tally, Verdict)> {
    let claims = Claims::prepare(target).await?;
    let tally = claims.drive(target, options, progress).await?;
    let checks = claims.verify(target, &tally).await?;
    Ok((tally, checks))
}

/// A new coupon, claimed by new users.
pub(super) struct Claims {
    coupon: CouponName,
}

impl Claims {
    pub(super) async fn prepare(target: &Target) -> anyhow::Result<Self> {
        let coupon = CouponName::parse(format!("bench-{}", super::run_id()))?;
        coupons::create(&target.db, &coupon, Amount::parse(STOCK)?).await?;
        Ok(Self { coupon })
    }

    pub(super) async fn drive(
        &self,
        target: &Target,
        options: &Options,
        progress: &ProgressBar,
    ) -> anyhow::Result<load::Tally> {
        let url = format!("{}/api/coupons/claim", target.base);
        let coupon = self.coupon.as_str().to_string();
        load::drive(
            options.connections,
            options.duration,
            progress,
            move |connection, sequence, client| {
                let body = json!({ "user_id": format!("u{connection}-{sequence}"), "coupon_name": coupon });
                let url = url.clone();
                async move {
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 200 => Ok(()),
                        other => Err(load::error_kind(other).await),
                    }
                }
            },
        )
        .await
    }

    pub(super) async fn verify(
        &self,
        target: &Target,
        tally: &load::Tally,
    ) -> anyhow::Result<Verdict> {
        verify(target, &self.coupon, tally).await
    }
}

async fn verify(
    target: &Target,
    name: &CouponName,
    tally: &load::Tally,
) -> anyhow::Result<Verdict> {
    let coupon = coupons::show(&target.db, name).await?;
    let claims = coupon.claimed_by.len() as u64;
    let holders: HashSet<&String> = coupon.claimed_by.iter().collect();
    let unanswered = tally.unanswered();
    let mut checks = Checks::default();
    checks.check(
        (tally.ok()..=tally.ok() + unanswered).contains(&claims),
        format!("{claims} claim rows for {} granted answers", tally.ok()),
    );
    checks.check(
        holders.len() as u64 == claims,
        format!("{} distinct holders of {claims} claims", holders.len()),
    );
    checks.check(
        coupon.remaining_amount + claims as i64 == coupon.amount,
        format!(
            "{} left + {claims} claimed = {} (the amount)",
            coupon.remaining_amount, coupon.amount
        ),
    );
    Ok(checks.verdict())
}
