//! Deadlines over the SHIPPED calendars (`schemas/calendars/`) and a test
//! calendar with daylight-saving changes (`tests/it/fixtures/calendars/`).
//!
//! Each row: what it shows, the calendar, the sending time (local), the
//! policy, and the expected deadline (local, with its UTC offset).

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use mev_broker::deadline::{
    self, compute_detailed, dispatch_deadline, format_local, is_late_dispatch, Calendar,
    CalendarError, Calendars, DayKind, DeadlineError, DeadlinePolicy,
};
use mev_broker::register::{Jurisdiction, Register};
use mev_proto::pb::{Header, Kind};
use mev_proto::time::to_wire;
use std::path::Path;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/calendars");

/// The shipped calendars plus the test fixtures.
fn calendars() -> Calendars {
    let shipped = Path::new(ROOT).join("schemas/calendars");
    let mut calendars = match Calendars::load(&shipped) {
        Ok(c) => c,
        Err(e) => panic!("the shipped calendars do not load: {e}"),
    };
    let fixtures = Calendars::load(Path::new(FIXTURES)).expect("fixture calendars load");
    for calendar in fixtures.iter() {
        calendars.insert(calendar.clone());
    }
    calendars
}

fn calendar(name: &str) -> Calendar {
    calendars().calendar(name).expect("calendar").clone()
}

/// A local time in `tz`, which must be unambiguous.
fn local(tz: Tz, s: &str) -> DateTime<Utc> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("YYYY-MM-DD HH:MM:SS");
    tz.from_local_datetime(&naive)
        .single()
        .unwrap_or_else(|| panic!("{s} is not a single instant in {tz}"))
        .with_timezone(&Utc)
}

/// An instant as `YYYY-MM-DD HH:MM:SS +HH:MM` in `tz`.
fn show(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

enum Expect {
    /// The deadline, local, and whether it is provisional.
    At(&'static str, bool),
    /// The policy tracks no deadline.
    NoDeadline,
    /// The calendar does not cover this year.
    NotCovered(i32),
}

struct Row {
    what: &'static str,
    calendar: &'static str,
    sent: &'static str,
    policy: DeadlinePolicy,
    expect: Expect,
}

const NWD: DeadlinePolicy = DeadlinePolicy::NextWorkingDay;

fn rows() -> Vec<Row> {
    use Expect::*;
    let row = |what, calendar, sent, policy, expect| Row {
        what,
        calendar,
        sent,
        policy,
        expect,
    };
    vec![
        // --- Friday evenings and weekends -------------------------------------
        row("UZ: an ordinary Friday evening is due Monday at close of business",
            "uz", "2025-11-14 19:00:00", NWD, At("2025-11-17 18:00:00 +05:00", false)),
        row("RU: Friday evening before the working Saturday 1 Nov 2025 (res. 1335), shortened by an hour (TK RF art. 95)",
            "ru", "2025-10-31 19:30:00", NWD, At("2025-11-01 17:00:00 +03:00", false)),
        row("RU: sent on the working Saturday: 2 Nov Sunday, 3 Nov transferred day off, 4 Nov holiday",
            "ru", "2025-11-01 10:00:00", NWD, At("2025-11-05 18:00:00 +03:00", false)),
        row("UZ: Friday 3 Jan 2025 is followed by the working Saturday 4 Jan (its day off moved to 2 Jan)",
            "uz", "2025-01-03 15:00:00", NWD, At("2025-01-04 18:00:00 +05:00", false)),
        row("KZ: sent on Saturday 4 Jan 2025, due on the working Sunday 5 Jan (MLSP order No. 436)",
            "kz", "2025-01-04 10:00:00", NWD, At("2025-01-05 18:00:00 +05:00", false)),
        // --- the day before a public holiday -----------------------------------
        row("RU: sent on the shortened eve of 12 June; 12 June holiday, 13 June day off, weekend",
            "ru", "2025-06-11 10:00:00", NWD, At("2025-06-16 18:00:00 +03:00", false)),
        row("RU: sent the day before a shortened eve: due at 17:00 on 30 April",
            "ru", "2025-04-29 12:00:00", NWD, At("2025-04-30 17:00:00 +03:00", false)),
        row("KZ: the day before Nauryz: 21-23 March and the transferred 24-25 March are off",
            "kz", "2025-03-20 11:00:00", NWD, At("2025-03-26 18:00:00 +05:00", false)),
        row("UZ: the shortened eve of Teachers' Day: 1 October is a holiday",
            "uz", "2025-09-30 10:00:00", NWD, At("2025-10-02 18:00:00 +05:00", false)),
        row("UZ: Ramazon hayit on Sunday 30 March moves its day off to Monday 31 March",
            "uz", "2025-03-28 10:00:00", NWD, At("2025-04-01 18:00:00 +05:00", false)),
        // --- across New Year ----------------------------------------------------
        row("RU: 30 Dec 2025; 31 Dec day off (res. 1335), 1-8 Jan holidays, 9 Jan day off (res. 1466)",
            "ru", "2025-12-30 15:00:00", NWD, At("2026-01-12 18:00:00 +03:00", false)),
        row("UZ: 30 Dec 2025; 31 Dec and 2 Jan additional days off; 2026 is incomplete: provisional",
            "uz", "2025-12-30 15:00:00", NWD, At("2026-01-05 18:00:00 +05:00", true)),
        row("KZ: 31 Dec 2025 is a working day; due after 1-2 Jan and the weekend; provisional",
            "kz", "2025-12-31 10:00:00", NWD, At("2026-01-05 18:00:00 +05:00", true)),
        // --- the local day of sending -------------------------------------------
        row("RU: sent at 23:59:59 local time: the day of sending is still that Tuesday",
            "ru", "2025-11-18 23:59:59", NWD, At("2025-11-19 18:00:00 +03:00", false)),
        row("RU: one second later it is Wednesday",
            "ru", "2025-11-19 00:00:00", NWD, At("2025-11-20 18:00:00 +03:00", false)),
        row("UZ: 00:30 on the 19th in Tashkent is still the 18th in UTC: the local date counts",
            "uz", "2025-11-19 00:30:00", NWD, At("2025-11-20 18:00:00 +05:00", false)),
        // --- working days -------------------------------------------------------
        row("KZ: two working days from Monday 5 May skip the 7 May holiday",
            "kz", "2025-05-05 10:00:00", DeadlinePolicy::WorkingDays { days: 2 },
            At("2025-05-08 18:00:00 +05:00", false)),
        row("KZ: two working days from a Friday",
            "kz", "2025-05-02 16:00:00", DeadlinePolicy::WorkingDays { days: 2 },
            At("2025-05-06 18:00:00 +05:00", false)),
        row("UZ: ten working days (the archive policy) over Navruz and Ramazon hayit",
            "uz", "2025-03-19 10:00:00", DeadlinePolicy::WorkingDays { days: 10 },
            At("2025-04-04 18:00:00 +05:00", false)),
        // --- fixed spans ----------------------------------------------------------
        row("RU: 48 hours run over a holiday and a weekend alike (RU 963 §10)",
            "ru", "2025-05-01 10:00:00", DeadlinePolicy::Hours { hours: 48 },
            At("2025-05-03 10:00:00 +03:00", false)),
        row("RU: real-time mode, 2 seconds (RU 963 §10)",
            "ru", "2025-11-18 12:00:00", DeadlinePolicy::Realtime { seconds: 2 },
            At("2025-11-18 12:00:02 +03:00", false)),
        row("RU: hours need no calendar year: 2030 is not covered but 48 hours are computed",
            "ru", "2030-01-01 10:00:00", DeadlinePolicy::Hours { hours: 48 },
            At("2030-01-03 10:00:00 +03:00", false)),
        row("KZ: no deadline tracked",
            "kz", "2025-05-05 10:00:00", DeadlinePolicy::None, NoDeadline),
        // --- daylight saving (test fixture, Europe/Berlin) ------------------------
        row("Berlin: Friday in CET, due Monday in CEST after the 30 March change",
            "berlin", "2025-03-28 17:00:00", NWD, At("2025-03-31 18:00:00 +02:00", false)),
        row("Berlin: Friday in CEST, due Monday in CET after the 26 October change",
            "berlin", "2025-10-24 17:00:00", NWD, At("2025-10-27 18:00:00 +01:00", false)),
        row("Berlin: 48 hours over the spring change are 47 wall-clock hours",
            "berlin", "2025-03-29 12:00:00", DeadlinePolicy::Hours { hours: 48 },
            At("2025-03-31 13:00:00 +02:00", false)),
        row("Berlin: Easter: Good Friday, weekend, Easter Monday",
            "berlin", "2025-04-17 12:00:00", NWD, At("2025-04-22 18:00:00 +02:00", false)),
        // --- years not covered and partial years ----------------------------------
        row("RU: 2028 is not covered: an error, not a weekend-only guess",
            "ru", "2028-03-01 10:00:00", NWD, NotCovered(2028)),
        row("RU: the last covered day runs into 2028",
            "ru", "2027-12-31 10:00:00", NWD, NotCovered(2028)),
        row("RU: 2027 is partial (no transfer resolution yet): provisional, shortened eve of 1 Jan",
            "ru", "2027-12-30 10:00:00", NWD, At("2027-12-31 17:00:00 +03:00", true)),
        row("Berlin fixture covers only 2025",
            "berlin", "2025-12-31 12:00:00", NWD, NotCovered(2026)),
    ]
}

#[test]
fn deadlines_table() {
    let calendars = calendars();
    let mut failures = Vec::new();
    for row in rows() {
        let cal = calendars.calendar(row.calendar).expect("calendar");
        let tz = cal.time_zone();
        let sent = local(tz, row.sent);
        let got = compute_detailed(&row.policy, sent, cal);
        let ok = match (&row.expect, &got) {
            (Expect::At(want, provisional), Ok(Some(d))) => {
                show(tz, d.at) == *want && d.provisional == *provisional
            }
            (Expect::NoDeadline, Ok(None)) => true,
            (
                Expect::NotCovered(year),
                Err(DeadlineError::Calendar(CalendarError::YearNotCovered { calendar, year: y })),
            ) => y == year && calendar == row.calendar,
            _ => false,
        };
        // The short form agrees with the detailed one.
        let short = deadline::compute(&row.policy, sent, cal);
        let agrees = match (&got, &short) {
            (Ok(d), Ok(s)) => d.map(|d| d.at) == *s,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !ok || !agrees {
            let got = match &got {
                Ok(Some(d)) => format!("{} (provisional {})", show(tz, d.at), d.provisional),
                Ok(None) => "no deadline".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            failures.push(format!(
                "{}\n    {} {} {}: got {got}",
                row.what, row.calendar, row.sent, row.policy
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_year_not_covered_names_calendar_and_year() {
    let ru = calendar("ru");
    let err = deadline::compute(&NWD, local(ru.time_zone(), "2028-06-01 10:00:00"), &ru)
        .expect_err("2028 is not covered");
    assert_eq!(
        err.to_string(),
        "calendar \"ru\" does not cover the year 2028 (no [years.2028] in calendars/ru.toml)"
    );
    assert!(matches!(
        ru.day(date("2024-12-31")),
        Err(CalendarError::YearNotCovered { year: 2024, .. })
    ));
}

struct Dispatch {
    what: &'static str,
    calendar: &'static str,
    received: &'static str,
    sent: &'static str,
    deadline: &'static str,
    late: bool,
}

#[test]
fn late_dispatch_table() {
    let rows = [
        Dispatch {
            what: "UZ: received on the shortened eve of 8 March; 8-9 weekend, 10 March day off",
            calendar: "uz",
            received: "2025-03-07 16:00:00",
            sent: "2025-03-11 17:59:59",
            deadline: "2025-03-11 18:00:00 +05:00",
            late: false,
        },
        Dispatch {
            what: "UZ: the same, two seconds later",
            calendar: "uz",
            received: "2025-03-07 16:00:00",
            sent: "2025-03-11 18:00:01",
            deadline: "2025-03-11 18:00:00 +05:00",
            late: true,
        },
        Dispatch {
            what: "UZ: sent at the deadline itself is in time",
            calendar: "uz",
            received: "2025-03-07 16:00:00",
            sent: "2025-03-11 18:00:00",
            deadline: "2025-03-11 18:00:00 +05:00",
            late: false,
        },
        Dispatch {
            what: "UZ: sent the same day",
            calendar: "uz",
            received: "2025-03-07 16:00:00",
            sent: "2025-03-07 16:05:00",
            deadline: "2025-03-11 18:00:00 +05:00",
            late: false,
        },
        Dispatch {
            what: "RU: received Friday evening, the working Saturday was the day to send",
            calendar: "ru",
            received: "2025-10-31 20:00:00",
            sent: "2025-11-03 10:00:00",
            deadline: "2025-11-01 17:00:00 +03:00",
            late: true,
        },
    ];
    let calendars = calendars();
    for row in rows {
        let cal = calendars.calendar(row.calendar).expect("calendar");
        let tz = cal.time_zone();
        let received = local(tz, row.received);
        let sent = local(tz, row.sent);
        let deadline = dispatch_deadline(received, cal).expect("dispatch deadline");
        assert_eq!(show(tz, deadline), row.deadline, "{}", row.what);
        let late = is_late_dispatch(received, sent, cal).expect("late?");
        assert_eq!(late, row.late, "{}", row.what);
    }
}

fn header(sender: &str, recipient: &str, service: &str, sent: DateTime<Utc>) -> Header {
    Header {
        kind: Kind::Request as i32,
        sender: sender.into(),
        recipient: recipient.into(),
        service: service.into(),
        sent_at: Some(to_wire(sent)),
        ..Default::default()
    }
}

fn shipped_register() -> Register {
    match Register::load(&Path::new(ROOT).join("schemas")) {
        Ok(r) => r,
        Err(e) => panic!("the shipped register does not load:\n{e}"),
    }
}

#[test]
fn the_register_chooses_the_policy_archive_and_override() {
    let register = shipped_register();
    let calendars = calendars();
    let tashkent = chrono_tz::Asia::Tashkent;
    let sent = local(tashkent, "2025-03-19 10:00:00");

    // An ordinary request for a civil record: the next working day, 20 March,
    // the shortened eve of Navruz.
    let mut h = header("UZ-DXM-YUNUSOBOD", "UZ-ZAGS", "UZ-00210", sent);
    let d = deadline::for_request(&register, &calendars, &h).expect("deadlines");
    assert_eq!(d.policy_name, "next-working-day");
    let reply = d.reply.expect("a deadline");
    assert_eq!(show(tashkent, reply.at), "2025-03-20 17:00:00 +05:00");
    assert_eq!(reply.working_day, Some(date("2025-03-20")));
    assert!(!reply.provisional);
    assert_eq!(d.dispatch, None);

    // The same request for a record kept only in the archive fund is exempt
    // from the one-working-day rule (UZ annex 1 §8, annex 2 §22).
    h.archive = true;
    let d = deadline::for_request(&register, &calendars, &h).expect("deadlines");
    assert_eq!(d.policy_name, "archive-ten-working-days");
    assert_eq!(d.policy, DeadlinePolicy::WorkingDays { days: 10 });
    assert_eq!(
        show(tashkent, d.reply.expect("a deadline").at),
        "2025-04-04 18:00:00 +05:00"
    );

    // A per-interaction override wins (Tatarstan §2.7).
    h.deadline_policy = "48-hours".into();
    let d = deadline::for_request(&register, &calendars, &h).expect("deadlines");
    assert_eq!(d.policy_name, "48-hours");
    assert_eq!(
        show(tashkent, d.reply.expect("a deadline").at),
        "2025-03-21 10:00:00 +05:00"
    );

    // KZ civil records from paper archives: no deadline is tracked.
    let almaty = chrono_tz::Asia::Almaty;
    let mut h = header(
        "KZ-CON",
        "KZ-MJ",
        "KZ-03101",
        local(almaty, "2025-05-05 10:00:00"),
    );
    h.archive = true;
    let d = deadline::for_request(&register, &calendars, &h).expect("deadlines");
    assert_eq!(d.policy_name, "no-deadline");
    assert_eq!(d.reply, None);

    // Unknown service, missing sending time.
    let h = header(
        "KZ-CON",
        "KZ-MJ",
        "KZ-99999",
        local(almaty, "2025-05-05 10:00:00"),
    );
    let err = deadline::for_request(&register, &calendars, &h).expect_err("unknown service");
    assert!(matches!(err, DeadlineError::UnknownService(_)), "{err:?}");
    let mut h = header(
        "KZ-CON",
        "KZ-MJ",
        "KZ-03101",
        local(almaty, "2025-05-05 10:00:00"),
    );
    h.sent_at = None;
    let err = deadline::for_request(&register, &calendars, &h).expect_err("no sent_at");
    assert_eq!(err.to_string(), "header.sent_at: missing or out of range");
}

#[test]
fn the_register_gives_the_dispatch_deadline_in_the_consumers_calendar() {
    let register = shipped_register();
    let calendars = calendars();
    let tashkent = chrono_tz::Asia::Tashkent;
    let received = local(tashkent, "2025-03-07 16:00:00");
    let mut h = header(
        "UZ-DXM-YUNUSOBOD",
        "UZ-GNK",
        "UZ-00125",
        local(tashkent, "2025-03-12 09:30:00"),
    );
    h.application_received_at = Some(to_wire(received));
    let d = deadline::for_request(&register, &calendars, &h).expect("deadlines");
    let dispatch = d.dispatch.expect("a dispatch deadline");
    assert_eq!(show(tashkent, dispatch.at), "2025-03-11 18:00:00 +05:00");
    assert!(d.late_dispatch);
    // The reply is still due the next working day after sending.
    assert_eq!(
        show(tashkent, d.reply.expect("reply").at),
        "2025-03-13 18:00:00 +05:00"
    );
}

#[test]
fn every_agency_has_a_calendar_in_its_own_zone() {
    let register = shipped_register();
    let calendars = calendars();
    for agency in register.agencies() {
        let cal = calendars
            .for_jurisdiction(&agency.jurisdiction)
            .unwrap_or_else(|e| panic!("{}: {e}", agency.id));
        assert_eq!(
            cal.time_zone(),
            agency.jurisdiction.time_zone,
            "{}",
            agency.id
        );
        assert_eq!(
            cal.default_time_zone(),
            agency.jurisdiction.time_zone,
            "{}",
            agency.id
        );
        for year in [2025, 2026, 2027] {
            cal.coverage(year)
                .unwrap_or_else(|e| panic!("{}: {e}", agency.id));
        }
    }
}

#[test]
fn a_calendar_is_counted_in_the_agencys_zone() {
    // Holidays are national, local time is not: a Russian agency in Vladivostok.
    let calendars = calendars();
    let vladivostok = chrono_tz::Asia::Vladivostok;
    let cal = calendars
        .for_jurisdiction(&Jurisdiction {
            time_zone: vladivostok,
            calendar: "ru".into(),
        })
        .expect("ru");
    let due = deadline::compute(&NWD, local(vladivostok, "2025-10-31 19:30:00"), &cal)
        .expect("computed")
        .expect("a deadline");
    assert_eq!(show(vladivostok, due), "2025-11-01 17:00:00 +10:00");
    assert_eq!(
        format_local(due, &cal),
        "2025-11-01 17:00:00 +10:00 (Asia/Vladivostok)"
    );
    let moscow = calendar("ru");
    assert_eq!(
        format_local(due, &moscow),
        "2025-11-01 10:00:00 +03:00 (Europe/Moscow)"
    );
}

#[test]
fn shipped_years_are_marked_complete_or_partial() {
    let calendars = calendars();
    let expected = [
        ("kz", [true, false, false]),
        ("ru", [true, true, false]),
        ("uz", [true, false, false]),
    ];
    for (name, complete) in expected {
        let cal = calendars.calendar(name).expect("calendar");
        let years: Vec<(i32, bool)> = cal.years().map(|y| (y.year, y.complete)).collect();
        assert_eq!(
            years,
            vec![
                (2025, complete[0]),
                (2026, complete[1]),
                (2027, complete[2])
            ],
            "{name}"
        );
        for y in cal.years().filter(|y| !y.complete) {
            assert!(y.note.is_some_and(|n| !n.is_empty()), "{name} {}", y.year);
        }
    }
}

/// Working days and shortened days of a year.
fn count(cal: &Calendar, year: i32) -> (u32, u32) {
    let mut day = NaiveDate::from_ymd_opt(year, 1, 1).expect("1 Jan");
    let (mut working, mut shortened) = (0, 0);
    while day.format("%Y").to_string() == year.to_string() {
        if let DayKind::Working { shortened: s } = cal.day(day).expect("covered") {
            working += 1;
            shortened += u32::from(s);
        }
        day = day.succ_opt().expect("next day");
    }
    (working, shortened)
}

#[test]
fn russian_years_match_the_official_production_calendars() {
    // 2025 and 2026: 247 working days and 1972 hours at a 40-hour week
    // (247 x 8 - 4 shortened hours).
    let ru = calendar("ru");
    for year in [2025, 2026] {
        let (working, shortened) = count(&ru, year);
        assert_eq!(working, 247, "{year}");
        assert_eq!(working * 8 - shortened, 1972, "{year}");
    }
}

#[test]
fn shipped_days_are_what_the_decrees_say() {
    let ru = calendar("ru");
    assert_eq!(
        ru.day(date("2025-11-01")).unwrap(),
        DayKind::Working { shortened: true }
    );
    assert_eq!(
        ru.day(date("2025-05-08")).unwrap(),
        DayKind::DayOff("day off transferred from Sun 23 Feb")
    );
    assert_eq!(
        ru.day(date("2026-01-07")).unwrap(),
        DayKind::Holiday("Christmas")
    );
    assert_eq!(
        ru.next_working_day(date("2025-12-30")).unwrap(),
        date("2026-01-12")
    );
    assert_eq!(
        ru.add_working_days(date("2025-12-30"), 3).unwrap(),
        date("2026-01-14")
    );
    let hours = ru
        .working_hours(date("2025-11-01"))
        .unwrap()
        .expect("working");
    assert_eq!(hours.end.to_string(), "17:00:00");

    let uz = calendar("uz");
    assert_eq!(
        uz.day(date("2025-03-30")).unwrap(),
        DayKind::Holiday("Ramazon hayit")
    );
    assert!(!uz.is_working_day(date("2025-03-31")).unwrap());
    assert!(uz.is_working_day(date("2026-12-12")).unwrap());

    let kz = calendar("kz");
    assert!(kz.is_working_day(date("2025-01-05")).unwrap());
    assert_eq!(
        kz.day(date("2025-01-07")).unwrap(),
        DayKind::Holiday("Orthodox Christmas")
    );
    // 30 August is no longer Constitution Day from 2026.
    assert!(kz.is_working_day(date("2026-08-31")).unwrap());
    assert_eq!(
        kz.working_hours(date("2025-12-31"))
            .unwrap()
            .map(|h| h.shortened),
        Some(false)
    );
}
