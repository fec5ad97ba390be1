//! The durable outbox both the adapter and the broker publish from: one
//! table of entries by sequence, the memory that spares the drain its reads,
//! the queue of confirmed entries that the store's next write transaction
//! removes, and the pipelined drain ([`drain`]).
//!
//! The protocol, whatever the entries are:
//! - **Sequences in commit order.** Only write transactions insert, and
//!   redb runs them one at a time; a [`Writer`] numbers its entries from
//!   past the last one in the table (and past [`Outbox::end`], so sequences
//!   keep rising after the outbox has emptied).
//! - **`end`**: past every committed entry. It moves after the commit and
//!   after the commit's entries are in memory, so a drain whose cursor is at
//!   `end` has nothing to read, and one below it finds the entries in memory
//!   or, committed, in the store.
//! - **Memory** ([`Recent`]): the entries of the last commits with their
//!   bodies (up to [`RECENT`] entries or [`RECENT_BYTES`]), so the drain
//!   takes fresh entries without a read transaction, a decode or a copy of
//!   a body. Only entries no read has passed are kept: an entry a read of
//!   the store (or of memory) looked at may have been published, confirmed
//!   and removed, and must not come back from memory once the drain reads
//!   again from the oldest entry (commit 5d86566, broker; the adapter's
//!   copy had the same flaw).
//! - **Confirmed entries** are noted ([`Outbox::confirmed`]) with whatever
//!   must be written with their removal (the broker's `Delivered` journal
//!   events), and removed by the store's next write transaction
//!   ([`Outbox::write`]): a crash before the next durable commit loses the
//!   removal and re-publishes the entry, which receivers drop by message id;
//!   nothing is removed that RabbitMQ did not confirm (guaranteed delivery:
//!   KZ order §9; Tatarstan §1.3).
//!
//! What differs between the users is a [`Schema`]: the entry's type in
//! memory, how a record is read back (the broker's body lives in a journal
//! entry, the adapter's in the record), and what goes with a removal.

use crate::engine::{ReadTransaction, ReadableTable, StorageError, TableDefinition, TableError};
use crate::wal::{Db, Table, Tx};
use mev_transport::Outgoing;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

pub mod drain;

#[cfg(test)]
mod tests;

/// An outbox table: sequence → record.
pub type Def = TableDefinition<'static, u64, &'static [u8]>;

/// Entries kept in memory for the drain at most, and their bytes.
pub const RECENT: usize = 4096;
pub const RECENT_BYTES: usize = 32 << 20;

/// An outbox entry as the drain holds it.
pub trait Item: Send + Sync + 'static {
    /// Where it goes, as back-off counts it (the recipient): a route that
    /// nacks or is unroutable backs off alone.
    fn route(&self) -> &str;
    /// Bytes it holds (its body), for memory's limit.
    fn size(&self) -> usize;
    /// What to publish; the body is shared, not copied. `None` if the entry
    /// has nothing to publish (it cannot happen; it is then removed, loudly).
    fn message(&self) -> Option<Outgoing>;
}

/// The adapter keeps the message itself.
impl Item for Outgoing {
    fn route(&self) -> &str {
        match &self.route {
            mev_transport::Route::Ingress => "",
            mev_transport::Route::Inbox(name) | mev_transport::Route::Queue(name) => name,
        }
    }
    fn size(&self) -> usize {
        self.body.len()
    }
    fn message(&self) -> Option<Outgoing> {
        Some(self.clone())
    }
}

/// What one user's outbox holds and how it is read back.
pub trait Schema: Send + Sync + 'static {
    /// An entry in memory.
    type Item: Item;
    /// What a confirmed entry's removal writes with it (the broker: a
    /// `Delivered` event; nothing for the adapter).
    type Done: Send + 'static;
    /// The user's store error.
    type Error: From<crate::wal::Error>
        + From<StorageError>
        + From<TableError>
        + std::fmt::Display
        + Send
        + 'static;
    /// What a read of the store opens once to decode its records (the
    /// tables bodies live in).
    type Reader<'t>;
    /// The table.
    const TABLE: Def;

    fn reader<'t>(&self, tx: &'t ReadTransaction) -> Result<Self::Reader<'t>, Self::Error>;
    /// The entry stored as `record` at `seq`, or `None` if `skip` says so
    /// of its route (asked before a body is read from elsewhere).
    fn read(
        &self,
        reader: &Self::Reader<'_>,
        seq: u64,
        record: &[u8],
        skip: &mut impl FnMut(&str) -> bool,
    ) -> Result<Option<Self::Item>, Self::Error>;
    /// What the removal of `item`, confirmed, writes with it.
    fn done(&self, item: &Self::Item) -> Option<Self::Done>;
}

/// What a read (of memory or of the store) gave.
#[derive(Debug)]
pub struct Read<I> {
    /// (sequence, entry), in order.
    pub items: Vec<(u64, I)>,
    /// Where the next read goes on: past every entry looked at, those
    /// skipped included.
    pub next: u64,
}

/// Confirmed entries waiting for a write transaction.
#[derive(Debug)]
pub struct Confirmed<D> {
    pub seqs: Vec<u64>,
    pub done: Vec<D>,
}

impl<D> Default for Confirmed<D> {
    fn default() -> Self {
        Confirmed {
            seqs: Vec::new(),
            done: Vec::new(),
        }
    }
}

/// The entries of the last commits, by sequence: what the drain would read
/// back, kept so that it need not. Commits finish in any order, so a
/// sequence may be missing for a moment; the drain then reads the store,
/// which has it. Only entries no read has passed are kept (see the module).
struct Recent<I> {
    entries: BTreeMap<u64, I>,
    bytes: usize,
    /// Past every entry any read has looked at.
    passed: u64,
}

impl<I: Item> Recent<I> {
    /// Keeps a commit's entries, forgetting the oldest beyond the limits.
    fn keep(&mut self, fresh: Vec<(u64, I)>) {
        for (seq, item) in fresh {
            if seq < self.passed {
                // Read from the store between its commit and now.
                continue;
            }
            self.bytes += item.size();
            if let Some(old) = self.entries.insert(seq, item) {
                self.bytes -= old.size();
            }
        }
        while self.entries.len() > RECENT || self.bytes > RECENT_BYTES {
            if self.pop_first().is_none() {
                break;
            }
        }
    }

    fn pop_first(&mut self) -> Option<(u64, I)> {
        let (seq, item) = self.entries.pop_first()?;
        self.bytes -= item.size();
        Some((seq, item))
    }

    /// A read looked at everything before `next`: forgets it.
    fn pass(&mut self, next: u64) {
        self.passed = self.passed.max(next);
        while self
            .entries
            .first_key_value()
            .is_some_and(|(s, _)| *s < self.passed)
        {
            self.pop_first();
        }
    }
}

/// One store's outbox: its sequence, memory and confirmed entries. The
/// store holds it and writes through [`Outbox::write`].
pub struct Outbox<S: Schema> {
    schema: S,
    /// Past every committed entry.
    end: AtomicU64,
    recent: Mutex<Recent<S::Item>>,
    confirmed: Mutex<Confirmed<S::Done>>,
    /// Woken after a commit that put something in the outbox.
    changed: tokio::sync::Notify,
}

/// Locks, whatever a panic elsewhere left: every critical section here
/// leaves its data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: Schema> Outbox<S> {
    /// The outbox of a store, its table created in `tx` if needed (commit
    /// `tx` before using the outbox).
    pub fn open(schema: S, tx: &Tx<'_>) -> Result<Self, S::Error> {
        let table = tx.open(S::TABLE)?;
        let end = table.last()?.map_or(0, |(k, _)| k.value() + 1);
        Ok(Outbox {
            schema,
            end: AtomicU64::new(end),
            recent: Mutex::new(Recent {
                entries: BTreeMap::new(),
                bytes: 0,
                passed: 0,
            }),
            confirmed: Mutex::new(Confirmed::default()),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn schema(&self) -> &S {
        &self.schema
    }

    /// The sequence past every committed entry: a drain has nothing to read
    /// from a cursor at or past it (entries before it are visible to every
    /// read transaction begun after this call).
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Resolves after a commit that put something in the outbox (or at once
    /// if one happened since the last wait; one waiter: the drain).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Entries in the table.
    pub fn len(&self, db: &Db) -> Result<u64, S::Error> {
        use crate::engine::ReadableTableMetadata;
        let tx = db.begin_read()?;
        Ok(tx.open_table(S::TABLE)?.len()?)
    }

    /// Runs `f` in one write transaction of `db` (durable at commit, or
    /// lazy), after the entries confirmed since the last one are removed:
    /// `f` gets the transaction, the outbox's [`Writer`] (to give back) and
    /// what those removals must write with them (it writes it). On success
    /// what `f` enqueued is kept in memory and [`end`](Self::end) moves past
    /// it; on failure the confirmed entries wait for the next write.
    pub fn write<'d, R>(
        &self,
        db: &'d Db,
        durable: bool,
        f: impl for<'t> FnOnce(
            &'t Tx<'d>,
            Writer<'t, S>,
            &[S::Done],
        ) -> Result<(R, Writer<'t, S>), S::Error>,
    ) -> Result<R, S::Error> {
        let confirmed = std::mem::take(&mut *lock(&self.confirmed));
        let result = self.write_confirmed(db, durable, &confirmed, f);
        if result.is_err() {
            // Back in front of what was confirmed since.
            let mut c = lock(&self.confirmed);
            let mut earlier = confirmed;
            earlier.seqs.append(&mut c.seqs);
            earlier.done.append(&mut c.done);
            *c = earlier;
        }
        result
    }

    fn write_confirmed<'d, R>(
        &self,
        db: &'d Db,
        durable: bool,
        confirmed: &Confirmed<S::Done>,
        f: impl for<'t> FnOnce(
            &'t Tx<'d>,
            Writer<'t, S>,
            &[S::Done],
        ) -> Result<(R, Writer<'t, S>), S::Error>,
    ) -> Result<R, S::Error> {
        let tx = db.begin(durable)?;
        let (r, fresh, next) = {
            let table = tx.open(S::TABLE)?;
            let next = table
                .last()?
                .map_or(0, |(k, _)| k.value() + 1)
                .max(self.end.load(Ordering::Relaxed));
            let mut writer = Writer {
                table,
                next,
                fresh: Vec::new(),
            };
            writer.remove(&confirmed.seqs)?;
            let (r, writer) = f(&tx, writer, &confirmed.done)?;
            (r, writer.fresh, writer.next)
        };
        tx.commit()?;
        let enqueued = !fresh.is_empty();
        if enqueued {
            // Before `end` moves: a drain that sees the new end finds these
            // in memory, or reads them (committed, so visible).
            lock(&self.recent).keep(fresh);
        }
        self.end.fetch_max(next, Ordering::Release);
        if enqueued {
            self.changed.notify_one();
        }
        Ok(r)
    }

    /// Notes entries RabbitMQ confirmed and what their removal writes;
    /// returns how many entries wait. The store's next write transaction,
    /// whoever makes it, removes them (see [`write`](Self::write)).
    pub fn confirmed(
        &self,
        seqs: impl IntoIterator<Item = u64>,
        done: impl IntoIterator<Item = S::Done>,
    ) -> usize {
        let mut c = lock(&self.confirmed);
        c.seqs.extend(seqs);
        c.done.extend(done);
        c.seqs.len()
    }

    /// Confirmed entries (and removals' writes) waiting for a write.
    pub fn confirmed_len(&self) -> usize {
        let c = lock(&self.confirmed);
        c.seqs.len().max(c.done.len())
    }

    /// Up to `take` entries from `from` on, among the first `scan` there,
    /// but those whose route `skip` names, taken from the memory of the
    /// last commits if `from` is there: what [`read`](Self::read) would
    /// give, without a read transaction. `None` if it is not (a restart, a
    /// read again from the oldest entry, more committed than memory keeps, a
    /// commit not yet noted): read the store. Entries taken or skipped leave
    /// memory, and so do those before `from`; only entries from `from` on
    /// without a gap are taken, so the read goes on past them as a read of
    /// the store would.
    pub fn take_recent(
        &self,
        from: u64,
        scan: usize,
        take: usize,
        mut skip: impl FnMut(&str) -> bool,
    ) -> Option<Read<S::Item>> {
        let mut recent = lock(&self.recent);
        recent.pass(from);
        if *recent.entries.first_key_value()?.0 != from {
            return None;
        }
        let mut read = Read {
            items: Vec::new(),
            next: from,
        };
        let mut looked = 0;
        while looked < scan && read.items.len() < take {
            if recent.entries.first_key_value().map(|(s, _)| *s) != Some(read.next) {
                break;
            }
            let (seq, item) = recent.pop_first()?;
            read.next = seq + 1;
            looked += 1;
            if !skip(item.route()) {
                read.items.push((seq, item));
            }
        }
        recent.pass(read.next);
        Some(read)
    }

    /// Up to `take` entries in order from `from` on, among the first `scan`
    /// stored there, but those whose route `skip` names: a read of the
    /// store. Memory forgets every entry the read passed.
    pub fn read(
        &self,
        db: &Db,
        from: u64,
        scan: usize,
        take: usize,
        mut skip: impl FnMut(&str) -> bool,
    ) -> Result<Read<S::Item>, S::Error> {
        let tx = db.begin_read()?;
        let table = tx.open_table(S::TABLE)?;
        let reader = self.schema.reader(&tx)?;
        let mut read = Read {
            items: Vec::new(),
            next: from,
        };
        for entry in table.range(from..)?.take(scan) {
            let (k, v) = entry?;
            let seq = k.value();
            read.next = seq + 1;
            if let Some(item) = self.schema.read(&reader, seq, v.value(), &mut skip)? {
                read.items.push((seq, item));
                if read.items.len() >= take {
                    break;
                }
            }
        }
        // What this read passed may be published now: not again from memory.
        lock(&self.recent).pass(read.next);
        Ok(read)
    }
}

/// The outbox's part of a write transaction: enqueues, removes.
pub struct Writer<'t, S: Schema> {
    table: Table<'t, u64, &'static [u8]>,
    next: u64,
    fresh: Vec<(u64, S::Item)>,
}

impl<S: Schema> Writer<'_, S> {
    /// Puts an entry in the outbox: `record` in the table, `item` (the same
    /// entry, with its body) in memory once the transaction commits.
    /// Returns its sequence.
    pub fn push(&mut self, record: &[u8], item: S::Item) -> Result<u64, S::Error> {
        let seq = self.next;
        self.table.insert(seq, record)?;
        self.next += 1;
        self.fresh.push((seq, item));
        Ok(seq)
    }

    /// Removes entries; returns how many were there.
    pub fn remove(&mut self, seqs: &[u64]) -> Result<usize, S::Error> {
        let mut removed = 0;
        for s in seqs {
            if self.table.remove(*s)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
