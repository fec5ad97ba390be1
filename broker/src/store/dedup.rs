//! The dedup index: message ids the exchange accepted, with the digest and
//! time of acceptance, forgotten after the retention window.

use super::redb::Redb;
use super::StoreError;
use mev_store::engine::{ReadableTable, TableDefinition};
use mev_store::wal::Table;

/// message id → 32-byte digest + 8-byte accepted-at (ms, little endian).
pub(super) const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
/// (accepted-at ms, message id): the dedup index in time order, for pruning.
pub(super) const ACCEPTED_AT: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("accepted_at");

/// What the dedup index knows of a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub digest: [u8; 32],
    /// When it was accepted (UTC, ms since the epoch).
    pub accepted_at_ms: i64,
}

/// The dedup index, in a write transaction.
pub trait DedupIndex {
    /// What the index knows of `id`.
    fn seen(&self, id: &str) -> Result<Option<Seen>, StoreError>;

    /// Records an accepted message (its envelope is in the journal entry
    /// that records its arrival).
    fn accept(&mut self, id: &str, digest: &[u8; 32], at_ms: i64) -> Result<(), StoreError>;
}

/// The dedup index, outside a batch.
pub trait DedupState {
    /// Forgets message ids accepted before `before_ms` (the dedup retention
    /// window); their envelopes and events stay. Removes at most `limit`
    /// ids per call so a long backlog does not hold the writer; returns how
    /// many were removed.
    fn prune_dedup(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError>;
}

/// The dedup index's tables in a redb write transaction.
pub struct DedupTables<'a> {
    pub(super) messages: Table<'a, &'static str, &'static [u8]>,
    pub(super) accepted_at: Table<'a, (i64, &'static str), ()>,
}

impl DedupIndex for DedupTables<'_> {
    fn seen(&self, id: &str) -> Result<Option<Seen>, StoreError> {
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

    fn accept(&mut self, id: &str, digest: &[u8; 32], at_ms: i64) -> Result<(), StoreError> {
        let mut v = [0u8; 40];
        v[..32].copy_from_slice(digest);
        v[32..].copy_from_slice(&at_ms.to_le_bytes());
        self.messages.insert(id, v.as_slice())?;
        self.accepted_at.insert((at_ms, id), ())?;
        Ok(())
    }
}

impl DedupState for Redb {
    fn prune_dedup(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        self.note(prune_dedup_in(self, before_ms, limit))
    }
}

fn prune_dedup_in(store: &Redb, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
    let tx = store.db.begin(true)?;
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

#[cfg(test)]
mod tests {
    use super::super::tests::forward;
    use crate::store::prelude::*;
    use crate::store::Store;

    #[test]
    fn dedup_retention_prunes_old_ids_but_keeps_envelopes() {
        dedup_retention_prunes_old_ids_but_keeps_envelopes_on(&Store::in_memory().unwrap());
    }

    /// Engine-independent: every engine of [`State`] must pass it.
    fn dedup_retention_prunes_old_ids_but_keeps_envelopes_on<S: State>(store: &S) {
        store
            .write(|t| {
                forward(t, "A", "old", 1_000)?;
                forward(t, "A", "new", 9_000)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.prune_dedup(5_000, 100).unwrap(), 1);
        assert_eq!(store.write(|t| t.dedup().seen("old")).unwrap(), None);
        assert!(store.write(|t| t.dedup().seen("new")).unwrap().is_some());
        assert_eq!(store.envelope("old").unwrap().unwrap(), b"old");
        assert_eq!(store.prune_dedup(5_000, 100).unwrap(), 0);
    }
}
