//! The statements only SQLite and MySQL run. PostgreSQL places a batch of
//! orders in one call of its PL/pgSQL (`allot_place_orders`) and leases and
//! completes jobs in one statement each; the other two backends run those
//! steps statement by statement. A statement of those steps takes a
//! [`Step`], so its `match` has an arm for each backend that runs it and
//! none that could never run.

use sqlx::{MySqlConnection, SqliteConnection};

use super::Tx;

/// A transaction's connection on a backend that runs the steps.
pub enum Step<'c> {
    Sqlite(&'c mut SqliteConnection),
    MySql(&'c mut MySqlConnection),
}

impl Tx {
    /// This transaction's connection, for a statement of the steps.
    ///
    /// # Panics
    ///
    /// On PostgreSQL, which never runs them: callers are the SQLite and
    /// MySQL arms of a `match` on the backend.
    pub fn steps(&mut self) -> Step<'_> {
        match self {
            Tx::Sqlite(tx) => Step::Sqlite(tx),
            Tx::MySql(tx) => Step::MySql(tx),
            Tx::Postgres(_) => {
                panic!("PostgreSQL runs these steps in PL/pgSQL or in one statement")
            }
        }
    }
}
