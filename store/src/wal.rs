//! A redo log in front of redb: a durable commit for the price of one
//! append and one `fdatasync`.
//!
//! A redb commit with `Durability::Immediate` rewrites the pages of every
//! table it touches, redb's own system trees and the header, and syncs them:
//! about 200 µs of CPU and 45 KB written whatever the transaction carries
//! (BENCHMARKS.md, "What a durable commit costs"). Both of mev's stores commit
//! small transactions at low load (a broker batch of three messages touches
//! nine tables). [`Db`] makes them durable differently:
//!
//! 1. every write goes through a [`Table`] that records each `insert` and
//!    `remove` as it happens: the key's and value's bytes, under the table's
//!    name;
//! 2. at commit, those records are appended to `<database>.wal` as one
//!    record (length, sequence number, CRC-32) and, for a durable commit,
//!    `fdatasync`ed; only then does redb commit the transaction, with
//!    `Durability::None` (visible to readers, not yet synced);
//! 3. every [`CHECKPOINT_COMMITS`] commits (or [`CHECKPOINT_BYTES`] of log),
//!    for a transaction of [`DIRECT_BYTES`] or more (a large batch), and at
//!    [`Db::close`], a commit is made durable by redb itself
//!    and records the last log sequence it covers; the log then starts over
//!    just past its file's header (redb keeps the pages of commits it has
//!    not synced in memory, so a checkpoint writes what 128 commits changed:
//!    a pause of tens of milliseconds in a busy store, BENCHMARKS.md);
//! 4. at open, the records after that sequence are replayed, in order, in
//!    durable transactions of at most [`REPLAY_CHUNK_BYTES`] of records each,
//!    every one recording the last sequence it covers (so a crash during the
//!    replay leaves a state the next open replays on from; see `replay`).
//!
//! The log file starts with a header of [`FILE_HEADER`] bytes: the magic
//! [`MAGIC`], the log's format version [`FORMAT_VERSION`] and the version of
//! the key and value encoding its records hold ([`KEY_ENCODING`]: redb's
//! `as_bytes` of the stores' key types). A log of another version, or one
//! without the header (written before it existed) that still holds records
//! to replay, is refused at open with what to do; it is never read as
//! records of this version (see [`Error::Version`]).
//!
//! The file is reused, not truncated: it grows in steps of [`GROW`] bytes
//! written as zeros, and records overwrite what earlier rounds left. A sync
//! then writes data only, never the file's size or its block map, which on
//! ext4 takes 40 % off an `fdatasync` (0.16 against 0.27 ms for a 3 KB
//! record here, BENCHMARKS.md). What lies past the newest record is older
//! records (their sequences are at most the checkpoint's) or zeros, and the
//! replay stops at the first of either (a record not newer than the one
//! before it). Records at the start not newer than the database's last
//! sequence are skipped, not applied: a checkpoint or an interrupted
//! replay's chunk covers them.
//!
//! Replaying the recorded inserts and removes in order gives the state every
//! commit gave, since those are all that changes a table: the last write of a
//! key wins, whatever earlier records did. The log is read up to the first
//! record that is torn (short, or whose checksum fails) or older than the
//! one before it, which can only be a record whose `fdatasync` never
//! returned, since records are written in order from the start of the file
//! and each sync covers every record before it. A lazy commit
//! (`durable = false`) is appended without a sync, and made durable by the
//! next durable one, as redb's `Durability::None` promises.
//!
//! A write, sync or commit that fails (EIO, a full disk) poisons the log:
//! every later commit fails with [`Error::Poisoned`] until the process
//! reopens the database, whose replay then decides (a record that reached the
//! disk is applied). Nothing heals a poisoned log in place: after a failed
//! `fdatasync` the kernel may have dropped the pages it could not write, so
//! neither the log nor redb's file can be trusted until they are read back.
//! [`Db::failure`] says why, and [`Db::on_failure`] tells the owner at once,
//! so that a service can stop (fail-stop) instead of retrying for ever.
//!
//! Memory: redb caches pages up to the size given to [`Db::open_with_cache`]
//! ([`DEFAULT_CACHE_BYTES`] for [`Db::open`]); redb's own default is 1 GiB,
//! which a flood of large messages fills and a process then keeps.
//!
//! Closing: [`Db::close`] checkpoints and empties the log (a stopped
//! process's files then need no replay). Dropping a [`Db`] does no
//! checkpoint of its own; redb's `Drop` still makes its pending lazy commits
//! durable and records its allocator state (one sync, which redb does not let
//! us skip), and the next open replays the log's records from the last
//! checkpoint on, which is idempotent (the last write of a key wins).
//!
//! Databases in memory have no log: their commits go straight to redb.

use redb::{
    Database, Durability, Key, ReadableDatabase, TableDefinition, TableHandle, Value,
    WriteTransaction,
};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::fs::File;
use std::io::Seek;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

/// Commits between checkpoints (durable redb commits that empty the log).
pub const CHECKPOINT_COMMITS: u32 = 128;
/// Log size that forces a checkpoint, whatever the number of commits: large
/// transactions (a saturated broker's batches) checkpoint sooner, so that no
/// checkpoint has much to sync while it holds the writer.
pub const CHECKPOINT_BYTES: u64 = 8 << 20;

/// A transaction whose records reach this size is made durable by redb
/// itself, as a checkpoint: a large transaction costs redb's durable commit
/// little more than its pages, and checkpointing then keeps the pages that
/// later checkpoints must write small. Measured in the broker at 75 % load,
/// checkpoints every 8 MiB of log paused its writes 76–99 ms each, about once
/// a second; that was the round trip's tail near saturation.
pub const DIRECT_BYTES: usize = 64 << 10;

/// The log file grows by this much at a time, written as zeros, so that the
/// records that later fill it change neither its size nor its block map.
pub const GROW: u64 = 1 << 20;

/// redb's page cache, unless the owner gives one: enough for the working set
/// of a store (the newest pages of the journal, the dedup index, the
/// outbox); redb's default (1 GiB) held a broker at 1.4 GB after a flood.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// A replay commits (durably) after at most this many bytes of records, so
/// that the pages it dirties stay bounded whatever the log holds.
pub const REPLAY_CHUNK_BYTES: usize = 1 << 20;

/// The first bytes of every log file this version writes.
pub const MAGIC: [u8; 8] = *b"mev-wal\n";
/// The layout of the log: header, records (length, sequence, CRC-32,
/// payload of tagged writes). Bump on any change of it.
pub const FORMAT_VERSION: u32 = 1;
/// How the records' keys and values are encoded: the bytes redb's
/// `Key::as_bytes` / `Value::as_bytes` give for the stores' types (redb 4).
/// Bump when an upgrade of redb or of a store's key types changes them: a
/// record of the old encoding replayed by the new one would write wrong keys.
pub const KEY_ENCODING: u32 = 1;
/// The file header: [`MAGIC`], [`FORMAT_VERSION`] and [`KEY_ENCODING`]
/// (u32 little endian each); records follow it.
pub const FILE_HEADER: u64 = 16;

/// Where the database records the last log sequence its state covers.
const APPLIED: TableDefinition<&str, u64> = TableDefinition::new("wal_applied");
/// Record header: payload length (u32), sequence (u64), CRC-32 (u32) of
/// the sequence's bytes and the payload; all little endian.
const HEADER: usize = 16;
const PUT: u8 = 1;
const DEL: u8 = 2;

use failure::is_fatal_redb;
pub use failure::{Error, FailureHook, FailureWatch};

/// A table a log may name: how to apply a recorded write to it. Every table
/// a [`Db`] writes must be in the list given to [`Db::open`].
pub trait Replay: Sync {
    /// The table's name, as recorded.
    fn table_name(&self) -> &str;
    /// Applies one recorded write: an insert of `value`, or a removal.
    fn apply(
        &self,
        tx: &WriteTransaction,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), redb::Error>;
}

impl<K: Key + Sync + 'static, V: Value + Sync + 'static> Replay for TableDefinition<'static, K, V> {
    fn table_name(&self) -> &str {
        self.name()
    }

    fn apply(
        &self,
        tx: &WriteTransaction,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), redb::Error> {
        let mut t = tx.open_table(*self)?;
        let k = K::from_bytes(key);
        match value {
            Some(v) => {
                t.insert(k, V::from_bytes(v))?;
            }
            None => {
                t.remove(k)?;
            }
        }
        Ok(())
    }
}

/// The tables of one database, for replay.
pub type Tables = &'static [&'static dyn Replay];

/// The log file and where it stands.
struct Log {
    path: PathBuf,
    file: File,
    /// Where the next record goes, and how long the file is (zeros or
    /// records of earlier rounds past `end`).
    end: u64,
    size: u64,
    /// The sequence of the last record appended (or covered by a checkpoint).
    lsn: u64,
    /// The sequence of the last record known durable.
    synced: u64,
    /// Records and bytes since the last checkpoint.
    since: u32,
    bytes: u64,
    /// Why the log is poisoned, once it is.
    poisoned: Option<String>,
    /// Told when it is poisoned.
    on_failure: Option<FailureHook>,
    /// Checkpoints since open: how many, their time in all, the longest.
    checkpoints: u64,
    checkpoint_secs: f64,
    checkpoint_max_secs: f64,
}

/// What a store's log has done since the store was opened, for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Records replayed when the store was opened (after a crash; 0 after a
    /// clean stop).
    pub replayed: u64,
    /// Records in the log since the last checkpoint.
    pub pending: u32,
    /// Checkpoints made since open.
    pub checkpoints: u64,
    /// Their time in all, and the longest (seconds): each holds the writer.
    pub checkpoint_secs: f64,
    pub checkpoint_max_secs: f64,
}

impl Log {
    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Poisons the log (the first reason stays) and tells the owner.
    fn poison(&mut self, why: &dyn std::fmt::Display) {
        if self.poisoned.is_some() {
            return;
        }
        let reason = why.to_string();
        tracing::error!(log = %self.path.display(), %reason, "the store failed; the redo log is poisoned");
        if let Some(hook) = &self.on_failure {
            hook(&reason);
        }
        self.poisoned = Some(reason);
    }

    fn poisoned_error(&self) -> Option<Error> {
        self.poisoned
            .as_ref()
            .map(|r| Error::Poisoned(self.path.clone(), r.clone()))
    }

    /// Appends `record`: [`HEADER`] bytes left free for the header, then
    /// the payload.
    fn append(&mut self, record: &mut [u8]) -> Result<(), Error> {
        let lsn = self.lsn + 1;
        let (header, payload) = record.split_at_mut(HEADER);
        let len = u32::try_from(payload.len()).map_err(|_| Error::Corrupt {
            path: self.path.clone(),
            reason: format!("a transaction of {} bytes", payload.len()),
        })?;
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..12].copy_from_slice(&lsn.to_le_bytes());
        header[12..].copy_from_slice(&checksum(lsn, payload).to_le_bytes());
        let end = self.end + record.len() as u64;
        if let Err(e) = self
            .grow(end)
            .and_then(|()| self.file.write_all_at(record, self.end))
        {
            let e = self.io(e);
            self.poison(&e);
            return Err(e);
        }
        self.end = end;
        self.lsn = lsn;
        self.since += 1;
        self.bytes += record.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Error> {
        if self.synced == self.lsn {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            // The kernel may have dropped the pages it failed to write: what
            // reached the disk is for the next open to find out.
            let e = self.io(e);
            self.poison(&e);
            return Err(e);
        }
        self.synced = self.lsn;
        Ok(())
    }

    /// Makes the file at least `end` bytes long, in steps of [`GROW`]
    /// zeros (made durable by the next sync).
    ///
    /// The zeros go one page per write: the page cache sizes its folios by
    /// the write, and a record written later into one 1 MiB folio would make
    /// every sync write the whole MiB (measured on Linux 6.18 and ext4: 1,024
    /// KB per 3 KB record, against 7 KB with page-sized zeros).
    fn grow(&mut self, end: u64) -> std::io::Result<()> {
        const PAGE: u64 = 4096;
        if end <= self.size {
            return Ok(());
        }
        let size = end.div_ceil(GROW) * GROW;
        let zeros = [0u8; PAGE as usize];
        let mut at = self.size;
        while at < size {
            let n = (size - at).min(PAGE - at % PAGE);
            self.file.write_all_at(&zeros[..n as usize], at)?;
            at += n;
        }
        self.size = size;
        Ok(())
    }

    /// Starts the log over from the beginning of its file, once a
    /// checkpoint covered every record in it.
    fn restart(&mut self) {
        self.end = FILE_HEADER;
        self.synced = self.lsn;
        self.since = 0;
        self.bytes = 0;
    }
}

fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A redb database with a redo log (on disk) or without (in memory).
pub struct Db {
    db: Database,
    log: Option<Mutex<Log>>,
    /// Records replayed at open.
    replayed: u64,
}

/// What a commit does besides its own writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Logged, or a checkpoint when the log calls for one.
    Normal,
    /// A checkpoint whatever the log holds.
    Checkpoint,
    /// A checkpoint, then the log file cut back to its header and synced.
    Close,
}

impl Db {
    /// Opens (or creates) the database at `path` and its log beside it
    /// (`<path>.wal`), replaying what the log holds beyond the database's last
    /// checkpoint, with redb's cache at [`DEFAULT_CACHE_BYTES`]. `tables`
    /// must list every table a transaction may write.
    pub fn open(path: &Path, tables: Tables) -> Result<Db, Error> {
        Self::open_with_cache(path, tables, DEFAULT_CACHE_BYTES)
    }

    /// [`Db::open`] with redb's page cache at `cache_bytes`.
    pub fn open_with_cache(path: &Path, tables: Tables, cache_bytes: usize) -> Result<Db, Error> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push(".wal");
        let wal = PathBuf::from(wal);
        let io = |source| Error::Io {
            path: wal.clone(),
            source,
        };
        let existed = wal.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&wal)
            .map_err(io)?;
        if !existed {
            // The log's directory entry must be durable before any record is.
            if let Some(dir) = wal.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        let applied = {
            let tx = db.begin_read()?;
            match tx.open_table(APPLIED) {
                Ok(t) => t.get("lsn")?.map_or(0, |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(e.into()),
            }
        };
        let size = file.metadata().map_err(io)?.len();
        let records = check_header(&wal, &file, size, applied)?;
        let mut reader = std::io::BufReader::new(&file);
        if records {
            reader
                .seek(std::io::SeekFrom::Start(FILE_HEADER))
                .map_err(io)?;
        }
        let lsn = replay(
            &db,
            &wal,
            reader,
            if records { size - FILE_HEADER } else { 0 },
            applied,
            tables,
        )?;
        // Emptied, not reused: past a record torn in a crash there may be
        // whole records of the same sequences that were never synced, which
        // the new records of those sequences must not be followed by. Then
        // this version's header (a log of an older version that held nothing
        // to replay is upgraded here).
        file.set_len(0).map_err(io)?;
        file.write_all_at(&file_header(), 0).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Db {
            db,
            log: Some(Mutex::new(Log {
                path: wal,
                file,
                end: FILE_HEADER,
                size: FILE_HEADER,
                lsn,
                synced: lsn,
                since: 0,
                bytes: 0,
                poisoned: None,
                on_failure: None,
                checkpoints: 0,
                checkpoint_secs: 0.0,
                checkpoint_max_secs: 0.0,
            })),
            replayed: lsn - applied,
        })
    }

    /// A database in memory, without a log.
    pub fn in_memory() -> Result<Db, Error> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Ok(Db {
            db,
            log: None,
            replayed: 0,
        })
    }

    fn log(&self) -> Option<std::sync::MutexGuard<'_, Log>> {
        self.log
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A write transaction, durable at commit (the log synced) or lazy (made
    /// durable by the next durable commit; lost in a crash before it).
    pub fn begin(&self, durable: bool) -> Result<Tx<'_>, Error> {
        let tx = match self.db.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                let e = redb::Error::from(e);
                if is_fatal_redb(&e) {
                    if let Some(mut log) = self.log() {
                        log.poison(&e);
                    }
                }
                return Err(e.into());
            }
        };
        Ok(Tx {
            tx,
            // Databases in memory record nothing; a log's record starts
            // with room for its header.
            ops: self
                .log
                .as_ref()
                .map(|_| Rc::new(RefCell::new(vec![0; HEADER]))),
            durable,
            db: self,
        })
    }

    /// A read transaction: sees every commit, durable or lazy.
    pub fn begin_read(&self) -> Result<redb::ReadTransaction, Error> {
        Ok(self.db.begin_read()?)
    }

    /// Makes the database durable on its own and restarts the log.
    pub fn checkpoint(&self) -> Result<(), Error> {
        self.begin(true)?.commit_with(Mode::Checkpoint)
    }

    /// Closes the store cleanly: a checkpoint, then the log file cut back to
    /// its header and synced, so the next open replays nothing (and a copy
    /// of the files needs no log). Call it when the owner stops, after its
    /// last write; a later write is logged as usual. Fails, leaving the log
    /// for the next open's replay, if the log is poisoned.
    pub fn close(&self) -> Result<(), Error> {
        self.begin(true)?.commit_with(Mode::Close)
    }

    /// Poisons the log because the owner saw the database fail outside a
    /// commit (an I/O error of redb's inside a transaction): every later
    /// commit fails, as after a failed commit. No-op for a store in memory.
    pub fn fail(&self, reason: &str) {
        if let Some(mut log) = self.log() {
            log.poison(&reason);
        }
    }

    /// Why the store failed, if its log is poisoned (see [`Error::Poisoned`]).
    pub fn failure(&self) -> Option<String> {
        self.log().and_then(|l| l.poisoned.clone())
    }

    /// Calls `hook` once with the reason when the log is poisoned (at once
    /// if it already is). Replaces an earlier hook. A store in memory has no
    /// log and never calls it. The hook runs under the log's lock: it must
    /// only signal (set a flag, send on a channel), not use the database.
    pub fn on_failure(&self, hook: FailureHook) {
        if let Some(mut log) = self.log() {
            if let Some(reason) = &log.poisoned {
                hook(reason);
            }
            log.on_failure = Some(hook);
        }
    }

    /// Records in the log since the last checkpoint (tests, benches).
    pub fn logged(&self) -> u32 {
        self.stats().pending
    }

    /// What the log has done since open (all zero for a store in memory).
    pub fn stats(&self) -> Stats {
        let Some(l) = self.log() else {
            return Stats::default();
        };
        Stats {
            replayed: self.replayed,
            pending: l.since,
            checkpoints: l.checkpoints,
            checkpoint_secs: l.checkpoint_secs,
            checkpoint_max_secs: l.checkpoint_max_secs,
        }
    }
}

// No `Drop` for `Db`: dropping it does no checkpoint (that is `close`, which
// can report its failure). redb's own `Drop` of the database still makes its
// pending lazy commits durable and records its allocator state: one sync
// redb does not let us skip. The log then still holds the records since the
// last checkpoint, and the next open replays them onto that state, which is
// idempotent.

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A write transaction whose table writes are recorded for the log.
pub struct Tx<'d> {
    tx: WriteTransaction,
    ops: Option<Rc<RefCell<Vec<u8>>>>,
    durable: bool,
    db: &'d Db,
}

impl Tx<'_> {
    /// Opens `def` for reading and recorded writing (creating it if needed).
    pub fn open<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<Table<'_, K, V>, redb::TableError> {
        let name = def.name();
        debug_assert!(name.len() < 256, "table names fit a byte");
        Ok(Table {
            inner: self.tx.open_table(def)?,
            name: name.to_string(),
            ops: self.ops.clone(),
        })
    }

    /// Commits: the record logged (and synced, if durable), then redb's
    /// commit; or, at a checkpoint, redb's durable commit alone.
    pub fn commit(self) -> Result<(), Error> {
        self.commit_with(Mode::Normal)
    }

    fn commit_with(self, mode: Mode) -> Result<(), Error> {
        let Tx {
            mut tx,
            ops,
            durable,
            db,
        } = self;
        let mut ops = ops.map(|o| std::mem::take(&mut *o.borrow_mut()));
        let Some(log) = &db.log else {
            tx.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })?;
            tx.commit()?;
            return Ok(());
        };
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = log.poisoned_error() {
            return Err(e);
        }
        let large = ops
            .as_ref()
            .is_some_and(|r| r.len() >= HEADER + DIRECT_BYTES);
        if mode != Mode::Normal
            || large
            || log.since >= CHECKPOINT_COMMITS
            || log.bytes >= CHECKPOINT_BYTES
        {
            // redb's own durable commit covers this transaction and every
            // lazy one before it: the log is not needed for any of them.
            let started = std::time::Instant::now();
            tx.open_table(APPLIED)?.insert("lsn", log.lsn)?;
            tx.set_durability(Durability::Immediate)?;
            if let Err(e) = tx.commit() {
                let e = Error::from(e);
                log.poison(&e);
                return Err(e);
            }
            log.restart();
            if mode == Mode::Close {
                // Under the log's lock, so no record can come between the
                // checkpoint and the cut.
                let cut = log
                    .file
                    .set_len(FILE_HEADER)
                    .and_then(|()| log.file.sync_data());
                if let Err(e) = cut {
                    // The checkpoint covers every record: a failed cut
                    // leaves records the next open skips.
                    return Err(log.io(e));
                }
                log.size = FILE_HEADER;
            }
            let took = started.elapsed().as_secs_f64();
            log.checkpoints += 1;
            log.checkpoint_secs += took;
            log.checkpoint_max_secs = log.checkpoint_max_secs.max(took);
            return Ok(());
        }
        if let Some(record) = ops.as_mut().filter(|r| r.len() > HEADER) {
            log.append(record)?;
        }
        if durable {
            log.sync()?;
        }
        tx.set_durability(Durability::None)?;
        if let Err(e) = tx.commit() {
            let e = Error::from(e);
            log.poison(&e);
            return Err(e);
        }
        Ok(())
    }
}

/// A table opened in a [`Tx`]: reads through `Deref`, writes recorded.
pub struct Table<'t, K: Key + 'static, V: Value + 'static> {
    inner: redb::Table<'t, K, V>,
    name: String,
    ops: Option<Rc<RefCell<Vec<u8>>>>,
}

impl<K: Key + 'static, V: Value + 'static> Table<'_, K, V> {
    fn record(&self, op: u8, key: &[u8], value: Option<&[u8]>) {
        let Some(ops) = &self.ops else {
            return;
        };
        let mut ops = ops.borrow_mut();
        ops.push(op);
        ops.push(self.name.len() as u8);
        ops.extend_from_slice(self.name.as_bytes());
        put(&mut ops, key);
        if let Some(v) = value {
            put(&mut ops, v);
        }
    }

    /// Inserts (or replaces) `key`'s value; returns the old one.
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<redb::AccessGuard<'_, V>>, redb::StorageError> {
        self.record(
            PUT,
            K::as_bytes(key.borrow()).as_ref(),
            Some(V::as_bytes(value.borrow()).as_ref()),
        );
        self.inner.insert(key, value)
    }

    /// Removes `key`; returns its value if it was there.
    pub fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<redb::AccessGuard<'_, V>>, redb::StorageError> {
        self.record(DEL, K::as_bytes(key.borrow()).as_ref(), None);
        self.inner.remove(key)
    }
}

impl<'t, K: Key + 'static, V: Value + 'static> std::ops::Deref for Table<'t, K, V> {
    type Target = redb::Table<'t, K, V>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

mod failure;
mod header;
mod replay;

use header::{check_header, file_header};
use replay::replay;

#[cfg(test)]
mod tests;
