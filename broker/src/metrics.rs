//! Counters of what the broker did, for its status and the demo's summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Message counters since start.
#[derive(Default)]
pub struct Counters {
    /// Messages accepted and forwarded, by kind name.
    accepted: Mutex<BTreeMap<&'static str, u64>>,
    /// Rejections by stable code.
    rejected: Mutex<BTreeMap<u32, u64>>,
    /// Copies of already accepted messages.
    pub duplicates: AtomicU64,
    /// Bytes that could not be attributed to any sender.
    pub garbage: AtomicU64,
    /// Receipt messages sent.
    pub receipts: AtomicU64,
    /// Batches processed.
    pub batches: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    pub accepted: BTreeMap<String, u64>,
    pub rejected: BTreeMap<u32, u64>,
    pub duplicates: u64,
    pub garbage: u64,
    pub receipts: u64,
    pub batches: u64,
}

impl Counters {
    pub fn accepted(&self, kind: &'static str) {
        *self
            .accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub fn rejected(&self, code: u32) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            accepted: self
                .accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            garbage: self.garbage.load(Ordering::Relaxed),
            receipts: self.receipts.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}
