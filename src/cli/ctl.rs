//! `allot ctl`: the operator's console. With a command it sends it once
//! and prints the replies (a table, or JSON with `--json`); without one it
//! is an interactive console ([`super::console`]) taking the same commands.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::{
    clock::{now_ms, rfc3339},
    config::Settings,
    control::{self, Answer, Command, ReplyStatus, SendError, printable},
    db::Db,
};

#[derive(Subcommand, Clone)]
pub(super) enum CtlCommand {
    /// Each process's registry row, answered live by the process.
    Status(Common),
    /// unready → ready: lease jobs again, accept data commands.
    Start(Common),
    /// ready → unready: lease no new jobs, let running ones finish.
    Stop(Common),
    /// Graceful exit: in-flight jobs finish or go back to the queue. Needs --target.
    Terminate(Common),
    /// Data command: each process's Unix time.
    Ping(Common),
    /// Data command: compute for X seconds beside the process's work, then log MSG.
    Calculate {
        /// Seconds, from 0 to ALLOT_CALCULATE_MAX.
        #[arg(allow_negative_numbers = true)]
        x: f64,
        msg: String,
        #[command(flatten)]
        common: Common,
    },
    /// The registry as stored (no command sent): live, gone and stopped processes.
    Processes {
        #[arg(long)]
        json: bool,
    },
    /// The latest commands and how each target answered.
    History {
        #[arg(long, default_value_t = 10)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone, Default)]
pub(super) struct Common {
    /// `all` (default), `role=serve`, `role=worker`, `host=NAME`, or process ids (comma-separated).
    #[arg(long)]
    target: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How long to wait for replies (default 5s; a calculate adds its X).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
}

/// Runs one command. An error means the command did not fully succeed: a
/// target refused, failed or did not answer (the table says which).
pub(super) async fn run(command: CtlCommand, db: &Db, settings: &Settings) -> anyhow::Result<()> {
    let (message, common) = match command {
        CtlCommand::Processes { json } => return print_processes(db, json).await,
        CtlCommand::History { limit, json } => return print_history(db, limit, json).await,
        CtlCommand::Status(common) => (Command::Status, common),
        CtlCommand::Start(common) => (Command::Start, common),
        CtlCommand::Stop(common) => (Command::Stop, common),
        CtlCommand::Terminate(common) => {
            if common.target.is_none() {
                bail!(
                    "terminate needs --target (a process id, host=NAME, role=serve|worker, or all)"
                );
            }
            (Command::Terminate, common)
        }
        CtlCommand::Ping(common) => (Command::Ping, common),
        CtlCommand::Calculate { x, msg, common } => (Command::Calculate { x, msg }, common),
    };
    // JSON has no NaN or infinity: say what is wrong with x before it
    // would become `null` on the way.
    message
        .check(settings.control.calculate_max)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let target = common.target.as_deref().unwrap_or("all");
    let timeout = common
        .timeout
        .unwrap_or_else(|| control::default_timeout(&message));
    let sent = control::send(
        db,
        &settings.control,
        &message.to_json(),
        target,
        &sender(),
        timeout,
    )
    .await
    .map_err(|error| match error {
        SendError::Database(error) => anyhow::Error::new(error).context("sending the command"),
        other => anyhow::anyhow!("{other}"),
    })?;
    let answers = control::collect(db, &sent, timeout).await?;
    if common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "command_id": sent.command_id,
                "command": message.name(),
                "replies": answers,
            }))?
        );
    } else {
        print_answers(&answers);
    }
    let failed = answers
        .iter()
        .filter(|a| a.status != ReplyStatus::Ok)
        .count();
    let silent = answers.iter().filter(|a| !a.answered()).count();
    match (failed, silent) {
        (0, _) => Ok(()),
        (_, 0) => bail!("{failed} of {} did not do it", answers.len()),
        _ => bail!(
            "{silent} of {} did not answer within {timeout:?}",
            answers.len()
        ),
    }
}

/// Who sent a command, for the record.
fn sender() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", uid()));
    format!("{user}@{} (ctl)", crate::telemetry::hostname())
}

/// The user id, from the kernel's view of this process.
fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            line.split_whitespace().nth(1).map(String::from)
        })
        .unwrap_or_else(|| "?".into())
}

fn print_answers(answers: &[Answer]) {
    println!(
        "{:<28} {:<6} {:<16} {:<9} {:<9} {:>6}  reply",
        "process", "role", "host", "status", "state", "ms"
    );
    for answer in answers {
        let status = if answer.answered() {
            answer.status.to_string()
        } else {
            format!("no reply ({})", answer.status)
        };
        println!(
            "{:<28} {:<6} {:<16} {:<9} {:<9} {:>6}  {}",
            answer.process,
            answer.role,
            answer.host,
            status,
            answer.state.as_deref().unwrap_or("-"),
            answer.latency_ms.map_or("-".into(), |ms| ms.to_string()),
            printable(&super::one_line(
                answer.message.as_deref().unwrap_or("-"),
                90
            )),
        );
    }
    let answered = answers.iter().filter(|a| a.answered()).count();
    println!("{answered} of {} answered", answers.len());
}

pub(super) async fn print_processes(db: &Db, json: bool) -> anyhow::Result<()> {
    let now = now_ms();
    let list = control::list(db).await?;
    if json {
        let rows: Vec<_> = list.iter().map(|p| p.shown(now)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no processes have registered");
        return Ok(());
    }
    println!(
        "{:<28} {:<6} {:<16} {:>8} {:<9} {:>7} {:>9} {:>7}  last error",
        "process", "role", "host", "pid", "state", "running", "done", "seen"
    );
    for p in list {
        println!(
            "{:<28} {:<6} {:<16} {:>8} {:<9} {:>7} {:>9} {:>6}s  {}",
            p.id,
            p.role,
            p.host,
            p.pid,
            p.shown_state(now),
            p.jobs_in_flight,
            p.jobs_done,
            (now - p.heartbeat_at).max(0) / 1000,
            printable(&super::one_line(p.last_error.as_deref().unwrap_or("-"), 60)),
        );
    }
    Ok(())
}

async fn print_history(db: &Db, limit: i64, json: bool) -> anyhow::Result<()> {
    let commands = control::history(db, limit.clamp(1, 1000)).await?;
    let mut records = Vec::new();
    for command in commands {
        let replies = control::replies(db, command.id).await?;
        records.push((command, replies));
    }
    if json {
        let rows: Vec<_> = records
            .iter()
            .map(|(command, replies)| json!({ "command": command, "replies": replies }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if records.is_empty() {
        println!("no commands sent yet");
        return Ok(());
    }
    println!(
        "{:>6}  {:<24}  {:<24} {:<20} sent by  outcome",
        "id", "sent at", "message", "target"
    );
    for (command, replies) in records {
        let outcome = match &command.error {
            Some(error) => format!("refused: {error}"),
            None => {
                let mut counts = std::collections::BTreeMap::<&str, usize>::new();
                for reply in &replies {
                    *counts.entry(reply.status.as_str()).or_default() += 1;
                }
                counts
                    .iter()
                    .map(|(status, n)| format!("{n} {status}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        println!(
            "{:>6}  {}  {:<24} {:<20} {}  {}",
            command.id,
            rfc3339(command.sent_at),
            printable(&super::one_line(&command.message, 24)),
            printable(&super::one_line(&command.target, 20)),
            printable(&command.sent_by),
            printable(&super::one_line(&outcome, 80)),
        );
    }
    Ok(())
}
