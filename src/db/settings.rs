//! Where the database is and how many connections to keep: the part of the
//! settings [`super::Db::connect`] needs, parsed by `config` from
//! `ALLOT_DATABASE_*`.

use std::time::Duration;

/// Built by `config` (defaults, file, environment); tests take
/// `Settings::for_database(url).database`.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://…`, `postgres://…`, `mysql://…` (or `mariadb://…`).
    pub url: String,
    /// Pool size (SQLite: readers; it always has one writer).
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
}
