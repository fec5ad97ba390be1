//! The broker's on-disk state in redb. This module owns the database; the
//! rest of the broker sees [`Store`] and [`Txn`]: the dedup index of accepted
//! messages (with a retention window), open requests, the signed envelopes,
//! the outbox of what is still to be delivered, and an append-only event log.
//! One write transaction covers a whole micro-batch, so one fsync covers many
//! messages; nothing is acked or reported before that commit.

use crate::journal::entry::{leaf_of, Entry, Head};
use crate::journal::merkle::{to_hex, Frontier, Hash};
pub use crate::journal::{Event, EventKind};
use mev_store::engine::{ReadableTable, ReadableTableMetadata, TableDefinition};
use mev_store::wal::{Db, Replay, Table};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// message id → 32-byte digest + 8-byte accepted-at (ms, little endian).
mod journal;
mod queues;
pub use queues::{Entries, OutboxItem, OutboxRead, Queued};

const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
/// (accepted-at ms, message id): the dedup index in time order, for pruning.
const ACCEPTED_AT: TableDefinition<(i64, &str), ()> = TableDefinition::new("accepted_at");
/// (due ms, request id, [`TimerKind`] byte): the deadline timers of open
/// requests, in time order; only the nearest are ever read into memory.
const TIMERS: TableDefinition<(i64, &str, u8), ()> = TableDefinition::new("timers");
/// sequence → JSON [`OutboxEntry`]: what is still to be published. The body
/// is the envelope in the journal entry the outbox entry names.
const OUTBOX: mev_store::outbox::Def = TableDefinition::new("outbox");
/// request id → JSON [`OpenRequest`].
const OPEN_REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("open_requests");
/// sequence → one journal entry ([`crate::journal::entry`]): the append-only,
/// hash-chained record of every event with its signed envelope.
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// sequence → the entry's Merkle leaf hash (32 bytes); kept when an entry's
/// body is sealed away into a segment file, so proofs still work.
const LEAVES: TableDefinition<u64, &[u8]> = TableDefinition::new("journal_leaves");
/// (message id, sequence): the entries about a message (as its id or as
/// the request it answers), for `mev audit trace` and `prove`.
const BY_MESSAGE: TableDefinition<(&str, u64), ()> = TableDefinition::new("journal_by_message");
/// "frontier" → the Merkle tree's right edge; "last_leaf" → the newest leaf hash.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("journal_meta");
/// tree size → a signed checkpoint (JSON [`crate::journal::Checkpoint`]).
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("journal_checkpoints");
/// message id → the signed envelope: where stores written before the journal
/// became the one copy of every envelope kept them; read, never written now.
const ENVELOPES: TableDefinition<&str, &[u8]> = TableDefinition::new("envelopes");
/// Every table a write may touch, for the redo log's replay.
static TABLES: [&dyn Replay; 11] = [
    &MESSAGES,
    &ACCEPTED_AT,
    &TIMERS,
    &OUTBOX,
    &OPEN_REQUESTS,
    &JOURNAL,
    &LEAVES,
    &BY_MESSAGE,
    &META,
    &CHECKPOINTS,
    &ENVELOPES,
];

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

/// A request waiting for its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRequest {
    pub sender: String,
    pub recipient: String,
    pub service: String,
    /// When the exchange accepted it (UTC, ms since the epoch).
    pub accepted_at_ms: i64,
    /// The deadline policy that governs the reply (its register name).
    #[serde(default)]
    pub policy: String,
    /// The reply deadline (UTC ms), if the policy sets one.
    #[serde(default)]
    pub deadline_ms: Option<i64>,
    /// When the at-risk warning is due (UTC ms), if armed.
    #[serde(default)]
    pub at_risk_ms: Option<i64>,
    /// Whether the deadline has passed without a reply.
    #[serde(default)]
    pub breached: bool,
}

/// What a deadline timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Warn the provider that the deadline is near.
    AtRisk = 0,
    /// The deadline passed: notices to both agencies.
    Breach = 1,
}

impl TimerKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(TimerKind::AtRisk),
            1 => Some(TimerKind::Breach),
            _ => None,
        }
    }
}

/// A timer that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub due_ms: i64,
    pub request_id: String,
    pub kind: TimerKind,
}

/// The broker's database.
pub struct Store {
    db: Db,
    /// The outbox ([`mev_store::outbox`], shared with the adapter): its
    /// sequence, the memory of the last commits' entries with their
    /// envelopes, the confirmed entries and their `Delivered` events that
    /// the next write transaction removes and journals (see
    /// [`Store::outbox_confirmed`]).
    outbox: mev_store::outbox::Outbox<Entries>,
    /// Woken after a commit that armed a timer.
    timer_signal: tokio::sync::Notify,
    /// Agency → time zone, for the local times in journal entries.
    zones: std::sync::OnceLock<std::collections::HashMap<String, chrono_tz::Tz>>,
    /// Why the store failed, once it has (its redo log poisoned): see
    /// [`Store::failed`].
    failed: mev_store::wal::FailureWatch,
}

/// What the dedup index knows of a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub digest: [u8; 32],
    /// When it was accepted (UTC, ms since the epoch).
    pub accepted_at_ms: i64,
}

/// Why the broker publishes something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// An accepted message on its way to its recipient.
    Forward,
    /// A signed receipt to a sender.
    Receipt,
    /// A signed notice (deadlines) to an agency.
    Notice,
}

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The agency whose inbox it goes to.
    pub to: String,
    /// The envelope's message id.
    pub message_id: String,
    pub purpose: Purpose,
    /// The journal entry that holds the envelope (its one copy in the
    /// store). `None` in stores written before: the envelopes table then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<u64>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, with redb's page cache at
    /// [`mev_store::wal::DEFAULT_CACHE_BYTES`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, mev_store::wal::DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in `dir` with redb's page cache at
    /// `cache_bytes` (`[store] cache_mib`).
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        let db = Db::open_with_cache(&dir.join("broker.redb"), &TABLES, cache_bytes)?;
        Self::init(db)
    }

    /// A store in memory (the demo's embedded default, unit tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Db::in_memory()?)
    }

    fn init(db: Db) -> Result<Self, StoreError> {
        let failed = mev_store::wal::FailureWatch::of(&db);
        let tx = db.begin(true)?;
        tx.open(MESSAGES)?;
        tx.open(OPEN_REQUESTS)?;
        tx.open(JOURNAL)?;
        tx.open(LEAVES)?;
        tx.open(BY_MESSAGE)?;
        tx.open(META)?;
        tx.open(CHECKPOINTS)?;
        tx.open(ENVELOPES)?;
        tx.open(ACCEPTED_AT)?;
        let outbox = mev_store::outbox::Outbox::open(Entries, &tx)?;
        tx.open(TIMERS)?;
        tx.commit()?;
        Ok(Store {
            db,
            outbox,
            timer_signal: tokio::sync::Notify::new(),
            zones: std::sync::OnceLock::new(),
            failed,
        })
    }

    /// Why the store failed, if it has: a write, sync or commit failed
    /// (EIO, a full disk) and poisoned the redo log. Nothing heals that in
    /// place: every later write fails, so nothing more is accepted, acked
    /// or confirmed; the broker stops and a restart replays the log.
    pub fn failure(&self) -> Option<String> {
        self.db.failure()
    }

    /// Resolves, with the reason, once the store has failed.
    pub async fn failed(&self) -> String {
        self.failed.failed().await
    }

    /// Notes a fatal failure seen outside the redo log's commit (redb's
    /// I/O error inside a transaction), so that the store fails as a whole.
    fn note<R>(&self, result: Result<R, StoreError>) -> Result<R, StoreError> {
        if let Err(e) = &result {
            if e.is_fatal() && self.db.failure().is_none() {
                self.db.fail(&e.to_string());
            }
        }
        result
    }

    /// Closes the store cleanly at the broker's stop: a checkpoint, and the
    /// redo log emptied (the next start replays nothing). Fails if the store
    /// has failed; its log is then for the next start to replay.
    pub fn close(&self) -> Result<(), StoreError> {
        Ok(self.db.close()?)
    }

    /// Runs `f` in one write transaction and commits it durably (one fsync).
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_with(true, f)
    }

    /// Like [`Store::write`], but not made durable until the next durable
    /// commit: for records whose loss in a crash is harmless.
    pub fn write_lazy<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_with(false, f)
    }

    /// One write transaction; the outbox's part (the confirmed entries
    /// removed and their deliveries journalled first, the entries enqueued
    /// kept in memory once it commits) is [`mev_store::outbox::Outbox::write`]'s.
    fn write_with<R>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.note(self.write_with_in(durable, f))
    }

    fn write_with_in<R>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let zones = self.zones.get();
        let (r, armed) = self
            .outbox
            .write(&self.db, durable, |tx, outbox, delivered| {
                let next_seq = last_key(&*tx.open(JOURNAL)?)?.map_or(0, |s| s + 1);
                let mut meta = tx.open(META)?;
                let frontier = match meta.get("frontier")? {
                    Some(v) => Frontier::deserialize(v.value()).map_err(|_| {
                        StoreError::Journal("the Merkle frontier does not decode".into())
                    })?,
                    None => Frontier::new(),
                };
                let last_leaf = meta
                    .get("last_leaf")?
                    .and_then(|v| <[u8; 32]>::try_from(v.value()).ok());
                if frontier.size() != next_seq {
                    return Err(StoreError::Journal(format!(
                        "the Merkle tree has {} leaves but the journal {next_seq} entries",
                        frontier.size()
                    )));
                }
                let mut txn = Txn {
                    messages: tx.open(MESSAGES)?,
                    accepted_at: tx.open(ACCEPTED_AT)?,
                    open: tx.open(OPEN_REQUESTS)?,
                    journal: tx.open(JOURNAL)?,
                    leaves: tx.open(LEAVES)?,
                    by_message: tx.open(BY_MESSAGE)?,
                    outbox,
                    timers: tx.open(TIMERS)?,
                    zones,
                    frontier,
                    last_leaf,
                    appended: false,
                    next_seq,
                    armed: false,
                };
                for e in delivered {
                    txn.record(e)?;
                }
                let r = f(&mut txn)?;
                if txn.appended {
                    meta.insert("frontier", txn.frontier.serialize().as_slice())?;
                    if let Some(l) = &txn.last_leaf {
                        meta.insert("last_leaf", l.as_slice())?;
                    }
                }
                Ok(((r, txn.armed), txn.outbox))
            })?;
        if armed {
            self.timer_signal.notify_one();
        }
        Ok(r)
    }

    /// The outbox sequence past every committed entry: the drain has nothing
    /// to read from a cursor at or past it (entries before it are visible to
    /// every read transaction begun after this call).
    pub fn outbox_end(&self) -> u64 {
        self.outbox.end()
    }

    /// What the store's redo log has done since open (replayed records,
    /// checkpoints and their pauses).
    pub fn log_stats(&self) -> mev_store::wal::Stats {
        self.db.stats()
    }

    /// Counts: (accepted messages, open requests, events).
    pub fn counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let tx = self.db.begin_read()?;
        Ok((
            tx.open_table(MESSAGES)?.len()?,
            tx.open_table(OPEN_REQUESTS)?.len()?,
            tx.open_table(JOURNAL)?.len()?,
        ))
    }

    /// Sets the agencies' time zones, once, for the local times journal
    /// entries carry (later calls are ignored).
    pub fn set_zones(
        &self,
        zones: impl FnOnce() -> std::collections::HashMap<String, chrono_tz::Tz>,
    ) {
        self.zones.get_or_init(zones);
    }

    /// Forgets message ids accepted before `before_ms` (the dedup retention
    /// window); their envelopes and events stay. Removes at most `limit`
    /// ids per call so a long backlog does not hold the writer; returns how
    /// many were removed.
    pub fn prune_dedup(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        self.note(self.prune_dedup_in(before_ms, limit))
    }

    fn prune_dedup_in(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let tx = self.db.begin(true)?;
        let n = {
            let mut index = tx.open(ACCEPTED_AT)?;
            let mut messages = tx.open(MESSAGES)?;
            let old: Vec<(i64, String)> = index
                .range::<(i64, &str)>(..(before_ms, ""))?
                .take(limit)
                .map(|item| item.map(|(k, _)| (k.value().0, k.value().1.to_string())))
                .collect::<Result<_, _>>()?;
            for (at, id) in &old {
                index.remove((*at, id.as_str()))?;
                messages.remove(id.as_str())?;
            }
            old.len()
        };
        tx.commit()?;
        Ok(n)
    }

    /// Every event, in order (for reports and tests), decoded from the journal.
    pub fn events(&self) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        let mut bad = None;
        self.journal_scan(0, |seq, bytes, _| match Entry::decode(bytes) {
            Ok(e) => {
                out.push(e.head.event);
                true
            }
            Err(e) => {
                bad = Some(format!("entry {seq}: {e}"));
                false
            }
        })?;
        match bad {
            Some(b) => Err(StoreError::Journal(b)),
            None => Ok(out),
        }
    }

    /// The open request `id`, if it is still waiting for its reply.
    pub fn open_request(&self, id: &str) -> Result<Option<OpenRequest>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(OPEN_REQUESTS)?;
        let v = t.get(id)?.map(|v| v.value().to_vec());
        match v {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// The stored envelope of a message: from the journal entry that
    /// recorded it (while that entry is in the live store, not sealed away).
    pub fn envelope(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        if let Some(v) = tx.open_table(ENVELOPES)?.get(id)? {
            return Ok(Some(v.value().to_vec()));
        }
        let by_message = tx.open_table(BY_MESSAGE)?;
        let journal = tx.open_table(JOURNAL)?;
        for item in by_message.range((id, 0u64)..=(id, u64::MAX))? {
            let (k, _) = item?;
            let Some(bytes) = journal.get(k.value().1)? else {
                continue;
            };
            let Ok(entry) = Entry::decode(bytes.value()) else {
                continue;
            };
            if entry.head.event.message_id == id && !entry.envelope.is_empty() {
                return Ok(Some(entry.envelope));
            }
        }
        Ok(None)
    }
}

fn last_key<V: mev_store::engine::Value + 'static>(
    t: &impl ReadableTable<u64, V>,
) -> Result<Option<u64>, StoreError> {
    Ok(t.last()?.map(|(k, _)| k.value()))
}

/// One write transaction's view of the tables.
pub struct Txn<'a> {
    messages: Table<'a, &'static str, &'static [u8]>,
    accepted_at: Table<'a, (i64, &'static str), ()>,
    open: Table<'a, &'static str, &'static [u8]>,
    journal: Table<'a, u64, &'static [u8]>,
    leaves: Table<'a, u64, &'static [u8]>,
    by_message: Table<'a, (&'static str, u64), ()>,
    zones: Option<&'a std::collections::HashMap<String, chrono_tz::Tz>>,
    frontier: Frontier,
    last_leaf: Option<Hash>,
    appended: bool,
    /// The outbox's part of the transaction: what it enqueues is kept in
    /// memory, with the envelopes, once it commits.
    outbox: mev_store::outbox::Writer<'a, Entries>,
    timers: Table<'a, (i64, &'static str, u8), ()>,
    next_seq: u64,
    armed: bool,
}

impl Txn<'_> {
    /// What the dedup index knows of `id`.
    pub fn seen(&self, id: &str) -> Result<Option<Seen>, StoreError> {
        Ok(self.messages.get(id)?.and_then(|v| {
            let v = v.value();
            let digest: [u8; 32] = v.get(..32)?.try_into().ok()?;
            let at: [u8; 8] = v.get(32..40)?.try_into().ok()?;
            Some(Seen {
                digest,
                accepted_at_ms: i64::from_le_bytes(at),
            })
        }))
    }

    /// Records an accepted message in the dedup index (its envelope is in
    /// the journal entry that records its arrival).
    pub fn accept(&mut self, id: &str, digest: &[u8; 32], at_ms: i64) -> Result<(), StoreError> {
        let mut v = [0u8; 40];
        v[..32].copy_from_slice(digest);
        v[32..].copy_from_slice(&at_ms.to_le_bytes());
        self.messages.insert(id, v.as_slice())?;
        self.accepted_at.insert((at_ms, id), ())?;
        Ok(())
    }

    /// The open request `id`, if any.
    pub fn open_request(&self, id: &str) -> Result<Option<OpenRequest>, StoreError> {
        match self.open.get(id)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Opens a request.
    pub fn insert_open_request(&mut self, id: &str, req: &OpenRequest) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(req)?;
        self.open.insert(id, bytes.as_slice())?;
        Ok(())
    }

    /// Closes a request.
    pub fn close_request(&mut self, id: &str) -> Result<Option<OpenRequest>, StoreError> {
        match self.open.remove(id)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
