//! The sender's side, shared by `allot ctl` and `/v1/admin/commands`:
//! check a command, resolve its target among the live processes, send it,
//! and collect the replies under a timeout, naming who did not answer.

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    channel::{self, NewCommand, REPLIES_CHANNEL, ReplyStatus},
    message::{Command, Target},
    registry::{self, Process},
};
use crate::{clock::now_ms, config::ControlSettings, db::Db, text::clip};

/// How often a sender looks for replies where no notification wakes it.
const REPLY_POLL: Duration = Duration::from_millis(25);
/// Targets may start a command at least this long after it was sent.
const MIN_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message or target is not acceptable; recorded, nothing sent.
    #[error("{0}")]
    Invalid(String),
    /// No live process matches; recorded, nothing sent.
    #[error("{0}")]
    NoTarget(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A command on its way.
#[derive(Debug, Clone)]
pub struct Sent {
    pub command_id: i64,
    pub command: Command,
    pub sent_at: i64,
    pub recipients: Vec<Process>,
}

/// One process's answer, or its silence.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = CommandReply)]
pub struct Answer {
    pub process: String,
    pub host: String,
    pub role: String,
    /// `ok`, `refused`, `error`, `expired`, `cancelled`; `pending` or
    /// `running` when no answer came in time.
    #[schema(value_type = String)]
    pub status: ReplyStatus,
    /// The process's state after the command, as it said.
    pub state: Option<String>,
    pub message: Option<String>,
    /// The whole reply the process wrote.
    pub reply: Option<Value>,
    /// From sending to the answer being written.
    pub latency_ms: Option<i64>,
}

impl Answer {
    pub fn answered(&self) -> bool {
        !self.status.is_open()
    }
}

/// Checks `message` (JSON as sent), resolves `target`, and sends. Whatever
/// is refused is recorded with its reason.
pub async fn send(
    db: &Db,
    settings: &ControlSettings,
    message: &str,
    target: &str,
    sent_by: &str,
    timeout: Duration,
) -> Result<Sent, SendError> {
    let sent_at = now_ms();
    let record = NewCommand {
        message: clip(message, super::message::MAX_MESSAGE_BYTES),
        target: clip(target, 1024),
        sent_by,
        sent_at,
        // A target that reads it later does not do it: a process that
        // froze for a minute must not act on an old `terminate`. The floor
        // keeps a short wait from expiring before a polling target looks.
        expires_at: sent_at + timeout.max(MIN_DEADLINE).as_millis() as i64,
    };
    let refuse = async |error: String| -> Result<(), SendError> {
        channel::send(db, &record, Some(&error), &[]).await?;
        Ok(())
    };
    let command = match Command::parse(message, settings.calculate_max) {
        Ok(command) => command,
        Err(error) => {
            refuse(error.clone()).await?;
            return Err(SendError::Invalid(error));
        }
    };
    let parsed = match Target::parse(target) {
        Ok(parsed) => parsed,
        Err(error) => {
            refuse(error.clone()).await?;
            return Err(SendError::Invalid(error));
        }
    };
    let recipients = match resolve(db, &parsed, target).await? {
        Ok(recipients) => recipients,
        Err(error) => {
            refuse(error.clone()).await?;
            return Err(SendError::NoTarget(error));
        }
    };
    let ids: Vec<String> = recipients.iter().map(|p| p.id.clone()).collect();
    let command_id = channel::send(db, &record, None, &ids).await?;
    Ok(Sent {
        command_id,
        command,
        sent_at,
        recipients,
    })
}

/// The live processes `target` names. Named ids must each be live.
async fn resolve(
    db: &Db,
    target: &Target,
    text: &str,
) -> Result<Result<Vec<Process>, String>, sqlx::Error> {
    let now = now_ms();
    let known = registry::list(db).await?;
    if let Target::Ids(ids) = target {
        for id in ids {
            match known.iter().find(|p| &p.id == id) {
                None => return Ok(Err(format!("no process {:?} is known", clip(id, 255)))),
                Some(p) if !p.is_live(now) => {
                    return Ok(Err(format!("process {id} is {}", p.shown_state(now))));
                }
                Some(_) => {}
            }
        }
    }
    let live: Vec<Process> = known
        .into_iter()
        .filter(|p| p.is_live(now) && p.matches(target))
        .collect();
    if live.is_empty() {
        return Ok(Err(format!(
            "no live process matches target {:?}",
            clip(text, 255)
        )));
    }
    Ok(Ok(live))
}

/// Waits up to `timeout` for every recipient to answer; returns one
/// [`Answer`] per recipient, answered or not.
pub async fn collect(db: &Db, sent: &Sent, timeout: Duration) -> Result<Vec<Answer>, sqlx::Error> {
    let wake = Arc::new(Notify::new());
    let stop_listening = CancellationToken::new();
    let listener = tokio::spawn(crate::db::listen(
        db.clone(),
        REPLIES_CHANNEL,
        wake.clone(),
        stop_listening.clone(),
    ));
    let deadline = tokio::time::Instant::now() + timeout;
    let rows = loop {
        let rows = channel::replies(db, sent.command_id).await?;
        let open = rows.iter().any(|r| r.status.is_open());
        if !open || tokio::time::Instant::now() >= deadline {
            break rows;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(REPLY_POLL) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    };
    stop_listening.cancel();
    let _ = listener.await;
    Ok(sent
        .recipients
        .iter()
        .map(|process| {
            let row = rows.iter().find(|r| r.process_id == process.id);
            let reply: Option<Value> = row
                .and_then(|r| r.reply.as_deref())
                .and_then(|r| serde_json::from_str(r).ok());
            let field = |name: &str| {
                reply
                    .as_ref()
                    .and_then(|r| r.get(name))
                    .and_then(Value::as_str)
                    .map(String::from)
            };
            Answer {
                process: process.id.clone(),
                host: process.host.clone(),
                role: process.role.clone(),
                status: row.map_or(ReplyStatus::Pending, |r| r.status),
                state: field("state"),
                message: field("message"),
                latency_ms: row
                    .and_then(|r| r.answered_at)
                    .map(|at| (at - sent.sent_at).max(0)),
                reply,
            }
        })
        .collect())
}

/// The default time to wait: a `calculate` of x seconds gets x more.
pub fn default_timeout(command: &Command) -> Duration {
    let base = Duration::from_secs(5);
    match command {
        // Not checked yet: NaN and infinities must not panic here (the
        // send refuses them with the reason).
        Command::Calculate { x, .. } => {
            base + Duration::try_from_secs_f64(x.clamp(0.0, 86_400.0)).unwrap_or_default()
        }
        _ => base,
    }
}
