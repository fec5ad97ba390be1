//! Computing deadlines from a policy, a sending instant and a calendar.
//!
//! | policy | deadline | clause |
//! |---|---|---|
//! | [`NextWorkingDay`](DeadlinePolicy::NextWorkingDay) | close of business of the first working day after the (local) day of sending | UZ annex 2 §13, §18, §22; annex 1 §8 |
//! | [`WorkingDays { n }`](DeadlinePolicy::WorkingDays) | close of business of the `n`-th working day after the day of sending | Tatarstan §2.7, §3.14 |
//! | [`Hours { h }`](DeadlinePolicy::Hours) | sending + `h` hours, whatever the calendar | RU 963 §10 (48 hours) |
//! | [`Realtime { s }`](DeadlinePolicy::Realtime) | sending + `s` seconds | RU 963 §10 (2 seconds) |
//! | [`None`](DeadlinePolicy::None) | no deadline | UZ annex 1 §8, annex 2 §22 (archive requests) |
//!
//! Working days are the provider's (the calendar of its jurisdiction, in its
//! local time, KZ §10); the day of sending is the local date of `sent_at`, and
//! is not counted whatever its time ("the working day following the day the
//! request was sent"), so a request sent at 23:59:59 on a Tuesday is due by the
//! close of Wednesday, and one sent on a Friday evening by the close of the
//! next working day, usually Monday.

use crate::register::calendar::{Calendar, CalendarError, Calendars};
use crate::register::{DeadlinePolicy, Register};
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use mev_proto::pb::Header;
use mev_proto::time::from_wire;

/// A computed deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The instant by which the reply (or the request) is due.
    pub at: DateTime<Utc>,
    /// For working-day rules, the working day whose close of business is the deadline.
    pub working_day: Option<NaiveDate>,
    /// Some day counted lies in a year the calendar marks incomplete (its
    /// decree not yet published or not verified): a day off not yet entered
    /// would move the deadline later.
    pub provisional: bool,
}

/// A deadline could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DeadlineError {
    /// The calendar cannot answer (year not covered, unknown calendar, ...).
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    /// The deadline falls outside the range of representable instants.
    #[error("the deadline ({policy}) from {sent_at} is out of range")]
    OutOfRange {
        /// The policy applied.
        policy: DeadlinePolicy,
        /// The instant of sending.
        sent_at: DateTime<Utc>,
    },
    /// A time the computation needs is missing from the header or out of range.
    #[error("header.{field}: missing or out of range")]
    MissingTime {
        /// The header field, e.g. `sent_at`.
        field: &'static str,
    },
    /// The header names no registered service.
    #[error("header.service: no service with registry number {0:?}")]
    UnknownService(String),
    /// An agency the computation needs is not registered.
    #[error("{role} {agency:?} is not a registered agency")]
    UnknownAgency {
        /// `provider` or `consumer`.
        role: &'static str,
        /// The agency id.
        agency: String,
    },
    /// The policy the request names or the service's policy is not registered.
    #[error(
        "no registered deadline policy for service {service} \
         (header.deadline_policy {override_name:?}, archive {archive})"
    )]
    UnknownPolicy {
        /// The service's registry number.
        service: String,
        /// The header's per-interaction override, empty if none.
        override_name: String,
        /// The header's archive flag.
        archive: bool,
    },
}

/// The deadline of `policy` for a request sent at `sent_at`, counted in the
/// provider's `calendar` (see the table on this module); `None` when the
/// policy tracks no deadline.
pub fn compute(
    policy: &DeadlinePolicy,
    sent_at: DateTime<Utc>,
    calendar: &Calendar,
) -> Result<Option<DateTime<Utc>>, DeadlineError> {
    Ok(compute_detailed(policy, sent_at, calendar)?.map(|d| d.at))
}

/// As [`compute`], with the working day and whether the result is provisional.
pub fn compute_detailed(
    policy: &DeadlinePolicy,
    sent_at: DateTime<Utc>,
    calendar: &Calendar,
) -> Result<Option<Deadline>, DeadlineError> {
    if let Some(span) = policy.fixed_duration() {
        // Hours and real time: a span from sending, whatever the calendar (RU 963 §10).
        let at = sent_at
            .checked_add_signed(span)
            .ok_or(DeadlineError::OutOfRange {
                policy: *policy,
                sent_at,
            })?;
        return Ok(Some(Deadline {
            at,
            working_day: None,
            provisional: false,
        }));
    }
    match *policy {
        // UZ annex 2 §13, §18, §22; annex 1 §8.
        DeadlinePolicy::NextWorkingDay => Ok(Some(working_days_after(sent_at, 1, calendar)?)),
        // Tatarstan §2.7 (e.g. two working days, §3.14); the register refuses days = 0.
        DeadlinePolicy::WorkingDays { days } => {
            Ok(Some(working_days_after(sent_at, days, calendar)?))
        }
        _ => Ok(None),
    }
}

/// The consumer's deadline for sending its interagency request: the close of
/// business of the working day following the day it received the
/// applicant's application, in the **consumer's** calendar (UZ annex 2 §12;
/// schema stage 3).
pub fn dispatch_deadline(
    application_received_at: DateTime<Utc>,
    consumer_calendar: &Calendar,
) -> Result<DateTime<Utc>, DeadlineError> {
    Ok(dispatch_deadline_detailed(application_received_at, consumer_calendar)?.at)
}

/// As [`dispatch_deadline`], with the working day and whether it is provisional.
pub fn dispatch_deadline_detailed(
    application_received_at: DateTime<Utc>,
    consumer_calendar: &Calendar,
) -> Result<Deadline, DeadlineError> {
    working_days_after(application_received_at, 1, consumer_calendar)
}

/// Whether a request sent at `sent_at` was sent after its dispatch deadline
/// (UZ annex 2 §12). A late request is still routed: a late or missing step
/// is not a reason to refuse the applicant (UZ annex 2 §17).
pub fn is_late_dispatch(
    application_received_at: DateTime<Utc>,
    sent_at: DateTime<Utc>,
    consumer_calendar: &Calendar,
) -> Result<bool, DeadlineError> {
    Ok(sent_at > dispatch_deadline(application_received_at, consumer_calendar)?)
}

/// The instant when `fraction` of the time from `start` to `deadline` has
/// elapsed, for at-risk warnings (e.g. `0.8`: 80% of the time is used up).
/// `fraction` is clamped to `0..=1` (NaN counts as 1); a deadline not after
/// `start` is returned as is. Millisecond precision.
pub fn at_risk_at(start: DateTime<Utc>, deadline: DateTime<Utc>, fraction: f64) -> DateTime<Utc> {
    let fraction = if fraction.is_nan() {
        1.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let span = deadline - start;
    if span <= TimeDelta::zero() {
        return deadline;
    }
    // An i64 of milliseconds spans ±292 million years: no precision is lost
    // for any real deadline, and the product stays within the span.
    let millis = (span.num_milliseconds() as f64 * fraction).round() as i64;
    start + TimeDelta::milliseconds(millis)
}

/// An instant as local time of the calendar's zone, for people and reports:
/// all time parameters are recorded in local time (KZ §10). E.g.
/// `2025-11-03 18:00:00 +03:00 (Europe/Moscow)`.
pub fn format_local(instant: DateTime<Utc>, calendar: &Calendar) -> String {
    format!(
        "{} ({})",
        calendar.to_local(instant).format("%Y-%m-%d %H:%M:%S %:z"),
        calendar.time_zone().name()
    )
}

/// The deadlines of a request, as the register and the calendars fix them.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestDeadlines<'a> {
    /// The name of the policy governing the reply (see [`Register::policy_for`]).
    pub policy_name: &'a str,
    /// That policy.
    pub policy: DeadlinePolicy,
    /// The provider's reply deadline, in the provider's calendar; `None` when
    /// the policy tracks none.
    pub reply: Option<Deadline>,
    /// The consumer's dispatch deadline (UZ annex 2 §12), in the consumer's
    /// calendar, when the header gives `application_received_at`.
    pub dispatch: Option<Deadline>,
    /// Whether the request was sent after its dispatch deadline.
    pub late_dispatch: bool,
}

/// The deadlines of a request header.
///
/// The reply deadline follows the policy [`Register::policy_for`] chooses: the
/// header's per-interaction override (Tatarstan §2.7), else the service's
/// `archive_deadline` for an archive request (UZ annex 1 §8, annex 2 §22),
/// else the service's `deadline`; it is counted from `sent_at` in the
/// calendar and time zone of the provider's jurisdiction. The dispatch
/// deadline is counted from `application_received_at` in the sender's
/// (consumer's) calendar (UZ annex 2 §12).
pub fn for_request<'a>(
    register: &'a Register,
    calendars: &Calendars,
    header: &'a Header,
) -> Result<RequestDeadlines<'a>, DeadlineError> {
    let service = register
        .service(&header.service)
        .ok_or_else(|| DeadlineError::UnknownService(header.service.clone()))?;
    let (policy_name, policy) =
        register
            .policy_for(service, header)
            .ok_or_else(|| DeadlineError::UnknownPolicy {
                service: service.number.clone(),
                override_name: header.deadline_policy.clone(),
                archive: header.archive,
            })?;
    let sent_at = header
        .sent_at
        .as_ref()
        .and_then(from_wire)
        .ok_or(DeadlineError::MissingTime { field: "sent_at" })?;
    let provider =
        register
            .agency(&service.provider)
            .ok_or_else(|| DeadlineError::UnknownAgency {
                role: "provider",
                agency: service.provider.clone(),
            })?;
    let provider_calendar = calendars.for_jurisdiction(&provider.jurisdiction)?;
    let reply = compute_detailed(policy, sent_at, &provider_calendar)?;

    let mut dispatch = None;
    let mut late_dispatch = false;
    if let Some(received) = &header.application_received_at {
        let received = from_wire(received).ok_or(DeadlineError::MissingTime {
            field: "application_received_at",
        })?;
        let consumer =
            register
                .agency(&header.sender)
                .ok_or_else(|| DeadlineError::UnknownAgency {
                    role: "consumer",
                    agency: header.sender.clone(),
                })?;
        let consumer_calendar = calendars.for_jurisdiction(&consumer.jurisdiction)?;
        let deadline = dispatch_deadline_detailed(received, &consumer_calendar)?;
        late_dispatch = sent_at > deadline.at;
        dispatch = Some(deadline);
    }
    Ok(RequestDeadlines {
        policy_name,
        policy: *policy,
        reply,
        dispatch,
        late_dispatch,
    })
}

/// The close of business of the `n`-th working day after the local day of `start`.
fn working_days_after(
    start: DateTime<Utc>,
    n: u32,
    calendar: &Calendar,
) -> Result<Deadline, DeadlineError> {
    let day = calendar.local_date(start);
    let due = calendar.add_working_days(day, n)?;
    let at = calendar.close_of_business(due)?;
    // The days examined are those after `day` up to `due`.
    let first = day.succ_opt().unwrap_or(day).year().min(due.year());
    let mut provisional = false;
    for year in first..=due.year() {
        provisional |= !calendar.is_complete(year)?;
    }
    Ok(Deadline {
        at,
        working_day: Some(due),
        provisional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339 instant")
    }

    #[test]
    fn at_risk_is_the_fraction_of_the_span() {
        let start = utc("2025-11-18T09:00:00Z");
        let deadline = utc("2025-11-19T15:00:00Z");
        assert_eq!(
            at_risk_at(start, deadline, 0.5),
            utc("2025-11-19T00:00:00Z")
        );
        assert_eq!(at_risk_at(start, deadline, 0.0), start);
        assert_eq!(at_risk_at(start, deadline, 1.0), deadline);
        assert_eq!(at_risk_at(start, deadline, 7.0), deadline);
        assert_eq!(at_risk_at(start, deadline, -1.0), start);
        assert_eq!(at_risk_at(start, deadline, f64::NAN), deadline);
        // Real time: 80% of two seconds.
        let rt = start + TimeDelta::seconds(2);
        assert_eq!(
            at_risk_at(start, rt, 0.8),
            start + TimeDelta::milliseconds(1600)
        );
        // A deadline already passed at the start.
        assert_eq!(at_risk_at(deadline, start, 0.5), start);
    }

    #[test]
    fn fixed_spans_ignore_the_calendar() {
        let cal = Calendar::parse(
            "t",
            "name = \"T\"\ntime_zone = \"UTC\"\nweekend = [\"sat\", \"sun\"]\n\
             business_hours = { start = \"09:00\", end = \"18:00\" }\n\
             [years.2025]\ncomplete = true\n",
        )
        .expect("parses");
        // 2030 is not covered, and need not be for hours and real time.
        let sent = utc("2030-06-01T10:00:00Z");
        let hours = compute(&DeadlinePolicy::Hours { hours: 48 }, sent, &cal).unwrap();
        assert_eq!(hours, Some(utc("2030-06-03T10:00:00Z")));
        let rt = compute(&DeadlinePolicy::Realtime { seconds: 2 }, sent, &cal).unwrap();
        assert_eq!(rt, Some(utc("2030-06-01T10:00:02Z")));
        assert_eq!(compute(&DeadlinePolicy::None, sent, &cal).unwrap(), None);
        let err = compute(&DeadlinePolicy::NextWorkingDay, sent, &cal).unwrap_err();
        assert_eq!(
            err.to_string(),
            "calendar \"t\" does not cover the year 2030 (no [years.2030] in calendars/t.toml)"
        );
        let far = DateTime::<Utc>::MAX_UTC;
        let err = compute(&DeadlinePolicy::Hours { hours: 1 }, far, &cal).unwrap_err();
        assert!(matches!(err, DeadlineError::OutOfRange { .. }), "{err:?}");
        assert_eq!(
            format_local(utc("2025-03-07T12:00:00Z"), &cal),
            "2025-03-07 12:00:00 +00:00 (UTC)"
        );
    }
}
