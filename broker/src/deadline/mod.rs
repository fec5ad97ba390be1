//! Working-day calendars and the deadlines the exchange enforces.
//!
//! The legal deadlines (see `/work/shared/DOMAIN.md`, "Deadlines"):
//!
//! - the provider replies, or refuses with reasons, within the working day
//!   following the day the request was sent (UZ annex 2 §13, §18, §22; annex 1
//!   §8): [`DeadlinePolicy::NextWorkingDay`], counted in the **provider's**
//!   calendar and local time;
//! - some interactions are approved with another deadline (Tatarstan §2.7):
//!   `n` working days ([`DeadlinePolicy::WorkingDays`], e.g. two for a
//!   technical-error appeal, Tatarstan §3.14), 48 hours for electronic replies
//!   or 2 seconds in real-time mode (RU 963 §10), or none;
//! - archive certificates and data based on archive documents are exempt from
//!   the one-working-day rule (UZ annex 1 §8, annex 2 §22): archive requests
//!   follow the service's `archive_deadline`;
//! - the consumer sends its request within one working day after the day it
//!   received the applicant's application (UZ annex 2 §12), counted in the
//!   **consumer's** calendar: [`dispatch_deadline`], [`is_late_dispatch`].
//!
//! Working days follow each jurisdiction's official calendar (weekends, public
//! holidays, transferred days off and working days, shortened pre-holiday
//! days) and times are local (KZ §10). Calendars are data: `schemas/calendars/
//! <name>.toml`, one per calendar an agency names, loaded by
//! [`Calendars::load`]; the format is described on [`calendar`]. A calendar
//! covers the years it lists and no others: a day in any other year is
//! [`CalendarError::YearNotCovered`], never a weekend-only guess. A year may be
//! listed as incomplete (its decree not yet published or not verified); the
//! days known are used and deadlines counted over such a year are marked
//! [`Deadline::provisional`].
//!
//! ## Layout
//! - [`calendar`]: [`Calendar`], [`Calendars`], [`CalendarError`], the file format.
//! - [`compute`](mod@compute): [`compute`](compute::compute) a deadline from a policy,
//!   [`for_request`] from a request header and the register, the dispatch
//!   deadline, at-risk instants, local-time display.
//! - [`track`]: what a request, a reply and a fired timer do to an open
//!   request's deadline (events, notices, counters), inside the batch's transaction.
//! - [`timers`]: the durable timer task.

pub mod compute;
pub mod timers;
pub mod track;

/// The working-day calendars live with the register that loads them.
pub use crate::register::calendar::{
    self, Calendar, CalendarError, Calendars, DayKind, WorkingHours, YearCoverage,
};
pub use compute::{
    at_risk_at, compute, compute_detailed, dispatch_deadline, dispatch_deadline_detailed,
    for_request, format_local, is_late_dispatch, Deadline, DeadlineError, RequestDeadlines,
};

pub use crate::register::DeadlinePolicy;
