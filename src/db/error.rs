//! What a database operation failed with, when sqlx alone cannot say it:
//! one failure shared by every request of a batch, a request whose answer
//! never came, a rule the database was to keep and did not.

use std::sync::Arc;

use super::sql;

/// A failed database operation. Functions that only run statements return
/// `sqlx::Error`; those that answer batched requests, or check what the
/// database did against what it must do, return this (`?` converts).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// What the database said; shared, so that one failure of a batch
    /// answers each of its requests as itself (`sqlx::Error` is not `Clone`).
    #[error(transparent)]
    Database(Arc<sqlx::Error>),
    /// The task that was to answer stopped first (it panicked): its
    /// transaction, if any, rolled back with it, and the request may be
    /// tried again.
    #[error("the request was not answered: the task serving it stopped")]
    Unanswered,
    /// The database answered against a rule it keeps (a bug, or a schema
    /// changed by hand); the transaction must not commit.
    #[error("{0}")]
    Broken(String),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}

impl Error {
    /// See [`sql::is_contention`]: nothing was committed, running the
    /// transaction again will do.
    pub fn is_contention(&self) -> bool {
        matches!(self, Self::Database(error) if sql::is_contention(error))
    }

    /// See [`sql::is_unavailable`]. An unanswered request counts: nothing
    /// is known to be written, and the client should try again shortly.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(error) => sql::is_unavailable(error),
            Self::Unanswered => true,
            Self::Broken(_) => false,
        }
    }
}

impl sql::Failure for Error {
    fn is_contention(&self) -> bool {
        Error::is_contention(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_failure_reads_as_what_the_database_said() {
        let lost = Error::from(sqlx::Error::PoolTimedOut);
        let told = lost.clone();
        assert!(told.is_unavailable() && !told.is_contention());
        assert_eq!(told.to_string(), sqlx::Error::PoolTimedOut.to_string());

        assert!(Error::Unanswered.is_unavailable());
        let broken = Error::Broken("2 keys were reserved but 1 could be assigned".into());
        assert!(!broken.is_unavailable() && !broken.is_contention());
    }
}
