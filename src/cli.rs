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
    jobs::{self, Discarded, JobState, Worker},
    keys::{self, LicenseKey, Revoked, Sku},
    mail,
    orders::Fulfilment,
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
    /// Manage the license key pools.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect and redrive outbox jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Email tools.
    #[command(subcommand)]
    Mail(MailCommand),
    /// Run job workers only (no HTTP) until SIGINT or SIGTERM.
    Worker,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add keys to a SKU's pool from a CSV file (with a `license_key`
    /// column) or a file with one key per line.
    Import {
        file: PathBuf,
        #[arg(long)]
        sku: String,
    },
    /// Available, assigned and revoked keys per SKU.
    Stock {
        #[arg(long)]
        json: bool,
    },
    /// Take a key out of circulation.
    Revoke { key: String },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long, value_parser = ["queued", "running", "done", "dead"])]
        state: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show one job and every attempt it made.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Requeue a dead job (or all of them) with a fresh attempt budget.
    Retry {
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<i64>,
        #[arg(long)]
        all_dead: bool,
    },
    /// Delete a job that is not running.
    Discard { id: i64 },
}

#[derive(Subcommand)]
enum MailCommand {
    /// Queue a test email through the normal delivery path.
    Test { address: String },
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
        Command::Keys(command) => {
            let db = Db::connect(&settings).await?;
            db.migrate().await?;
            let result = run_keys(command, &db, &settings).await;
            db.close().await;
            result
        }
        Command::Jobs(command) => {
            let db = Db::connect(&settings).await?;
            db.migrate().await?;
            let result = run_jobs(command, &db, &settings).await;
            db.close().await;
            result
        }
        Command::Mail(MailCommand::Test { address }) => {
            let address = address.trim();
            mail::parse_address(address)?;
            let db = Db::connect(&settings).await?;
            db.migrate().await?;
            let job = mail::email_job(
                address,
                "test",
                serde_json::json!({"address": address}),
                settings.jobs.max_attempts(),
            )
            .dedupe_key(format!("mail-test:{address}:{}", jobs::now_ms()));
            let id = jobs::enqueue_now(&db, &job).await?;
            db.close().await;
            println!(
                "queued a test email to {address} as job {}; a running `allot serve` or `allot worker` delivers it",
                id.unwrap_or_default()
            );
            Ok(())
        }
        Command::Worker => work(settings).await,
    }
}

async fn work(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let db = Db::connect(&settings).await?;
    db.migrate().await?;
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    Worker::new(db.clone(), &settings)?
        .run(shutdown, settings.shutdown_grace)
        .await;
    db.close().await;
    Ok(())
}

async fn run_jobs(command: JobsCommand, db: &Db, settings: &Settings) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { state, json, limit } => {
            let state = state.as_deref().and_then(JobState::parse);
            let list = jobs::list(db, state, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no jobs");
            } else {
                println!(
                    "{:>8}  {:<20} {:<8} {:>8}  {:<24}  last error",
                    "id", "kind", "state", "attempts", "run at"
                );
                for job in list {
                    println!(
                        "{:>8}  {:<20} {:<8} {:>8}  {:<24}  {}",
                        job.id,
                        job.kind,
                        job.state,
                        format!("{}/{}", job.attempts, job.max_attempts),
                        jobs::rfc3339(job.run_at),
                        one_line(job.last_error.as_deref().unwrap_or("-"), 80),
                    );
                }
            }
        }
        JobsCommand::Show { id, json } => {
            let job = jobs::find(db, id)
                .await?
                .with_context(|| format!("no job {id}"))?;
            let attempts = jobs::attempts(db, id).await?;
            if json {
                let out = serde_json::json!({"job": job, "attempts": attempts});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "job {} ({}): {}, {}/{} attempts",
                    job.id, job.kind, job.state, job.attempts, job.max_attempts
                );
                println!("run at:     {}", jobs::rfc3339(job.run_at));
                println!("last error: {}", job.last_error.as_deref().unwrap_or("-"));
                for attempt in attempts {
                    println!(
                        "  attempt {:>3}  {}  {:<13} {:>6} ms  {}  {}",
                        attempt.attempt,
                        jobs::rfc3339(attempt.started_at),
                        attempt.outcome.as_deref().unwrap_or("running"),
                        attempt
                            .duration_ms
                            .map_or("-".to_string(), |d| d.to_string()),
                        attempt.worker,
                        one_line(attempt.error.as_deref().unwrap_or(""), 100),
                    );
                }
            }
        }
        JobsCommand::Retry { id, all_dead } => {
            let max_attempts = settings.jobs.max_attempts();
            if all_dead {
                let n = jobs::retry_dead(db, None, max_attempts).await?;
                println!("requeued {n} dead job(s)");
            } else if let Some(id) = id {
                if jobs::retry_dead(db, Some(id), max_attempts).await? == 0 {
                    match jobs::find(db, id).await? {
                        None => anyhow::bail!("no job {id}"),
                        Some(job) => anyhow::bail!(
                            "job {id} is {}, not dead; only dead jobs can be retried",
                            job.state
                        ),
                    }
                }
                println!("requeued job {id}");
            }
        }
        JobsCommand::Discard { id } => match jobs::discard(db, id).await? {
            Discarded::Yes => println!("discarded job {id}"),
            Discarded::NotFound => anyhow::bail!("no job {id}"),
            Discarded::Running => {
                anyhow::bail!("job {id} is running; discard it once its attempt has ended")
            }
        },
    }
    Ok(())
}

async fn run_keys(command: KeysCommand, db: &Db, settings: &Settings) -> anyhow::Result<()> {
    match command {
        KeysCommand::Import { file, sku } => {
            let sku = Sku::parse(&sku)?;
            let progress = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template"),
            );
            let report = keys::import::import_file(db, &file, &sku, &progress).await?;
            progress.finish_and_clear();
            println!(
                "imported {} key(s) into SKU {}",
                report.imported,
                sku.as_str()
            );
            let lines = |lines: &[u64]| {
                let shown: Vec<String> = lines.iter().take(20).map(u64::to_string).collect();
                let more = if lines.len() > 20 {
                    format!(", … {} more", lines.len() - 20)
                } else {
                    String::new()
                };
                format!("{}{more}", shown.join(", "))
            };
            if !report.blank.is_empty() {
                println!(
                    "skipped {} blank line(s): line {}",
                    report.blank.len(),
                    lines(&report.blank)
                );
            }
            if !report.duplicate_in_file.is_empty() {
                println!(
                    "skipped {} duplicate(s) of earlier lines: line {}",
                    report.duplicate_in_file.len(),
                    lines(&report.duplicate_in_file)
                );
            }
            if !report.already_in_pool.is_empty() {
                println!(
                    "skipped {} key(s) already in the pool: line {}",
                    report.already_in_pool.len(),
                    lines(&report.already_in_pool)
                );
            }
            for (line, reason) in report.invalid.iter().take(20) {
                println!("skipped line {line}: {reason}");
            }
            if report.invalid.len() > 20 {
                println!("skipped {} more invalid line(s)", report.invalid.len() - 20);
            }
            // Orders that waited for this SKU get their keys now, oldest
            // first (a running `allot serve` would also find them shortly).
            let fulfilment = Fulfilment::new(db.clone(), settings);
            let served = fulfilment
                .fulfil_waiting(&sku, jobs::now_ms())
                .await
                .context("fulfilling orders that waited for stock")?;
            if served > 0 {
                println!("fulfilled {served} waiting order(s); their emails are queued");
            }
        }
        KeysCommand::Stock { json } => {
            let stock = keys::stock(db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stock)?);
            } else if stock.is_empty() {
                println!("no keys; add some with `allot keys import FILE --sku SKU`");
            } else {
                let width = stock
                    .iter()
                    .map(|s| s.product_sku.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(11);
                println!(
                    "{:<width$}  {:>9}  {:>9}  {:>9}",
                    "product_sku", "available", "assigned", "revoked"
                );
                for row in stock {
                    println!(
                        "{:<width$}  {:>9}  {:>9}  {:>9}",
                        row.product_sku, row.available, row.assigned, row.revoked
                    );
                }
            }
        }
        KeysCommand::Revoke { key } => {
            match keys::revoke(db, &LicenseKey::parse(key.trim())?).await? {
                Revoked::Yes { was } => println!("revoked the key (it was {was})"),
                Revoked::Already => println!("the key was already revoked"),
                Revoked::NotFound => anyhow::bail!("no such key in any pool"),
            }
        }
    }
    Ok(())
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
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
