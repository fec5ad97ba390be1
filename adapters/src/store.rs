//! The adapter's on-disk state in redb. This module owns the database; the
//! rest of the adapter sees [`Store`]: the outbox of messages not yet
//! confirmed by RabbitMQ, and the dedup index of message ids (and receipt
//! digests) already handled, with a time index to forget them after the
//! retention window.
//!
//! The file is `<data_dir>/adapter-<agency>.redb`, with its redo log
//! `adapter-<agency>.redb.wal` beside it ([`mev_store::wal`]: a durable commit is
//! a synced log append; the two files belong together); without a data dir
//! the database lives in memory (nothing survives the process).
//!
//! The outbox's protocol (sequences, the memory of the last commits, the
//! confirmed entries removed by the next write, reads from a cursor) is
//! [`mev_store::outbox`]'s, shared with the broker; this module gives it the
//! adapter's record ([`Messages`]).
//!
//! Tables:
//! - `outbox`: `u64` sequence → record: a version byte, a route tag byte
//!   (0 ingress, 1 inbox, 2 queue), the route name and the message id (each a
//!   `u32` little-endian length and UTF-8 bytes), then the envelope bytes;
//! - `dedup`: key (a message id, or `digest:<hex>` for a receipt entry) →
//!   when it was handled (ms since the epoch);
//! - `dedup_by_time`: (handled-at ms, key) → `()`, to prune old keys in order.

use crate::transport::{Outgoing, Route};
use mev_store::engine::{ReadTransaction, ReadableTable, TableDefinition};
use mev_store::outbox::{self, Outbox, Schema};
use mev_store::wal::{Db, Replay};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const OUTBOX: outbox::Def = TableDefinition::new("outbox");
const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("dedup");
const DEDUP_BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("dedup_by_time");
/// Every table a write may touch, for the redo log's replay.
static TABLES: [&dyn Replay; 3] = [&OUTBOX, &DEDUP, &DEDUP_BY_TIME];

/// The outbox record format written by this version.
const RECORD_V1: u8 = 1;

/// A failure of the adapter's store (its redb database).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be created or opened (a bad path, or
    /// another process or adapter has it open).
    #[error("cannot open the adapter's store {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// A transaction, a table or the storage failed.
    #[error("adapter store: {0}")]
    Database(String),
    /// An outbox record does not decode.
    #[error("corrupt outbox record {0}")]
    Corrupt(u64),
    /// The store failed: a write, sync or commit failed (EIO, a full disk)
    /// and poisoned its redo log, or redb's file failed. No retry can
    /// succeed: every later write fails the same way. Shut the adapter down
    /// and connect it again once the disk is fixed; the redo log then
    /// replays, and what was durable (every message `send_*` returned for)
    /// is kept.
    #[error("the adapter's store failed ({0}); shut the adapter down and connect it again once the disk is fixed")]
    Failed(String),
}

impl StoreError {
    /// Whether the store failed as a whole ([`StoreError::Failed`]): a hard
    /// error, not to be retried.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Failed(_))
    }
}

fn database(e: mev_store::engine::Error) -> StoreError {
    match e {
        mev_store::engine::Error::Io(_) | mev_store::engine::Error::PreviousIo => {
            StoreError::Failed(e.to_string())
        }
        e => StoreError::Database(e.to_string()),
    }
}
mev_store::from_redb_errors!(StoreError, database);

impl From<mev_store::wal::Error> for StoreError {
    fn from(e: mev_store::wal::Error) -> Self {
        if e.is_fatal() {
            StoreError::Failed(e.to_string())
        } else {
            StoreError::Database(e.to_string())
        }
    }
}

/// The adapter's outbox entries: the message itself, its record holding
/// route, message id and envelope (see the module); nothing is written with
/// a removal.
pub(crate) struct Messages;

impl Schema for Messages {
    type Item = Outgoing;
    type Done = ();
    type Error = StoreError;
    type Reader<'t> = ();
    const TABLE: outbox::Def = OUTBOX;

    fn reader(&self, _tx: &ReadTransaction) -> Result<(), StoreError> {
        Ok(())
    }

    fn read(
        &self,
        _reader: &(),
        seq: u64,
        record: &[u8],
        skip: &mut impl FnMut(&str) -> bool,
    ) -> Result<Option<Outgoing>, StoreError> {
        // The route first: a skipped entry's envelope is not copied.
        if skip(route_of(record).ok_or(StoreError::Corrupt(seq))?) {
            return Ok(None);
        }
        decode(record).map(Some).ok_or(StoreError::Corrupt(seq))
    }

    fn done(&self, _item: &Outgoing) -> Option<()> {
        None
    }
}

/// redb's page cache for an adapter's store: its working set is the
/// outbox's newest entries and the dedup index, and an agency's process
/// should not grow to redb's default (1 GiB) after a burst of large messages.
pub const CACHE_BYTES: usize = 16 << 20;

/// The adapter's database.
pub(crate) struct Store {
    db: Db,
    outbox: Outbox<Messages>,
    /// Durable (fsynced) write transactions committed so far.
    durable_commits: AtomicU64,
    /// Why the store failed, once it has (see [`Store::failed`]).
    failed: mev_store::wal::FailureWatch,
}

/// Milliseconds since the epoch now.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The file of `agency`'s store under `dir`.
pub(crate) fn file_of(dir: &Path, agency: &str) -> PathBuf {
    let safe: String = agency
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("adapter-{safe}.redb"))
}

impl Store {
    /// Opens (or creates) `agency`'s store in `data_dir`, or one in memory.
    pub(crate) fn open(data_dir: Option<&Path>, agency: &str) -> Result<Store, StoreError> {
        let db = match data_dir {
            Some(dir) => {
                let path = file_of(dir, agency);
                let failed = |reason: String| StoreError::Open {
                    path: path.clone(),
                    reason,
                };
                std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
                Db::open_with_cache(&path, &TABLES, CACHE_BYTES)
                    .map_err(|e| failed(e.to_string()))?
            }
            None => Db::in_memory()?,
        };
        let failed = mev_store::wal::FailureWatch::of(&db);
        let tx = db.begin(true)?;
        let outbox = Outbox::open(Messages, &tx)?;
        tx.open(DEDUP)?;
        tx.open(DEDUP_BY_TIME)?;
        tx.commit()?;
        Ok(Store {
            db,
            outbox,
            durable_commits: AtomicU64::new(0),
            failed,
        })
    }

    /// Why the store failed, if it has ([`StoreError::Failed`]).
    pub(crate) fn failure(&self) -> Option<String> {
        self.db.failure()
    }

    /// Resolves, with the reason, once the store has failed.
    pub(crate) async fn failed(&self) -> String {
        self.failed.failed().await
    }

    /// Notes a failure of the store as a whole seen inside a transaction
    /// (redb's I/O error), so that it fails for every writer.
    fn note<R>(&self, result: Result<R, StoreError>) -> Result<R, StoreError> {
        if let Err(StoreError::Failed(reason)) = &result {
            if self.db.failure().is_none() {
                self.db.fail(reason);
            }
        }
        result
    }

    /// Fails the store as a failed write would (tests of what follows).
    #[cfg(test)]
    pub(crate) fn fail_for_test(&self, reason: &str) {
        self.db.fail(reason);
    }

    /// Closes the store cleanly when the adapter stops: a checkpoint, and
    /// the redo log emptied. Fails if the store has failed.
    pub(crate) fn close(&self) -> Result<(), StoreError> {
        Ok(self.db.close()?)
    }

    /// The outbox (the drain's side of it: [`outbox::drain::Host`]).
    #[cfg(test)]
    pub(crate) fn outbox(&self) -> &Outbox<Messages> {
        &self.outbox
    }

    /// In one durable write transaction (one fsync): appends `messages` to
    /// the outbox and marks `handled` keys as handled at `now_ms`; removes
    /// the entries confirmed since the last write.
    pub(crate) fn commit(
        &self,
        messages: &[Outgoing],
        handled: &[String],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let written = self.outbox.write(&self.db, true, |tx, mut outbox, _| {
            for m in messages {
                // The message stays in memory for the drain (its envelope
                // shared, not copied).
                outbox.push(&encode(m), m.clone())?;
            }
            let mut dedup = tx.open(DEDUP)?;
            let mut by_time = tx.open(DEDUP_BY_TIME)?;
            for key in handled.iter().filter(|k| !k.is_empty()) {
                let old = dedup.insert(key.as_str(), now_ms)?.map(|v| v.value());
                if let Some(old) = old.filter(|t| *t != now_ms) {
                    by_time.remove((old, key.as_str()))?;
                }
                by_time.insert((now_ms, key.as_str()), ())?;
            }
            Ok(((), outbox))
        });
        self.note(written)?;
        self.durable_commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes the entries confirmed so far in a transaction of their own
    /// (the drain's, when no write of the writer's carries them). Lazy (not
    /// fsynced) unless `durable`, which also carries every lazy commit
    /// before it to disk: losing a removal only re-publishes a message,
    /// which receivers drop by its id.
    pub(crate) fn remove_confirmed(&self, durable: bool) -> Result<(), StoreError> {
        let written = self
            .outbox
            .write(&self.db, durable, |_, outbox, _| Ok(((), outbox)));
        self.note(written)?;
        if durable {
            self.durable_commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The first `limit` outbox entries from sequence `from` on, in order.
    #[cfg(test)]
    pub(crate) fn outbox_batch(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Outgoing)>, StoreError> {
        Ok(self
            .outbox
            .read(&self.db, from, limit, limit, |_| false)?
            .items)
    }

    /// Messages in the outbox.
    pub(crate) fn outbox_len(&self) -> Result<u64, StoreError> {
        self.outbox.len(&self.db)
    }

    /// Whether `key` was handled (and not yet pruned).
    pub(crate) fn handled(&self, key: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(DEDUP)?.get(key)?.is_some())
    }

    /// Forgets at most `limit` keys handled before `cutoff_ms`, oldest
    /// first; returns how many. Lazy: a lost prune is simply done again.
    pub(crate) fn prune(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.note(self.prune_in(cutoff_ms, limit))
    }

    fn prune_in(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let tx = self.db.begin(false)?;
        let n = {
            let mut dedup = tx.open(DEDUP)?;
            let mut by_time = tx.open(DEDUP_BY_TIME)?;
            let mut old: Vec<(u64, String)> = Vec::new();
            for item in by_time.range::<(u64, &str)>(..(cutoff_ms, ""))?.take(limit) {
                let (k, _) = item?;
                let (t, key) = k.value();
                old.push((t, key.to_string()));
            }
            for (t, key) in &old {
                by_time.remove((*t, key.as_str()))?;
                let current = dedup.get(key.as_str())?.map(|v| v.value());
                if current == Some(*t) {
                    dedup.remove(key.as_str())?;
                }
            }
            old.len()
        };
        tx.commit()?;
        Ok(n)
    }

    /// Durable write transactions committed since the store was opened.
    #[cfg(test)]
    pub(crate) fn durable_commits(&self) -> u64 {
        self.durable_commits.load(Ordering::Relaxed)
    }

    /// Keys in the dedup index (tests).
    #[cfg(test)]
    pub(crate) fn dedup_len(&self) -> Result<(u64, u64), StoreError> {
        use mev_store::engine::ReadableTableMetadata;
        let tx = self.db.begin_read()?;
        Ok((
            tx.open_table(DEDUP)?.len()?,
            tx.open_table(DEDUP_BY_TIME)?.len()?,
        ))
    }
}

impl outbox::drain::Host for Store {
    type Schema = Messages;
    fn outbox(&self) -> &Outbox<Messages> {
        &self.outbox
    }
    fn db(&self) -> &Db {
        &self.db
    }
    fn remove_confirmed(&self, durable: bool) -> Result<(), StoreError> {
        Store::remove_confirmed(self, durable)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

fn take_str<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let s = rest.get(..len)?;
    *bytes = &rest[len..];
    std::str::from_utf8(s).ok()
}

/// An outbox record of `m`.
fn encode(m: &Outgoing) -> Vec<u8> {
    let (tag, name) = match &m.route {
        Route::Ingress => (0u8, ""),
        Route::Inbox(agency) => (1, agency.as_str()),
        Route::Queue(queue) => (2, queue.as_str()),
    };
    let mut out = Vec::with_capacity(10 + name.len() + m.message_id.len() + m.body.len());
    out.push(RECORD_V1);
    out.push(tag);
    put_str(&mut out, name);
    put_str(&mut out, &m.message_id);
    out.extend_from_slice(&m.body);
    out
}

/// The route's name in an outbox record (`Item::route` of its message).
fn route_of(record: &[u8]) -> Option<&str> {
    let (&[RECORD_V1, 0..=2], mut rest) = record.split_first_chunk::<2>()? else {
        return None;
    };
    take_str(&mut rest)
}

/// The message of an outbox record.
fn decode(record: &[u8]) -> Option<Outgoing> {
    let (&[version, tag], mut rest) = record.split_first_chunk::<2>()?;
    if version != RECORD_V1 {
        return None;
    }
    let name = take_str(&mut rest)?;
    let message_id = take_str(&mut rest)?.to_string();
    let route = match tag {
        0 => Route::Ingress,
        1 => Route::Inbox(name.to_string()),
        2 => Route::Queue(name.to_string()),
        _ => return None,
    };
    Some(Outgoing {
        route,
        body: rest.into(),
        message_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mev_store::outbox::Item;

    fn msg(route: Route, id: &str, body: &[u8]) -> Outgoing {
        Outgoing {
            route,
            body: body.into(),
            message_id: id.into(),
        }
    }

    #[test]
    fn a_failed_store_is_a_hard_error_and_keeps_what_was_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(Some(dir.path()), "A").unwrap();
        s.commit(&[msg(Route::Ingress, "kept", b"x")], &[], 1)
            .unwrap();
        assert_eq!(s.failure(), None);
        // What the redo log does when a write or an fsync fails.
        s.db.fail("redo log: No space left on device");
        let e = s
            .commit(&[msg(Route::Ingress, "lost", b"y")], &[], 2)
            .unwrap_err();
        assert!(e.is_fatal(), "{e:?}");
        assert!(e.to_string().contains("No space left"), "{e}");
        assert!(s.prune(u64::MAX, 10).unwrap_err().is_fatal());
        s.outbox().confirmed([0], []);
        assert!(s.remove_confirmed(true).unwrap_err().is_fatal());
        let reason = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(s.failed());
        assert_eq!(Some(reason), s.failure());
        assert!(s.close().is_err());
        drop(s);
        let s = Store::open(Some(dir.path()), "A").unwrap();
        let ids: Vec<_> = s
            .outbox_batch(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.message_id)
            .collect();
        assert_eq!(ids, ["kept"]);
        s.close().unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("adapter-A.redb.wal"))
                .unwrap()
                .len(),
            mev_store::wal::FILE_HEADER,
            "a clean close empties the log"
        );
    }

    #[test]
    fn records_round_trip() {
        for m in [
            msg(Route::Ingress, "id-1", b"envelope"),
            msg(Route::Inbox("UZ-GNK".into()), "", b""),
            msg(Route::Queue("ns.inbox.X".into()), "x", &[0, 1, 2, 255]),
        ] {
            let back = decode(&encode(&m)).expect("decodes");
            assert_eq!(route_of(&encode(&m)), Some(m.route()));
            assert_eq!(back.route, m.route);
            assert_eq!(back.message_id, m.message_id);
            assert_eq!(back.body, m.body);
        }
        assert!(decode(&[]).is_none());
        assert!(decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(decode(&[RECORD_V1, 0, 200, 0, 0, 0]).is_none());
        assert!(route_of(&[RECORD_V1, 3, 0, 0, 0, 0]).is_none());
    }

    /// The glue of the shared outbox (`mev_store::outbox`, tested there):
    /// what the writer commits is in memory for the drain, as a read of the
    /// adapter's records gives it; and commit 5d86566's case through the
    /// adapter's store: entries a read of the store passed, published,
    /// confirmed and removed, do not come back from memory when the drain
    /// reads again from the oldest entry (the adapter's old `take_recent`
    /// kept them).
    #[test]
    fn memory_gives_what_the_store_gives_and_nothing_a_read_passed() {
        let s = Store::open(None, "A").unwrap();
        let ms: Vec<_> = (0..6u8)
            .map(|i| msg(Route::Ingress, &format!("m{i}"), &[i]))
            .collect();
        s.commit(&ms[..4], &[], 1).unwrap();
        s.commit(&ms[4..], &[], 1).unwrap();
        let ids = |b: &[(u64, Outgoing)]| {
            b.iter()
                .map(|(_, m)| m.message_id.clone())
                .collect::<Vec<_>>()
        };
        let memory = s.outbox().take_recent(4, 10, 10, |_| false).unwrap();
        let stored = s.outbox_batch(0, 6).unwrap();
        assert_eq!(ids(&memory.items), ["m4", "m5"]);
        for ((seq, got), (want_seq, want)) in memory.items.iter().zip(&stored[4..]) {
            assert_eq!(seq, want_seq);
            assert_eq!((&got.route, &got.body), (&want.route, &want.body));
        }
        // Read from the store (as after a restart, or past a gap) while
        // memory still holds them: published, confirmed, removed.
        s.commit(&[msg(Route::Ingress, "m6", b"6")], &[], 2)
            .unwrap();
        let read = s.outbox_batch(0, 7).unwrap();
        assert_eq!(ids(&read), ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
        s.outbox().confirmed(read.iter().map(|(seq, _)| *seq), []);
        s.remove_confirmed(false).unwrap();
        // The drain starts again from the oldest entry: nothing there, in
        // memory either.
        assert!(s.outbox().take_recent(0, 10, 10, |_| false).is_none());
        assert!(s.outbox().take_recent(6, 10, 10, |_| false).is_none());
        assert!(s.outbox_batch(0, 10).unwrap().is_empty());
        assert_eq!(s.outbox_len().unwrap(), 0);
    }

    #[test]
    fn outbox_keeps_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(Some(dir.path()), "UZ/GNK").unwrap();
            let ms: Vec<_> = (0..5u8)
                .map(|i| msg(Route::Ingress, &format!("m{i}"), &[i]))
                .collect();
            assert_eq!(s.outbox().end(), 0);
            s.commit(&ms[..2], &[], 1).unwrap();
            assert_eq!(s.outbox().end(), 2, "the end follows each commit");
            s.commit(&ms[2..], &["req-1".into()], 2).unwrap();
            assert_eq!(s.durable_commits(), 2);
            let b = s.outbox_batch(0, 3).unwrap();
            assert_eq!(
                b.iter()
                    .map(|(_, m)| m.message_id.as_str())
                    .collect::<Vec<_>>(),
                ["m0", "m1", "m2"]
            );
            assert_eq!(s.outbox().confirmed([b[0].0, b[0].0], []), 2);
            s.remove_confirmed(false).unwrap();
            assert_eq!(s.outbox_len().unwrap(), 4);
            // Confirmed entries go with the next write transaction.
            assert_eq!(s.outbox().confirmed([b[1].0], []), 1);
            s.commit(&[], &["req-2".into()], 3).unwrap();
            assert_eq!(s.outbox().confirmed_len(), 0);
            assert_eq!(s.outbox_batch(0, 1).unwrap()[0].0, b[2].0);
        }
        assert!(dir.path().join("adapter-UZ_GNK.redb").exists());
        let s = Store::open(Some(dir.path()), "UZ/GNK").unwrap();
        // The lazy removal was made durable by closing the database.
        assert_eq!(s.outbox_len().unwrap(), 3);
        // The drain reads from a cursor below the end: the backlog goes out.
        assert_eq!(s.outbox().end(), 5);
        assert!(s.handled("req-1").unwrap());
        assert!(s.handled("req-2").unwrap());
        s.commit(&[msg(Route::Ingress, "m5", b"5")], &[], 3)
            .unwrap();
        let ids: Vec<_> = s
            .outbox_batch(0, 100)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.message_id)
            .collect();
        assert_eq!(ids, ["m2", "m3", "m4", "m5"], "new ones after old");
    }

    #[test]
    fn a_second_open_of_the_same_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _s = Store::open(Some(dir.path()), "A").unwrap();
        assert!(matches!(
            Store::open(Some(dir.path()), "A"),
            Err(StoreError::Open { .. })
        ));
    }

    #[test]
    fn dedup_prunes_old_keys_only() {
        let s = Store::open(None, "A").unwrap();
        s.commit(&[], &["a".into(), "b".into()], 1_000).unwrap();
        s.commit(&[], &["c".into(), String::new()], 2_000).unwrap();
        // Handled again later: it moves in the time index.
        s.commit(&[], &["a".into()], 3_000).unwrap();
        assert_eq!(s.dedup_len().unwrap(), (3, 3));
        assert_eq!(s.prune(2_000, 100).unwrap(), 1, "only b is older");
        assert!(!s.handled("b").unwrap());
        assert!(s.handled("a").unwrap() && s.handled("c").unwrap());
        assert_eq!(s.prune(10_000, 1).unwrap(), 1, "bounded by the limit");
        assert_eq!(s.prune(10_000, 100).unwrap(), 1);
        assert_eq!(s.dedup_len().unwrap(), (0, 0));
        assert_eq!(s.prune(10_000, 100).unwrap(), 0);
    }
}
