//! Which message ids (and receipt entries) were already handled, so a
//! redelivered message is not handed to a handler, or surfaced, twice.
//!
//! What was handled is on disk (the store's dedup index, written in the same
//! transaction as the reply it caused, kept for the retention window and
//! then pruned); what is being handled right now is claimed here in memory,
//! so two copies delivered at once are not both handled.

use crate::store::Store;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a key could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Being handled right now by another delivery.
    InProgress,
    /// Already handled.
    Done,
}

/// The dedup key of a receipt entry naming `digest`.
pub(crate) fn receipt_key(digest: &[u8; 32]) -> String {
    format!("digest:{}", mev_proto::envelope::hex(digest))
}

pub(crate) struct Dedup {
    store: Arc<Store>,
    busy: Mutex<HashSet<String>>,
}

/// A claimed key: released when dropped. Drop it only after the key was
/// marked handled on disk (or its handling failed and may be retried).
pub(crate) struct Claim<'a> {
    dedup: &'a Dedup,
    key: String,
}

impl Claim<'_> {
    /// The claimed key (empty for a message without an id: never stored).
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.key.is_empty() {
            self.dedup.lock().remove(&self.key);
        }
    }
}

impl Dedup {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Dedup {
            store,
            busy: Mutex::new(HashSet::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `key` for handling unless it is being or was handled. An empty
    /// key is always claimed (nothing can be recognised by it).
    pub(crate) fn claim(&self, key: &str) -> Result<Claim<'_>, Seen> {
        if key.is_empty() {
            return Ok(Claim {
                dedup: self,
                key: String::new(),
            });
        }
        if !self.lock().insert(key.to_string()) {
            return Err(Seen::InProgress);
        }
        let claim = Claim {
            dedup: self,
            key: key.to_string(),
        };
        match self.store.handled(key) {
            Ok(true) => Err(Seen::Done),
            Ok(false) => Ok(claim),
            Err(e) => {
                // Handling twice is better than not at all.
                tracing::warn!(%key, error = %e, "dedup index unreadable; handling the message");
                Ok(claim)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_once() {
        let store = Arc::new(Store::open(None, "A").unwrap());
        let d = Dedup::new(store.clone());
        let a = d.claim("a").unwrap();
        assert_eq!(a.key(), "a");
        assert_eq!(d.claim("a").err(), Some(Seen::InProgress));
        store.commit(&[], &["a".into()], 1).unwrap();
        drop(a);
        assert_eq!(d.claim("a").err(), Some(Seen::Done));
        // A failed handling releases the claim: a redelivery is handled.
        drop(d.claim("b").unwrap());
        assert!(d.claim("b").is_ok());
        // No id: nothing to recognise it by.
        let _e1 = d.claim("").unwrap();
        let _e2 = d.claim("").unwrap();
    }

    #[test]
    fn forgets_after_pruning() {
        let store = Arc::new(Store::open(None, "A").unwrap());
        let d = Dedup::new(store.clone());
        store.commit(&[], &["a".into()], 1).unwrap();
        assert_eq!(d.claim("a").err(), Some(Seen::Done));
        store.prune(2, 100).unwrap();
        assert!(d.claim("a").is_ok());
    }
}
