//! Counters of what the broker did, for its status, the demo's summary and
//! the operators' endpoint (`/metrics`, `/api/status`, see [`crate::http`]):
//! message counts, deadline outcomes, requests open per agency, the latest
//! rejections, and histograms of routing and reply time.

use mev_proto::Rejection;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How many recent rejections are kept for the status page.
pub const RECENT_REJECTIONS: usize = 50;

/// Upper bounds (seconds) of the routing-time buckets: ingress delivery to
/// durable commit, typically milliseconds.
pub const ROUTING_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the reply-time buckets: a request's acceptance
/// to its reply's, from seconds (RU 963 §10) to working days.
pub const REPLY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    14_400.0, 43_200.0, 86_400.0, 172_800.0, 345_600.0, 604_800.0,
];

/// Message counters since start.
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
    /// Requests accepted for each provider since start, less its replies.
    open_by_agency: Mutex<BTreeMap<String, i64>>,
    /// The latest rejections, newest last.
    recent_rejections: Mutex<VecDeque<RecentRejection>>,
    /// Routing time: ingress delivery to the commit of its batch, per message.
    pub routing: Histogram,
    /// Reply time: a request's acceptance to its reply's (from [`SlaEvent::reply_ms`]).
    pub reply: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            accepted: Mutex::default(),
            rejected: Mutex::default(),
            duplicates: AtomicU64::new(0),
            garbage: AtomicU64::new(0),
            receipts: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            notices: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            sla: Mutex::default(),
            open_by_agency: Mutex::default(),
            recent_rejections: Mutex::new(VecDeque::with_capacity(RECENT_REJECTIONS)),
            routing: Histogram::new(ROUTING_BUCKETS),
            reply: Histogram::new(REPLY_BUCKETS),
        }
    }
}

/// One refused message, as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecentRejection {
    /// When it was counted (UTC, RFC 3339).
    pub at: String,
    /// The stable code and its name.
    pub code: u32,
    pub name: String,
    pub reason: String,
    /// The claimed sender ("" when the header did not decode).
    pub sender: String,
    pub message_id: String,
    pub service: String,
}

/// A histogram with fixed buckets, lock-free to observe.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// Sum of observations in microseconds.
    sum_us: AtomicU64,
}

/// A copy of a histogram: cumulative counts per upper bound, as Prometheus has them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistogramSnapshot {
    /// Upper bounds in seconds, ascending (`+Inf` implied).
    pub bounds: Vec<f64>,
    /// Observations at most each bound (cumulative), one per bound.
    pub cumulative: Vec<u64>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records `n` observations of `d`.
    pub fn observe_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us
            .fetch_add(us.saturating_mul(n), Ordering::Relaxed);
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.observe_n(d, 1)
    }

    /// Cumulative counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            if i < self.bounds.len() {
                cumulative.push(total);
            }
        }
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            cumulative,
            count: total,
            sum: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl HistogramSnapshot {
    /// The `q` quantile (0..=1) in seconds, interpolated within its bucket
    /// (as Prometheus' `histogram_quantile` does); `None` when empty. Past the
    /// last bound, the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (bound, &cum) in self.bounds.iter().zip(&self.cumulative) {
            if cum as f64 >= rank && cum > below {
                let within = (rank - below as f64) / (cum - below) as f64;
                return Some(lower + (bound - lower) * within);
            }
            below = cum;
            lower = *bound;
        }
        self.bounds.last().copied()
    }

    /// The mean in seconds; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Deadline outcomes of one agency for one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The sum of two rows.
    pub fn plus(&self, o: &SlaCounts) -> SlaCounts {
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

    /// Counts an accepted message of `kind` from `sender` to `to`: a request
    /// opens one for its provider `to`; a reply (which always closes its
    /// request) closes one for its sender.
    pub fn accepted_between(&self, kind: &'static str, sender: &str, to: &str) {
        self.accepted(kind);
        let (agency, delta) = match kind {
            "request" => (to, 1),
            "reply" => (sender, -1),
            _ => return,
        };
        *self
            .open_by_agency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agency.to_string())
            .or_default() += delta;
    }

    /// Counts a refusal by its code and keeps it among the latest:
    /// `rejection` of message `message_id` for `service`, from `sender` as
    /// far as it is known.
    pub fn refused(&self, sender: &str, message_id: &str, service: &str, rejection: &Rejection) {
        let code = rejection.code.as_code();
        self.rejected(code);
        let mut reason = rejection.reason.clone();
        if reason.len() > 500 {
            let mut cut = 500;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        let entry = RecentRejection {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            code,
            name: rejection.code.name().to_string(),
            reason,
            sender: sender.to_string(),
            message_id: message_id.to_string(),
            service: service.to_string(),
        };
        let mut recent = self
            .recent_rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_REJECTIONS {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// The latest rejections, newest first (at most [`RECENT_REJECTIONS`]).
    pub fn recent_rejections(&self) -> Vec<RecentRejection> {
        self.recent_rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    /// Requests accepted for each provider since start, less its replies
    /// since start. Requests left open by an earlier run are not in it (the
    /// store's total is exact), and replies to them make a row negative.
    pub fn open_by_agency(&self) -> BTreeMap<String, i64> {
        self.open_by_agency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Observes the routing time of a batch of `n` messages, from its
    /// delivery to its commit.
    pub fn routed(&self, elapsed: Duration, n: usize) {
        self.routing.observe_n(elapsed, n as u64);
    }

    /// Counts deadline outcomes (after their transaction committed).
    pub fn sla(&self, events: &[SlaEvent]) {
        if events.is_empty() {
            return;
        }
        for ms in events.iter().filter_map(|e| e.reply_ms) {
            self.reply
                .observe(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use mev_proto::{ErrorCode, Rejection};

    #[test]
    fn histogram_is_cumulative_and_estimates_quantiles() {
        let h = Histogram::new(&[0.01, 0.1, 1.0]);
        h.observe_n(Duration::from_millis(5), 50);
        h.observe_n(Duration::from_millis(50), 40);
        h.observe_n(Duration::from_millis(500), 9);
        h.observe(Duration::from_secs(5));
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![50, 90, 99]);
        assert_eq!(s.count, 100);
        assert!((s.sum - (0.25 + 2.0 + 4.5 + 5.0)).abs() < 1e-6, "{}", s.sum);
        let p50 = s.quantile(0.5).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p95 = s.quantile(0.95).unwrap();
        assert!(p95 > 0.1 && p95 <= 1.0, "{p95}");
        assert_eq!(Histogram::new(&[1.0]).snapshot().quantile(0.5), None);
    }

    #[test]
    fn reply_times_and_open_requests_are_counted() {
        let c = Counters::default();
        c.accepted_between("request", "UZ-A", "UZ-B");
        c.accepted_between("request", "UZ-A", "UZ-B");
        c.accepted_between("reply", "UZ-B", "UZ-A");
        c.accepted_between("status", "UZ-B", "UZ-A");
        assert_eq!(c.open_by_agency().get("UZ-B"), Some(&1));
        assert_eq!(c.snapshot().accepted.get("request"), Some(&2));
        c.sla(&[SlaEvent {
            agency: "UZ-B".into(),
            service: "S".into(),
            outcome: SlaOutcome::OnTime,
            reply_ms: Some(1500),
        }]);
        let r = c.reply.snapshot();
        assert_eq!(r.count, 1);
        assert!((r.sum - 1.5).abs() < 1e-9);
    }

    #[test]
    fn the_latest_rejections_are_kept_newest_first() {
        let c = Counters::default();
        for i in 0..(RECENT_REJECTIONS + 7) {
            c.refused(
                "UZ-A",
                &format!("m{i}"),
                "",
                &Rejection::new(ErrorCode::BadSignature, "x".repeat(600)),
            );
        }
        let recent = c.recent_rejections();
        assert_eq!(recent.len(), RECENT_REJECTIONS);
        assert_eq!(recent[0].message_id, format!("m{}", RECENT_REJECTIONS + 6));
        assert_eq!(recent[0].name, "bad_signature");
        assert!(recent[0].reason.chars().count() <= 501);
        let code = ErrorCode::BadSignature.as_code();
        assert_eq!(c.snapshot().rejected.get(&code).copied(), Some(57));
    }
}
