//! `allot bench`: a load generator and verifier, like `pgbench`. It drives
//! a running server (`--url`) or one it starts in this process on
//! `ALLOT_DATABASE_URL`, for a while from N connections, then checks in the
//! database that what the server acknowledged is what it did.
//!
//! - `load`: the connections, latencies and error counts;
//! - `claims`, `orders`: what each scenario sends and verifies;
//! - `mixed`: both at once, each on half the connections;
//! - `jobs`: no-op jobs drained by the worker loop in this process.
//!
//! Top of the module graph beside `cli`: it uses the application as a
//! user would, and nothing imports it but `cli`.

mod claims;
mod jobs;
mod load;
mod mixed;
mod orders;

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    Application,
    config::{MailTransport, Settings},
    db::Db,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Coupon claims by new users on one hot coupon.
    Claims,
    /// Webhook orders (new order ids) for one SKU: key vended, email queued.
    Orders,
    /// No-op jobs drained through the workers.
    Jobs,
    /// Claims and orders at once.
    Mixed,
}

pub struct Options {
    pub scenario: Scenario,
    /// A running server; without it one is started in this process.
    pub url: Option<String>,
    pub connections: usize,
    pub duration: Duration,
    /// Also measure `GET /healthz` of the same server, as the reference.
    pub healthz: bool,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub connections: usize,
    pub duration_s: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    pub verified: bool,
    /// What was checked, or what was found wrong.
    pub checks: Vec<String>,
    pub healthz_ops_per_s: Option<f64>,
    pub ratio_to_healthz: Option<f64>,
    /// `mixed`: requests per second of each half, by scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<BTreeMap<String, f64>>,
}

/// The server under load and the database behind it.
struct Target {
    base: String,
    db: Db,
    webhook_token: String,
    server: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    _mail: Option<tempfile::TempDir>,
}

pub async fn run(mut settings: Settings, options: Options) -> anyhow::Result<Report> {
    let scenario = match options.scenario {
        Scenario::Claims => "claims",
        Scenario::Orders => "orders",
        Scenario::Jobs => "jobs",
        Scenario::Mixed => "mixed",
    };
    anyhow::ensure!(options.connections > 0, "--connections must be at least 1");
    if options.scenario == Scenario::Jobs {
        return run_jobs(settings, &options).await;
    }
    let target = Target::start(&mut settings, options.url.as_deref()).await?;
    let progress = progress_bar(options.duration, scenario);
    let healthz = match options.healthz {
        true => Some(healthz(&target, &options, &progress).await?),
        false => None,
    };
    progress.set_message(scenario);
    let (tally, checks, parts) = match options.scenario {
        Scenario::Claims => {
            let (tally, checks) = claims::run(&target, &options, &progress).await?;
            (tally, checks, None)
        }
        Scenario::Mixed => {
            let mixed = mixed::run(&target, &options, &progress).await?;
            (mixed.tally, mixed.verdict, Some(mixed.parts))
        }
        _ => {
            let (tally, checks) = orders::run(&target, &options, &progress).await?;
            (tally, checks, None)
        }
    };
    progress.finish_and_clear();
    let backend = target.db.backend().name();
    target.stop().await;
    let mut report = report(scenario, backend, &options, tally, checks, healthz);
    report.parts = parts.map(|parts| {
        parts
            .into_iter()
            .map(|(part, ops)| (part.to_string(), ops))
            .collect()
    });
    Ok(report)
}

/// The jobs scenario needs no server: its workers run in this process.
async fn run_jobs(settings: Settings, options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.url.is_none() && !options.healthz,
        "the jobs scenario runs the workers itself on ALLOT_DATABASE_URL; --url and --healthz do not apply"
    );
    let db = Db::open(&settings.database).await?;
    let progress = progress_bar(options.duration, "jobs");
    let (tally, checks) = jobs::run(&settings, &db, options, &progress).await?;
    progress.finish_and_clear();
    let backend = db.backend().name();
    db.close().await;
    Ok(report("jobs", backend, options, tally, checks, None))
}

fn report(
    scenario: &'static str,
    backend: &'static str,
    options: &Options,
    tally: load::Tally,
    checks: Verdict,
    healthz: Option<f64>,
) -> Report {
    let ops_per_s = tally.ops_per_s();
    Report {
        scenario,
        backend,
        connections: options.connections,
        duration_s: tally.elapsed.as_secs_f64(),
        ops: tally.ok(),
        ops_per_s,
        p50_ms: tally.quantile_ms(0.5),
        p90_ms: tally.quantile_ms(0.9),
        p99_ms: tally.quantile_ms(0.99),
        max_ms: tally.quantile_ms(1.0),
        verified: checks.is_ok(),
        checks: checks.unwrap_or_else(|problems| problems),
        errors: tally.errors,
        healthz_ops_per_s: healthz,
        ratio_to_healthz: healthz.map(|h| ops_per_s / h),
        parts: None,
    }
}

impl Target {
    async fn start(settings: &mut Settings, url: Option<&str>) -> anyhow::Result<Self> {
        let db = Db::open(&settings.database).await?;
        let token = settings
            .intake
            .webhook_token
            .as_ref()
            .map(|t| t.expose().to_string());
        if let Some(url) = url {
            return Ok(Self {
                base: url.trim_end_matches('/').to_string(),
                db,
                webhook_token: token.unwrap_or_default(),
                server: None,
                _mail: None,
            });
        }
        // The key emails go to files: in memory where the host has a tmpfs,
        // since on a disk file system allocating an inode per email costs
        // the server's cores more, run after run, than sending it does.
        let shm = std::path::Path::new("/dev/shm");
        let mail = match shm.is_dir() {
            true => tempfile::tempdir_in(shm),
            false => tempfile::tempdir(),
        }
        .context("a directory for the bench's mail")?;
        let token = token.unwrap_or_else(|| format!("bench-{}", rand::random::<u64>()));
        settings.listen = "127.0.0.1:0".into();
        settings.mail.transport = MailTransport::File {
            dir: mail.path().to_path_buf(),
        };
        settings.intake.webhook_token = Some(token.clone().into());
        let app = Application::build(settings.clone()).await?;
        let base = format!("http://{}", app.local_addr());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Ok(Self {
            base,
            db,
            webhook_token: token,
            server: Some((shutdown, server)),
            _mail: Some(mail),
        })
    }

    async fn stop(self) {
        if let Some((shutdown, server)) = self.server {
            shutdown.cancel();
            let _ = server.await;
        }
        self.db.close().await;
    }
}

fn progress_bar(duration: Duration, scenario: &str) -> ProgressBar {
    let progress = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg}: {pos} requests, {per_sec} [{elapsed}]")
    {
        progress.set_style(style);
    }
    progress.set_message(scenario.to_string());
    progress.enable_steady_tick(duration.min(Duration::from_millis(200)));
    progress
}

/// Requests per second of `GET /healthz` on the same server, for as long
/// as the scenario will run: the reference its figure is a ratio to.
async fn healthz(
    target: &Target,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<f64> {
    progress.set_message("healthz");
    let url = format!("{}/healthz", target.base);
    let tally = load::drive(
        options.connections,
        options.duration,
        progress,
        move |_, _, client| {
            let url = url.clone();
            async move {
                let response = client.get(&url).send().await;
                match response {
                    Ok(r) if r.status().is_success() => Ok(()),
                    other => Err(load::error_kind(other).await),
                }
            }
        },
    )
    .await?;
    progress.set_position(0);
    Ok(tally.ops_per_s())
}

/// What a scenario checked afterwards: `Ok` with what held, or `Err` with
/// what did not.
type Verdict = Result<Vec<String>, Vec<String>>;

#[derive(Default)]
struct Checks {
    held: Vec<String>,
    broken: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: String) {
        match ok {
            true => self.held.push(what),
            false => self.broken.push(what),
        }
    }

    fn verdict(self) -> Verdict {
        match self.broken.is_empty() {
            true => Ok(self.held),
            false => Err(self.broken),
        }
    }
}

/// A name no earlier run used: runs against one database do not mix.
fn run_id() -> String {
    format!("{:x}", chrono::Utc::now().timestamp_millis())
}

/// Prints the report as a short table, or as one JSON object.
pub fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    println!(
        "{} on {}, {} connections, {:.1} s",
        report.scenario, report.backend, report.connections, report.duration_s
    );
    println!("  {:.0} ops/s ({} ok)", report.ops_per_s, report.ops);
    for (part, ops) in report.parts.iter().flatten() {
        println!("    {part}: {ops:.0} ops/s");
    }
    if let (Some(h), Some(r)) = (report.healthz_ops_per_s, report.ratio_to_healthz) {
        println!("  /healthz {h:.0} req/s; ratio {r:.3}");
    }
    println!(
        "  latency p50 {}, p90 {}, p99 {}, max {}",
        ms(report.p50_ms),
        ms(report.p90_ms),
        ms(report.p99_ms),
        ms(report.max_ms)
    );
    for (kind, n) in &report.errors {
        println!("  error {kind}: {n}");
    }
    let verdict = if report.verified {
        "verified"
    } else {
        "NOT VERIFIED"
    };
    println!("  {verdict}:");
    for check in &report.checks {
        println!("    {check}");
    }
    Ok(())
}
