//! The broker's on-disk state in redb. This module owns the database; the
//! rest of the broker sees [`Store`] and [`Txn`]: the dedup index of accepted
//! messages, open requests, and an append-only event log. One write
//! transaction covers a whole micro-batch, so one fsync covers many messages.

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// message id → 32-byte digest + 1 flag byte (1 = forwarded and confirmed).
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
/// request id → JSON [`OpenRequest`].
const OPEN_REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("open_requests");
/// sequence → JSON [`Event`].
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
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
}

/// The broker's database.
pub struct Store {
    db: Database,
}

/// What the dedup index knows of a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub digest: [u8; 32],
    pub forwarded: bool,
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
        tx.open_table(EVENTS)?;
        tx.open_table(ENVELOPES)?;
        tx.commit()?;
        Ok(Store { db })
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
        let r = {
            let next_seq = {
                let events = tx.open_table(EVENTS)?;
                let last = events.last()?.map(|(k, _)| k.value());
                last.map_or(0, |s| s + 1)
            };
            let mut txn = Txn {
                messages: tx.open_table(MESSAGES)?,
                open: tx.open_table(OPEN_REQUESTS)?,
                events: tx.open_table(EVENTS)?,
                envelopes: tx.open_table(ENVELOPES)?,
                next_seq,
            };
            f(&mut txn)?
        };
        tx.commit()?;
        Ok(r)
    }

    /// Marks messages as forwarded; made durable by the next durable commit
    /// (losing it only causes a harmless re-forward).
    pub fn mark_forwarded(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        {
            let mut t = tx.open_table(MESSAGES)?;
            for id in ids {
                let v = t.get(id.as_str())?.map(|v| v.value().to_vec());
                if let Some(mut v) = v {
                    if v.len() == 33 {
                        v[32] = 1;
                        t.insert(id.as_str(), v.as_slice())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Counts: (accepted messages, open requests, events).
    pub fn counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let tx = self.db.begin_read()?;
        Ok((
            tx.open_table(MESSAGES)?.len()?,
            tx.open_table(OPEN_REQUESTS)?.len()?,
            tx.open_table(EVENTS)?.len()?,
        ))
    }

    /// Every event, in order (for reports and tests).
    pub fn events(&self) -> Result<Vec<Event>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(EVENTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// The stored envelope of a message.
    pub fn envelope(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ENVELOPES)?;
        Ok(t.get(id)?.map(|v| v.value().to_vec()))
    }
}

/// One write transaction's view of the tables.
pub struct Txn<'a> {
    messages: redb::Table<'a, &'static str, &'static [u8]>,
    open: redb::Table<'a, &'static str, &'static [u8]>,
    events: redb::Table<'a, u64, &'static [u8]>,
    envelopes: redb::Table<'a, &'static str, &'static [u8]>,
    next_seq: u64,
}

impl Txn<'_> {
    /// What the dedup index knows of `id`.
    pub fn seen(&self, id: &str) -> Result<Option<Seen>, StoreError> {
        Ok(self.messages.get(id)?.and_then(|v| {
            let v = v.value();
            let digest: [u8; 32] = v.get(..32)?.try_into().ok()?;
            Some(Seen {
                digest,
                forwarded: v.get(32) == Some(&1),
            })
        }))
    }

    /// Records an accepted message and keeps its envelope.
    pub fn accept(
        &mut self,
        id: &str,
        digest: &[u8; 32],
        envelope: &[u8],
    ) -> Result<(), StoreError> {
        let mut v = [0u8; 33];
        v[..32].copy_from_slice(digest);
        self.messages.insert(id, v.as_slice())?;
        self.envelopes.insert(id, envelope)?;
        Ok(())
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

    /// Appends an event.
    pub fn record(&mut self, event: &Event) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let bytes = serde_json::to_vec(event)?;
        self.events.insert(seq, bytes.as_slice())?;
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
                    t.accept("m", &[7; 32], b"env")?;
                    t.insert_open_request(
                        "m",
                        &OpenRequest {
                            sender: "A".into(),
                            recipient: "B".into(),
                            service: "S".into(),
                            accepted_at_ms: 5,
                        },
                    )?;
                    t.record(&event(EventKind::Received))?;
                    Ok(())
                })
                .unwrap();
            store.mark_forwarded(&["m".into()]).unwrap();
            store
                .write(|t| t.record(&event(EventKind::Forwarded)).map(|_| ()))
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let seen = store.write(|t| t.seen("m")).unwrap().unwrap();
        assert_eq!(seen.digest, [7; 32]);
        assert!(seen.forwarded);
        assert_eq!(store.counts().unwrap(), (1, 1, 2));
        let closed = store.write(|t| t.close_request("m")).unwrap();
        assert_eq!(closed.unwrap().recipient, "B");
        assert_eq!(store.events().unwrap()[1].kind, EventKind::Forwarded);
        assert_eq!(store.envelope("m").unwrap().unwrap(), b"env");
    }
}
