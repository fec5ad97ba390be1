//! The broker's state: one interface, by concept, and today's engine
//! (redb behind the redo log, [`redb`]).
//!
//! Everything the broker keeps is one of five concepts, each a module with
//! its interface and its redb tables:
//! - [`dedup`] — the dedup index of accepted message ids (with a retention
//!   window);
//! - [`requests`] — open requests, waiting for their replies;
//! - [`timers`] — the deadline timers of open requests, by due time;
//! - [`journal`] — the audit journal's tables: entries appended with the
//!   hash chain and Merkle tree, the head, checkpoints, sealing, reading;
//! - [`outbox`] — the broker's use of the shared durable outbox
//!   ([`mev_store::outbox`]).
//!
//! An engine ([`Engine`]) runs a batch's work in **one write transaction**
//! ([`Engine::write`]): the work sees the transaction as a [`Txn`] and reaches
//! each concept through a view over it (`t.dedup().seen(id)`,
//! `t.requests().open(..)`, `t.timers().arm(..)`, `t.journal().append(..)`,
//! `t.outbox().enqueue(..)`); nothing is acked or reported before that
//! commit. The reads and the writes outside a batch (the operators'
//! endpoint, audit, pruning, the drain) are one trait per concept
//! ([`DedupState`], [`RequestState`], [`TimerState`], [`JournalState`],
//! [`OutboxState`]) implemented by the engine; [`State`] is all of them.
//!
//! The rest of the broker names the engine through the alias [`Store`] and
//! writes the work done inside a transaction against [`Txn`] (generic, so
//! monomorphised: no dynamic dispatch per message). See ARCHITECTURE.md,
//! "The broker's state".

pub mod dedup;
pub mod journal;
pub mod outbox;
pub mod redb;
pub mod requests;
pub mod timers;

pub use crate::journal::{Event, EventKind};
pub use dedup::{DedupIndex, DedupState, Seen};
pub use journal::{JournalAppend, JournalState};
pub use outbox::{
    Entries, OutboxEntry, OutboxItem, OutboxQueue, OutboxRead, OutboxState, Purpose, Queued,
};
pub use requests::{OpenRequest, OpenRequests, RequestState};
pub use timers::{DeadlineTimers, Timer, TimerKind, TimerState};

/// The broker's store: today's engine, redb behind the redo log. An alias,
/// not a trait object: every call is static, and the batch work written
/// against [`Txn`] is compiled for this engine.
pub type Store = redb::Redb;

/// The traits, for `use crate::store::prelude::*`: their methods are
/// callable on a [`Store`] and on a transaction.
pub mod prelude {
    pub use super::{
        DeadlineTimers, DedupIndex, DedupState, Engine, JournalAppend, JournalState, OpenRequests,
        OutboxQueue, OutboxState, RequestState, State, TimerState, Txn,
    };
}

/// An engine of the broker's state: runs a batch's work in one write
/// transaction.
///
/// What an engine guarantees (redb's, and what another must provide):
/// - `write` commits all of `f`'s writes or none; when it returns `Ok` they
///   are durable (fsynced) and visible to every read begun after; an `Err`
///   from `f` writes nothing and keeps nothing of it in memory (no fresh
///   outbox entries), and the confirmed entries it would have removed wait
///   for the next write;
/// - write transactions are serialised: outbox sequences and journal
///   sequences rise in commit order, with no gap a reader could pass and
///   then see filled;
/// - the outbox's confirmed entries (see [`OutboxState::outbox_confirmed`])
///   are removed, and their `Delivered` events journalled, at the start of
///   the next write transaction, whoever makes it;
/// - the journal's entries, leaf hashes and Merkle frontier are written in
///   the same transaction as the change they record.
///
/// An engine shared by several brokers (the issue "High availability")
/// checks its fencing epoch for the partition inside every write
/// transaction, before `f` runs, and fails the transaction with a
/// [`StoreError`] if another broker took the partition over: `write` is the
/// one place every batch passes.
pub trait Engine: Send + Sync + 'static {
    /// A write transaction.
    type Tx<'t>: Txn;

    /// Runs `f` in one write transaction and commits it durably (one fsync).
    fn write<R>(
        &self,
        f: impl FnOnce(&mut Self::Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;

    /// Like [`Engine::write`], but not made durable until the next durable
    /// commit: for records whose loss in a crash is harmless (removals of
    /// confirmed outbox entries with their `Delivered` events).
    fn write_lazy<R>(
        &self,
        f: impl FnOnce(&mut Self::Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;

    /// Sets the agencies' time zones, once, for the local times journal
    /// entries carry (later calls are ignored).
    fn set_zones(&self, zones: impl FnOnce() -> std::collections::HashMap<String, chrono_tz::Tz>);

    /// Counts: (accepted messages, open requests, journal entries); O(1).
    fn counts(&self) -> Result<(u64, u64, u64), StoreError>;
}

/// One write transaction, as the batch work sees it: a view per concept.
/// Each view borrows the transaction; its writes commit with it.
pub trait Txn {
    type Dedup: DedupIndex;
    type Requests: OpenRequests;
    type Timers: DeadlineTimers;
    type Journal: JournalAppend;
    type Outbox: OutboxQueue;

    /// The dedup index.
    fn dedup(&mut self) -> &mut Self::Dedup;
    /// Open requests.
    fn requests(&mut self) -> &mut Self::Requests;
    /// Deadline timers.
    fn timers(&mut self) -> &mut Self::Timers;
    /// The journal (appending).
    fn journal(&mut self) -> &mut Self::Journal;
    /// The outbox (enqueueing).
    fn outbox(&mut self) -> &mut Self::Outbox;
}

/// Everything the broker needs of its state.
pub trait State:
    Engine + DedupState + RequestState + TimerState + JournalState + OutboxState
{
}

impl<S> State for S where
    S: Engine + DedupState + RequestState + TimerState + JournalState + OutboxState
{
}

/// A store failure. The batch it happened in is not acked and will be redelivered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] mev_store::engine::DatabaseError),
    #[error("transaction: {0}")]
    Transaction(#[from] mev_store::engine::TransactionError),
    #[error("table: {0}")]
    Table(#[from] mev_store::engine::TableError),
    #[error("storage: {0}")]
    Storage(#[from] mev_store::engine::StorageError),
    #[error("commit: {0}")]
    Commit(#[from] mev_store::engine::CommitError),
    #[error("durability: {0}")]
    Durability(#[from] mev_store::engine::SetDurabilityError),
    #[error("{0}")]
    Wal(#[from] mev_store::wal::Error),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("corrupt journal state: {0}")]
    Journal(String),
    #[error("cannot create {0}: {1}")]
    Dir(std::path::PathBuf, #[source] std::io::Error),
}

impl StoreError {
    /// Whether the store failed in a way no retry heals (a poisoned redo
    /// log, an I/O error of the log or of redb): the broker must stop
    /// (fail-stop) and be restarted, whose replay recovers what was durable.
    pub fn is_fatal(&self) -> bool {
        use mev_store::engine::StorageError as S;
        let storage = |e: &S| matches!(e, S::Io(_) | S::PreviousIo);
        match self {
            StoreError::Wal(e) => e.is_fatal(),
            StoreError::Storage(e) => storage(e),
            StoreError::Transaction(mev_store::engine::TransactionError::Storage(e))
            | StoreError::Table(mev_store::engine::TableError::Storage(e))
            | StoreError::Commit(mev_store::engine::CommitError::Storage(e))
            | StoreError::Database(mev_store::engine::DatabaseError::Storage(e)) => storage(e),
            _ => false,
        }
    }

    /// Whether the store could not be opened because a process (a running
    /// broker) has it open.
    pub fn is_in_use(&self) -> bool {
        use mev_store::engine::{DatabaseError, Error};
        matches!(
            self,
            StoreError::Database(DatabaseError::DatabaseAlreadyOpen)
                | StoreError::Wal(mev_store::wal::Error::Redb(Error::DatabaseAlreadyOpen))
        )
    }
}

#[cfg(test)]
pub(crate) mod tests;
