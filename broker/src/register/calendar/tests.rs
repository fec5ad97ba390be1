//! Unit tests of `calendar`.

use super::*;

const HEAD: &str = r#"
name = "Test"
time_zone = "Asia/Tashkent"
weekend = ["sat", "sun"]
business_hours = { start = "09:00", end = "18:00" }
pre_holiday_shortening_minutes = 60
"#;

fn parse(body: &str) -> Result<Calendar, CalendarError> {
    Calendar::parse("t", &format!("{HEAD}{body}"))
}

/// The calendar fails to parse with a message containing every `needle`.
fn fails(text: &str, needles: &[&str]) {
    match Calendar::parse("t", text) {
        Ok(_) => panic!("parsed but should not:\n{text}"),
        Err(e) => {
            let message = e.to_string();
            assert!(matches!(e, CalendarError::Invalid { .. }), "{message}");
            assert!(message.starts_with("calendar \"t\": "), "{message}");
            for needle in needles {
                assert!(message.contains(needle), "{needle:?} not in {message:?}");
            }
        }
    }
}

fn fails_body(body: &str, needles: &[&str]) {
    fails(&format!("{HEAD}{body}"), needles);
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

#[test]
fn parses_a_small_calendar() {
    let cal = parse(
        r#"
[years.2025]
complete = true
holidays = [{ date = 2025-03-08, name = "Women's Day" }]
days_off = [{ date = 2025-01-02, name = "moved from Sat 4 Jan" }]
working_days = [{ date = 2025-01-04 }]
shortened = [{ date = 2025-03-07 }, { date = 2025-01-04 }]
"#,
    )
    .expect("parses");
    assert_eq!(cal.name(), "t");
    assert_eq!(cal.title(), "Test");
    assert_eq!(cal.time_zone(), chrono_tz::Asia::Tashkent);
    assert_eq!(
        cal.day(date("2025-03-08")).unwrap(),
        DayKind::Holiday("Women's Day")
    );
    assert_eq!(
        cal.day(date("2025-01-02")).unwrap(),
        DayKind::DayOff("moved from Sat 4 Jan")
    );
    assert_eq!(
        cal.day(date("2025-01-04")).unwrap(),
        DayKind::Working { shortened: true }
    );
    assert_eq!(cal.day(date("2025-01-05")).unwrap(), DayKind::Weekend);
    let hours = cal
        .working_hours(date("2025-03-07"))
        .unwrap()
        .expect("working");
    assert_eq!(hours.end, NaiveTime::from_hms_opt(17, 0, 0).unwrap());
    assert!(hours.shortened);
    assert_eq!(cal.working_hours(date("2025-03-08")).unwrap(), None);
    assert_eq!(
        cal.next_working_day(date("2025-01-01")).unwrap(),
        date("2025-01-03")
    );
    assert_eq!(
        cal.add_working_days(date("2025-01-01"), 2).unwrap(),
        date("2025-01-04")
    );
    assert_eq!(
        cal.add_working_days(date("2025-01-01"), 0).unwrap(),
        date("2025-01-01")
    );
    assert!(cal.is_complete(2025).unwrap());
}

#[test]
fn a_year_not_covered_is_an_error_naming_calendar_and_year() {
    let cal = parse("[years.2025]\ncomplete = true\n").expect("parses");
    let err = cal.day(date("2026-01-01")).unwrap_err();
    assert!(
        matches!(&err, CalendarError::YearNotCovered { calendar, year: 2026 } if calendar == "t"),
        "{err:?}"
    );
    assert!(err.to_string().contains("[years.2026]"), "{err}");
    // The search for the next working day runs into the uncovered year.
    let err = cal.next_working_day(date("2025-12-31")).unwrap_err();
    assert!(
        matches!(err, CalendarError::YearNotCovered { year: 2026, .. }),
        "{err:?}"
    );
}

#[test]
fn close_of_business_of_a_day_off_is_an_error_naming_the_date() {
    let cal = parse("[years.2025]\ncomplete = true\n").expect("parses");
    let err = cal.close_of_business(date("2025-01-04")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "calendar \"t\": 2025-01-04 (Sat) is not a working day"
    );
}

#[test]
fn toml_syntax_and_unknown_fields_are_errors() {
    fails_body("[years.2025\n", &["invalid TOML"]);
    fails_body(
        "[years.2025]\ncomplete = true\nholiday = []\n",
        &["invalid TOML", "holiday"],
    );
    fails(
        &HEAD.replace("time_zone", "timezone"),
        &["invalid TOML", "timezone"],
    );
    fails_body("[years.2025]\n", &["invalid TOML", "complete"]);
}

#[test]
fn header_fields_are_checked() {
    fails(
        &HEAD.replace("Asia/Tashkent", "Asia/Nowhere"),
        &["time_zone \"Asia/Nowhere\" is not an IANA time zone"],
    );
    fails(
        &format!(
            "{}[years.2025]\ncomplete = true\n",
            HEAD.replace("\"sun\"", "\"sunnday\"")
        ),
        &["weekend: \"sunnday\" is not a day of the week"],
    );
    fails(
        &format!(
            "{}[years.2025]\ncomplete = true\n",
            HEAD.replace("\"09:00\"", "\"9am\"")
        ),
        &["business_hours.start: \"9am\" is not a time"],
    );
    fails(
        &format!(
            "{}[years.2025]\ncomplete = true\n",
            HEAD.replace("\"18:00\"", "\"08:00\"")
        ),
        &["start 09:00:00 is not before end 08:00:00"],
    );
    fails(HEAD, &["no [years.YYYY] table"]);
    fails_body(
        "[years.twenty]\ncomplete = true\n",
        &["years.twenty", "is not a year"],
    );
}

#[test]
fn incomplete_years_need_a_note() {
    fails_body(
        "[years.2027]\ncomplete = false\n",
        &["years.2027.note: an incomplete year needs a note"],
    );
    let cal =
        parse("[years.2027]\ncomplete = false\nnote = \"decree not published\"\n").expect("parses");
    assert!(!cal.is_complete(2027).unwrap());
    let coverage = cal.coverage(2027).unwrap();
    assert_eq!(coverage.note, Some("decree not published"));
}

#[test]
fn entries_are_checked_naming_field_and_date() {
    fails_body(
        "[years.2025]\ncomplete = true\nholidays = [{ date = 2026-01-01, name = \"x\" }]\n",
        &["years.2025.holidays: 2026-01-01 is not in 2025"],
    );
    fails_body(
        "[years.2025]\ncomplete = true\nholidays = [{ date = \"2025-01-01\", name = \"x\" }]\n",
        &["invalid TOML"],
    );
    fails_body(
            "[years.2025]\ncomplete = true\nholidays = [{ date = 2025-01-01T10:00:00, name = \"x\" }]\n",
            &["years.2025.holidays: 2025-01-01T10:00:00 is not a plain date"],
        );
    fails_body(
        "[years.2025]\ncomplete = true\nholidays = [{ date = 2025-01-01 }]\n",
        &["years.2025.holidays: 2025-01-01 needs a name"],
    );
    fails_body(
        "[years.2025]\ncomplete = true\n\
             holidays = [{ date = 2025-01-02, name = \"x\" }]\n\
             days_off = [{ date = 2025-01-02, name = \"y\" }]\n",
        &["years.2025.days_off: 2025-01-02 is already listed in years.2025.holidays"],
    );
    fails_body(
        "[years.2025]\ncomplete = true\ndays_off = [{ date = 2025-01-04, name = \"y\" }]\n",
        &["years.2025.days_off: 2025-01-04 is a Sat, already a weekend day"],
    );
    fails_body(
        "[years.2025]\ncomplete = true\nworking_days = [{ date = 2025-01-03 }]\n",
        &["years.2025.working_days: 2025-01-03 is a Fri, already a working day"],
    );
    fails_body(
        "[years.2025]\ncomplete = true\nshortened = [{ date = 2025-01-05 }]\n",
        &["years.2025.shortened: 2025-01-05 (Sun) is not a working day"],
    );
    fails_body(
        "[years.2025]\ncomplete = true\n\
             holidays = [{ date = 2025-01-01, name = \"x\" }]\n\
             shortened = [{ date = 2025-01-01 }, { date = 2025-01-02 }, { date = 2025-01-02 }]\n",
        &[
            "2025-01-01 (Wed) is not a working day",
            "years.2025.shortened: 2025-01-02 is listed twice",
        ],
    );
    fails(
        &format!(
            "{}[years.2025]\ncomplete = true\nshortened = [{{ date = 2025-01-02 }}]\n",
            HEAD.replace("= 60", "= 0")
        ),
        &["2025-01-02 is listed but pre_holiday_shortening_minutes is 0"],
    );
}

#[test]
fn local_times_resolve_gaps_and_repeats() {
    let cal = parse("[years.2025]\ncomplete = true\n")
        .expect("parses")
        .in_zone(chrono_tz::Europe::Berlin);
    let local = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    let utc = |s: &str| {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
    };
    // 02:30 does not exist on 30 March 2025: the first valid minute is 03:00 CEST.
    assert_eq!(
        cal.from_local(local("2025-03-30 02:30")),
        utc("2025-03-30 01:00")
    );
    // 02:30 happens twice on 26 October 2025: the later one, CET.
    assert_eq!(
        cal.from_local(local("2025-10-26 02:30")),
        utc("2025-10-26 01:30")
    );
    assert_eq!(cal.default_time_zone(), chrono_tz::Asia::Tashkent);
}

#[test]
fn calendars_load_a_directory_by_file_stem() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("aa.toml"),
        format!("{HEAD}[years.2025]\ncomplete = true\n"),
    )
    .expect("write");
    std::fs::write(dir.path().join("README.md"), "not a calendar").expect("write");
    let calendars = Calendars::load(dir.path()).expect("loads");
    assert_eq!(calendars.names().collect::<Vec<_>>(), ["aa"]);
    let err = calendars.calendar("bb").unwrap_err();
    assert_eq!(err.to_string(), "no calendar named \"bb\" (loaded: aa)");

    std::fs::write(dir.path().join("bad.toml"), "name = 1").expect("write");
    let err = Calendars::load(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("calendar \"bad\": invalid TOML"),
        "{err}"
    );

    let missing = dir.path().join("missing");
    let err = Calendars::load(&missing).unwrap_err();
    assert!(matches!(err, CalendarError::Io { .. }), "{err:?}");
}
