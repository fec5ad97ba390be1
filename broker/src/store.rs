//! The broker's on-disk state in redb. This module owns the database; the
//! rest of the broker sees [`Store`] and [`Txn`]: the dedup index of accepted
//! messages (with a retention window), open requests, the signed envelopes,
//! the outbox of what is still to be delivered, and an append-only event log.
//! One write transaction covers a whole micro-batch, so one fsync covers many
//! messages; nothing is acked or reported before that commit.

use crate::journal::entry::{leaf_of, Entry, Head};
use crate::journal::merkle::{to_hex, Frontier, Hash};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// message id → 32-byte digest + 8-byte accepted-at (ms, little endian).
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
/// (accepted-at ms, message id): the dedup index in time order, for pruning.
const ACCEPTED_AT: TableDefinition<(i64, &str), ()> = TableDefinition::new("accepted_at");
/// (due ms, request id, [`TimerKind`] byte): the deadline timers of open
/// requests, in time order; only the nearest are ever read into memory.
const TIMERS: TableDefinition<(i64, &str, u8), ()> = TableDefinition::new("timers");
/// sequence → JSON [`OutboxEntry`]: what is still to be published. The body
/// is the envelope kept under the entry's message id.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
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
/// message id → the signed envelope as received.
const ENVELOPES: TableDefinition<&str, &[u8]> = TableDefinition::new("envelopes");

/// A store failure. The batch it happened in is not acked and will be redelivered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] redb::DatabaseError),
    #[error("transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("table: {0}")]
    Table(#[from] redb::TableError),
    #[error("storage: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("commit: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("durability: {0}")]
    Durability(#[from] redb::SetDurabilityError),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("corrupt journal state: {0}")]
    Journal(String),
    #[error("cannot create {0}: {1}")]
    Dir(std::path::PathBuf, #[source] std::io::Error),
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

/// One thing that happened, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (UTC, ms since the epoch).
    pub at_ms: i64,
    pub kind: EventKind,
    pub message_id: String,
    pub sender: String,
    pub recipient: String,
    pub service: String,
    /// The request a reply or status refers to.
    pub in_reply_to: String,
    /// Stable code (0 when accepted).
    pub code: u32,
    pub reason: String,
    /// The deadline concerned (UTC ms), for deadline events and replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// How far past the deadline (ms): a late reply, a breach noticed late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_by_ms: Option<i64>,
}

impl Event {
    /// An event of `kind` at `at_ms` with every other field empty; set the
    /// ones that apply with struct update syntax.
    pub fn new(at_ms: i64, kind: EventKind) -> Self {
        Event {
            at_ms,
            kind,
            message_id: String::new(),
            sender: String::new(),
            recipient: String::new(),
            service: String::new(),
            in_reply_to: String::new(),
            code: 0,
            reason: String::new(),
            deadline_ms: None,
            late_by_ms: None,
        }
    }
}

/// Kinds of recorded events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Received,
    Rejected,
    Duplicate,
    Forwarded,
    ReceiptSent,
    ReplyReceived,
    RequestClosed,
    Garbage,
    /// A notice the exchange signed (deadlines), placed in the outbox.
    NoticeSent,
    /// The at-risk fraction of the allowed time passed without a reply.
    DeadlineAtRisk,
    /// The deadline passed without a reply.
    DeadlineBreached,
    /// A reply within its deadline.
    ReplyOnTime,
    /// A reply after its deadline (still delivered).
    ReplyLate,
    /// A request sent after the consumer's dispatch deadline (UZ annex 2 §12).
    LateDispatch,
    /// No deadline could be computed (a calendar lacks a year): the request
    /// is routed, and the reason recorded.
    DeadlineUnknown,
    /// The broker started with a register (its digest and size in `reason`).
    RegisterLoaded,
    /// An accepted message was published to its recipient and confirmed.
    Delivered,
}

/// The broker's database.
pub struct Store {
    db: Database,
    /// Woken after a commit that put something in the outbox.
    outbox_signal: tokio::sync::Notify,
    /// Woken after a commit that armed a timer.
    timer_signal: tokio::sync::Notify,
    /// Agency → time zone, for the local times in journal entries.
    zones: std::sync::OnceLock<std::collections::HashMap<String, chrono_tz::Tz>>,
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
    /// The envelope's message id (its body is kept in the envelopes table).
    pub message_id: String,
    pub purpose: Purpose,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        let db = Database::create(dir.join("broker.redb"))?;
        Self::init(db)
    }

    /// A store in memory (the demo's embedded default, unit tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let tx = db.begin_write()?;
        tx.open_table(MESSAGES)?;
        tx.open_table(OPEN_REQUESTS)?;
        tx.open_table(JOURNAL)?;
        tx.open_table(LEAVES)?;
        tx.open_table(BY_MESSAGE)?;
        tx.open_table(META)?;
        tx.open_table(CHECKPOINTS)?;
        tx.open_table(ENVELOPES)?;
        tx.open_table(ACCEPTED_AT)?;
        tx.open_table(OUTBOX)?;
        tx.open_table(TIMERS)?;
        tx.commit()?;
        Ok(Store {
            db,
            outbox_signal: tokio::sync::Notify::new(),
            timer_signal: tokio::sync::Notify::new(),
            zones: std::sync::OnceLock::new(),
        })
    }

    /// Runs `f` in one write transaction and commits it durably (one fsync).
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_with(Durability::Immediate, f)
    }

    /// Like [`Store::write`], but not made durable until the next durable
    /// commit: for records whose loss in a crash is harmless.
    pub fn write_lazy<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_with(Durability::None, f)
    }

    fn write_with<R>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(durability)?;
        let (r, enqueued, armed) = {
            let next_seq = last_key(&tx.open_table(JOURNAL)?)?.map_or(0, |s| s + 1);
            let next_outbox = last_key(&tx.open_table(OUTBOX)?)?.map_or(0, |s| s + 1);
            let mut meta = tx.open_table(META)?;
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
                messages: tx.open_table(MESSAGES)?,
                accepted_at: tx.open_table(ACCEPTED_AT)?,
                open: tx.open_table(OPEN_REQUESTS)?,
                journal: tx.open_table(JOURNAL)?,
                leaves: tx.open_table(LEAVES)?,
                by_message: tx.open_table(BY_MESSAGE)?,
                envelopes: tx.open_table(ENVELOPES)?,
                outbox: tx.open_table(OUTBOX)?,
                timers: tx.open_table(TIMERS)?,
                zones: self.zones.get(),
                frontier,
                last_leaf,
                appended: false,
                next_seq,
                next_outbox,
                enqueued: false,
                armed: false,
            };
            let r = f(&mut txn)?;
            if txn.appended {
                meta.insert("frontier", txn.frontier.serialize().as_slice())?;
                if let Some(l) = &txn.last_leaf {
                    meta.insert("last_leaf", l.as_slice())?;
                }
            }
            (r, txn.enqueued, txn.armed)
        };
        tx.commit()?;
        if enqueued {
            self.outbox_signal.notify_one();
        }
        if armed {
            self.timer_signal.notify_one();
        }
        Ok(r)
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

    /// The journal's size and Merkle root now.
    pub fn journal_head(&self) -> Result<(u64, Hash), StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let frontier = match meta.get("frontier")? {
            Some(v) => Frontier::deserialize(v.value())
                .map_err(|_| StoreError::Journal("the Merkle frontier does not decode".into()))?,
            None => Frontier::new(),
        };
        Ok((frontier.size(), frontier.root()))
    }

    /// Entries before this one were sealed into segment files (their bodies
    /// left the live store; their leaf hashes stay).
    pub fn journal_sealed_upto(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let v = meta
            .get("sealed_upto")?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(v)
    }

    /// Removes the bodies of entries `sealed_upto..upto` from the live store
    /// once a segment file holds them (see [`crate::journal::segment`]).
    pub fn journal_seal(&self, upto: u64) -> Result<(), StoreError> {
        let from = self.journal_sealed_upto()?;
        let tx = self.db.begin_write()?;
        {
            let mut journal = tx.open_table(JOURNAL)?;
            for seq in from..upto {
                journal.remove(seq)?;
            }
            let mut meta = tx.open_table(META)?;
            meta.insert("sealed_upto", upto.to_be_bytes().as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps a signed checkpoint (JSON) of the tree at `size`.
    pub fn put_checkpoint(&self, size: u64, checkpoint: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(CHECKPOINTS)?.insert(size, checkpoint)?;
        tx.commit()?;
        Ok(())
    }

    /// Every checkpoint, by tree size.
    pub fn checkpoints(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CHECKPOINTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Calls `f` with each journal entry from `from` on, in order, until it
    /// returns false: (sequence, stored bytes, stored leaf hash).
    pub fn journal_scan(
        &self,
        from: u64,
        mut f: impl FnMut(u64, &[u8], Option<Hash>) -> bool,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        let journal = tx.open_table(JOURNAL)?;
        let leaves = tx.open_table(LEAVES)?;
        for item in journal.range(from..)? {
            let (k, v) = item?;
            let leaf = leaves
                .get(k.value())?
                .and_then(|l| <[u8; 32]>::try_from(l.value()).ok());
            if !f(k.value(), v.value(), leaf) {
                break;
            }
        }
        Ok(())
    }

    /// The stored leaf hashes of entries `0..size`, in order (for proofs).
    pub fn journal_leaves(&self, size: u64) -> Result<Vec<Hash>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LEAVES)?;
        let mut out = Vec::with_capacity(size as usize);
        for item in t.range(0..size)? {
            let (_, v) = item?;
            out.push(
                <[u8; 32]>::try_from(v.value())
                    .map_err(|_| StoreError::Journal("a leaf hash is not 32 bytes".into()))?,
            );
        }
        Ok(out)
    }

    /// The sequences of the entries about message `id` (as its id or as the
    /// request it answers).
    pub fn journal_about(&self, id: &str) -> Result<Vec<u64>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BY_MESSAGE)?;
        let mut out = Vec::new();
        for item in t.range((id, 0u64)..=(id, u64::MAX))? {
            let (k, _) = item?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    /// One journal entry's stored bytes.
    pub fn journal_entry(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(JOURNAL)?;
        let v = t.get(seq)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    /// Forensics and tamper tests only — what someone with write access to
    /// the disk could do; the broker never calls it: overwrites (or, with
    /// `None`, deletes) a journal entry's stored bytes, leaving everything
    /// else as it is.
    pub fn tamper_journal_entry(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(JOURNAL)?;
            match bytes {
                Some(b) => {
                    t.insert(seq, b)?;
                }
                None => {
                    t.remove(seq)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Resolves after a commit that armed a timer.
    pub async fn timers_changed(&self) {
        self.timer_signal.notified().await
    }

    /// Wakes whoever waits in [`Store::timers_changed`] (a clock moved).
    pub fn poke_timers(&self) {
        self.timer_signal.notify_one();
    }

    /// When the nearest timer is due (UTC ms), if any is armed.
    pub fn next_timer(&self) -> Result<Option<i64>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TIMERS)?;
        let first = t.first()?.map(|(k, _)| k.value().0);
        Ok(first)
    }

    /// Armed timers.
    pub fn timers_len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(TIMERS)?.len()?)
    }

    /// Messages in the outbox, not yet confirmed by the message broker.
    pub fn outbox_depth(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(OUTBOX)?.len()?)
    }

    /// Resolves after a commit that put something in the outbox (or at once
    /// if one happened since the last wait).
    pub async fn outbox_changed(&self) {
        self.outbox_signal.notified().await
    }

    /// Up to `take` outbox entries in order, with their envelopes, among the
    /// first `scan` entries, skipping those `skip` says to (recipients in
    /// back-off). Entries whose envelope is missing are returned with `None`.
    #[allow(clippy::type_complexity)]
    pub fn outbox_next(
        &self,
        scan: usize,
        take: usize,
        skip: impl Fn(&OutboxEntry) -> bool,
    ) -> Result<Vec<(u64, OutboxEntry, Option<Vec<u8>>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let outbox = tx.open_table(OUTBOX)?;
        let envelopes = tx.open_table(ENVELOPES)?;
        let mut out = Vec::new();
        for item in outbox.iter()?.take(scan) {
            let (k, v) = item?;
            let entry: OutboxEntry = serde_json::from_slice(v.value())?;
            if skip(&entry) {
                continue;
            }
            let body = envelopes
                .get(entry.message_id.as_str())?
                .map(|b| b.value().to_vec());
            out.push((k.value(), entry, body));
            if out.len() >= take {
                break;
            }
        }
        Ok(out)
    }

    /// Removes delivered entries from the outbox and journals the
    /// deliveries, in one transaction that is not fsynced on its own: the
    /// next durable commit (the pipeline's next batch, a checkpoint, the
    /// final checkpoint at stop) carries it to disk. A crash before that
    /// loses the removals and their `Delivered` events together, so the
    /// entries are published again, receivers drop the copies by id, and
    /// the deliveries are journalled then: nothing is confirmed that is not
    /// durable, and the journal never says delivered for what it may send again.
    pub fn outbox_remove(&self, seqs: &[u64], delivered: &[Event]) -> Result<(), StoreError> {
        if seqs.is_empty() && delivered.is_empty() {
            return Ok(());
        }
        self.write_lazy(|t| {
            for s in seqs {
                t.outbox.remove(s)?;
            }
            for e in delivered {
                t.record(e)?;
            }
            Ok(())
        })
    }

    /// Forgets message ids accepted before `before_ms` (the dedup retention
    /// window); their envelopes and events stay. Removes at most `limit`
    /// ids per call so a long backlog does not hold the writer; returns how
    /// many were removed.
    pub fn prune_dedup(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let tx = self.db.begin_write()?;
        let n = {
            let mut index = tx.open_table(ACCEPTED_AT)?;
            let mut messages = tx.open_table(MESSAGES)?;
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

    /// The stored envelope of a message.
    pub fn envelope(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ENVELOPES)?;
        Ok(t.get(id)?.map(|v| v.value().to_vec()))
    }
}

fn last_key<V: redb::Value + 'static>(
    t: &redb::Table<'_, u64, V>,
) -> Result<Option<u64>, StoreError> {
    Ok(t.last()?.map(|(k, _)| k.value()))
}

/// One write transaction's view of the tables.
pub struct Txn<'a> {
    messages: redb::Table<'a, &'static str, &'static [u8]>,
    accepted_at: redb::Table<'a, (i64, &'static str), ()>,
    open: redb::Table<'a, &'static str, &'static [u8]>,
    journal: redb::Table<'a, u64, &'static [u8]>,
    leaves: redb::Table<'a, u64, &'static [u8]>,
    by_message: redb::Table<'a, (&'static str, u64), ()>,
    zones: Option<&'a std::collections::HashMap<String, chrono_tz::Tz>>,
    frontier: Frontier,
    last_leaf: Option<Hash>,
    appended: bool,
    envelopes: redb::Table<'a, &'static str, &'static [u8]>,
    outbox: redb::Table<'a, u64, &'static [u8]>,
    timers: redb::Table<'a, (i64, &'static str, u8), ()>,
    next_seq: u64,
    next_outbox: u64,
    enqueued: bool,
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

    /// Records an accepted message (in the dedup index) and keeps its envelope.
    pub fn accept(
        &mut self,
        id: &str,
        digest: &[u8; 32],
        envelope: &[u8],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut v = [0u8; 40];
        v[..32].copy_from_slice(digest);
        v[32..].copy_from_slice(&at_ms.to_le_bytes());
        self.messages.insert(id, v.as_slice())?;
        self.accepted_at.insert((at_ms, id), ())?;
        self.envelopes.insert(id, envelope)?;
        Ok(())
    }

    /// Keeps an envelope the broker itself signed (a receipt, a notice).
    pub fn keep_envelope(&mut self, id: &str, envelope: &[u8]) -> Result<(), StoreError> {
        self.envelopes.insert(id, envelope)?;
        Ok(())
    }

    /// Arms a timer for `request_id`, due at `due_ms`.
    pub fn arm(
        &mut self,
        due_ms: i64,
        request_id: &str,
        kind: TimerKind,
    ) -> Result<(), StoreError> {
        self.timers.insert((due_ms, request_id, kind as u8), ())?;
        self.armed = true;
        Ok(())
    }

    /// Disarms a timer (no harm if it already fired).
    pub fn disarm(
        &mut self,
        due_ms: i64,
        request_id: &str,
        kind: TimerKind,
    ) -> Result<(), StoreError> {
        self.timers.remove((due_ms, request_id, kind as u8))?;
        Ok(())
    }

    /// Takes up to `limit` timers due at or before `now_ms`, nearest first,
    /// disarming them: the caller acts on them in this same transaction.
    pub fn take_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let due: Vec<(i64, String, u8)> = self
            .timers
            .range::<(i64, &str, u8)>(..(now_ms.saturating_add(1), "", 0))?
            .take(limit)
            .map(|item| {
                item.map(|(k, _)| {
                    let (at, id, kind) = k.value();
                    (at, id.to_string(), kind)
                })
            })
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(due.len());
        for (at, id, kind) in due {
            self.timers.remove((at, id.as_str(), kind))?;
            if let Some(kind) = TimerKind::from_byte(kind) {
                out.push(Timer {
                    due_ms: at,
                    request_id: id,
                    kind,
                });
            }
        }
        Ok(out)
    }

    /// Puts the envelope kept under `entry.message_id` in the outbox; it is
    /// published after this transaction commits, and retried until confirmed.
    pub fn enqueue(&mut self, entry: &OutboxEntry) -> Result<u64, StoreError> {
        let seq = self.next_outbox;
        let bytes = serde_json::to_vec(entry)?;
        self.outbox.insert(seq, bytes.as_slice())?;
        self.next_outbox += 1;
        self.enqueued = true;
        Ok(seq)
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

    /// Appends an event to the journal (with no envelope).
    pub fn record(&mut self, event: &Event) -> Result<u64, StoreError> {
        self.record_with(event, &[])
    }

    /// Appends an event to the journal with the signed envelope it is about,
    /// kept byte for byte so its signature can be checked years later.
    pub fn record_with(&mut self, event: &Event, envelope: &[u8]) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let at = chrono::DateTime::from_timestamp_millis(event.at_ms).unwrap_or_default();
        let local = |agency: &str| match self.zones.and_then(|z| z.get(agency)) {
            Some(tz) => at
                .with_timezone(tz)
                .format(&format!("%Y-%m-%d %H:%M:%S%.3f %:z ({})", tz.name()))
                .to_string(),
            None => String::new(),
        };
        let entry = Entry {
            head: Head {
                seq,
                prev: self.last_leaf.as_ref().map(to_hex).unwrap_or_default(),
                at_utc: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                sender_local: local(&event.sender),
                recipient_local: local(&event.recipient),
                event: event.clone(),
                envelope_sha256: if envelope.is_empty() {
                    String::new()
                } else {
                    to_hex(&mev_proto::envelope::sha256(envelope))
                },
            },
            envelope: envelope.to_vec(),
        };
        let bytes = entry.encode()?;
        let leaf = leaf_of(&bytes);
        self.journal.insert(seq, bytes.as_slice())?;
        self.leaves.insert(seq, leaf.as_slice())?;
        for id in [&event.message_id, &event.in_reply_to] {
            if !id.is_empty() {
                self.by_message.insert((id.as_str(), seq), ())?;
            }
        }
        self.frontier.push(leaf);
        self.last_leaf = Some(leaf);
        self.appended = true;
        self.next_seq += 1;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            at_ms: 1,
            kind,
            message_id: "m".into(),
            sender: "A".into(),
            recipient: "B".into(),
            service: "S".into(),
            in_reply_to: String::new(),
            code: 0,
            reason: String::new(),
            deadline_ms: None,
            late_by_ms: None,
        }
    }

    #[test]
    fn accept_open_close_and_events_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .write(|t| {
                    assert_eq!(t.seen("m")?, None);
                    t.accept("m", &[7; 32], b"env", 5)?;
                    t.insert_open_request(
                        "m",
                        &OpenRequest {
                            sender: "A".into(),
                            recipient: "B".into(),
                            service: "S".into(),
                            accepted_at_ms: 5,
                            policy: String::new(),
                            deadline_ms: None,
                            at_risk_ms: None,
                            breached: false,
                        },
                    )?;
                    t.record(&event(EventKind::Received))?;
                    Ok(())
                })
                .unwrap();
            store
                .write(|t| t.record(&event(EventKind::Forwarded)).map(|_| ()))
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let seen = store.write(|t| t.seen("m")).unwrap().unwrap();
        assert_eq!(seen.digest, [7; 32]);
        assert_eq!(seen.accepted_at_ms, 5);
        assert_eq!(store.counts().unwrap(), (1, 1, 2));
        let closed = store.write(|t| t.close_request("m")).unwrap();
        assert_eq!(closed.unwrap().recipient, "B");
        assert_eq!(store.events().unwrap()[1].kind, EventKind::Forwarded);
        assert_eq!(store.envelope("m").unwrap().unwrap(), b"env");
    }

    fn entry(to: &str, id: &str) -> OutboxEntry {
        OutboxEntry {
            to: to.into(),
            message_id: id.into(),
            purpose: Purpose::Forward,
        }
    }

    #[test]
    fn outbox_survives_reopen_keeps_order_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .write(|t| {
                    for (i, to) in ["A", "B", "A", "C"].iter().enumerate() {
                        let id = format!("m{i}");
                        t.accept(&id, &[i as u8; 32], id.as_bytes(), 1)?;
                        t.enqueue(&entry(to, &id))?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.outbox_depth().unwrap(), 4);
        let all = store.outbox_next(100, 100, |_| false).unwrap();
        let ids: Vec<_> = all.iter().map(|(_, e, _)| e.message_id.as_str()).collect();
        assert_eq!(ids, ["m0", "m1", "m2", "m3"]);
        assert_eq!(all[2].2.as_deref(), Some(&b"m2"[..]));
        let not_a = store.outbox_next(100, 1, |e| e.to == "A").unwrap();
        assert_eq!(not_a[0].1.message_id, "m1");
        store.outbox_remove(&[all[0].0, all[3].0], &[]).unwrap();
        let left = store.outbox_next(100, 100, |_| false).unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].1.message_id, "m1");
        // New entries go after what is left, never reusing a live sequence.
        store
            .write(|t| t.enqueue(&entry("D", "m9")).map(|_| ()))
            .unwrap();
        let seqs: Vec<u64> = store
            .outbox_next(100, 100, |_| false)
            .unwrap()
            .iter()
            .map(|(s, _, _)| *s)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    #[test]
    fn dedup_retention_prunes_old_ids_but_keeps_envelopes() {
        let store = Store::in_memory().unwrap();
        store
            .write(|t| {
                t.accept("old", &[1; 32], b"o", 1_000)?;
                t.accept("new", &[2; 32], b"n", 9_000)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.prune_dedup(5_000, 100).unwrap(), 1);
        assert_eq!(store.write(|t| t.seen("old")).unwrap(), None);
        assert!(store.write(|t| t.seen("new")).unwrap().is_some());
        assert_eq!(store.envelope("old").unwrap().unwrap(), b"o");
        assert_eq!(store.prune_dedup(5_000, 100).unwrap(), 0);
    }
}
