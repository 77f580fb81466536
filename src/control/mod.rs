//! Operator control of running processes: the registry every `allot serve`
//! and `allot worker` heartbeats into, and commands sent through the
//! database they already share (no other server): `status`, `start`,
//! `stop`, `terminate`, `ping`, `calculate`.
//!
//! - `message`: the closed set of commands, targets and states;
//! - `registry`: the `processes` table;
//! - `channel`: the SQL of commands and replies;
//! - `agent`: what each process runs to answer;
//! - `send`: the sender's side, for `allot ctl` and the admin routes;
//! - `routes`: `/v1/admin/processes` and `/v1/admin/commands`.

mod agent;
mod channel;
mod message;
mod registry;
pub mod routes;
mod send;

pub use agent::Agent;
pub use channel::{CommandRecord, ReplyRecord, ReplyStatus, find, history, replies};
pub use message::{Command, MAX_MSG_CHARS, Role, State, Target, printable};
pub use registry::{Process, Shown, list};
pub use send::{Answer, SendError, Sent, collect, default_timeout, send};
