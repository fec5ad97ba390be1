//! Today's engine: the broker's state in redb, written through the redo
//! log ([`mev_store::wal`]), one file (`broker.redb` and its `.wal`).

use super::dedup::{DedupTables, ACCEPTED_AT, MESSAGES};
use super::journal::{
    JournalAppend, JournalTables, BY_MESSAGE, CHECKPOINTS, JOURNAL, LEAVES, META,
};
use super::outbox::{Entries, OutboxTables, ENVELOPES, OUTBOX};
use super::requests::{RequestTables, OPEN_REQUESTS};
use super::timers::{TimerTables, TIMERS};
use super::{Engine, StoreError, Txn};
use mev_store::engine::ReadableTableMetadata;
use mev_store::wal::{Db, Replay};
use std::collections::HashMap;
use std::path::Path;

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

/// The broker's database in redb.
pub struct Redb {
    pub(super) db: Db,
    /// The outbox ([`mev_store::outbox`], shared with the adapter): its
    /// sequence, the memory of the last commits' entries with their
    /// envelopes, the confirmed entries and their `Delivered` events that
    /// the next write transaction removes and journals (see
    /// [`OutboxState::outbox_confirmed`](super::OutboxState::outbox_confirmed)).
    pub(super) outbox: mev_store::outbox::Outbox<Entries>,
    /// Woken after a commit that armed a timer.
    pub(super) timer_signal: tokio::sync::Notify,
    /// Agency → time zone, for the local times in journal entries.
    zones: std::sync::OnceLock<HashMap<String, chrono_tz::Tz>>,
    /// Why the store failed, once it has (its redo log poisoned): see
    /// [`Redb::failed`].
    failed: mev_store::wal::FailureWatch,
}

/// One redb write transaction: a view per concept over its tables.
pub struct RedbTxn<'a> {
    pub(super) dedup: DedupTables<'a>,
    pub(super) requests: RequestTables<'a>,
    pub(super) timers: TimerTables<'a>,
    pub(super) journal: JournalTables<'a>,
    pub(super) outbox: OutboxTables<'a>,
}

impl<'a> Txn for RedbTxn<'a> {
    type Dedup = DedupTables<'a>;
    type Requests = RequestTables<'a>;
    type Timers = TimerTables<'a>;
    type Journal = JournalTables<'a>;
    type Outbox = OutboxTables<'a>;

    fn dedup(&mut self) -> &mut DedupTables<'a> {
        &mut self.dedup
    }
    fn requests(&mut self) -> &mut RequestTables<'a> {
        &mut self.requests
    }
    fn timers(&mut self) -> &mut TimerTables<'a> {
        &mut self.timers
    }
    fn journal(&mut self) -> &mut JournalTables<'a> {
        &mut self.journal
    }
    fn outbox(&mut self) -> &mut OutboxTables<'a> {
        &mut self.outbox
    }
}

impl Redb {
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
        Ok(Redb {
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
    pub(super) fn note<R>(&self, result: Result<R, StoreError>) -> Result<R, StoreError> {
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

    /// What the store's redo log has done since open (replayed records,
    /// checkpoints and their pauses).
    pub fn log_stats(&self) -> mev_store::wal::Stats {
        self.db.stats()
    }

    /// One write transaction; the outbox's part (the confirmed entries
    /// removed and their deliveries journalled first, the entries enqueued
    /// kept in memory once it commits) is [`mev_store::outbox::Outbox::write`]'s.
    pub(super) fn write_with<R>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut RedbTxn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.note(self.write_with_in(durable, f))
    }

    fn write_with_in<R>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut RedbTxn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let zones = self.zones.get();
        let (r, armed) = self
            .outbox
            .write(&self.db, durable, |tx, writer, delivered| {
                let mut txn = RedbTxn {
                    dedup: DedupTables {
                        messages: tx.open(MESSAGES)?,
                        accepted_at: tx.open(ACCEPTED_AT)?,
                    },
                    requests: RequestTables {
                        open: tx.open(OPEN_REQUESTS)?,
                    },
                    timers: TimerTables {
                        timers: tx.open(TIMERS)?,
                        armed: false,
                    },
                    journal: JournalTables::open(tx, zones)?,
                    outbox: OutboxTables { writer },
                };
                for e in delivered {
                    txn.journal.append(e)?;
                }
                let r = f(&mut txn)?;
                let RedbTxn {
                    timers,
                    journal,
                    outbox,
                    ..
                } = txn;
                journal.finish(tx)?;
                Ok(((r, timers.armed), outbox.writer))
            })?;
        if armed {
            self.timer_signal.notify_one();
        }
        Ok(r)
    }
}

impl Engine for Redb {
    type Tx<'t> = RedbTxn<'t>;

    fn write<R>(
        &self,
        f: impl FnOnce(&mut RedbTxn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_with(true, f)
    }

    fn write_lazy<R>(
        &self,
        f: impl FnOnce(&mut RedbTxn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_with(false, f)
    }

    fn set_zones(&self, zones: impl FnOnce() -> HashMap<String, chrono_tz::Tz>) {
        self.zones.get_or_init(zones);
    }

    fn counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let tx = self.db.begin_read()?;
        Ok((
            tx.open_table(MESSAGES)?.len()?,
            tx.open_table(OPEN_REQUESTS)?.len()?,
            tx.open_table(JOURNAL)?.len()?,
        ))
    }
}

/// The shared drain's access to the store: its outbox, its database, and a
/// write transaction that removes what was confirmed.
impl mev_store::outbox::drain::Host for Redb {
    type Schema = Entries;
    fn outbox(&self) -> &mev_store::outbox::Outbox<Entries> {
        &self.outbox
    }
    fn db(&self) -> &Db {
        &self.db
    }
    fn remove_confirmed(&self, durable: bool) -> Result<(), StoreError> {
        self.write_with(durable, |_| Ok(()))
    }
}
