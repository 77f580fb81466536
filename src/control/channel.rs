//! The SQL of the control channel: a command row and one reply row per
//! target, written together; each target works through its pending rows
//! and answers in them. The rows stay as the record of who was told what,
//! when, and what each answered.

use serde::Serialize;

use crate::{
    clock::{as_optional_rfc3339, as_rfc3339},
    db::{self, Db, Tx},
    insert_returning_id, on_db, on_tx,
};

/// PostgreSQL: targets `LISTEN` here for new commands…
pub(super) const COMMANDS_CHANNEL: &str = "allot_control";
/// …and senders for replies.
pub(super) const REPLIES_CHANNEL: &str = "allot_control_replies";

crate::stored_state! {
    /// Where a reply row stands (`control_replies.status`).
    pub enum ReplyStatus: "reply status" {
        Pending = "pending",
        Running = "running",
        Ok = "ok",
        /// Understood, not done in this state (a data command while unready).
        Refused = "refused",
        /// Not understood (malformed, unknown, out of bounds).
        Error = "error",
        /// Seen after its deadline: not done.
        Expired = "expired",
        /// Cut off by the process's exit.
        Cancelled = "cancelled",
    }
}

impl ReplyStatus {
    /// Not answered yet.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

/// A command as recorded, with how its targets answered.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CommandRecord {
    pub id: i64,
    pub message: String,
    pub target: String,
    pub sent_by: String,
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub sent_at: i64,
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: i64,
    /// Why it was refused before anything was sent.
    pub error: Option<String>,
}

/// One target's reply row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = CommandReplyRecord)]
pub struct ReplyRecord {
    pub command_id: i64,
    pub process_id: String,
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub status: ReplyStatus,
    /// JSON written by the target.
    pub reply: Option<String>,
    #[serde(serialize_with = "as_optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "as_optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub answered_at: Option<i64>,
}

/// What a target finds in its inbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Delivery {
    pub command_id: i64,
    pub message: String,
    pub expires_at: i64,
}

pub(super) struct NewCommand<'a> {
    pub message: &'a str,
    pub target: &'a str,
    pub sent_by: &'a str,
    pub sent_at: i64,
    pub expires_at: i64,
}

/// Records `command` with a pending reply row for each of `recipients`, in
/// one transaction, and wakes them (PostgreSQL). `error` records a command
/// refused before sending; it then has no recipients.
pub(super) async fn send(
    db: &Db,
    command: &NewCommand<'_>,
    error: Option<&str>,
    recipients: &[String],
) -> Result<i64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let id = insert_command(&mut tx, command, error).await?;
    if !recipients.is_empty() {
        // Built inside each backend's arm: the builder is typed by backend.
        on_tx!(&mut tx, |conn, _sql| {
            let mut insert = sqlx::QueryBuilder::new(
                "insert into control_replies (command_id, process_id, status) ",
            );
            insert.push_values(recipients, |mut row, process| {
                row.push_bind(id)
                    .push_bind(process.clone())
                    .push_bind(ReplyStatus::Pending.as_str());
            });
            insert
                .build()
                .persistent(false)
                .execute(conn)
                .await
                .map(drop)
        })?;
        db::notify_in(&mut tx, COMMANDS_CHANNEL).await?;
    }
    tx.commit().await?;
    Ok(id)
}

async fn insert_command(
    tx: &mut Tx,
    command: &NewCommand<'_>,
    error: Option<&str>,
) -> Result<i64, sqlx::Error> {
    insert_returning_id!(
        tx,
        "insert into control_commands (message, target, sent_by, sent_at, expires_at, error)
         values (?, ?, ?, ?, ?, ?)",
        [
            command.message,
            command.target,
            command.sent_by,
            command.sent_at,
            command.expires_at,
            error
        ]
    )
}

/// `process`'s pending commands, oldest first.
pub(super) async fn inbox(db: &Db, process: &str) -> Result<Vec<Delivery>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql("select c.id as command_id, c.message, c.expires_at
               from control_replies r join control_commands c on c.id = r.command_id
              where r.process_id = ? and r.status = 'pending'
              order by c.id limit 50"))
        .bind(process)
        .fetch_all(pool)
        .await
    })
}

/// Marks a command as being worked on (a `calculate`), so the next look at
/// the inbox does not start it again.
pub(super) async fn start(
    db: &Db,
    command_id: i64,
    process: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    on_db!(db, write, |pool, sql| {
        sqlx::query(sql(
            "update control_replies set status = 'running', started_at = ?
              where command_id = ? and process_id = ?",
        ))
        .bind(now)
        .bind(command_id)
        .bind(process)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Writes `process`'s answer and wakes the sender (PostgreSQL).
pub(super) async fn answer(
    db: &Db,
    command_id: i64,
    process: &str,
    status: ReplyStatus,
    reply: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    on_db!(db, write, |pool, sql| {
        sqlx::query(sql(
            "update control_replies set status = ?, reply = ?, answered_at = ?,
                    started_at = coalesce(started_at, ?)
              where command_id = ? and process_id = ?",
        ))
        .bind(status.as_str())
        .bind(reply)
        .bind(now)
        .bind(now)
        .bind(command_id)
        .bind(process)
        .execute(pool)
        .await
        .map(drop)
    })?;
    db::notify(db, REPLIES_CHANNEL).await
}

/// Every reply row of a command.
pub async fn replies(db: &Db, command_id: i64) -> Result<Vec<ReplyRecord>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select command_id, process_id, status, reply, started_at, answered_at
               from control_replies where command_id = ? order by process_id",
        ))
        .bind(command_id)
        .fetch_all(pool)
        .await
    })
}

/// `select` of the columns of [`CommandRecord`], followed by `$rest`.
macro_rules! select_commands {
    ($rest:literal) => {
        concat!(
            "select id, message, target, sent_by, sent_at, expires_at, error from control_commands ",
            $rest
        )
    };
}

/// One command.
pub async fn find(db: &Db, id: i64) -> Result<Option<CommandRecord>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(select_commands!("where id = ?")))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}

/// The latest commands, newest first.
pub async fn history(db: &Db, limit: i64) -> Result<Vec<CommandRecord>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(select_commands!("order by id desc limit ?")))
            .bind(limit)
            .fetch_all(pool)
            .await
    })
}
