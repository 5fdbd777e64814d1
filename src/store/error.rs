//! [`StoreError`]: what can go wrong in a store built on [`super::SqliteThread`] or the
//! cluster's PostgreSQL ([`crate::cluster::Db`]). Typed, so a caller chooses its own reply
//! (the feedback listener's `451`, an exit code, a log line) from the kind, not from words.

use std::io;
use std::path::PathBuf;

use crate::cluster::DbError;

/// An error from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file's directory could not be created.
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The SQLite file could not be opened or its tables created.
    #[error("cannot open the database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The store's SQLite thread could not be started.
    #[error("cannot start the {name} database thread: {source}")]
    Thread {
        /// The store's name.
        name: &'static str,
        /// Why.
        source: io::Error,
    },
    /// A SQLite statement failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A SQLite transaction could not be committed (the data is not durable).
    #[error("cannot commit to the database: {0}")]
    Commit(rusqlite::Error),
    /// The cluster's PostgreSQL failed (unreachable, a statement, a timeout).
    #[error(transparent)]
    Db(#[from] DbError),
    /// A value could not be encoded as JSON for its column.
    #[error("cannot encode a value for the database: {0}")]
    Encode(#[from] serde_json::Error),
    /// The store's SQLite thread has stopped (it panicked, or the process is ending).
    #[error("the {0} database thread has stopped")]
    Stopped(&'static str),
}

impl StoreError {
    /// Whether SQLite found the disk full (`SQLITE_FULL`): the sender is told `452 4.3.1`, as
    /// the spool tells apps, rather than a generic `451`.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite(e) | StoreError::Commit(e) => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            _ => false,
        }
    }
}
