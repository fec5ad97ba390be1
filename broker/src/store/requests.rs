//! Open requests: accepted requests waiting for their replies, with their
//! deadlines.

use super::redb::Redb;
use super::StoreError;
use mev_store::engine::{ReadableTable, TableDefinition};
use mev_store::wal::Table;
use serde::{Deserialize, Serialize};

/// request id → JSON [`OpenRequest`].
pub(super) const OPEN_REQUESTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("open_requests");

/// A request waiting for its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRequest {
    pub sender: String,
    pub recipient: String,
    pub service: String,
    /// When the exchange accepted it (UTC, ms since the epoch).
    pub accepted_at_ms: i64,
    /// The deadline policy that governs the reply (its register name).
    #[serde(default)]
    pub policy: String,
    /// The reply deadline (UTC ms), if the policy sets one.
    #[serde(default)]
    pub deadline_ms: Option<i64>,
    /// When the at-risk warning is due (UTC ms), if armed.
    #[serde(default)]
    pub at_risk_ms: Option<i64>,
    /// Whether the deadline has passed without a reply.
    #[serde(default)]
    pub breached: bool,
}

/// Open requests, in a write transaction.
pub trait OpenRequests {
    /// The open request `id`, if any.
    fn get(&self, id: &str) -> Result<Option<OpenRequest>, StoreError>;

    /// Opens request `id`, or updates it if open.
    fn open(&mut self, id: &str, req: &OpenRequest) -> Result<(), StoreError>;

    /// Closes request `id`, giving what it was, if it was open.
    fn close(&mut self, id: &str) -> Result<Option<OpenRequest>, StoreError>;
}

/// Open requests, outside a batch.
pub trait RequestState {
    /// The open request `id`, if it is still waiting for its reply.
    fn open_request(&self, id: &str) -> Result<Option<OpenRequest>, StoreError>;
}

/// The open requests' table in a redb write transaction.
pub struct RequestTables<'a> {
    pub(super) open: Table<'a, &'static str, &'static [u8]>,
}

impl OpenRequests for RequestTables<'_> {
    fn get(&self, id: &str) -> Result<Option<OpenRequest>, StoreError> {
        match self.open.get(id)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    fn open(&mut self, id: &str, req: &OpenRequest) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(req)?;
        self.open.insert(id, bytes.as_slice())?;
        Ok(())
    }

    fn close(&mut self, id: &str) -> Result<Option<OpenRequest>, StoreError> {
        match self.open.remove(id)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }
}

impl RequestState for Redb {
    fn open_request(&self, id: &str) -> Result<Option<OpenRequest>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(OPEN_REQUESTS)?;
        let v = t.get(id)?.map(|v| v.value().to_vec());
        match v {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OpenRequest;
    use crate::store::prelude::*;
    use crate::store::{Store, StoreError};

    #[test]
    fn requests_open_update_and_close_in_their_transaction() {
        requests_open_update_and_close_in_their_transaction_on(&Store::in_memory().unwrap());
    }

    /// Engine-independent: every engine of [`State`] must pass it.
    fn requests_open_update_and_close_in_their_transaction_on<S: State>(store: &S) {
        let req = OpenRequest {
            sender: "A".into(),
            recipient: "B".into(),
            service: "S".into(),
            accepted_at_ms: 5,
            policy: "p".into(),
            deadline_ms: Some(50),
            at_risk_ms: Some(40),
            breached: false,
        };
        // Not opened by a transaction that fails.
        let failed: Result<(), _> = store.write(|t| {
            t.requests().open("r", &req)?;
            Err(StoreError::Journal("refused".into()))
        });
        assert!(failed.is_err());
        assert_eq!(store.open_request("r").unwrap(), None);
        store.write(|t| t.requests().open("r", &req)).unwrap();
        assert_eq!(store.open_request("r").unwrap().as_ref(), Some(&req));
        let breached = OpenRequest {
            breached: true,
            ..req.clone()
        };
        let before = store
            .write(|t| {
                let before = t.requests().get("r")?;
                t.requests().open("r", &breached)?;
                Ok(before)
            })
            .unwrap();
        assert_eq!(before.as_ref(), Some(&req));
        assert_eq!(store.open_request("r").unwrap().as_ref(), Some(&breached));
        assert_eq!(store.counts().unwrap().1, 1);
        let closed = store.write(|t| t.requests().close("r")).unwrap();
        assert_eq!(closed.as_ref(), Some(&breached));
        assert_eq!(store.write(|t| t.requests().close("r")).unwrap(), None);
        assert_eq!(store.open_request("r").unwrap(), None);
        assert_eq!(store.counts().unwrap().1, 0);
    }
}
