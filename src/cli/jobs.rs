//! `allot jobs …` and `allot mail test`: inspect and redrive the outbox.

use anyhow::Context;
use clap::Subcommand;

use super::one_line;
use crate::{
    clock::{now_ms, rfc3339},
    config::Settings,
    db::Db,
    jobs::{self, Discarded, JobState},
    notices,
    text::EmailAddress,
};

#[derive(Subcommand)]
pub(super) enum JobsCommand {
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
pub(super) enum MailCommand {
    /// Queue a test email through the normal delivery path.
    Test { address: String },
}

pub(super) async fn run(command: JobsCommand, db: &Db, settings: &Settings) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { state, json, limit } => {
            let state = state.as_deref().and_then(|s| s.parse::<JobState>().ok());
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
                        format!("{}/{}", job.attempts, budget(job.max_attempts)),
                        rfc3339(job.run_at),
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
                    job.id,
                    job.kind,
                    job.state,
                    job.attempts,
                    budget(job.max_attempts)
                );
                println!("run at:     {}", rfc3339(job.run_at));
                println!("last error: {}", job.last_error.as_deref().unwrap_or("-"));
                for attempt in attempts {
                    println!(
                        "  attempt {:>3}  {}  {:<13} {:>6} ms  {}  {}",
                        attempt.attempt,
                        rfc3339(attempt.started_at),
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

/// An attempt budget as people read it: alerts have none.
fn budget(max_attempts: i32) -> String {
    match max_attempts {
        jobs::UNLIMITED_ATTEMPTS => "∞".to_string(),
        n => n.to_string(),
    }
}

/// Queues a test email through the normal delivery path.
pub(super) async fn mail_test(db: &Db, settings: &Settings, address: &str) -> anyhow::Result<()> {
    let address = EmailAddress::parse_mailbox(address)
        .map_err(|e| anyhow::anyhow!("invalid recipient address: {}", e.problem))?;
    let job = notices::email_job(
        address.as_str(),
        "test",
        serde_json::json!({"address": address.as_str()}),
        settings.jobs.max_attempts(),
    )
    .dedupe_key(format!("mail-test:{address}:{}", now_ms()));
    let id = jobs::enqueue_now(db, &job).await?;
    println!(
        "queued a test email to {address} as job {}; a running `allot serve` or `allot worker` delivers it",
        id.unwrap_or_default()
    );
    Ok(())
}
