//! [`SpoolError`]: what can go wrong storing or reading queued mail, typed so that callers
//! choose their reply from the kind (inbound answers `451 4.3.0` to any of them; the queue
//! logs and retries) and the spool never builds errors out of formatted strings.

use std::io;

use super::QueueId;
use crate::cluster::DbError;

/// An error from the spool (either backend).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The local disk (the file spool, or a message being received) failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The cluster's PostgreSQL failed (unreachable, a statement, a timeout).
    #[error(transparent)]
    Db(#[from] DbError),
    /// No such message (delivered, deleted, or never there).
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    /// What the database holds for a message cannot be read back.
    #[error("bad {what} in the database for {id}: {detail}")]
    Corrupt {
        /// The message.
        id: QueueId,
        /// Which column.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A state change for a message whose lease this node lost.
    #[error(
        "{0} is no longer this node's (deleted by an operator, or taken over by another node \
         after this node's lease expired)"
    )]
    LeaseLost(QueueId),
    /// One of the spool's threads or tasks has stopped (a panic, or the process is ending).
    #[error("the spool's {0} worker has stopped")]
    Stopped(&'static str),
    /// The cluster spool needs a multi-threaded tokio runtime to run its tasks.
    #[error("the cluster spool needs a tokio runtime: {0}")]
    NoRuntime(String),
}

impl From<SpoolError> for io::Error {
    /// For callers that still speak `io::Result` (offline commands): the kind is kept where
    /// one exists.
    fn from(e: SpoolError) -> io::Error {
        match e {
            SpoolError::Io(e) => e,
            SpoolError::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            SpoolError::Db(DbError::Timeout) => {
                io::Error::new(io::ErrorKind::TimedOut, e.to_string())
            }
            other => io::Error::other(other.to_string()),
        }
    }
}
