//! Counters of what the broker did, for its status and the demo's summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Message counters since start.
#[derive(Default)]
pub struct Counters {
    /// Messages accepted (durable, in the outbox), by kind name.
    accepted: Mutex<BTreeMap<&'static str, u64>>,
    /// Rejections by stable code.
    rejected: Mutex<BTreeMap<u32, u64>>,
    /// Copies of already accepted messages.
    pub duplicates: AtomicU64,
    /// Bytes that could not be attributed to any sender.
    pub garbage: AtomicU64,
    /// Receipt messages published and confirmed.
    pub receipts: AtomicU64,
    /// Accepted messages published to their recipient and confirmed.
    pub forwarded: AtomicU64,
    /// Notices published and confirmed.
    pub notices: AtomicU64,
    /// Publish attempts that failed and will be retried from the outbox.
    pub publish_failures: AtomicU64,
    /// Batches processed.
    pub batches: AtomicU64,
    /// Deadline outcomes by (agency, service).
    sla: Mutex<BTreeMap<(String, String), SlaCounts>>,
}

/// Deadline outcomes of one agency for one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SlaCounts {
    /// Replies within their deadline.
    pub on_time: u64,
    /// Replies after their deadline (delivered all the same).
    pub late: u64,
    /// Deadlines that passed without a reply.
    pub breached: u64,
    /// At-risk warnings.
    pub at_risk: u64,
    /// Requests the consumer sent after its dispatch deadline (UZ annex 2 §12).
    pub late_dispatch: u64,
}

/// One deadline outcome, counted once its transaction is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaOutcome {
    /// A reply to a request whose policy sets no deadline.
    Replied,
    OnTime,
    Late,
    Breached,
    AtRisk,
    LateDispatch,
}

/// An outcome for the agency answerable for it (the provider; for a late
/// dispatch, the consumer) and the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaEvent {
    pub agency: String,
    pub service: String,
    pub outcome: SlaOutcome,
    /// For replies: how long the answer took, from acceptance of the request (ms).
    pub reply_ms: Option<i64>,
}

/// A row of the deadline counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlaRow {
    pub agency: String,
    pub service: String,
    #[serde(flatten)]
    pub counts: SlaCounts,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    pub accepted: BTreeMap<String, u64>,
    pub rejected: BTreeMap<u32, u64>,
    pub duplicates: u64,
    pub garbage: u64,
    pub receipts: u64,
    pub forwarded: u64,
    pub notices: u64,
    pub publish_failures: u64,
    pub batches: u64,
    /// Deadline outcomes by agency and service.
    pub sla: Vec<SlaRow>,
}

impl Snapshot {
    /// Deadline outcomes summed per agency.
    pub fn sla_by_agency(&self) -> BTreeMap<String, SlaCounts> {
        self.sla_by(|r| &r.agency)
    }
    /// Deadline outcomes summed per service.
    pub fn sla_by_service(&self) -> BTreeMap<String, SlaCounts> {
        self.sla_by(|r| &r.service)
    }
    /// Deadline outcomes summed over everything.
    pub fn sla_total(&self) -> SlaCounts {
        self.sla
            .iter()
            .fold(SlaCounts::default(), |a, r| a.plus(&r.counts))
    }
    fn sla_by(&self, key: impl Fn(&SlaRow) -> &String) -> BTreeMap<String, SlaCounts> {
        let mut out: BTreeMap<String, SlaCounts> = BTreeMap::new();
        for r in &self.sla {
            let e = out.entry(key(r).clone()).or_default();
            *e = e.plus(&r.counts);
        }
        out
    }
}

impl SlaCounts {
    fn plus(&self, o: &SlaCounts) -> SlaCounts {
        SlaCounts {
            on_time: self.on_time + o.on_time,
            late: self.late + o.late,
            breached: self.breached + o.breached,
            at_risk: self.at_risk + o.at_risk,
            late_dispatch: self.late_dispatch + o.late_dispatch,
        }
    }
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

    /// Counts deadline outcomes (after their transaction committed).
    pub fn sla(&self, events: &[SlaEvent]) {
        if events.is_empty() {
            return;
        }
        let mut m = self.sla.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            let c = m.entry((e.agency.clone(), e.service.clone())).or_default();
            match e.outcome {
                SlaOutcome::Replied => {}
                SlaOutcome::OnTime => c.on_time += 1,
                SlaOutcome::Late => c.late += 1,
                SlaOutcome::Breached => c.breached += 1,
                SlaOutcome::AtRisk => c.at_risk += 1,
                SlaOutcome::LateDispatch => c.late_dispatch += 1,
            }
        }
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
            forwarded: self.forwarded.load(Ordering::Relaxed),
            notices: self.notices.load(Ordering::Relaxed),
            publish_failures: self.publish_failures.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            sla: self
                .sla
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|((agency, service), counts)| SlaRow {
                    agency: agency.clone(),
                    service: service.clone(),
                    counts: *counts,
                })
                .collect(),
        }
    }
}
