//! The command line: `allot serve`, `allot worker`, `allot migrate`, and
//! the operator commands (`coupons`, `keys`, `jobs`, `mail`, `endpoints`,
//! `ctl`), one
//! file each (`ctl`'s interactive form in `console`).
//! Every command exits non-zero with a one-line reason on failure.

mod console;
mod coupons;
mod ctl;
mod endpoints;
mod jobs;
mod keys;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{Application, app, bench, config::Settings, db::Db, telemetry};
use coupons::CouponsCommand;
use endpoints::EndpointsCommand;
use jobs::{JobsCommand, MailCommand};
use keys::KeysCommand;

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
    /// Manage the license key pools.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect and redrive outbox jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Email tools.
    #[command(subcommand)]
    Mail(MailCommand),
    /// Merchant webhook endpoints: signed events out to the shop's other systems.
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
    /// Run job workers only (no HTTP) until SIGINT or SIGTERM.
    Worker,
    /// Steer running processes: an interactive console, or one COMMAND.
    Ctl {
        #[command(subcommand)]
        command: Option<ctl::CtlCommand>,
    },
    /// Load-test a server and verify what it did (starts one on
    /// ALLOT_DATABASE_URL unless --url names a running one).
    Bench {
        #[arg(value_enum)]
        scenario: bench::Scenario,
        /// Base URL of a running server, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// Concurrent connections, each sending one request after another.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// How long to send, e.g. 10s or 1m.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Also measure GET /healthz first, for as long, and print the ratio.
        #[arg(long)]
        healthz: bool,
        /// Print one JSON object.
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
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped(stop_on_signal())
                .await
        }
        Command::Worker => app::run_worker(settings, stop_on_signal()).await,
        Command::Migrate => {
            let db = Db::open(&settings.database).await?;
            println!("migrations applied ({})", db.backend().name());
            db.close().await;
            Ok(())
        }
        Command::Coupons(command) => {
            with_db(&settings, async |db| coupons::run(command, db).await).await
        }
        Command::Keys(command) => {
            with_db(&settings, async |db| {
                keys::run(command, db, &settings).await
            })
            .await
        }
        Command::Jobs(command) => {
            with_db(&settings, async |db| {
                jobs::run(command, db, &settings).await
            })
            .await
        }
        Command::Endpoints(command) => {
            with_db(&settings, async |db| {
                endpoints::run(command, db, &settings).await
            })
            .await
        }
        Command::Ctl { command } => {
            with_db(&settings, async |db| match command {
                Some(command) => ctl::run(command, db, &settings).await,
                None => console::run(db, &settings).await,
            })
            .await
        }
        Command::Bench {
            scenario,
            url,
            connections,
            duration,
            healthz,
            json,
        } => {
            let options = bench::Options {
                scenario,
                url,
                connections,
                duration,
                healthz,
            };
            let report = bench::run(settings, options).await?;
            bench::print(&report, json)?;
            anyhow::ensure!(report.verified, "verification failed");
            Ok(())
        }
        Command::Mail(MailCommand::Test { address }) => {
            with_db(&settings, async |db| {
                jobs::mail_test(db, &settings, &address).await
            })
            .await
        }
    }
}

/// Connects, applies migrations, runs `command`, closes the pool.
async fn with_db<T>(
    settings: &Settings,
    command: impl AsyncFnOnce(&Db) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let db = Db::open(&settings.database).await?;
    let result = command(&db).await;
    db.close().await;
    result
}

/// A token cancelled by SIGINT or SIGTERM.
fn stop_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    shutdown
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

pub(super) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    }
}
