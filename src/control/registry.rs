//! The registry of live processes: every `allot serve` and `allot worker`
//! keeps its row in `processes` fresh; a row whose heartbeat is older than
//! three of its own intervals belongs to a process that is gone.

use serde::Serialize;

use super::message::{State, Target};
use crate::{
    clock::{as_optional_rfc3339, as_rfc3339},
    db::Db,
    on_db,
};

/// Rows of processes that stopped or went silent this long ago are pruned.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// A registry row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Process {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub role: String,
    /// As the process last wrote it; operators see [`Shown::state`].
    #[sqlx(try_from = "String")]
    #[serde(skip_serializing)]
    #[schema(ignore)]
    pub state: State,
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: i64,
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub heartbeat_at: i64,
    pub heartbeat_ms: i64,
    #[serde(serialize_with = "as_optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub stopped_at: Option<i64>,
    pub jobs_in_flight: i64,
    pub jobs_done: i64,
    pub last_error: Option<String>,
}

impl Process {
    /// Silent for three heartbeats while claiming to run: killed, frozen
    /// or cut off from the database.
    pub fn is_gone(&self, now: i64) -> bool {
        self.state != State::Stopped && now - self.heartbeat_at > 3 * self.heartbeat_ms
    }

    /// The state an operator should see: `gone` for a silent process.
    pub fn shown_state(&self, now: i64) -> &str {
        if self.is_gone(now) {
            "gone"
        } else {
            self.state.as_str()
        }
    }

    pub fn is_live(&self, now: i64) -> bool {
        self.state != State::Stopped && !self.is_gone(now)
    }

    pub fn matches(&self, target: &Target) -> bool {
        match target {
            Target::All => true,
            Target::Role(role) => self.role == role.as_str(),
            Target::Host(host) => &self.host == host,
            Target::Ids(ids) => ids.iter().any(|id| id == &self.id),
        }
    }

    /// The row as operators see it.
    pub fn shown(&self, now: i64) -> Shown {
        Shown {
            process: self.clone(),
            state: self.shown_state(now).to_string(),
        }
    }

    /// The row with its state as written: a process telling its own.
    pub fn as_written(&self) -> Shown {
        Shown {
            process: self.clone(),
            state: self.state.as_str().to_string(),
        }
    }
}

/// A registry row as operators see it (`allot ctl processes --json`,
/// `/v1/admin/processes`, the dashboard, a `status` reply).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Shown {
    #[serde(flatten)]
    pub process: Process,
    /// `ready`, `unready`, `stopping` or `stopped` as the process last
    /// wrote it, or `gone`: silent for three heartbeats while claiming to
    /// run.
    pub state: String,
}

/// Writes a new process's row.
pub(super) async fn register(db: &Db, process: &Process) -> Result<(), sqlx::Error> {
    on_db!(db, write, |pool, sql| {
        sqlx::query(sql(
            "insert into processes (id, host, pid, version, role, state, started_at, heartbeat_at,
                                    heartbeat_ms, jobs_in_flight, jobs_done, last_error)
             values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&process.id)
        .bind(&process.host)
        .bind(process.pid)
        .bind(&process.version)
        .bind(&process.role)
        .bind(process.state.as_str())
        .bind(process.started_at)
        .bind(process.heartbeat_at)
        .bind(process.heartbeat_ms)
        .bind(process.jobs_in_flight)
        .bind(process.jobs_done)
        .bind(&process.last_error)
        .execute(pool)
        .await
        .map(drop)
    })
}

/// Refreshes the row (state, counters, heartbeat); writes it again if it
/// was pruned while this process could not reach the database.
pub(super) async fn heartbeat(db: &Db, process: &Process) -> Result<(), sqlx::Error> {
    let updated = on_db!(db, write, |pool, sql| {
        sqlx::query(sql(
            "update processes set state = ?, heartbeat_at = ?, stopped_at = ?, jobs_in_flight = ?,
                    jobs_done = ?, last_error = ?
              where id = ?",
        ))
        .bind(process.state.as_str())
        .bind(process.heartbeat_at)
        .bind(process.stopped_at)
        .bind(process.jobs_in_flight)
        .bind(process.jobs_done)
        .bind(&process.last_error)
        .bind(&process.id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })?;
    if updated == 0 {
        register(db, process).await?;
    }
    Ok(())
}

/// Every known process, newest first: live, gone, and those stopped within
/// the last day.
pub async fn list(db: &Db) -> Result<Vec<Process>, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select id, host, pid, version, role, state, started_at, heartbeat_at, heartbeat_ms,
                    stopped_at, jobs_in_flight, jobs_done, last_error
               from processes order by started_at desc, id",
        ))
        .fetch_all(pool)
        .await
    })
}

/// Forgets processes that stopped or went silent a day ago, and the
/// commands sent more than a week ago (with their replies).
pub(super) async fn prune(db: &Db, now: i64) -> Result<(), sqlx::Error> {
    let before = now - FORGET_AFTER_MS;
    on_db!(db, write, |pool, sql| {
        sqlx::query(sql("delete from processes where heartbeat_at < ?"))
            .bind(before)
            .execute(pool)
            .await
            .map(drop)
    })?;
    let before = now - 7 * FORGET_AFTER_MS;
    on_db!(db, write, |pool, sql| {
        sqlx::query(sql("delete from control_commands where sent_at < ?"))
            .bind(before)
            .execute(pool)
            .await
            .map(drop)
    })?;
    Ok(())
}
