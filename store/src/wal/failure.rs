//! How the log and its database fail: [`Error`], which failures are fatal
//! (no retry heals them), and how the owner learns of a failure at once
//! ([`FailureHook`], [`FailureWatch`]).

use super::Db;
use std::path::PathBuf;

/// A failure of the log or the database behind it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("database: {0}")]
    Redb(#[from] redb::Error),
    #[error("redo log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The log holds a record the database cannot apply (a table this
    /// version does not know, or a gap in the sequence): refusing to open is
    /// safer than guessing.
    #[error("redo log {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// An earlier write, sync or commit failed (the reason follows); every
    /// commit fails until the database is reopened (its replay settles what
    /// reached the disk).
    #[error("the redo log {0} is poisoned by an earlier failure ({1}); reopen the database")]
    Poisoned(PathBuf, String),
    /// The log was written by another version of mev (or before logs had a
    /// header) and holds records this version must not read; the message
    /// says what to do.
    #[error("redo log {path}: {reason}")]
    Version { path: PathBuf, reason: String },
}

impl Error {
    /// Whether this failure leaves the store unusable until it is reopened
    /// (a poisoned log, an I/O failure of the log or of redb): retrying
    /// cannot succeed, and the owner should stop.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Poisoned(..) | Error::Io { .. } => true,
            Error::Redb(e) => is_fatal_redb(e),
            Error::Corrupt { .. } | Error::Version { .. } => false,
        }
    }
}

/// redb's I/O failures: redb latches them (`PreviousIo` after the first).
pub(super) fn is_fatal_redb(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

/// Called once, with the reason, when a store's log is poisoned.
pub type FailureHook = Box<dyn Fn(&str) + Send + Sync>;

/// What async tasks wait on to learn that a [`Db`] failed: a watch fed by
/// [`Db::on_failure`].
pub struct FailureWatch(std::sync::Arc<tokio::sync::watch::Sender<Option<String>>>);

impl FailureWatch {
    /// Watches `db` (replaces its failure hook).
    pub fn of(db: &Db) -> FailureWatch {
        let sender = std::sync::Arc::new(tokio::sync::watch::Sender::new(None));
        let tell = sender.clone();
        db.on_failure(Box::new(move |reason| {
            tell.send_replace(Some(reason.to_string()));
        }));
        FailureWatch(sender)
    }

    /// Resolves, with the reason, once the database has failed (never for
    /// one that does not).
    pub async fn failed(&self) -> String {
        let mut rx = self.0.subscribe();
        let reason = rx
            .wait_for(Option::is_some)
            .await
            .map(|r| r.clone().unwrap_or_default());
        match reason {
            Ok(r) => r,
            // The sender lives as long as the watch.
            Err(_) => std::future::pending().await,
        }
    }
}

/// `From` each of redb's error types for `$target`, through `$via`, a
/// function of [`redb::Error`].
#[macro_export]
macro_rules! from_redb_errors {
    ($target:ty, $via:path) => {
        $crate::from_redb_errors!(@each $target, $via;
            $crate::engine::DatabaseError,
            $crate::engine::TransactionError,
            $crate::engine::TableError,
            $crate::engine::StorageError,
            $crate::engine::CommitError,
            $crate::engine::SetDurabilityError
        );
    };
    (@each $target:ty, $via:path; $($t:ty),*) => {$(
        impl From<$t> for $target {
            fn from(e: $t) -> Self {
                $via(e.into())
            }
        }
    )*};
}
from_redb_errors!(Error, Error::Redb);
