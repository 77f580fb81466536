//! The command line: `allot serve`, `allot migrate`, `allot coupons …`.
//! Every command exits non-zero with a one-line reason on failure.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{
    Application,
    config::Settings,
    coupons::{self, Amount, CouponName},
    db::Db,
    telemetry,
};

#[derive(Parser)]
#[command(name = "allot", version, about = "Flash-sale fulfilment backend")]
struct Cli {
    /// Settings file (default: ./allot.toml if present).
    #[arg(long, env = "ALLOT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API until SIGINT or SIGTERM.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create and inspect flash-sale coupons.
    #[command(subcommand)]
    Coupons(CouponsCommand),
}

#[derive(Subcommand)]
enum CouponsCommand {
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

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(settings.log_format);
    match run(cli.command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let db = Db::connect(&settings).await?;
            db.migrate().await?;
            println!("migrations applied ({})", db.backend().name());
            Ok(())
        }
        Command::Coupons(command) => {
            let db = Db::connect(&settings).await?;
            db.migrate().await?;
            let result = run_coupons(command, &db).await;
            db.close().await;
            result
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    Application::build(settings)
        .await?
        .run_until_stopped(shutdown)
        .await
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                shutdown.cancel();
                return;
            }
        };
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received, shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
    shutdown.cancel();
}

async fn run_coupons(command: CouponsCommand, db: &Db) -> anyhow::Result<()> {
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
