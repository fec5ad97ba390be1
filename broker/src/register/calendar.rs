//! Working-day calendars, loaded from TOML (`schemas/calendars/<name>.toml`).
//!
//! Working days follow each jurisdiction's official calendar: weekly
//! weekends, public holidays, days off transferred or added by decree,
//! weekend days made working days, and shortened pre-holiday days (e.g. TK RF
//! art. 95: one hour shorter). Times are local (KZ §10).
//!
//! ## The file format
//!
//! ```toml
//! name = "Russian Federation"            # a title for people
//! time_zone = "Europe/Moscow"            # IANA name; the default zone (see below)
//! weekend = ["saturday", "sunday"]       # weekly days off ("sat" or "saturday")
//! business_hours = { start = "09:00", end = "18:00" }   # close of business = end
//! pre_holiday_shortening_minutes = 60    # how much `shortened` days end earlier (default 0)
//!
//! [years.2025]                           # one table per year covered
//! complete = true                        # false: decree not published / not verified
//! # note = "..."                         # required when complete = false: what is missing
//! holidays = [                           # non-working public holidays, any weekday
//!   { date = 2025-01-01, name = "New Year holidays" },   # TK RF art. 112
//! ]
//! days_off = [                           # weekdays made non-working (transfers, additions)
//!   { date = 2025-05-02, name = "day off transferred from Sat 4 Jan" },  # resolution No. 1335
//! ]
//! working_days = [                       # weekend days made working days
//!   { date = 2025-11-01, name = "working Saturday" },     # resolution No. 1335
//! ]
//! shortened = [                          # working days ending earlier
//!   { date = 2025-04-30 },                               # TK RF art. 95
//! ]
//! ```
//!
//! Every entry cites its source in a comment. Dates are unquoted TOML dates.
//! Loading checks that each date lies in its year, is listed once, that
//! `working_days` are weekend days, `days_off` are not, and `shortened` days
//! are working days; unknown fields are errors.
//!
//! A calendar covers exactly the years it lists: asking about a day of any
//! other year is [`CalendarError::YearNotCovered`], never a weekend-only
//! guess. A year with `complete = false` holds only what is certain (e.g. the
//! fixed-date statutory holidays); its days are used, and callers can tell it
//! apart with [`Calendar::is_complete`] (deadlines counted over it are marked
//! provisional, see [`Deadline`](crate::deadline::Deadline)).
//!
//! Holidays are national, but local time is not (Russia spans eleven zones):
//! the file's `time_zone` is a default, and [`Calendars::for_jurisdiction`]
//! gives the calendar in the zone of the agency's jurisdiction.

use super::Jurisdiction;
use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::value::Datetime;

/// How many days ahead a working day is looked for before giving up.
pub const MAX_SCAN_DAYS: u32 = 400;

/// A calendar could not be loaded, or cannot answer for a date.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// A calendar file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A calendar file is not valid TOML or breaks a rule of the format.
    #[error("calendar {calendar:?}: {message}")]
    Invalid {
        /// The calendar's name (its file stem).
        calendar: String,
        /// Every problem found, naming the field and date.
        message: String,
    },
    /// The calendar does not list the year asked about.
    #[error(
        "calendar {calendar:?} does not cover the year {year} \
         (no [years.{year}] in calendars/{calendar}.toml)"
    )]
    YearNotCovered {
        /// The calendar's name.
        calendar: String,
        /// The year asked about.
        year: i32,
    },
    /// A working-day operation was asked of a day that is not a working day.
    #[error("calendar {calendar:?}: {date} ({weekday}) is not a working day", weekday = date.weekday())]
    NotAWorkingDay {
        /// The calendar's name.
        calendar: String,
        /// The day.
        date: NaiveDate,
    },
    /// No working day follows the date within [`MAX_SCAN_DAYS`].
    #[error("calendar {calendar:?}: no working day within {MAX_SCAN_DAYS} days after {after}")]
    NoWorkingDay {
        /// The calendar's name.
        calendar: String,
        /// The day the search started after.
        after: NaiveDate,
    },
    /// No calendar of that name is loaded.
    #[error("no calendar named {name:?} (loaded: {known})")]
    UnknownCalendar {
        /// The name asked for.
        name: String,
        /// The names loaded, comma-separated.
        known: String,
    },
}

/// What a day is in a calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayKind<'a> {
    /// A working day (possibly a weekend day made working by decree).
    Working {
        /// Whether it ends early (a pre-holiday day).
        shortened: bool,
    },
    /// A weekly day off.
    Weekend,
    /// A non-working public holiday, with its name.
    Holiday(&'a str),
    /// A weekday made non-working by decree (transferred or additional), with its description.
    DayOff(&'a str),
}

impl DayKind<'_> {
    /// Whether the day is a working day.
    pub fn is_working(&self) -> bool {
        matches!(self, DayKind::Working { .. })
    }
}

/// The business hours of a working day, local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingHours {
    /// Start of business.
    pub start: NaiveTime,
    /// Close of business: the end of the day for deadline purposes.
    pub end: NaiveTime,
    /// Whether `end` is earlier than usual (a shortened pre-holiday day).
    pub shortened: bool,
}

/// Whether a calendar's year is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YearCoverage<'a> {
    /// The year.
    pub year: i32,
    /// Every non-working day decreed for the year is entered.
    pub complete: bool,
    /// For an incomplete year, what is missing.
    pub note: Option<&'a str>,
}

/// A working-day calendar in a time zone. Cheap to clone (the days are shared).
#[derive(Debug, Clone)]
pub struct Calendar {
    data: Arc<Data>,
    tz: Tz,
}

#[derive(Debug)]
struct Data {
    name: String,
    title: String,
    tz: Tz,
    /// Indexed by `Weekday::num_days_from_monday`.
    weekend: [bool; 7],
    start: NaiveTime,
    end: NaiveTime,
    shortening: TimeDelta,
    years: BTreeMap<i32, Year>,
}

#[derive(Debug)]
struct Year {
    complete: bool,
    note: Option<String>,
    days: BTreeMap<NaiveDate, Special>,
    shortened: BTreeSet<NaiveDate>,
}

#[derive(Debug)]
enum Special {
    Holiday(String),
    DayOff(String),
    Working,
}

impl Calendar {
    /// Parses a calendar file's text; `name` is the calendar's name (the
    /// file stem agencies refer to, e.g. `ru`).
    pub fn parse(name: &str, text: &str) -> Result<Calendar, CalendarError> {
        let invalid = |message: String| CalendarError::Invalid {
            calendar: name.to_owned(),
            message,
        };
        let raw: RawCalendar = toml::from_str(text).map_err(|e| invalid(one_line(&e, text)))?;
        let data = build(name, raw).map_err(|problems| invalid(problems.join("; ")))?;
        let tz = data.tz;
        Ok(Calendar {
            data: Arc::new(data),
            tz,
        })
    }

    /// Loads a calendar file; its name is the file stem.
    pub fn load(path: &Path) -> Result<Calendar, CalendarError> {
        let text = std::fs::read_to_string(path).map_err(|source| CalendarError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Calendar::parse(&name, &text)
    }

    /// The calendar's name (its file stem), e.g. `ru`.
    pub fn name(&self) -> &str {
        &self.data.name
    }

    /// The calendar's title, e.g. `Russian Federation`.
    pub fn title(&self) -> &str {
        &self.data.title
    }

    /// The time zone local times are counted in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The time zone named in the calendar file.
    pub fn default_time_zone(&self) -> Tz {
        self.data.tz
    }

    /// The same calendar (same days) with local times counted in `tz`, e.g.
    /// the zone of an agency's seat.
    pub fn in_zone(&self, tz: Tz) -> Calendar {
        Calendar {
            data: Arc::clone(&self.data),
            tz,
        }
    }

    /// The years covered, in order.
    pub fn years(&self) -> impl Iterator<Item = YearCoverage<'_>> {
        self.data.years.iter().map(|(&year, y)| YearCoverage {
            year,
            complete: y.complete,
            note: y.note.as_deref(),
        })
    }

    /// Whether `year` is covered and complete; [`CalendarError::YearNotCovered`] if not covered.
    pub fn coverage(&self, year: i32) -> Result<YearCoverage<'_>, CalendarError> {
        let y = self.year(year)?;
        Ok(YearCoverage {
            year,
            complete: y.complete,
            note: y.note.as_deref(),
        })
    }

    /// Whether every non-working day decreed for `year` is entered.
    pub fn is_complete(&self, year: i32) -> Result<bool, CalendarError> {
        Ok(self.year(year)?.complete)
    }

    /// What `date` is: working (maybe shortened), weekend, holiday or day off.
    pub fn day(&self, date: NaiveDate) -> Result<DayKind<'_>, CalendarError> {
        let year = self.year(date.year())?;
        let working = DayKind::Working {
            shortened: year.shortened.contains(&date),
        };
        Ok(match year.days.get(&date) {
            Some(Special::Holiday(name)) => DayKind::Holiday(name),
            Some(Special::DayOff(name)) => DayKind::DayOff(name),
            Some(Special::Working) => working,
            None if self.data.weekend[weekday_index(date.weekday())] => DayKind::Weekend,
            None => working,
        })
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        Ok(self.day(date)?.is_working())
    }

    /// The business hours of `date`, local time; `None` on a non-working day.
    /// A shortened day closes `pre_holiday_shortening_minutes` earlier.
    pub fn working_hours(&self, date: NaiveDate) -> Result<Option<WorkingHours>, CalendarError> {
        Ok(match self.day(date)? {
            DayKind::Working { shortened } => Some(WorkingHours {
                start: self.data.start,
                end: if shortened {
                    self.data.end - self.data.shortening
                } else {
                    self.data.end
                },
                shortened,
            }),
            _ => None,
        })
    }

    /// The first working day strictly after `date`.
    pub fn next_working_day(&self, date: NaiveDate) -> Result<NaiveDate, CalendarError> {
        let mut day = date;
        for _ in 0..MAX_SCAN_DAYS {
            day = match day.succ_opt() {
                Some(next) => next,
                None => break,
            };
            if self.is_working_day(day)? {
                return Ok(day);
            }
        }
        Err(CalendarError::NoWorkingDay {
            calendar: self.data.name.clone(),
            after: date,
        })
    }

    /// The `n`-th working day strictly after `date` (`date` itself for `n = 0`).
    pub fn add_working_days(&self, date: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let mut day = date;
        for _ in 0..n {
            day = self.next_working_day(day)?;
        }
        Ok(day)
    }

    /// The instant business closes on the working day `date`, in this
    /// calendar's zone; [`CalendarError::NotAWorkingDay`] otherwise.
    pub fn close_of_business(&self, date: NaiveDate) -> Result<DateTime<Utc>, CalendarError> {
        match self.working_hours(date)? {
            Some(hours) => Ok(self.from_local(date.and_time(hours.end))),
            None => Err(CalendarError::NotAWorkingDay {
                calendar: self.data.name.clone(),
                date,
            }),
        }
    }

    /// The local date of an instant.
    pub fn local_date(&self, instant: DateTime<Utc>) -> NaiveDate {
        self.to_local(instant).date_naive()
    }

    /// An instant in local time (KZ §10).
    pub fn to_local(&self, instant: DateTime<Utc>) -> DateTime<Tz> {
        instant.with_timezone(&self.tz)
    }

    /// The instant of a local date and time. A time repeated when clocks go
    /// back is taken at its later occurrence; a time skipped when clocks go
    /// forward is taken at the first valid minute after it (both in favour of
    /// the party the deadline binds).
    pub fn from_local(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut t = local;
        // The longest gap on record is a whole day (Samoa, 2011).
        for _ in 0..=24 * 60 {
            match self.tz.from_local_datetime(&t) {
                LocalResult::Single(dt) => return dt.with_timezone(&Utc),
                LocalResult::Ambiguous(_, later) => return later.with_timezone(&Utc),
                LocalResult::None => t += TimeDelta::minutes(1),
            }
        }
        Utc.from_utc_datetime(&local)
    }

    fn year(&self, year: i32) -> Result<&Year, CalendarError> {
        self.data
            .years
            .get(&year)
            .ok_or_else(|| CalendarError::YearNotCovered {
                calendar: self.data.name.clone(),
                year,
            })
    }
}

/// The calendars of a directory, by name (file stem).
#[derive(Debug, Clone, Default)]
pub struct Calendars {
    by_name: BTreeMap<String, Calendar>,
}

impl Calendars {
    /// Loads every `*.toml` file of `dir` (e.g. `schemas/calendars`), each
    /// named by its file stem. The first bad file fails the load.
    pub fn load(dir: &Path) -> Result<Calendars, CalendarError> {
        let io = |source| CalendarError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        let mut calendars = Calendars::default();
        for path in paths {
            calendars.insert(Calendar::load(&path)?);
        }
        Ok(calendars)
    }

    /// Adds a calendar, replacing (and returning) one of the same name.
    pub fn insert(&mut self, calendar: Calendar) -> Option<Calendar> {
        self.by_name.insert(calendar.name().to_owned(), calendar)
    }

    /// The calendar with this name, if loaded.
    pub fn get(&self, name: &str) -> Option<&Calendar> {
        self.by_name.get(name)
    }

    /// The calendar with this name, or [`CalendarError::UnknownCalendar`].
    pub fn calendar(&self, name: &str) -> Result<&Calendar, CalendarError> {
        self.get(name)
            .ok_or_else(|| CalendarError::UnknownCalendar {
                name: name.to_owned(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// An agency's calendar, counted in the time zone of its jurisdiction.
    pub fn for_jurisdiction(&self, jurisdiction: &Jurisdiction) -> Result<Calendar, CalendarError> {
        Ok(self
            .calendar(&jurisdiction.calendar)?
            .in_zone(jurisdiction.time_zone))
    }

    /// The names of the calendars loaded, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Every calendar loaded, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Calendar> {
        self.by_name.values()
    }

    /// How many calendars are loaded.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether none is loaded.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

// ---------------------------------------------------------------------------
// The TOML shape and its checks.
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    name: String,
    time_zone: String,
    weekend: Vec<String>,
    business_hours: RawHours,
    #[serde(default)]
    pre_holiday_shortening_minutes: u32,
    #[serde(default)]
    years: BTreeMap<String, RawYear>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawYear {
    complete: bool,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    holidays: Vec<RawEntry>,
    #[serde(default)]
    days_off: Vec<RawEntry>,
    #[serde(default)]
    working_days: Vec<RawEntry>,
    #[serde(default)]
    shortened: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    date: Datetime,
    #[serde(default)]
    name: Option<String>,
}

/// Builds the calendar, collecting every problem.
fn build(name: &str, raw: RawCalendar) -> Result<Data, Vec<String>> {
    let mut problems = Vec::new();
    if raw.name.trim().is_empty() {
        problems.push("name is empty".to_owned());
    }
    let tz = match raw.time_zone.parse::<Tz>() {
        Ok(tz) => tz,
        Err(_) => {
            problems.push(format!(
                "time_zone {:?} is not an IANA time zone name (e.g. \"Asia/Tashkent\")",
                raw.time_zone
            ));
            Tz::UTC
        }
    };
    let mut weekend = [false; 7];
    for day in &raw.weekend {
        match day.parse::<Weekday>() {
            Ok(w) if weekend[weekday_index(w)] => {
                problems.push(format!("weekend lists {day:?} twice"));
            }
            Ok(w) => weekend[weekday_index(w)] = true,
            Err(_) => problems.push(format!(
                "weekend: {day:?} is not a day of the week (write \"saturday\" or \"sat\")"
            )),
        }
    }
    if weekend.iter().all(|&w| w) {
        problems.push("weekend lists every day of the week".to_owned());
    }
    let start = time(
        &raw.business_hours.start,
        "business_hours.start",
        &mut problems,
    );
    let end = time(&raw.business_hours.end, "business_hours.end", &mut problems);
    let shortening = TimeDelta::minutes(i64::from(raw.pre_holiday_shortening_minutes));
    if let (Some(start), Some(end)) = (start, end) {
        if start >= end {
            problems.push(format!(
                "business_hours: start {start} is not before end {end}"
            ));
        } else if end - shortening <= start {
            problems.push(format!(
                "pre_holiday_shortening_minutes = {}: a shortened day would close at or before {start}",
                raw.pre_holiday_shortening_minutes
            ));
        }
    }
    if raw.years.is_empty() {
        problems.push("no [years.YYYY] table: a calendar covers at least one year".to_owned());
    }
    let mut years = BTreeMap::new();
    for (key, raw_year) in raw.years {
        match key.parse::<i32>() {
            Ok(year) if (1900..=9999).contains(&year) => {
                let built = build_year(
                    year,
                    raw_year,
                    &weekend,
                    !shortening.is_zero(),
                    &mut problems,
                );
                years.insert(year, built);
            }
            _ => problems.push(format!(
                "years.{key}: {key:?} is not a year (write [years.2025])"
            )),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Data {
        name: name.to_owned(),
        title: raw.name,
        tz,
        weekend,
        start: start.unwrap_or(NaiveTime::MIN),
        end: end.unwrap_or(NaiveTime::MIN),
        shortening,
        years,
    })
}

fn build_year(
    year: i32,
    raw: RawYear,
    weekend: &[bool; 7],
    can_shorten: bool,
    problems: &mut Vec<String>,
) -> Year {
    let at = |field: &str| format!("years.{year}.{field}");
    let note = raw.note.filter(|n| !n.trim().is_empty());
    if !raw.complete && note.is_none() {
        problems.push(format!(
            "{}: an incomplete year needs a note saying what is missing",
            at("note")
        ));
    }
    let mut days = BTreeMap::new();
    let mut listed: BTreeMap<NaiveDate, &'static str> = BTreeMap::new();
    let lists = [
        ("holidays", raw.holidays),
        ("days_off", raw.days_off),
        ("working_days", raw.working_days),
    ];
    for (field, entries) in lists {
        for entry in entries {
            let Some(date) = entry_date(&entry, year, &at(field), problems) else {
                continue;
            };
            if let Some(other) = listed.insert(date, field) {
                problems.push(format!(
                    "{}: {date} is already listed in {}",
                    at(field),
                    at(other)
                ));
                continue;
            }
            let is_weekend = weekend[weekday_index(date.weekday())];
            let name = entry.name.filter(|n| !n.trim().is_empty());
            let special = match field {
                "holidays" => name.map(Special::Holiday),
                "days_off" if is_weekend => {
                    problems.push(format!(
                        "{}: {date} is a {}, already a weekend day",
                        at(field),
                        date.weekday()
                    ));
                    continue;
                }
                "days_off" => name.map(Special::DayOff),
                _ if !is_weekend => {
                    problems.push(format!(
                        "{}: {date} is a {}, already a working day (list only weekend days made working)",
                        at(field),
                        date.weekday()
                    ));
                    continue;
                }
                _ => Some(Special::Working),
            };
            match special {
                Some(special) => {
                    days.insert(date, special);
                }
                None => problems.push(format!("{}: {date} needs a name", at(field))),
            }
        }
    }
    let mut shortened = BTreeSet::new();
    for entry in raw.shortened {
        let Some(date) = entry_date(&entry, year, &at("shortened"), problems) else {
            continue;
        };
        if !can_shorten {
            problems.push(format!(
                "{}: {date} is listed but pre_holiday_shortening_minutes is 0",
                at("shortened")
            ));
        }
        let working = match listed.get(&date) {
            Some(&field) => field == "working_days",
            None => !weekend[weekday_index(date.weekday())],
        };
        if !working {
            problems.push(format!(
                "{}: {date} ({}) is not a working day",
                at("shortened"),
                date.weekday()
            ));
        }
        if !shortened.insert(date) {
            problems.push(format!("{}: {date} is listed twice", at("shortened")));
        }
    }
    Year {
        complete: raw.complete,
        note,
        days,
        shortened,
    }
}

/// An entry's date: a plain TOML date inside `year`.
fn entry_date(
    entry: &RawEntry,
    year: i32,
    field: &str,
    problems: &mut Vec<String>,
) -> Option<NaiveDate> {
    let value = &entry.date;
    let date = match (value.date, value.time, value.offset) {
        (Some(d), None, None) => {
            NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
        }
        _ => {
            problems.push(format!(
                "{field}: {value} is not a plain date (write it as YYYY-MM-DD)"
            ));
            return None;
        }
    };
    match date {
        Some(date) if date.year() == year => Some(date),
        Some(date) => {
            problems.push(format!("{field}: {date} is not in {year}"));
            None
        }
        None => {
            problems.push(format!("{field}: {value} is not a calendar date"));
            None
        }
    }
}

fn time(text: &str, field: &str, problems: &mut Vec<String>) -> Option<NaiveTime> {
    match NaiveTime::parse_from_str(text, "%H:%M") {
        Ok(t) => Some(t),
        Err(_) => {
            problems.push(format!(
                "{field}: {text:?} is not a time (write it as HH:MM)"
            ));
            None
        }
    }
}

fn weekday_index(day: Weekday) -> usize {
    day.num_days_from_monday() as usize
}

/// A TOML error on one line, with its line and column (its own text spans
/// several lines, with a snippet).
fn one_line(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        // A missing field is reported over the whole document: no position.
        Some(span) if span.start > 0 || span.end < text.len() => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
        _ => format!("invalid TOML: {message}"),
    }
}

#[cfg(test)]
mod tests;
