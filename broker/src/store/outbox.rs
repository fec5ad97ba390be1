//! The broker's use of the shared durable outbox ([`mev_store::outbox`]):
//! its entries (JSON [`OutboxEntry`]s naming the journal entry that holds
//! the envelope), enqueueing in a write transaction, and what the drain and
//! the operators read.

use super::journal::JOURNAL;
use super::redb::Redb;
use super::{Event, EventKind, StoreError};
use mev_store::engine::{ReadOnlyTable, ReadTransaction, ReadableTableMetadata, TableDefinition};
use mev_store::outbox::{Item, Read, Schema};
use mev_transport::{Outgoing, Route};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;

/// sequence → JSON [`OutboxEntry`]: what is still to be published. The body
/// is the envelope in the journal entry the outbox entry names.
pub(super) const OUTBOX: mev_store::outbox::Def = TableDefinition::new("outbox");
/// message id → the signed envelope: where stores written before the journal
/// became the one copy of every envelope kept them; read, never written now.
pub(super) const ENVELOPES: TableDefinition<&str, &[u8]> = TableDefinition::new("envelopes");

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

/// An outbox entry as the drain holds it: the entry and its envelope
/// (`None` if the envelope is missing, which cannot happen: it is written in
/// the entry's transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub entry: OutboxEntry,
    pub body: Option<Arc<[u8]>>,
}

impl Item for Queued {
    fn route(&self) -> &str {
        &self.entry.to
    }
    fn size(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.len())
    }
    fn message(&self) -> Option<Outgoing> {
        Some(Outgoing {
            route: Route::Inbox(self.entry.to.clone()),
            body: self.body.clone()?,
            message_id: self.entry.message_id.clone(),
        })
    }
}

/// The broker's outbox entries for [`mev_store::outbox`]: a record is a
/// JSON [`OutboxEntry`] naming the journal entry that holds its envelope
/// (the envelopes table in older stores); a delivered forward's removal
/// journals a `Delivered` event in the same transaction.
pub struct Entries;

impl Schema for Entries {
    type Item = Queued;
    type Done = Event;
    type Error = StoreError;
    type Reader<'t> = (
        ReadOnlyTable<u64, &'static [u8]>,
        ReadOnlyTable<&'static str, &'static [u8]>,
    );
    const TABLE: mev_store::outbox::Def = OUTBOX;

    fn reader(&self, tx: &ReadTransaction) -> Result<Self::Reader<'_>, StoreError> {
        Ok((tx.open_table(JOURNAL)?, tx.open_table(ENVELOPES)?))
    }

    fn read(
        &self,
        (journal, envelopes): &Self::Reader<'_>,
        _seq: u64,
        record: &[u8],
        skip: &mut impl FnMut(&str) -> bool,
    ) -> Result<Option<Queued>, StoreError> {
        let entry: OutboxEntry = serde_json::from_slice(record)?;
        if skip(&entry.to) {
            return Ok(None);
        }
        let body = match entry.entry {
            Some(seq) => journal
                .get(seq)?
                .and_then(|b| crate::journal::entry::envelope_of(b.value()).map(Arc::from)),
            None => envelopes
                .get(entry.message_id.as_str())?
                .map(|b| Arc::from(b.value())),
        };
        Ok(Some(Queued { entry, body }))
    }

    fn done(&self, q: &Queued) -> Option<Event> {
        (q.entry.purpose == Purpose::Forward).then(|| Event {
            message_id: q.entry.message_id.clone(),
            recipient: q.entry.to.clone(),
            ..Event::new(chrono::Utc::now().timestamp_millis(), EventKind::Delivered)
        })
    }
}

/// An outbox entry read: (sequence, entry, envelope); `None` when the
/// envelope is missing.
pub type OutboxItem = (u64, OutboxEntry, Option<Arc<[u8]>>);

/// What [`OutboxState::outbox_next`] or [`OutboxState::outbox_recent`] read.
#[derive(Debug)]
pub struct OutboxRead {
    /// In order.
    pub items: Vec<OutboxItem>,
    /// Where the next read goes on: past every entry looked at, those
    /// skipped included.
    pub next: u64,
}

impl From<Read<Queued>> for OutboxRead {
    fn from(read: Read<Queued>) -> Self {
        OutboxRead {
            items: read
                .items
                .into_iter()
                .map(|(seq, q)| (seq, q.entry, q.body))
                .collect(),
            next: read.next,
        }
    }
}

/// The outbox, in a write transaction.
pub trait OutboxQueue {
    /// Puts the envelope of journal entry `entry.entry` in the outbox; it is
    /// published after this transaction commits, and retried until
    /// confirmed. `envelope` is that entry's envelope, the bytes given to
    /// [`JournalAppend::append_with`](super::JournalAppend::append_with):
    /// the drain publishes the copy kept in memory after the commit (see
    /// [`OutboxState::outbox_recent`]), the store's when it has to read.
    /// Returns the entry's sequence: sequences rise in commit order.
    fn enqueue(&mut self, entry: &OutboxEntry, envelope: &[u8]) -> Result<u64, StoreError>;
}

/// The outbox, outside a batch: what the drain reads and confirms, and the
/// operators' sizes.
pub trait OutboxState {
    /// The outbox sequence past every committed entry: the drain has nothing
    /// to read from a cursor at or past it (entries before it are visible
    /// to every read transaction begun after this call).
    fn outbox_end(&self) -> u64;

    /// Messages in the outbox, not yet confirmed by the message broker; O(1).
    fn outbox_depth(&self) -> Result<u64, StoreError>;

    /// Resolves after a commit that put something in the outbox (or at
    /// once if one happened since the last wait).
    fn outbox_changed(&self) -> impl Future<Output = ()> + Send + '_;

    /// Up to `take` outbox entries in order from sequence `from` on, with
    /// their envelopes, among the first `scan` entries there, skipping those
    /// to recipients `skip` names (in back-off). Entries whose envelope is
    /// missing are returned with `None`. Memory forgets the entries it
    /// passed (see [`mev_store::outbox::Outbox::read`]).
    fn outbox_next(
        &self,
        from: u64,
        scan: usize,
        take: usize,
        skip: impl FnMut(&str) -> bool,
    ) -> Result<OutboxRead, StoreError>;

    /// What [`OutboxState::outbox_next`] would read from `from` on, taken
    /// from the entries the last commits left in memory, if `from` is among
    /// them (see [`mev_store::outbox::Outbox::take_recent`]; the drain
    /// calls that itself).
    fn outbox_recent(
        &self,
        from: u64,
        scan: usize,
        take: usize,
        skip: impl FnMut(&str) -> bool,
    ) -> Option<OutboxRead>;

    /// The oldest journal entry an outbox entry still publishes from: the
    /// journal cannot be sealed past it (see [`crate::audit::segment`]).
    fn outbox_oldest_entry(&self) -> Result<Option<u64>, StoreError>;

    /// Removes delivered entries from the outbox and journals the
    /// deliveries, in one transaction that is not fsynced on its own: the
    /// next durable commit (the pipeline's next batch, a checkpoint, the
    /// final checkpoint at stop) carries it to disk. A crash before that
    /// loses the removals and their `Delivered` events together, so the
    /// entries are published again, receivers drop the copies by id, and
    /// the deliveries are journalled then: nothing is confirmed that is not
    /// durable, and the journal never says delivered for what it may send
    /// again.
    ///
    /// The drain does not call this for each round: see
    /// [`OutboxState::outbox_confirmed`].
    fn outbox_remove(&self, seqs: &[u64], delivered: &[Event]) -> Result<(), StoreError>;

    /// Notes delivered entries (confirmed by RabbitMQ) and their
    /// `Delivered` events; returns how many entries wait. The next write
    /// transaction, whoever makes it (the pipeline's next batch, the
    /// timers, a checkpoint, [`OutboxState::outbox_remove_confirmed`]),
    /// removes and journals them in one, as [`OutboxState::outbox_remove`]
    /// would: at low load that saves a transaction per round published.
    fn outbox_confirmed(&self, seqs: Vec<u64>, delivered: Vec<Event>) -> usize;

    /// How many confirmed entries (or their events) wait for a write
    /// transaction.
    fn outbox_confirmed_len(&self) -> usize;

    /// Removes and journals what [`OutboxState::outbox_confirmed`] noted,
    /// in a lazy transaction of its own (if anything waits).
    fn outbox_remove_confirmed(&self) -> Result<(), StoreError>;
}

/// The outbox's part of a redb write transaction: what it enqueues is kept
/// in memory, with the envelopes, once it commits.
pub struct OutboxTables<'a> {
    pub(super) writer: mev_store::outbox::Writer<'a, Entries>,
}

impl OutboxQueue for OutboxTables<'_> {
    fn enqueue(&mut self, entry: &OutboxEntry, envelope: &[u8]) -> Result<u64, StoreError> {
        let bytes = serde_json::to_vec(entry)?;
        self.writer.push(
            &bytes,
            Queued {
                entry: entry.clone(),
                body: Some(Arc::from(envelope)),
            },
        )
    }
}

impl OutboxState for Redb {
    fn outbox_end(&self) -> u64 {
        self.outbox.end()
    }

    fn outbox_depth(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(OUTBOX)?.len()?)
    }

    fn outbox_changed(&self) -> impl Future<Output = ()> + Send + '_ {
        self.outbox.changed()
    }

    fn outbox_next(
        &self,
        from: u64,
        scan: usize,
        take: usize,
        skip: impl FnMut(&str) -> bool,
    ) -> Result<OutboxRead, StoreError> {
        Ok(self.outbox.read(&self.db, from, scan, take, skip)?.into())
    }

    fn outbox_recent(
        &self,
        from: u64,
        scan: usize,
        take: usize,
        skip: impl FnMut(&str) -> bool,
    ) -> Option<OutboxRead> {
        self.outbox
            .take_recent(from, scan, take, skip)
            .map(OutboxRead::from)
    }

    fn outbox_oldest_entry(&self) -> Result<Option<u64>, StoreError> {
        use mev_store::engine::ReadableTable;
        let tx = self.db.begin_read()?;
        let outbox = tx.open_table(OUTBOX)?;
        let mut oldest: Option<u64> = None;
        for item in outbox.iter()? {
            let (_, v) = item?;
            let entry: OutboxEntry = serde_json::from_slice(v.value())?;
            if let Some(seq) = entry.entry {
                oldest = Some(oldest.map_or(seq, |o| o.min(seq)));
            }
        }
        Ok(oldest)
    }

    fn outbox_remove(&self, seqs: &[u64], delivered: &[Event]) -> Result<(), StoreError> {
        if seqs.is_empty() && delivered.is_empty() {
            return Ok(());
        }
        self.write_with(false, |t| {
            t.outbox.writer.remove(seqs)?;
            for e in delivered {
                super::JournalAppend::append(&mut t.journal, e)?;
            }
            Ok(())
        })
    }

    fn outbox_confirmed(&self, seqs: Vec<u64>, delivered: Vec<Event>) -> usize {
        self.outbox.confirmed(seqs, delivered)
    }

    fn outbox_confirmed_len(&self) -> usize {
        self.outbox.confirmed_len()
    }

    fn outbox_remove_confirmed(&self) -> Result<(), StoreError> {
        if self.outbox_confirmed_len() == 0 {
            return Ok(());
        }
        self.write_with(false, |_| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{event, forward};
    use super::ENVELOPES;
    use crate::store::prelude::*;
    use crate::store::{Event, EventKind, OutboxEntry, OutboxRead, Purpose, Store, StoreError};

    #[test]
    fn outbox_survives_reopen_keeps_order_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .write(|t| {
                    for (i, to) in ["A", "B", "A", "C"].iter().enumerate() {
                        let id = format!("m{i}");
                        forward(t, to, &id, 1)?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.outbox_depth().unwrap(), 4);
        // The drain reads nothing from a cursor at the end: after a restart the
        // end is past what the outbox still holds, so its backlog is read.
        assert_eq!(store.outbox_end(), 4);
        let all = store.outbox_next(0, 100, 100, |_| false).unwrap().items;
        let ids: Vec<_> = all.iter().map(|(_, e, _)| e.message_id.as_str()).collect();
        assert_eq!(ids, ["m0", "m1", "m2", "m3"]);
        assert_eq!(all[2].2.as_deref(), Some(&b"m2"[..]));
        let not_a = store.outbox_next(0, 100, 1, |to| to == "A").unwrap();
        assert_eq!(not_a.next, 2, "past the skipped entry and the one taken");
        let not_a = not_a.items;
        assert_eq!(not_a[0].1.message_id, "m1");
        store.outbox_remove(&[all[0].0, all[3].0], &[]).unwrap();
        let left = store.outbox_next(0, 100, 100, |_| false).unwrap().items;
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].1.message_id, "m1");
        // New entries go after what is left, never reusing a live sequence.
        store
            .write(|t| forward(t, "D", "m9", 1).map(|_| ()))
            .unwrap();
        let seqs: Vec<u64> = store
            .outbox_next(0, 100, 100, |_| false)
            .unwrap()
            .items
            .iter()
            .map(|(s, _, _)| *s)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    #[test]
    fn outbox_sequences_keep_rising_after_the_outbox_empties() {
        outbox_sequences_keep_rising_after_the_outbox_empties_on(&Store::in_memory().unwrap());
    }

    /// Engine-independent: every engine of [`State`] must pass it.
    fn outbox_sequences_keep_rising_after_the_outbox_empties_on<S: State>(store: &S) {
        // The drain reads on from a cursor past what it took: a sequence
        // handed out again below it would never be published.
        let first = store.write(|t| forward(t, "A", "a", 1)).unwrap();
        store.outbox_remove(&[first], &[]).unwrap();
        assert_eq!(store.outbox_depth().unwrap(), 0);
        let second = store.write(|t| forward(t, "B", "b", 1)).unwrap();
        assert!(second > first, "{second} after {first}");
        assert_eq!(
            store.outbox_end(),
            second + 1,
            "the end follows each commit"
        );
        let read = store.outbox_next(first + 1, 10, 10, |_| false).unwrap();
        assert_eq!(read.items.len(), 1);
        assert_eq!(read.items[0].1.message_id, "b");
        assert_eq!(read.items[0].2.as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn outbox_entries_of_older_stores_publish_from_the_envelopes_table() {
        // Stores written before the journal held the one copy kept the
        // envelope under its message id, and their entries name no journal entry.
        let store = Store::in_memory().unwrap();
        let tx = store.db.begin(true).unwrap();
        tx.open(ENVELOPES)
            .unwrap()
            .insert("old", b"body".as_slice())
            .unwrap();
        tx.commit().unwrap();
        store
            .write(|t| {
                t.dedup().accept("old", &[1; 32], 1)?;
                t.outbox().enqueue(
                    &OutboxEntry {
                        to: "A".into(),
                        message_id: "old".into(),
                        purpose: Purpose::Forward,
                        entry: None,
                    },
                    b"body",
                )
            })
            .unwrap();
        let read = store.outbox_next(0, 10, 10, |_| false).unwrap();
        assert_eq!(read.items[0].2.as_deref(), Some(&b"body"[..]));
        assert_eq!(store.envelope("old").unwrap().unwrap(), b"body");
        assert_eq!(store.outbox_oldest_entry().unwrap(), None);
    }

    #[test]
    fn confirmed_entries_go_with_the_next_write_or_stay_if_it_fails() {
        confirmed_entries_go_with_the_next_write_or_stay_if_it_fails_on(
            &Store::in_memory().unwrap(),
        );
    }

    /// Engine-independent: every engine of [`State`] must pass it.
    fn confirmed_entries_go_with_the_next_write_or_stay_if_it_fails_on<S: State>(store: &S) {
        store
            .write(|t| {
                for i in 0..3 {
                    forward(t, "A", &format!("m{i}"), i)?;
                }
                Ok(())
            })
            .unwrap();
        let read = store.outbox_next(0, 3, 10, |_| false).unwrap();
        let seqs: Vec<u64> = read.items.iter().map(|i| i.0).collect();
        let delivered = |i: usize| Event {
            message_id: read.items[i].1.message_id.clone(),
            ..event(EventKind::Delivered)
        };
        assert_eq!(store.outbox_confirmed(vec![seqs[0]], vec![delivered(0)]), 1);
        assert_eq!(store.outbox_depth().unwrap(), 3, "noted, not yet removed");
        // A write that fails takes nothing with it.
        let failed =
            store.write(|_| -> Result<(), StoreError> { Err(StoreError::Journal("no".into())) });
        assert!(failed.is_err());
        assert_eq!(store.outbox_confirmed(vec![seqs[1]], vec![delivered(1)]), 2);
        // The next write removes both and journals both deliveries, in order,
        // before its own entries.
        store
            .write(|t| forward(t, "B", "m3", 3).map(|_| ()))
            .unwrap();
        assert_eq!(store.outbox_confirmed_len(), 0);
        assert_eq!(store.outbox_depth().unwrap(), 2);
        let kinds: Vec<(EventKind, String)> = store
            .events()
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.message_id))
            .collect();
        let n = kinds.len();
        assert_eq!(
            kinds[n - 3..n - 1],
            [
                (EventKind::Delivered, "m0".to_string()),
                (EventKind::Delivered, "m1".to_string())
            ]
        );
        // Alone: a transaction of their own.
        store.outbox_confirmed(vec![seqs[2]], vec![delivered(2)]);
        store.outbox_remove_confirmed().unwrap();
        assert_eq!(store.outbox_depth().unwrap(), 1);
        assert_eq!(store.events().unwrap().len(), n + 1);
    }

    /// The drain takes what the last commits put in the outbox from memory,
    /// the same entries and envelopes a read of the store gives, in order; what
    /// it skipped stays in the store; a cursor memory does not hold (a read
    /// from the oldest entry, more than memory keeps) reads the store; and
    /// nothing a read passed comes back from memory, so what was published
    /// and removed is not published again after a read from the oldest entry.
    #[test]
    fn fresh_outbox_entries_are_taken_from_memory_as_the_store_would_give_them() {
        let ids = |r: &OutboxRead| -> Vec<String> {
            r.items
                .iter()
                .map(|(_, e, _)| e.message_id.clone())
                .collect()
        };
        let store = Store::in_memory().unwrap();
        store
            .write(|t| {
                for (i, to) in ["A", "B", "A", "C"].iter().enumerate() {
                    forward(t, to, &format!("m{i}"), 1)?;
                }
                Ok(())
            })
            .unwrap();
        // A transaction that fails leaves nothing behind, in memory either.
        let failed: Result<(), _> = store.write(|t| {
            forward(t, "A", "lost", 1)?;
            Err(StoreError::Journal("refused".into()))
        });
        assert!(failed.is_err());

        // Skipping A: m0 skipped, m1 taken, and the read stops after `take`.
        let first = store.outbox_recent(0, 100, 1, |to| to == "A").unwrap();
        assert_eq!(ids(&first), ["m1"]);
        assert_eq!(first.next, 2);
        let rest = store.outbox_recent(2, 100, 100, |_| false).unwrap();
        assert_eq!(ids(&rest), ["m2", "m3"]);
        assert_eq!(rest.next, 4);
        // What the store gives for the same entries.
        let from_store = store.outbox_next(0, 100, 100, |_| false).unwrap();
        assert_eq!(ids(&from_store), ["m0", "m1", "m2", "m3"]);
        for (got, want) in first
            .items
            .iter()
            .chain(&rest.items)
            .zip(&from_store.items[1..])
        {
            assert_eq!((got.0, &got.1, &got.2), (want.0, &want.1, &want.2));
        }
        // Taken means gone from memory, not from the store: the skipped m0 is
        // read again from the oldest entry.
        assert!(store.outbox_recent(0, 100, 100, |_| false).is_none());
        assert!(store.outbox_recent(4, 100, 100, |_| false).is_none());
        assert_eq!(store.outbox_depth().unwrap(), 4);

        // More than memory keeps: the oldest are read from the store, the
        // newest come from memory, and the two meet without a gap.
        store
            .write(|t| {
                for i in 0..mev_store::outbox::RECENT + 10 {
                    forward(t, "B", &format!("n{i}"), 1)?;
                }
                Ok(())
            })
            .unwrap();
        assert!(store.outbox_recent(4, 100, 100, |_| false).is_none());
        let read = store.outbox_next(4, 10, 10, |_| false).unwrap();
        assert_eq!(read.next, 14);
        let from_memory = store.outbox_recent(read.next, 100, 100, |_| false).unwrap();
        assert_eq!(from_memory.items[0].1.message_id, "n10");
        assert_eq!(from_memory.next, 114);

        // A read of the store passes entries memory still holds (a commit that
        // left a gap, a read from the oldest entry): the drain publishes them
        // from that read, and after starting again from the oldest entry (they
        // may have been confirmed and removed meanwhile) gets them from the
        // store, not from memory.
        let read = store.outbox_next(114, 10, 10, |_| false).unwrap();
        assert_eq!(read.next, 124);
        let removed: Vec<u64> = read.items.iter().map(|(s, _, _)| *s).collect();
        store.outbox_remove(&removed, &[]).unwrap();
        assert!(store.outbox_recent(114, 100, 100, |_| false).is_none());
        assert!(store.outbox_recent(123, 100, 100, |_| false).is_none());
        let again = store.outbox_next(114, 1, 1, |_| false).unwrap();
        assert_eq!(
            again.items[0].0, 124,
            "the removed entries are not read again"
        );
        let rest = store
            .outbox_recent(125, usize::MAX, usize::MAX, |_| false)
            .unwrap();
        assert_eq!(rest.items[0].0, 125);
        assert_eq!(rest.next, store.outbox_end());
    }
}
