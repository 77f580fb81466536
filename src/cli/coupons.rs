//! `allot coupons create|show`.

use anyhow::Context;
use clap::Subcommand;

use crate::{
    coupons::{self, Amount, CouponName},
    db::Db,
};

#[derive(Subcommand)]
pub(super) enum CouponsCommand {
    /// Create a coupon with AMOUNT units.
    Create {
        name: String,
        #[arg(allow_negative_numbers = true)]
        amount: i64,
    },
    /// Show a coupon's stock and who claimed it.
    Show {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(command: CouponsCommand, db: &Db) -> anyhow::Result<()> {
    match command {
        CouponsCommand::Create { name, amount } => {
            let name = CouponName::parse(name)?;
            let coupon = coupons::create(db, &name, Amount::parse(amount)?).await?;
            println!(
                "created coupon {} with {} units",
                coupon.name, coupon.amount
            );
        }
        CouponsCommand::Show { name, json } => {
            let name = CouponName::parse(name)?;
            let coupon = coupons::show(db, &name)
                .await
                .with_context(|| format!("coupon {}", name.as_str()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&coupon)?);
            } else {
                println!("name:              {}", coupon.name);
                println!("amount:            {}", coupon.amount);
                println!("remaining_amount:  {}", coupon.remaining_amount);
                println!("claimed_by:        {} user(s)", coupon.claimed_by.len());
                for user in &coupon.claimed_by {
                    println!("  {user}");
                }
            }
        }
    }
    Ok(())
}
