//! The period a report covers: `--from DATE --to DATE` (whole days, both
//! inclusive) or `--quarter 2026Q3` (the UZ resolution's quarterly
//! monitoring, §3), as calendar days in one time zone (`--tz`, UTC unless
//! told), turned into a half-open range of UTC milliseconds that events'
//! `at_ms` are compared with.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

/// A period that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("{0:?} is not a date: use YYYY-MM-DD, e.g. 2026-07-01")]
    BadDate(String),
    #[error("{0:?} is not a quarter: use YYYYQn, e.g. 2026Q3 (n from 1 to 4)")]
    BadQuarter(String),
    #[error("{0:?} is not a time zone: use an IANA name, e.g. UTC, Asia/Tashkent, Europe/Moscow")]
    BadZone(String),
    #[error("the period ends ({to}) before it starts ({from})")]
    Reversed { from: NaiveDate, to: NaiveDate },
    #[error("{0} is outside the range of dates a report can cover")]
    OutOfRange(NaiveDate),
}

/// A calendar quarter: `2026Q3` is July to September 2026.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarter {
    pub year: i32,
    /// 1 to 4.
    pub q: u32,
}

impl Quarter {
    /// Its first day.
    pub fn first_day(self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, 3 * (self.q - 1) + 1, 1)
    }

    /// Its last day.
    pub fn last_day(self) -> Option<NaiveDate> {
        let next = if self.q == 4 {
            NaiveDate::from_ymd_opt(self.year + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(self.year, 3 * self.q + 1, 1)
        };
        next?.pred_opt()
    }
}

impl FromStr for Quarter {
    type Err = PeriodError;

    /// `2026Q3`, also `2026-Q3` and `2026q3`.
    fn from_str(s: &str) -> Result<Self, PeriodError> {
        let bad = || PeriodError::BadQuarter(s.to_string());
        let t = s.trim().to_ascii_uppercase();
        let (year, q) = t.split_once('Q').ok_or_else(bad)?;
        let year = year.strip_suffix('-').unwrap_or(year);
        if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let q: u32 = match q {
            "1" => 1,
            "2" => 2,
            "3" => 3,
            "4" => 4,
            _ => return Err(bad()),
        };
        Ok(Quarter { year, q })
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}Q{}", self.year, self.q)
    }
}

/// `--from`/`--to`: a date as YYYY-MM-DD.
pub fn parse_date(s: &str) -> Result<NaiveDate, PeriodError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| PeriodError::BadDate(s.into()))
}

/// `--quarter`.
pub fn parse_quarter(s: &str) -> Result<Quarter, PeriodError> {
    s.parse()
}

/// `--tz`: an IANA time zone name.
pub fn parse_zone(s: &str) -> Result<Tz, PeriodError> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| PeriodError::BadZone(s.into()))
}

/// Whole calendar days in a time zone, as a half-open range of UTC ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// The first day (inclusive).
    pub first_day: NaiveDate,
    /// The last day (inclusive).
    pub last_day: NaiveDate,
    /// The zone the days are counted in.
    pub tz: Tz,
    /// `2026Q3`, or `2026-07-01..2026-07-31`.
    pub label: String,
    /// The first instant of the first day (UTC ms, inclusive).
    pub from_ms: i64,
    /// The first instant after the last day (UTC ms, exclusive).
    pub to_ms: i64,
}

impl Period {
    /// The days from `first` to `last`, both included, in `tz`.
    pub fn days(first: NaiveDate, last: NaiveDate, tz: Tz) -> Result<Self, PeriodError> {
        if last < first {
            return Err(PeriodError::Reversed {
                from: first,
                to: last,
            });
        }
        let after = last.succ_opt().ok_or(PeriodError::OutOfRange(last))?;
        Ok(Period {
            first_day: first,
            last_day: last,
            tz,
            label: format!("{first}..{last}"),
            from_ms: start_of_day(first, tz)?,
            to_ms: start_of_day(after, tz)?,
        })
    }

    /// A calendar quarter in `tz`.
    pub fn quarter(q: Quarter, tz: Tz) -> Result<Self, PeriodError> {
        let bad = || PeriodError::BadQuarter(q.to_string());
        let mut p = Self::days(
            q.first_day().ok_or_else(bad)?,
            q.last_day().ok_or_else(bad)?,
            tz,
        )?;
        p.label = q.to_string();
        Ok(p)
    }

    /// Whether an instant (UTC ms) falls in the period.
    pub fn contains(&self, at_ms: i64) -> bool {
        self.from_ms <= at_ms && at_ms < self.to_ms
    }

    /// The period's start as UTC.
    pub fn from_utc(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.from_ms).unwrap_or_default()
    }

    /// The period's end (exclusive) as UTC.
    pub fn to_utc(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.to_ms).unwrap_or_default()
    }
}

/// The first instant of `day` in `tz` (UTC ms). Where the clocks jump over
/// midnight, the day starts at its first local time that exists.
fn start_of_day(day: NaiveDate, tz: Tz) -> Result<i64, PeriodError> {
    let midnight = day
        .and_hms_opt(0, 0, 0)
        .ok_or(PeriodError::OutOfRange(day))?;
    (0..=4)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + Duration::minutes(30 * h)))
                .earliest()
        })
        .map(|t| t.timestamp_millis())
        .ok_or(PeriodError::OutOfRange(day))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    #[test]
    fn quarters_parse_in_several_spellings() {
        for s in ["2026Q3", "2026-Q3", "2026q3", " 2026Q3 "] {
            assert_eq!(s.parse::<Quarter>(), Ok(Quarter { year: 2026, q: 3 }));
        }
        for s in [
            "2026Q0", "2026Q5", "26Q1", "2026", "Q3", "2026Q", "2026Q12", "abcdQ1",
        ] {
            assert_eq!(
                s.parse::<Quarter>(),
                Err(PeriodError::BadQuarter(s.into())),
                "{s}"
            );
        }
        assert_eq!(Quarter { year: 2026, q: 3 }.to_string(), "2026Q3");
    }

    #[test]
    fn quarters_cover_their_three_months() {
        let q = |s: &str| s.parse::<Quarter>().unwrap();
        assert_eq!(q("2026Q1").first_day(), Some(d("2026-01-01")));
        assert_eq!(q("2026Q1").last_day(), Some(d("2026-03-31")));
        assert_eq!(q("2028Q1").last_day(), Some(d("2028-03-31")));
        assert_eq!(q("2026Q2").last_day(), Some(d("2026-06-30")));
        assert_eq!(q("2026Q3").first_day(), Some(d("2026-07-01")));
        assert_eq!(q("2026Q3").last_day(), Some(d("2026-09-30")));
        assert_eq!(q("2026Q4").last_day(), Some(d("2026-12-31")));
        let p = Period::quarter(q("2026Q3"), chrono_tz::UTC).unwrap();
        assert_eq!(p.label, "2026Q3");
        assert_eq!(p.from_utc().to_rfc3339(), "2026-07-01T00:00:00+00:00");
        assert_eq!(p.to_utc().to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert!(p.contains(p.from_ms));
        assert!(p.contains(p.to_ms - 1));
        assert!(!p.contains(p.to_ms));
        assert!(!p.contains(p.from_ms - 1));
    }

    #[test]
    fn days_are_counted_in_the_chosen_zone() {
        let tashkent = parse_zone("Asia/Tashkent").unwrap();
        let p = Period::days(d("2026-07-01"), d("2026-07-01"), tashkent).unwrap();
        // Tashkent is UTC+5: its 1 July runs from 30 June 19:00 UTC.
        assert_eq!(p.from_utc().to_rfc3339(), "2026-06-30T19:00:00+00:00");
        assert_eq!(p.to_ms - p.from_ms, 86_400_000);
        assert_eq!(
            parse_zone("Mars/Olympus"),
            Err(PeriodError::BadZone("Mars/Olympus".into()))
        );
    }

    #[test]
    fn bad_dates_and_reversed_periods_are_refused() {
        for s in ["2026-13-01", "2026-02-30", "01.07.2026", "yesterday", ""] {
            assert_eq!(parse_date(s), Err(PeriodError::BadDate(s.into())), "{s}");
        }
        assert!(matches!(
            Period::days(d("2026-07-02"), d("2026-07-01"), chrono_tz::UTC),
            Err(PeriodError::Reversed { .. })
        ));
    }
}
