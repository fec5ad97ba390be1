//! The store's queues: the outbox (what is waiting to be published, in
//! order) and the deadline timers (ordered by due time), with the signals
//! that wake their tasks.

use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Confirmed outbox entries waiting for a write transaction.
#[derive(Default)]
pub(super) struct Confirmed {
    pub(super) seqs: Vec<u64>,
    pub(super) delivered: Vec<Event>,
}

impl Confirmed {
    /// Back in front of what was confirmed since it was taken.
    pub(super) fn put_back(&mut self, mut earlier: Confirmed) {
        earlier.seqs.append(&mut self.seqs);
        earlier.delivered.append(&mut self.delivered);
        *self = earlier;
    }
}

/// An outbox entry a transaction made: (sequence, entry, envelope).
pub(super) type Fresh = (u64, OutboxEntry, Arc<[u8]>);

/// Outbox entries kept in memory for the drain at most, and their bytes.
pub(super) const RECENT: usize = 4096;
const RECENT_BYTES: usize = 32 << 20;

/// The outbox entries of the last commits, with their envelopes, by
/// sequence: what the drain would read back, kept so that it need not.
/// Commits finish in any order, so a sequence may be missing for a moment;
/// the drain then reads from the store, which has it.
///
/// Only entries no read has passed yet are kept: an entry that was read
/// (from here or from the store) may have been published and removed, and
/// must not come back from here after the drain starts again from the
/// oldest entry.
#[derive(Default)]
pub(super) struct Recent {
    entries: BTreeMap<u64, (OutboxEntry, Arc<[u8]>)>,
    bytes: usize,
    /// Past every entry any read has looked at.
    passed: u64,
}

impl Recent {
    /// Keeps a commit's entries, forgetting the oldest beyond the limits.
    pub(super) fn keep(&mut self, fresh: Vec<Fresh>) {
        for (seq, entry, body) in fresh {
            if seq < self.passed {
                // Read from the store between its commit and now.
                continue;
            }
            self.bytes += body.len();
            if let Some((_, old)) = self.entries.insert(seq, (entry, body)) {
                self.bytes -= old.len();
            }
        }
        while self.entries.len() > RECENT || self.bytes > RECENT_BYTES {
            match self.entries.pop_first() {
                Some((_, (_, body))) => self.bytes -= body.len(),
                None => break,
            }
        }
    }

    fn pop_first(&mut self) -> Option<(u64, OutboxEntry, Arc<[u8]>)> {
        let (seq, (entry, body)) = self.entries.pop_first()?;
        self.bytes -= body.len();
        Some((seq, entry, body))
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

impl Store {
    /// What [`Store::outbox_next`] would read from `from` on, taken from
    /// the entries the last commits left in memory, if `from` is among
    /// them: no read transaction, no decoding, no copy of the envelopes.
    /// `None` if it is not (a restart, a read again from the oldest entry,
    /// more committed than memory keeps, a commit not yet noted): read the
    /// store. Entries taken or skipped leave memory, and so do those before
    /// `from` or before what any read passed (see [`Recent`]); only entries
    /// from `from` on without a gap are taken, so the read goes on past them
    /// as a store read would.
    pub fn outbox_recent(
        &self,
        from: u64,
        scan: usize,
        take: usize,
        mut skip: impl FnMut(&OutboxEntry) -> bool,
    ) -> Option<OutboxRead> {
        let mut recent = self.recent();
        recent.pass(from);
        if *recent.entries.first_key_value()?.0 != from {
            return None;
        }
        let mut read = OutboxRead {
            items: Vec::new(),
            next: from,
        };
        let mut looked = 0;
        while looked < scan && read.items.len() < take {
            if recent.entries.first_key_value().map(|(s, _)| *s) != Some(read.next) {
                break;
            }
            let (seq, entry, body) = recent.pop_first()?;
            read.next = seq + 1;
            looked += 1;
            if !skip(&entry) {
                read.items.push((seq, entry, Some(body)));
            }
        }
        recent.pass(read.next);
        Some(read)
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

    /// Up to `take` outbox entries in order from sequence `from` on, with
    /// their envelopes, among the first `scan` entries there, skipping those
    /// `skip` says to (recipients in back-off). Entries whose envelope is
    /// missing are returned with `None`. Memory forgets the entries it
    /// passed (see [`Store::outbox_recent`]).
    pub fn outbox_next(
        &self,
        from: u64,
        scan: usize,
        take: usize,
        mut skip: impl FnMut(&OutboxEntry) -> bool,
    ) -> Result<OutboxRead, StoreError> {
        let tx = self.db.begin_read()?;
        let outbox = tx.open_table(OUTBOX)?;
        let envelopes = tx.open_table(ENVELOPES)?;
        let journal = tx.open_table(JOURNAL)?;
        let mut read = OutboxRead {
            items: Vec::new(),
            next: from,
        };
        for item in outbox.range(from..)?.take(scan) {
            let (k, v) = item?;
            read.next = k.value() + 1;
            let entry: OutboxEntry = serde_json::from_slice(v.value())?;
            if skip(&entry) {
                continue;
            }
            let body = match entry.entry {
                Some(seq) => journal
                    .get(seq)?
                    .and_then(|b| crate::journal::entry::envelope_of(b.value()).map(Arc::from)),
                None => envelopes
                    .get(entry.message_id.as_str())?
                    .map(|b| Arc::from(b.value())),
            };
            read.items.push((k.value(), entry, body));
            if read.items.len() >= take {
                break;
            }
        }
        // What this read passed may be published now: not again from memory.
        self.recent().pass(read.next);
        Ok(read)
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
            for s in seqs {
                t.outbox.remove(s)?;
            }
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
        let mut c = self.confirmed();
        c.seqs.extend(seqs);
        c.delivered.extend(delivered);
        c.seqs.len()
    }

    /// How many confirmed entries wait for a write transaction.
    pub fn outbox_confirmed_len(&self) -> usize {
        self.confirmed().seqs.len()
    }

    /// Removes and journals what [`Store::outbox_confirmed`] noted, in a
    /// lazy transaction of its own (if anything waits).
    pub fn outbox_remove_confirmed(&self) -> Result<(), StoreError> {
        if self.outbox_confirmed_len() == 0 && self.confirmed().delivered.is_empty() {
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
        let seq = self.next_outbox;
        let bytes = serde_json::to_vec(entry)?;
        self.outbox.insert(seq, bytes.as_slice())?;
        self.next_outbox += 1;
        self.fresh.push((seq, entry.clone(), Arc::from(envelope)));
        Ok(seq)
    }
}
