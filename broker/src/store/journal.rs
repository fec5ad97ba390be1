//! The journal's tables: entries appended (hash chain, Merkle leaf and
//! right edge) inside the write transaction of the change they record; the
//! head, checkpoints, reading, sealing.

use super::outbox::ENVELOPES;
use super::redb::Redb;
use super::{Event, StoreError};
use crate::journal::entry::{leaf_of, Entry, Head};
use crate::journal::merkle::{to_hex, Frontier, Hash};
use mev_store::engine::{ReadableTable, TableDefinition};
use mev_store::wal::{Table, Tx};
use std::collections::HashMap;

/// sequence → one journal entry ([`crate::journal::entry`]): the append-only,
/// hash-chained record of every event with its signed envelope.
pub(super) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// sequence → the entry's Merkle leaf hash (32 bytes); kept when an entry's
/// body is sealed away into a segment file, so proofs still work.
pub(super) const LEAVES: TableDefinition<u64, &[u8]> = TableDefinition::new("journal_leaves");
/// (message id, sequence): the entries about a message (as its id or as
/// the request it answers), for `mev audit trace` and `prove`.
pub(super) const BY_MESSAGE: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("journal_by_message");
/// "frontier" → the Merkle tree's right edge; "last_leaf" → the newest leaf
/// hash; "sealed_upto" → the first entry not sealed into a segment file.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("journal_meta");
/// tree size → a signed checkpoint (JSON [`crate::journal::Checkpoint`]).
pub(super) const CHECKPOINTS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("journal_checkpoints");

/// The journal, in a write transaction: appending. Each entry carries the
/// hash of the one before and is a leaf of the Merkle tree, both updated in
/// this transaction, so the journal and the state it records commit
/// together.
pub trait JournalAppend {
    /// Appends an event (with no envelope); returns its sequence.
    fn append(&mut self, event: &Event) -> Result<u64, StoreError> {
        self.append_with(event, &[])
    }

    /// Appends an event with the signed envelope it is about, kept byte for
    /// byte so its signature can be checked years later; returns its
    /// sequence.
    fn append_with(&mut self, event: &Event, envelope: &[u8]) -> Result<u64, StoreError>;
}

/// The journal, outside a batch: its head, checkpoints, reading (audit,
/// reports, the operators' tools) and sealing.
pub trait JournalState {
    /// The journal's size and Merkle root now.
    fn journal_head(&self) -> Result<(u64, Hash), StoreError>;

    /// Entries before this one were sealed into segment files (their bodies
    /// left the live store; their leaf hashes stay).
    fn journal_sealed_upto(&self) -> Result<u64, StoreError>;

    /// Removes the bodies of entries `sealed_upto..upto` from the live store
    /// once a segment file holds them (see [`crate::audit::segment`]).
    fn journal_seal(&self, upto: u64) -> Result<(), StoreError>;

    /// Keeps a signed checkpoint (JSON) of the tree at `size`.
    fn put_checkpoint(&self, size: u64, checkpoint: &[u8]) -> Result<(), StoreError>;

    /// Every checkpoint, by tree size.
    fn checkpoints(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Calls `f` with each journal entry from `from` on, in order, until it
    /// returns false: (sequence, stored bytes, stored leaf hash).
    fn journal_scan(
        &self,
        from: u64,
        f: impl FnMut(u64, &[u8], Option<Hash>) -> bool,
    ) -> Result<(), StoreError>;

    /// The stored leaf hashes of entries `0..size`, in order (for proofs).
    fn journal_leaves(&self, size: u64) -> Result<Vec<Hash>, StoreError>;

    /// The sequences of the entries about message `id` (as its id or as the
    /// request it answers).
    fn journal_about(&self, id: &str) -> Result<Vec<u64>, StoreError>;

    /// One journal entry's stored bytes.
    fn journal_entry(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every event, in order (for reports and tests), decoded from the journal.
    fn events(&self) -> Result<Vec<Event>, StoreError> {
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

    /// The stored envelope of a message: from the journal entry that
    /// recorded it (while that entry is in the live store, not sealed away).
    fn envelope(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Removes the bodies of entries before `upto` from the live store.
fn seal_in(store: &Redb, upto: u64) -> Result<(), StoreError> {
    let from = store.journal_sealed_upto()?;
    let tx = store.db.begin(true)?;
    {
        let mut journal = tx.open(JOURNAL)?;
        for seq in from..upto {
            journal.remove(seq)?;
        }
        let mut meta = tx.open(META)?;
        meta.insert("sealed_upto", upto.to_be_bytes().as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

/// The journal's tables in a redb write transaction, with the tree's right
/// edge and the newest leaf read at its start and written at its end.
pub struct JournalTables<'a> {
    journal: Table<'a, u64, &'static [u8]>,
    leaves: Table<'a, u64, &'static [u8]>,
    by_message: Table<'a, (&'static str, u64), ()>,
    zones: Option<&'a HashMap<String, chrono_tz::Tz>>,
    frontier: Frontier,
    last_leaf: Option<Hash>,
    appended: bool,
    next_seq: u64,
}

impl<'a> JournalTables<'a> {
    /// Opens the journal's tables in `tx` and reads where the journal ends,
    /// checking that the Merkle tree and the journal agree.
    pub(super) fn open(
        tx: &'a Tx<'_>,
        zones: Option<&'a HashMap<String, chrono_tz::Tz>>,
    ) -> Result<Self, StoreError> {
        let journal = tx.open(JOURNAL)?;
        let next_seq = journal.last()?.map_or(0, |(k, _)| k.value() + 1);
        let meta = tx.open(META)?;
        let frontier = read_frontier(&*meta)?;
        let last_leaf = meta
            .get("last_leaf")?
            .and_then(|v| <[u8; 32]>::try_from(v.value()).ok());
        if frontier.size() != next_seq {
            return Err(StoreError::Journal(format!(
                "the Merkle tree has {} leaves but the journal {next_seq} entries",
                frontier.size()
            )));
        }
        Ok(JournalTables {
            journal,
            leaves: tx.open(LEAVES)?,
            by_message: tx.open(BY_MESSAGE)?,
            zones,
            frontier,
            last_leaf,
            appended: false,
            next_seq,
        })
    }

    /// Writes the tree's right edge and newest leaf, if anything was
    /// appended (before the transaction commits).
    pub(super) fn finish(self, tx: &Tx<'_>) -> Result<(), StoreError> {
        if self.appended {
            let mut meta = tx.open(META)?;
            meta.insert("frontier", self.frontier.serialize().as_slice())?;
            if let Some(l) = &self.last_leaf {
                meta.insert("last_leaf", l.as_slice())?;
            }
        }
        Ok(())
    }
}

fn read_frontier(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Frontier, StoreError> {
    match meta.get("frontier")? {
        Some(v) => Frontier::deserialize(v.value())
            .map_err(|_| StoreError::Journal("the Merkle frontier does not decode".into())),
        None => Ok(Frontier::new()),
    }
}

impl JournalAppend for JournalTables<'_> {
    fn append_with(&mut self, event: &Event, envelope: &[u8]) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let at = chrono::DateTime::from_timestamp_millis(event.at_ms).unwrap_or_default();
        let local = |agency: &str| match self.zones.and_then(|z| z.get(agency)) {
            Some(tz) => local_time(at, tz),
            None => String::new(),
        };
        let head = Head {
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
        };
        let bytes = crate::journal::entry::encode(&head, envelope)?;
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

impl JournalState for Redb {
    fn journal_head(&self) -> Result<(u64, Hash), StoreError> {
        let tx = self.db.begin_read()?;
        let frontier = read_frontier(&tx.open_table(META)?)?;
        Ok((frontier.size(), frontier.root()))
    }

    fn journal_sealed_upto(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let v = meta
            .get("sealed_upto")?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(v)
    }

    fn journal_seal(&self, upto: u64) -> Result<(), StoreError> {
        self.note(seal_in(self, upto))
    }

    fn put_checkpoint(&self, size: u64, checkpoint: &[u8]) -> Result<(), StoreError> {
        self.note((|| {
            let tx = self.db.begin(true)?;
            tx.open(CHECKPOINTS)?.insert(size, checkpoint)?;
            tx.commit()?;
            Ok(())
        })())
    }

    fn checkpoints(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CHECKPOINTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn journal_scan(
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

    fn journal_leaves(&self, size: u64) -> Result<Vec<Hash>, StoreError> {
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

    fn journal_about(&self, id: &str) -> Result<Vec<u64>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BY_MESSAGE)?;
        let mut out = Vec::new();
        for item in t.range((id, 0u64)..=(id, u64::MAX))? {
            let (k, _) = item?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    fn journal_entry(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(JOURNAL)?;
        let v = t.get(seq)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    fn envelope(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
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

impl Redb {
    /// Forensics and tamper tests only — what someone with write access to
    /// the disk could do; the broker never calls it: overwrites (or, with
    /// `None`, deletes) a journal entry's stored bytes, leaving everything
    /// else as it is.
    pub fn tamper_journal_entry(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), StoreError> {
        let tx = self.db.begin(true)?;
        {
            let mut t = tx.open(JOURNAL)?;
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
}

/// `at` in `tz` as a journal entry shows it: `2026-03-02 14:05:09.120 +05:00
/// (Asia/Tashkent)` (KZ order §10: both parties' local times). Written
/// field by field: chrono's `format` parses its pattern on every call, and
/// this runs for both parties of every entry (two entries per message).
/// What the fast path does not cover (a year outside 0–9999, an offset
/// with seconds) goes through `format`, which gives the same for the rest.
pub(crate) fn local_time(at: chrono::DateTime<chrono::Utc>, tz: &chrono_tz::Tz) -> String {
    use chrono::{Datelike, Offset, Timelike};
    use std::fmt::Write;
    let local = at.with_timezone(tz);
    let offset = local.offset().fix().local_minus_utc();
    if !(0..=9999).contains(&local.year()) || offset % 60 != 0 {
        return local
            .format(&format!("%Y-%m-%d %H:%M:%S%.3f %:z ({})", tz.name()))
            .to_string();
    }
    let (sign, minutes) = if offset < 0 {
        ('-', -offset / 60)
    } else {
        ('+', offset / 60)
    };
    let mut out = String::with_capacity(48);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} {sign}{:02}:{:02} ({})",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        // A leap second's nanoseconds run past 1e9; `%.3f` shows them so.
        local.nanosecond() / 1_000_000,
        minutes / 60,
        minutes % 60,
        tz.name()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::local_time;

    /// The local times in journal entries read as chrono's pattern gives
    /// them, across zones east and west, half and quarter hours, summer
    /// time and the turn of a year.
    #[test]
    fn local_times_read_as_the_pattern_gives_them() {
        let zones: [chrono_tz::Tz; 7] = [
            chrono_tz::Asia::Tashkent,
            chrono_tz::Europe::Moscow,
            chrono_tz::America::New_York,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Asia::Kathmandu,
            chrono_tz::Pacific::Chatham,
            chrono_tz::UTC,
        ];
        let mut ms: i64 = 1_577_836_799_999; // 2019-12-31 23:59:59.999 UTC
        for step in 0..2_000 {
            let at = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            for tz in &zones {
                let want = at
                    .with_timezone(tz)
                    .format(&format!("%Y-%m-%d %H:%M:%S%.3f %:z ({})", tz.name()))
                    .to_string();
                assert_eq!(local_time(at, tz), want, "{ms} in {}", tz.name());
            }
            ms += 7_919_993 + step * 11;
        }
    }
}
