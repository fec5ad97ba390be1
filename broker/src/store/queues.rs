//! The store's queues: the outbox (what is waiting to be published, in
//! order) and the deadline timers (ordered by due time), with the signals
//! that wake their tasks.

use super::*;
use mev_store::engine::{ReadOnlyTable, ReadTransaction};
use mev_store::outbox::{Item, Read, Schema};
use mev_transport::{Outgoing, Route};
use std::sync::Arc;

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

impl mev_store::outbox::drain::Host for Store {
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

/// An outbox entry read: (sequence, entry, envelope); `None` when the
/// envelope is missing.
pub type OutboxItem = (u64, OutboxEntry, Option<Arc<[u8]>>);

/// What [`Store::outbox_next`] or [`Store::outbox_recent`] read.
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

impl Store {
    /// What [`Store::outbox_next`] would read from `from` on, taken from
    /// the entries the last commits left in memory, if `from` is among
    /// them (see [`mev_store::outbox::Outbox::take_recent`]; the drain
    /// calls that itself).
    pub fn outbox_recent(
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
        self.outbox.changed().await
    }

    /// Up to `take` outbox entries in order from sequence `from` on, with
    /// their envelopes, among the first `scan` entries there, skipping those
    /// to recipients `skip` names (in back-off). Entries whose envelope is
    /// missing are returned with `None`. Memory forgets the entries it
    /// passed (see [`mev_store::outbox::Outbox::read`]).
    pub fn outbox_next(
        &self,
        from: u64,
        scan: usize,
        take: usize,
        skip: impl FnMut(&str) -> bool,
    ) -> Result<OutboxRead, StoreError> {
        Ok(self.outbox.read(&self.db, from, scan, take, skip)?.into())
    }

    /// The oldest journal entry an outbox entry still publishes from: the
    /// journal cannot be sealed past it (see [`crate::audit::segment`]).
    pub fn outbox_oldest_entry(&self) -> Result<Option<u64>, StoreError> {
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

    /// Removes delivered entries from the outbox and journals the
    /// deliveries, in one transaction that is not fsynced on its own: the
    /// next durable commit (the pipeline's next batch, a checkpoint, the
    /// final checkpoint at stop) carries it to disk. A crash before that
    /// loses the removals and their `Delivered` events together, so the
    /// entries are published again, receivers drop the copies by id, and
    /// the deliveries are journalled then: nothing is confirmed that is not
    /// durable, and the journal never says delivered for what it may send again.
    ///
    /// The drain does not call this for each round: see
    /// [`Store::outbox_confirmed`].
    pub fn outbox_remove(&self, seqs: &[u64], delivered: &[Event]) -> Result<(), StoreError> {
        if seqs.is_empty() && delivered.is_empty() {
            return Ok(());
        }
        self.write_lazy(|t| {
            t.outbox.remove(seqs)?;
            for e in delivered {
                t.record(e)?;
            }
            Ok(())
        })
    }

    /// Notes delivered entries (confirmed by RabbitMQ) and their
    /// `Delivered` events; returns how many entries wait. The next write
    /// transaction, whoever makes it (the pipeline's next batch, the
    /// timers, a checkpoint, [`Store::outbox_remove_confirmed`]), removes
    /// and journals them in one, as [`Store::outbox_remove`] would: at low
    /// load that saves a transaction per round published.
    pub fn outbox_confirmed(&self, seqs: Vec<u64>, delivered: Vec<Event>) -> usize {
        self.outbox.confirmed(seqs, delivered)
    }

    /// How many confirmed entries (or their events) wait for a write
    /// transaction.
    pub fn outbox_confirmed_len(&self) -> usize {
        self.outbox.confirmed_len()
    }

    /// Removes and journals what [`Store::outbox_confirmed`] noted, in a
    /// lazy transaction of its own (if anything waits).
    pub fn outbox_remove_confirmed(&self) -> Result<(), StoreError> {
        if self.outbox_confirmed_len() == 0 {
            return Ok(());
        }
        self.write_lazy(|_| Ok(()))
    }
}

impl Txn<'_> {
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

    /// Puts the envelope of journal entry `entry.entry` in the outbox; it is
    /// published after this transaction commits, and retried until confirmed.
    /// `envelope` is that entry's envelope, the bytes given to
    /// [`Txn::record_with`]: the drain publishes the copy kept in memory
    /// after the commit (see [`Store::outbox_recent`]), the store's when it
    /// has to read.
    pub fn enqueue(&mut self, entry: &OutboxEntry, envelope: &[u8]) -> Result<u64, StoreError> {
        let bytes = serde_json::to_vec(entry)?;
        self.outbox.push(
            &bytes,
            Queued {
                entry: entry.clone(),
                body: Some(Arc::from(envelope)),
            },
        )
    }
}
