//! Checking the entries of the register one by one: deadline policies,
//! agencies, services and their references. Each function records every
//! problem it finds and returns only the entries that are sound.

use super::error::Problem;
use super::model::{
    Agency, AgencyKind, Change, Consumer, DeadlinePolicy, Document, Jurisdiction, Service,
    ServiceStatus,
};
use super::raw::{RawAgency, RawPolicy, RawService};
use super::schema::Schemas;
use chrono::NaiveDate;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use toml::value::Datetime;

/// What services may refer to.
pub(super) struct Known<'a> {
    pub(super) agencies: &'a HashSet<String>,
    pub(super) policies: &'a HashSet<String>,
    pub(super) schemas: &'a Schemas,
}

/// `services[UZ-00125]`, or `services[#3]` when the key is blank.
pub(super) fn entry_name(table: &str, key: &str, index: usize) -> String {
    if key.trim().is_empty() {
        format!("{table}[#{}]", index + 1)
    } else {
        format!("{table}[{key}]")
    }
}

pub(super) fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

pub(super) fn policies(
    raw: BTreeMap<String, RawPolicy>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, DeadlinePolicy> {
    let mut out = BTreeMap::new();
    for (name, p) in raw {
        let entry = format!("policies.{name}");
        let amount = |field: &str, value: Option<u32>, problems: &mut Vec<Problem>| match value {
            Some(n) if n > 0 => Some(n),
            Some(_) => {
                problems.push(Problem::new(&entry, format!("{field} must be at least 1")));
                None
            }
            None => {
                let message = format!("kind {:?} needs `{field}`", p.kind);
                problems.push(Problem::new(&entry, message));
                None
            }
        };
        let (policy, allowed) = match p.kind.as_str() {
            "next_working_day" => (Some(DeadlinePolicy::NextWorkingDay), ""),
            "working_days" => (
                amount("days", p.days, problems).map(|days| DeadlinePolicy::WorkingDays { days }),
                "days",
            ),
            "hours" => (
                amount("hours", p.hours, problems).map(|hours| DeadlinePolicy::Hours { hours }),
                "hours",
            ),
            "realtime" => (
                amount("seconds", p.seconds, problems)
                    .map(|seconds| DeadlinePolicy::Realtime { seconds }),
                "seconds",
            ),
            "none" => (Some(DeadlinePolicy::None), ""),
            other => {
                problems.push(Problem::new(
                    &entry,
                    format!(
                        "unknown kind {other:?}; expected next_working_day, working_days, hours, \
                         realtime or none"
                    ),
                ));
                continue;
            }
        };
        for (field, value) in [("days", p.days), ("hours", p.hours), ("seconds", p.seconds)] {
            if value.is_some() && field != allowed {
                let message = format!("`{field}` does not apply to kind {:?}", p.kind);
                problems.push(Problem::new(&entry, message));
            }
        }
        if let Some(policy) = policy {
            out.insert(name, policy);
        }
    }
    out
}

pub(super) fn agencies(
    raw: Vec<RawAgency>,
    calendars: Option<&BTreeSet<String>>,
    problems: &mut Vec<Problem>,
) -> (Vec<Agency>, HashMap<String, usize>) {
    let mut agencies = Vec::new();
    let mut index = HashMap::new();
    for (i, a) in raw.into_iter().enumerate() {
        let entry = entry_name("agencies", &a.id, i);
        let mut ok = true;
        let mut problem = |message: String| {
            problems.push(Problem::new(&entry, message));
            ok = false;
        };
        if blank(&a.id) || a.id.chars().any(char::is_whitespace) {
            problem(format!("id {:?} must be non-empty, without spaces", a.id));
        } else if index.contains_key(&a.id) {
            problem("agency id used twice".to_owned());
        }
        if blank(&a.name) {
            problem("name is empty".to_owned());
        }
        let kind = AgencyKind::parse(&a.kind);
        if kind.is_none() {
            problem(format!(
                "kind {:?} is not federal, regional, municipal or other (Tatarstan §1.3)",
                a.kind
            ));
        }
        let time_zone = a.jurisdiction.time_zone.parse::<chrono_tz::Tz>();
        if let Err(e) = &time_zone {
            problem(format!(
                "time zone {:?} is not an IANA time zone ({e}); times are local (KZ §10)",
                a.jurisdiction.time_zone
            ));
        }
        let calendar = &a.jurisdiction.calendar;
        if blank(calendar) {
            problem("calendar is empty".to_owned());
        } else if let Some(names) = calendars {
            if !names.contains(calendar) {
                let known: Vec<&str> = names.iter().map(String::as_str).collect();
                problem(format!(
                    "calendar {calendar:?} has no file calendars/{calendar}.toml (present: {})",
                    known.join(", ")
                ));
            }
        }
        if let (true, Some(kind), Ok(time_zone)) = (ok, kind, time_zone) {
            index.insert(a.id.clone(), agencies.len());
            agencies.push(Agency {
                id: a.id,
                name: a.name,
                kind,
                jurisdiction: Jurisdiction {
                    time_zone,
                    calendar: a.jurisdiction.calendar,
                },
            });
        }
    }
    (agencies, index)
}

/// A TOML local date (`2021-04-01`, unquoted) as a chrono date.
fn date(value: &Datetime) -> Result<NaiveDate, String> {
    match (value.date, value.time, value.offset) {
        (Some(d), None, None) => {
            NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                .ok_or_else(|| format!("{value} is not a calendar date"))
        }
        _ => Err(format!(
            "{value} is not a plain date (write it as YYYY-MM-DD)"
        )),
    }
}

pub(super) fn service(
    s: RawService,
    entry: &str,
    known: &Known<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Service> {
    let before = problems.len();
    let mut problem = |message: String| problems.push(Problem::new(entry, message));
    if blank(&s.number) || s.number.chars().any(char::is_whitespace) {
        problem(format!(
            "registry number {:?} must be non-empty, without spaces (UZ annex 1 §16)",
            s.number
        ));
    }
    if blank(&s.name) {
        problem("name is empty".to_owned());
    }
    if !known.agencies.contains(&s.provider) {
        problem(format!(
            "provider {:?} is not a registered agency",
            s.provider
        ));
    }
    let status = match s.status.as_str() {
        "active" => {
            if s.abolished_on.is_some() || s.abolished_reason.is_some() {
                problem("an active service has no abolished_on or abolished_reason".to_owned());
            }
            Some(ServiceStatus::Active)
        }
        "abolished" => {
            let on = match s.abolished_on.as_ref().map(date) {
                Some(Ok(on)) => Some(on),
                Some(Err(e)) => {
                    problem(format!("abolished_on: {e}"));
                    None
                }
                None => {
                    problem("abolished without abolished_on: the date of abolition is recorded (UZ annex 1 §16)".to_owned());
                    None
                }
            };
            let reason = s.abolished_reason.filter(|r| !blank(r));
            if reason.is_none() {
                problem("abolished without abolished_reason: the grounds of abolition are recorded (UZ annex 1 §16)".to_owned());
            }
            on.zip(reason)
                .map(|(on, reason)| ServiceStatus::Abolished { on, reason })
        }
        other => {
            problem(format!("status {other:?} is not active or abolished"));
            None
        }
    };
    let active = matches!(status, Some(ServiceStatus::Active));
    if active && s.consumers.is_empty() {
        problem("an active service lists no consumers allowed to ask (UZ annex 2 §21)".to_owned());
    }
    let mut seen = HashSet::new();
    for (i, c) in s.consumers.iter().enumerate() {
        let at = if blank(&c.agency) {
            format!("consumers[#{}]", i + 1)
        } else {
            format!("consumers[{}]", c.agency)
        };
        if !known.agencies.contains(&c.agency) {
            problem(format!("{at}: {:?} is not a registered agency", c.agency));
        }
        if c.agency == s.provider {
            problem(format!("{at}: the provider may not ask itself"));
        }
        if !seen.insert(c.agency.as_str()) {
            problem(format!("{at}: listed twice"));
        }
        if blank(&c.legal_basis) {
            problem(format!(
                "{at}: no legal_basis; a consumer asks only within its competence (UZ annex 2 §21)"
            ));
        }
    }
    // An abolished service's formats may have been removed with it (RU 963 §7).
    if known.schemas.complete && s.status != "abolished" {
        for (field, name) in [
            ("request_schema", &s.request_schema),
            ("reply_schema", &s.reply_schema),
        ] {
            if !known.schemas.contains(name) {
                problem(format!(
                    "{field} {name:?} is not a message in payloads/*.proto (RU 963 §6)"
                ));
            }
        }
    }
    for (field, name) in [
        ("deadline", Some(&s.deadline)),
        ("archive_deadline", s.archive_deadline.as_ref()),
    ] {
        if let Some(name) = name {
            if !known.policies.contains(name) {
                problem(format!("{field} {name:?} is not a policy in [policies]"));
            }
        }
    }
    let mut changes = Vec::new();
    for (i, c) in s.changes.into_iter().enumerate() {
        match date(&c.date) {
            Ok(d) => {
                if changes.last().is_some_and(|prev: &Change| prev.date > d) {
                    problem(format!("changes[#{}]: not in date order", i + 1));
                }
                if blank(&c.substance) {
                    problem(format!(
                        "changes[#{}]: the substance of a change is recorded (UZ annex 1 §15)",
                        i + 1
                    ));
                }
                changes.push(Change {
                    date: d,
                    substance: c.substance,
                });
            }
            Err(e) => problem(format!("changes[#{}].date: {e}", i + 1)),
        }
    }
    if active && s.documents.is_empty() {
        problem(
            "an active service lists no documents it provides (UZ annex 1 appendix 2; RU 963 §7)"
                .to_owned(),
        );
    }
    let mut codes = HashSet::new();
    for (i, d) in s.documents.iter().enumerate() {
        if blank(&d.code) {
            problem(format!("documents[#{}]: code is empty", i + 1));
        } else if !codes.insert(d.code.as_str()) {
            problem(format!("documents[{}]: code listed twice", d.code));
        }
        if blank(&d.title) {
            problem(format!("documents[#{}]: title is empty", i + 1));
        }
    }
    let status = status?;
    if problems.len() > before {
        return None;
    }
    Some(Service {
        number: s.number,
        name: s.name,
        regulation: s.regulation,
        provider: s.provider,
        consumers: s
            .consumers
            .into_iter()
            .map(|c| Consumer {
                agency: c.agency,
                legal_basis: c.legal_basis,
            })
            .collect(),
        request_schema: s.request_schema,
        reply_schema: s.reply_schema,
        deadline: s.deadline,
        archive_deadline: s.archive_deadline,
        status,
        changes,
        documents: s
            .documents
            .into_iter()
            .map(|d| Document {
                code: d.code,
                title: d.title,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_be_plain_dates() {
        let d: Datetime = "2021-04-01".parse().expect("a TOML date");
        assert_eq!(
            date(&d),
            NaiveDate::from_ymd_opt(2021, 4, 1).ok_or_else(String::new)
        );
        let dt: Datetime = "2021-04-01T10:00:00Z".parse().expect("a TOML datetime");
        assert!(date(&dt).is_err());
    }
}
