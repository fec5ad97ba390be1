//! The entries of the Unified Register, as loaded and validated: agencies,
//! services, their consumers, documents and history, and deadline policies.
//!
//! These are plain data; [`Register::load`](super::Register::load) builds
//! them from `register.toml` and guarantees the invariants stated on each
//! type (known agencies, unique registry numbers, known schemas and policies).

use chrono::{NaiveDate, TimeDelta};
use chrono_tz::Tz;
use std::fmt;

/// The kind of a body taking part in the exchange (Tatarstan §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgencyKind {
    /// A federal body, or a central (national) body of a unitary state.
    Federal,
    /// A regional executive body (a subject of a federation, an oblast, a city of republican status).
    Regional,
    /// A local self-government body (a municipality, a district khokimiyat, an akimat).
    Municipal,
    /// Any other organisation entrusted with state services (a public service centre, a state corporation).
    Other,
}

impl AgencyKind {
    /// The spelling used in `register.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgencyKind::Federal => "federal",
            AgencyKind::Regional => "regional",
            AgencyKind::Municipal => "municipal",
            AgencyKind::Other => "other",
        }
    }

    /// Parses the spelling used in `register.toml`.
    pub fn parse(s: &str) -> Option<AgencyKind> {
        match s {
            "federal" => Some(AgencyKind::Federal),
            "regional" => Some(AgencyKind::Regional),
            "municipal" => Some(AgencyKind::Municipal),
            "other" => Some(AgencyKind::Other),
            _ => None,
        }
    }
}

impl fmt::Display for AgencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an agency's times and working days are counted: all time parameters
/// are local (KZ §10) and working days follow the jurisdiction's calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jurisdiction {
    /// The IANA time zone of the agency's seat, e.g. `Asia/Tashkent`.
    pub time_zone: Tz,
    /// The name of the working-day calendar, a file `calendars/<name>.toml`, e.g. `uz`.
    pub calendar: String,
}

/// A state body or organisation registered with the exchange: a data consumer,
/// a data provider, or both (RU 963 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    /// The agency's id, unique in the register, e.g. `UZ-GNK`; certificates are bound to it.
    pub id: String,
    /// The agency's official name.
    pub name: String,
    /// Federal, regional, municipal or other (Tatarstan §1.3).
    pub kind: AgencyKind,
    /// Time zone and working-day calendar.
    pub jurisdiction: Jurisdiction,
}

/// A named rule for the required reply deadline of an interaction, fixed when
/// the interaction is approved (Tatarstan §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadlinePolicy {
    /// By the end of the working day following the day the request was sent
    /// (UZ annex 2 §13, §22; annex 1 §8).
    NextWorkingDay,
    /// By the end of the `days`-th working day following the day the request
    /// was sent (e.g. two working days for a technical-error appeal, Tatarstan §3.14).
    WorkingDays {
        /// How many working days; at least 1.
        days: u32,
    },
    /// Within `hours` hours from sending (RU 963 §10: no more than 48 hours).
    Hours {
        /// How many hours; at least 1.
        hours: u32,
    },
    /// Real-time mode: request to reply within `seconds` seconds (RU 963 §10: no more than 2).
    Realtime {
        /// How many seconds; at least 1.
        seconds: u32,
    },
    /// No deadline is tracked (e.g. archive requests, exempt from the
    /// one-working-day rule, UZ annex 1 §8, annex 2 §22).
    None,
}

impl DeadlinePolicy {
    /// The deadline as a fixed span from sending, for the policies that are
    /// one (hours, real time); `None` for calendar-based or untracked ones.
    pub fn fixed_duration(&self) -> Option<TimeDelta> {
        match *self {
            DeadlinePolicy::Hours { hours } => Some(TimeDelta::hours(i64::from(hours))),
            DeadlinePolicy::Realtime { seconds } => Some(TimeDelta::seconds(i64::from(seconds))),
            _ => None,
        }
    }

    /// Whether the policy counts working days of the provider's calendar.
    pub fn uses_calendar(&self) -> bool {
        matches!(
            self,
            DeadlinePolicy::NextWorkingDay | DeadlinePolicy::WorkingDays { .. }
        )
    }
}

impl fmt::Display for DeadlinePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadlinePolicy::NextWorkingDay => f.write_str("next working day"),
            DeadlinePolicy::WorkingDays { days } => write!(f, "{days} working day(s)"),
            DeadlinePolicy::Hours { hours } => write!(f, "{hours} hour(s)"),
            DeadlinePolicy::Realtime { seconds } => write!(f, "real time, {seconds} s"),
            DeadlinePolicy::None => f.write_str("no deadline"),
        }
    }
}

/// An agency allowed to ask for a service, with the legal basis that puts
/// the matter within its competence (UZ annex 2 §21, Tatarstan §3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// The consumer agency's id; never the provider itself.
    pub agency: String,
    /// The legal act (and article) entitling it to ask.
    pub legal_basis: String,
}

/// A document or piece of data the service provides through the exchange
/// (UZ annex 1, appendix 2, column 10; RU 963 §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The document's code, unique within the service; requests list it (UZ annex 2 §14 item 5).
    pub code: String,
    /// The document's title.
    pub title: String,
}

/// A recorded change to a service entry: its date and substance (UZ annex 1 §15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// When the change was made.
    pub date: NaiveDate,
    /// What was changed and on what grounds (UZ annex 1 §14).
    pub substance: String,
}

/// Whether a service can still be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceStatus {
    /// In force: requests are routed.
    Active,
    /// Abolished: the entry and its number stay in the register and the
    /// number is never given to another service (UZ annex 1 §16, §17).
    Abolished {
        /// The date of abolition.
        on: NaiveDate,
        /// The grounds for abolition.
        reason: String,
    },
}

/// A registered interaction: who answers, who may ask, in which formats and
/// within which deadline (Tatarstan §2.7, §2.9; RU 963 §6, §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The unique registry number, e.g. `UZ-00125` (UZ annex 1 §16, §17).
    pub number: String,
    /// The service's name.
    pub name: String,
    /// The regulation (регламент) of the service, if recorded.
    pub regulation: Option<String>,
    /// The id of the provider agency: the body holding the documents, which answers.
    pub provider: String,
    /// The agencies allowed to ask, each with its legal basis (UZ annex 2 §21).
    pub consumers: Vec<Consumer>,
    /// The fully-qualified protobuf message name of the request payload.
    pub request_schema: String,
    /// The fully-qualified protobuf message name of the reply payload.
    pub reply_schema: String,
    /// The name of the deadline policy for ordinary requests.
    pub deadline: String,
    /// The name of the deadline policy for archive requests (UZ annex 1 §8,
    /// annex 2 §22); without one, archive requests follow [`Service::deadline`].
    pub archive_deadline: Option<String>,
    /// Active, or abolished with date and reason.
    pub status: ServiceStatus,
    /// The recorded changes, oldest first (UZ annex 1 §15).
    pub changes: Vec<Change>,
    /// The documents the service provides.
    pub documents: Vec<Document>,
}

impl Service {
    /// Whether the service is in force.
    pub fn is_active(&self) -> bool {
        matches!(self.status, ServiceStatus::Active)
    }

    /// The consumer entry for `agency`, if it may ask for this service.
    pub fn consumer(&self, agency: &str) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.agency == agency)
    }

    /// The provided document with this code, if any.
    pub fn document(&self, code: &str) -> Option<&Document> {
        self.documents.iter().find(|d| d.code == code)
    }

    /// The name of the deadline policy for a request, by its archive flag.
    pub fn deadline_policy_name(&self, archive: bool) -> &str {
        match (&self.archive_deadline, archive) {
            (Some(name), true) => name,
            _ => &self.deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agency_kind_spellings_round_trip() {
        for kind in [
            AgencyKind::Federal,
            AgencyKind::Regional,
            AgencyKind::Municipal,
            AgencyKind::Other,
        ] {
            assert_eq!(AgencyKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AgencyKind::parse("national"), None);
    }

    #[test]
    fn fixed_durations() {
        assert_eq!(
            DeadlinePolicy::Hours { hours: 48 }.fixed_duration(),
            Some(TimeDelta::hours(48))
        );
        assert_eq!(
            DeadlinePolicy::Realtime { seconds: 2 }.fixed_duration(),
            Some(TimeDelta::seconds(2))
        );
        assert_eq!(DeadlinePolicy::NextWorkingDay.fixed_duration(), None);
        assert!(DeadlinePolicy::WorkingDays { days: 2 }.uses_calendar());
    }
}
