//! The service-level report: per agency (the provider answerable) or per
//! service, over a period, counted from the broker's recorded events — the
//! quality of the exchange per participant (RU resolution No. 963 §9, §11),
//! for the operator's quarterly monitoring (UZ resolution No. 120 §3).
//!
//! Every event is counted in the period in which it was recorded (its
//! `at_ms`), in exactly one row, so the rows add up to the total:
//! - requests: `Received` without `in_reply_to` (a status update has one);
//!   row of the provider (the request's recipient);
//! - replies by kind: `ReplyReceived`, row of the provider of the request it
//!   answers; its reply time is its `at_ms` minus the request's `Received`
//!   `at_ms` (the request may have been accepted before the period);
//! - on time, late: `ReplyOnTime`, `ReplyLate` (the provider);
//! - breached, at risk: `DeadlineBreached`, `DeadlineAtRisk` (the provider),
//!   each counted once per request;
//! - late dispatches: `LateDispatch` — the consumer's, who sent late;
//! - rejected: `Rejected` — the sender's, whose message was refused.
//!
//! Median and 95th percentile use the nearest-rank method: the p-th
//! percentile of n sorted times is the ⌈p·n/100⌉-th, always a time that
//! was observed.

use super::period::Period;
use chrono::{DateTime, SecondsFormat, Utc};
use mev_broker::store::{Event, EventKind};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The legal basis, cited in every report's header.
pub const LEGAL_BASIS: [&str; 3] = [
    "RU Government resolution No. 963 of 23.06.2021, §9: participants of the interagency electronic exchange meet the requirements for the quality of functioning of their information systems",
    "RU Government resolution No. 963 of 23.06.2021, §11: the operator reports on compliance with those requirements (§9), per participant",
    "UZ Cabinet of Ministers resolution No. 120 of 13.05.2015, §3: quarterly monitoring of interagency electronic exchange, with proposals to remove the shortcomings found",
];

/// The reply kinds, in the order reports show them.
pub const REPLY_KINDS: [&str; 4] = ["documents", "refusal", "not_held", "insufficient_data"];

/// The label of the total row.
pub const TOTAL: &str = "(total)";

/// The label of a row for events that name no agency or service.
pub const UNKNOWN: &str = "(unknown)";

/// What a row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum By {
    /// The agency answerable: the provider for requests, replies and
    /// deadlines; the consumer for late dispatches; the sender for rejections.
    Agency,
    /// The registered service.
    Service,
}

impl By {
    /// `agency` or `service`.
    pub fn name(self) -> &'static str {
        match self {
            By::Agency => "agency",
            By::Service => "service",
        }
    }
}

/// Replies received, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Replies {
    pub total: u64,
    pub documents: u64,
    pub refusal: u64,
    pub not_held: u64,
    pub insufficient_data: u64,
    /// A kind not listed above (none is expected).
    pub other: u64,
}

impl Replies {
    /// The count of one of [`REPLY_KINDS`].
    pub fn of(&self, kind: &str) -> u64 {
        match kind {
            "documents" => self.documents,
            "refusal" => self.refusal,
            "not_held" => self.not_held,
            "insufficient_data" => self.insufficient_data,
            _ => self.other,
        }
    }

    fn add(&mut self, kind: &str) {
        self.total += 1;
        match kind {
            "documents" => self.documents += 1,
            "refusal" => self.refusal += 1,
            "not_held" => self.not_held += 1,
            "insufficient_data" => self.insufficient_data += 1,
            _ => self.other += 1,
        }
    }
}

/// Reply times (ms from the request's acceptance to the reply's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplyTimes {
    /// Replies whose request was found in the journal.
    pub count: u64,
    pub median: Option<i64>,
    pub p95: Option<i64>,
    pub max: Option<i64>,
}

/// One row of the report (or the total).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The agency or service id; [`TOTAL`] for the total row.
    pub key: String,
    pub requests: u64,
    pub replies: Replies,
    pub on_time: u64,
    pub late: u64,
    /// Requests whose deadline passed without a reply (once per request).
    pub breached: u64,
    /// Requests warned that their deadline was near (once per request).
    pub at_risk: u64,
    pub late_dispatch: u64,
    pub rejected: u64,
    pub reply_time_ms: ReplyTimes,
}

impl Row {
    /// The row's counts, in the order of the CSV columns after the key
    /// (`requests` to `rejected`; [`super::csv::COLUMNS`]).
    pub fn counts(&self) -> Vec<u64> {
        let mut counts = vec![self.requests, self.replies.total];
        counts.extend(REPLY_KINDS.iter().map(|k| self.replies.of(k)));
        counts.extend([
            self.on_time,
            self.late,
            self.breached,
            self.at_risk,
            self.late_dispatch,
            self.rejected,
        ]);
        counts
    }
}

/// One bar of the reply-time distribution: times below `upper_ms` (and at
/// or above the previous bar's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub label: &'static str,
    /// None for the last bar.
    pub upper_ms: Option<i64>,
    pub count: u64,
}

/// Rejections in the period by stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeCount {
    pub code: u32,
    pub name: &'static str,
    pub count: u64,
}

/// The period as the report states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodView {
    pub label: String,
    pub first_day: String,
    pub last_day: String,
    /// The zone the days are counted in (UTC unless `--tz`).
    pub time_zone: String,
    pub from_utc: String,
    /// Exclusive.
    pub to_utc: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlaReport {
    pub report: &'static str,
    pub legal_basis: Vec<&'static str>,
    pub generated_at: String,
    pub period: PeriodView,
    pub by: By,
    /// Events recorded in the period that the report counted.
    pub events_counted: u64,
    pub rows: Vec<Row>,
    pub total: Row,
    /// The distribution of all reply times in the period.
    pub reply_time_histogram: Vec<Bucket>,
    pub rejected_by_code: Vec<CodeCount>,
}

/// Bars of the reply-time distribution; 2 s and 48 h are the limits of
/// RU 963 §10.
const BUCKETS: [(&str, Option<i64>); 10] = [
    ("< 0.1 s", Some(100)),
    ("0.1–1 s", Some(1_000)),
    ("1–2 s", Some(2_000)),
    ("2–10 s", Some(10_000)),
    ("10 s–1 min", Some(60_000)),
    ("1 min–1 h", Some(3_600_000)),
    ("1 h–1 day", Some(86_400_000)),
    ("1–2 days", Some(172_800_000)),
    ("2–7 days", Some(604_800_000)),
    ("≥ 7 days", None),
];

/// The nearest-rank percentile (`pct` from 1 to 100) of sorted values:
/// the ⌈pct·n/100⌉-th smallest. None when there are none.
pub fn percentile(sorted: &[i64], pct: u32) -> Option<i64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (pct as usize * n).div_ceil(100).clamp(1, n);
    sorted.get(rank - 1).copied()
}

/// What one event counts for.
enum Fact<'a> {
    Request,
    Reply { kind: &'a str, time_ms: Option<i64> },
    OnTime,
    Late,
    Breached(&'a str),
    AtRisk(&'a str),
    LateDispatch,
    Rejected(u32),
}

#[derive(Default)]
struct Acc {
    row: Row,
    times: Vec<i64>,
    breached: HashSet<String>,
    at_risk: HashSet<String>,
}

impl Acc {
    fn add(&mut self, fact: &Fact<'_>) {
        let r = &mut self.row;
        match fact {
            Fact::Request => r.requests += 1,
            Fact::Reply { kind, time_ms } => {
                r.replies.add(kind);
                self.times.extend(time_ms);
            }
            Fact::OnTime => r.on_time += 1,
            Fact::Late => r.late += 1,
            Fact::Breached(id) => {
                if self.breached.insert(id.to_string()) {
                    r.breached += 1;
                }
            }
            Fact::AtRisk(id) => {
                if self.at_risk.insert(id.to_string()) {
                    r.at_risk += 1;
                }
            }
            Fact::LateDispatch => r.late_dispatch += 1,
            Fact::Rejected(_) => r.rejected += 1,
        }
    }

    fn finish(mut self, key: &str) -> (Row, Vec<i64>) {
        self.times.sort_unstable();
        self.row.key = key.to_string();
        self.row.reply_time_ms = ReplyTimes {
            count: self.times.len() as u64,
            median: percentile(&self.times, 50),
            p95: percentile(&self.times, 95),
            max: self.times.last().copied(),
        };
        (self.row, self.times)
    }
}

/// What `e` counts for, and its (agency, service).
fn classify<'a>(
    e: &'a Event,
    requests: &HashMap<&str, &'a Event>,
) -> Option<(Fact<'a>, &'a str, &'a str)> {
    let provider = (e.recipient.as_str(), e.service.as_str());
    let fact = match e.kind {
        EventKind::Received if e.in_reply_to.is_empty() => Fact::Request,
        EventKind::ReplyReceived => {
            let req = requests.get(e.in_reply_to.as_str());
            let fact = Fact::Reply {
                kind: &e.reason,
                time_ms: req.map(|r| (e.at_ms - r.at_ms).max(0)),
            };
            // The reply's sender is the provider; the request says so first.
            let agency = req.map_or(e.sender.as_str(), |r| r.recipient.as_str());
            let service = if e.service.is_empty() {
                req.map_or("", |r| r.service.as_str())
            } else {
                &e.service
            };
            return Some((fact, agency, service));
        }
        EventKind::ReplyOnTime => Fact::OnTime,
        EventKind::ReplyLate => Fact::Late,
        EventKind::DeadlineBreached => Fact::Breached(&e.message_id),
        EventKind::DeadlineAtRisk => Fact::AtRisk(&e.message_id),
        EventKind::LateDispatch => return Some((Fact::LateDispatch, &e.sender, &e.service)),
        EventKind::Rejected => return Some((Fact::Rejected(e.code), &e.sender, &e.service)),
        _ => return None,
    };
    Some((fact, provider.0, provider.1))
}

/// Builds the report from the journal's events (all of them, in order:
/// replies in the period find their requests accepted before it).
pub fn build(events: &[Event], period: &Period, by: By, generated_at: DateTime<Utc>) -> SlaReport {
    let mut requests: HashMap<&str, &Event> = HashMap::new();
    for e in events {
        if e.kind == EventKind::Received && e.in_reply_to.is_empty() {
            requests.entry(e.message_id.as_str()).or_insert(e);
        }
    }
    let mut rows: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut total = Acc::default();
    let mut codes: BTreeMap<u32, u64> = BTreeMap::new();
    let mut counted = 0;
    for e in events.iter().filter(|e| period.contains(e.at_ms)) {
        let Some((fact, agency, service)) = classify(e, &requests) else {
            continue;
        };
        counted += 1;
        let key = match by {
            By::Agency => agency,
            By::Service => service,
        };
        let key = if key.is_empty() { UNKNOWN } else { key };
        if let Fact::Rejected(code) = fact {
            *codes.entry(code).or_default() += 1;
        }
        rows.entry(key).or_default().add(&fact);
        total.add(&fact);
    }
    let rows = rows.into_iter().map(|(k, acc)| acc.finish(k).0).collect();
    let (total, times) = total.finish(TOTAL);
    let mut histogram: Vec<Bucket> = BUCKETS
        .iter()
        .map(|&(label, upper_ms)| Bucket {
            label,
            upper_ms,
            count: 0,
        })
        .collect();
    for t in times {
        let i = BUCKETS
            .iter()
            .position(|(_, up)| up.is_none_or(|u| t < u))
            .unwrap_or(BUCKETS.len() - 1);
        histogram[i].count += 1;
    }
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    SlaReport {
        report: "sla",
        legal_basis: LEGAL_BASIS.to_vec(),
        generated_at: rfc(generated_at),
        period: PeriodView {
            label: period.label.clone(),
            first_day: period.first_day.to_string(),
            last_day: period.last_day.to_string(),
            time_zone: period.tz.name().to_string(),
            from_utc: rfc(period.from_utc()),
            to_utc: rfc(period.to_utc()),
        },
        by,
        events_counted: counted,
        rows,
        total,
        reply_time_histogram: histogram,
        rejected_by_code: codes
            .into_iter()
            .map(|(code, count)| CodeCount {
                code,
                name: mev_proto::ErrorCode::from_code(code).map_or("unknown", |c| c.name()),
                count,
            })
            .collect(),
    }
}

/// A duration for people: `850 ms`, `1.4 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub fn human_ms(ms: i64) -> String {
    let s = ms / 1000;
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", s / 60, s % 60)
    } else if ms < 86_400_000 {
        format!("{} h {} min", s / 3600, s / 60 % 60)
    } else {
        format!("{} d {} h", s / 86_400, s / 3600 % 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(95));
        assert_eq!(percentile(&v, 100), Some(100));
        assert_eq!(percentile(&v, 1), Some(1));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 95), Some(7));
        // Even counts take the lower middle; p95 of 10 is the 10th.
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000];
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(1000));
        // 20 values: p95 is the 19th.
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 95), Some(19));
        assert_eq!(percentile(&[1, 2], 50), Some(1));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(1_400), "1.4 s");
        assert_eq!(human_ms(185_000), "3 min 5 s");
        assert_eq!(human_ms(7_800_000), "2 h 10 min");
        assert_eq!(human_ms(3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
    }
}
