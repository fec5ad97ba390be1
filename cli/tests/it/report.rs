//! Quality reports (issue 7, item 5): `mev report sla` over a demo run's
//! journal has the totals the journal itself gives, in CSV, JSON and HTML,
//! and its rows add up to the total; over a small hand-made journal it
//! counts late replies, breaches (once per request), at-risk warnings, late
//! dispatches and rejections where they belong, by period and time zone.

use clap::Parser;
use mev_broker::store::prelude::*;
use mev_broker::store::{Event, EventKind, Store};
use mev_cli::demo::DemoArgs;
use mev_cli::report::ReportCommand;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
struct Demo {
    #[command(flatten)]
    args: DemoArgs,
}

#[derive(Parser)]
struct Report {
    #[command(subcommand)]
    cmd: ReportCommand,
}

const REPLY_KINDS: [&str; 4] = ["documents", "refusal", "not_held", "insufficient_data"];

/// A journal left by `mev demo --requests 60 --data DIR`, copied fresh per
/// test (a redb store is opened by one user at a time).
fn demo_store() -> tempfile::TempDir {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let src = MADE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mev-report-{}", uuid::Uuid::new_v4()));
        let demo = Demo::parse_from([
            "demo".as_ref(),
            "--requests".as_ref(),
            "60".as_ref(),
            "--data".as_ref(),
            dir.as_os_str(),
            "--register".as_ref(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas").as_ref(),
        ]);
        let code = mev_cli::demo::run(demo.args).expect("the demo runs");
        assert_eq!(code, std::process::ExitCode::SUCCESS);
        dir
    });
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("broker.redb"), copy.path().join("broker.redb")).unwrap();
    copy
}

/// Days around today (UTC), so a demo run just before midnight is covered.
fn around_today() -> [String; 4] {
    let today = chrono::Utc::now().date_naive();
    [
        "--from".into(),
        (today - chrono::Days::new(1)).to_string(),
        "--to".into(),
        (today + chrono::Days::new(1)).to_string(),
    ]
}

/// Runs `mev report sla --data DIR ARGS --out FILE` in-process; the file's text.
fn report(dir: &Path, args: &[&str]) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut argv: Vec<String> = vec!["report".into(), "sla".into(), "--data".into()];
    argv.push(dir.to_string_lossy().into_owned());
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.extend(["--out".into(), out.path().to_string_lossy().into_owned()]);
    let cli = Report::try_parse_from(&argv).expect("the options parse");
    let code = mev_cli::report::run(cli.cmd).expect("the report is made");
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    std::fs::read_to_string(out.path()).unwrap()
}

/// The CSV's rows by their first field: column name → value.
fn csv_rows(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header row").split(',').collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), header.len(), "{l}");
            let row = header
                .iter()
                .zip(&f)
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            (f[0].to_string(), row)
        })
        .collect()
}

/// The number in the HTML element with `id`.
fn html_number(html: &str, id: &str) -> u64 {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id}"));
    let rest = &html[at..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    let text = &text[..text.find('<').unwrap()];
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("#{id} holds {text:?}"))
}

/// Counts taken straight from the journal, the way a reader of it would.
#[derive(Debug, Default)]
struct Expected {
    requests: u64,
    replies: BTreeMap<String, u64>,
    on_time: u64,
    late: u64,
    rejected: u64,
    reply_times: Vec<i64>,
}

fn expected(events: &[Event]) -> Expected {
    let mut x = Expected::default();
    let mut accepted: HashMap<&str, i64> = HashMap::new();
    for e in events {
        match e.kind {
            EventKind::Received if e.in_reply_to.is_empty() => {
                x.requests += 1;
                accepted.insert(&e.message_id, e.at_ms);
            }
            EventKind::ReplyReceived => {
                *x.replies.entry(e.reason.clone()).or_default() += 1;
                x.reply_times
                    .push(e.at_ms - accepted[e.in_reply_to.as_str()]);
            }
            EventKind::ReplyOnTime => x.on_time += 1,
            EventKind::ReplyLate => x.late += 1,
            EventKind::Rejected => x.rejected += 1,
            _ => {}
        }
    }
    x.reply_times.sort();
    x
}

/// Nearest rank, written out again here: the ⌈p·n/100⌉-th smallest.
fn nearest_rank(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

fn demo_expected(dir: &Path) -> Expected {
    let x = expected(&Store::open(dir).unwrap().events().unwrap());
    assert_eq!(x.requests, 60, "the demo's 60 requests are in the journal");
    assert!(x.replies.len() == 4, "every reply kind occurs: {x:?}");
    x
}

#[test]
fn demo_csv_totals_match_the_journal() {
    let dir = demo_store();
    let x = demo_expected(dir.path());
    let args = around_today();
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend(["--format", "csv"]);
    let text = report(dir.path(), &a);
    assert!(text.starts_with("agency,requests,replies,documents,refusal,not_held,insufficient_data,on_time,late,breached,at_risk,late_dispatch,rejected,reply_median_ms,reply_p95_ms\r\n"), "{text}");
    let rows = csv_rows(&text);
    let total = &rows["(total)"];
    let n = |c: &str| total[c].parse::<u64>().unwrap();
    assert_eq!(n("requests"), x.requests);
    assert_eq!(n("replies"), x.replies.values().sum::<u64>());
    for k in REPLY_KINDS {
        assert_eq!(n(k), x.replies[k], "{k}");
    }
    assert_eq!(n("on_time"), x.on_time);
    assert_eq!(n("late"), x.late);
    assert_eq!(n("rejected"), x.rejected);
    assert_eq!(
        (n("breached"), n("late")),
        (0, 0),
        "the demo answers at once"
    );
    let ms = |c: &str| total[c].parse::<i64>().ok();
    assert_eq!(ms("reply_median_ms"), nearest_rank(&x.reply_times, 50));
    assert_eq!(ms("reply_p95_ms"), nearest_rank(&x.reply_times, 95));
    assert!(rows.len() > 2, "more than one provider: {rows:?}");
}

#[test]
fn demo_json_totals_match_the_journal_and_service_rows_add_up() {
    let dir = demo_store();
    let x = demo_expected(dir.path());
    let args = around_today();
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend(["--format", "json", "--by", "service"]);
    let v: Value = serde_json::from_str(&report(dir.path(), &a)).unwrap();
    assert_eq!(v["report"], "sla");
    assert_eq!(v["by"], "service");
    assert_eq!(v["period"]["time_zone"], "UTC");
    let basis = v["legal_basis"].to_string();
    assert!(basis.contains("963") && basis.contains("§9") && basis.contains("§11"));
    assert!(basis.contains("No. 120") && basis.contains("§3"));
    let t = &v["total"];
    assert_eq!(t["requests"], x.requests);
    assert_eq!(t["replies"]["total"], x.replies.values().sum::<u64>());
    for k in REPLY_KINDS {
        assert_eq!(t["replies"][k], x.replies[k], "{k}");
    }
    assert_eq!(t["on_time"], x.on_time);
    assert_eq!(t["late"], x.late);
    assert_eq!(t["rejected"], x.rejected);
    assert_eq!(
        t["reply_time_ms"]["median"].as_i64(),
        nearest_rank(&x.reply_times, 50)
    );
    assert_eq!(
        t["reply_time_ms"]["p95"].as_i64(),
        nearest_rank(&x.reply_times, 95)
    );
    let hist: u64 = v["reply_time_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(hist, x.reply_times.len() as u64);

    // Rows by service add up to the total, column by column.
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.len() > 1, "{rows:?}");
    let sum =
        |f: &dyn Fn(&Value) -> &Value| -> u64 { rows.iter().map(|r| f(r).as_u64().unwrap()).sum() };
    for col in [
        "requests",
        "on_time",
        "late",
        "breached",
        "at_risk",
        "late_dispatch",
        "rejected",
    ] {
        assert_eq!(sum(&|r| &r[col]), t[col].as_u64().unwrap(), "{col}");
    }
    for k in [
        "total",
        "documents",
        "refusal",
        "not_held",
        "insufficient_data",
    ] {
        assert_eq!(
            sum(&|r| &r["replies"][k]),
            t["replies"][k].as_u64().unwrap(),
            "{k}"
        );
    }
}

#[test]
fn demo_html_totals_match_the_journal_and_it_prints() {
    let dir = demo_store();
    let x = demo_expected(dir.path());
    let args = around_today();
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend(["--format", "html"]);
    let html = report(dir.path(), &a);
    assert_eq!(html_number(&html, "total-requests"), x.requests);
    assert_eq!(
        html_number(&html, "total-replies"),
        x.replies.values().sum::<u64>()
    );
    for k in REPLY_KINDS {
        assert_eq!(html_number(&html, &format!("total-{k}")), x.replies[k]);
    }
    assert_eq!(html_number(&html, "total-on_time"), x.on_time);
    assert_eq!(html_number(&html, "total-late"), x.late);
    assert_eq!(html_number(&html, "total-rejected"), x.rejected);
    assert_eq!(html_number(&html, "card-requests"), x.requests);
    let median = nearest_rank(&x.reply_times, 50).unwrap();
    assert!(
        html.contains(&format!(
            "id=\"total-reply_median_ms\" data-ms=\"{median}\""
        )) || html.contains(&format!(
            "data-ms=\"{median}\" id=\"total-reply_median_ms\""
        )),
        "the median's milliseconds are given"
    );
    // The charts are inline SVG, drawn with data.
    for chart in ["chart-compliance", "chart-reply-times"] {
        let at = html
            .find(&format!("<svg id=\"{chart}\""))
            .unwrap_or_else(|| panic!("no {chart}"));
        let svg = &html[at..at + html[at..].find("</svg>").unwrap()];
        assert!(svg.contains("<rect"), "{chart} has bars");
    }
    // Self-contained and printable.
    assert!(html.contains("@media print") && html.contains("size: A4"));
    assert!(html.contains("break-inside: avoid"));
    assert!(!html.contains("<script"));
    assert!(!html.contains("src=") && !html.contains("href="));
    assert!(html.contains("RU Government resolution No. 963") && html.contains("§11"));
}

#[test]
fn the_mev_binary_reports_and_explains_its_errors() {
    let dir = demo_store();
    let x = demo_expected(dir.path());
    let mev = env!("CARGO_BIN_EXE_mev");
    let data = dir.path().to_str().unwrap();
    let args = around_today();
    let out = Command::new(mev)
        .args(["report", "sla", "--data", data, "--format", "json"])
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"]["requests"], x.requests);
    assert_eq!(v["by"], "agency");

    // CSV is the default; an empty period is a report of zeros, not an error.
    let out = Command::new(mev)
        .args(["report", "sla", "--data", data, "--quarter", "2020Q1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "a header and the total: {text}");
    assert!(
        text.ends_with("(total),0,0,0,0,0,0,0,0,0,0,0,0,,\r\n"),
        "{text}"
    );

    let fails = |args: &[&str], says: &str| {
        let out = Command::new(mev).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    let nowhere = dir.path().join("nowhere");
    let nowhere = nowhere.to_str().unwrap();
    fails(
        &["report", "sla", "--data", nowhere, "--quarter", "2026Q3"],
        "no broker store at",
    );
    assert!(
        !Path::new(nowhere).exists(),
        "a missing store is not created"
    );
    fails(
        &[
            "report",
            "sla",
            "--data",
            data,
            "--from",
            "2026-13-01",
            "--to",
            "2026-12-31",
        ],
        "\"2026-13-01\" is not a date: use YYYY-MM-DD",
    );
    fails(
        &["report", "sla", "--data", data, "--quarter", "2026Q5"],
        "is not a quarter",
    );
    fails(
        &[
            "report",
            "sla",
            "--data",
            data,
            "--from",
            "2026-07-02",
            "--to",
            "2026-07-01",
        ],
        "the period ends (2026-07-01) before it starts (2026-07-02)",
    );
    fails(
        &["report", "sla", "--data", data, "--from", "2026-07-01"],
        "--to",
    );
    fails(
        &[
            "report",
            "sla",
            "--data",
            data,
            "--quarter",
            "2026Q3",
            "--from",
            "2026-07-01",
        ],
        "cannot be used with",
    );
    fails(
        &[
            "report",
            "sla",
            "--data",
            data,
            "--quarter",
            "2026Q3",
            "--tz",
            "Mars/Base",
        ],
        "is not a time zone",
    );
}

// A hand-made journal with late replies, breaches and the rest.

const T0: i64 = 1_783_670_400_000; // 2026-07-10T08:00:00Z
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn ev(kind: EventKind, at_ms: i64, id: &str, from: &str, to: &str, service: &str) -> Event {
    Event {
        at_ms,
        kind,
        message_id: id.into(),
        sender: from.into(),
        recipient: to.into(),
        service: service.into(),
        in_reply_to: String::new(),
        code: 0,
        reason: String::new(),
        deadline_ms: None,
        late_by_ms: None,
    }
}

fn request(at: i64, id: &str, provider: &str, service: &str) -> Event {
    let mut e = ev(EventKind::Received, at, id, "UZ-C", provider, service);
    e.reason = "one-hour".into();
    e.deadline_ms = Some(at + HOUR);
    e
}

fn reply(at: i64, req: &str, provider: &str, service: &str, kind: &str) -> Event {
    let mut e = ev(
        EventKind::ReplyReceived,
        at,
        &format!("{req}-reply"),
        provider,
        "UZ-C",
        service,
    );
    e.in_reply_to = req.into();
    e.reason = kind.into();
    e
}

/// Provider UZ-A (service S1) and UZ-B (S2), consumer UZ-C.
fn synthetic_store() -> tempfile::TempDir {
    assert_eq!(
        chrono::DateTime::from_timestamp_millis(T0)
            .unwrap()
            .to_rfc3339(),
        "2026-07-10T08:00:00+00:00"
    );
    let q2_last = 1_782_863_999_999; // 2026-06-30T23:59:59.999Z
    let q4_first = 1_790_812_800_000; // 2026-10-01T00:00:00Z
    let deadline = |kind, at, id: &str, provider, service| {
        let mut e = ev(kind, at, id, "UZ-C", provider, service);
        e.deadline_ms = Some(T0 + HOUR);
        e
    };
    let mut status = ev(
        EventKind::Received,
        T0 + MIN,
        "r4-status",
        "UZ-B",
        "UZ-C",
        "S2",
    );
    status.in_reply_to = "r4".into();
    let mut rejected = ev(EventKind::Rejected, T0, "bad-1", "UZ-C", "UZ-A", "S1");
    rejected.code = mev_proto::ErrorCode::BadSignature.as_code();
    let mut late = deadline(EventKind::ReplyLate, T0 + 3 * HOUR, "r2", "UZ-A", "S1");
    late.late_by_ms = Some(2 * HOUR);
    let events = vec![
        // r1: answered on time, in 30 minutes.
        request(T0, "r1", "UZ-A", "S1"),
        reply(T0 + 30 * MIN, "r1", "UZ-A", "S1", "documents"),
        deadline(EventKind::ReplyOnTime, T0 + 30 * MIN, "r1", "UZ-A", "S1"),
        // r2: at risk, breached, then answered 2 hours late.
        request(T0, "r2", "UZ-A", "S1"),
        deadline(EventKind::DeadlineAtRisk, T0 + 48 * MIN, "r2", "UZ-A", "S1"),
        deadline(EventKind::DeadlineBreached, T0 + HOUR, "r2", "UZ-A", "S1"),
        reply(T0 + 3 * HOUR, "r2", "UZ-A", "S1", "refusal"),
        late,
        // r3: at risk, breached (recorded twice), never answered.
        request(T0, "r3", "UZ-B", "S2"),
        deadline(EventKind::DeadlineAtRisk, T0 + 48 * MIN, "r3", "UZ-B", "S2"),
        deadline(EventKind::DeadlineBreached, T0 + HOUR, "r3", "UZ-B", "S2"),
        deadline(
            EventKind::DeadlineBreached,
            T0 + HOUR + 5,
            "r3",
            "UZ-B",
            "S2",
        ),
        // r4: dispatched late by the consumer; a status update; answered in 2 s.
        request(T0, "r4", "UZ-B", "S2"),
        ev(EventKind::LateDispatch, T0, "r4", "UZ-C", "UZ-B", "S2"),
        status,
        reply(T0 + 2_000, "r4", "UZ-B", "S2", "not_held"),
        deadline(EventKind::ReplyOnTime, T0 + 2_000, "r4", "UZ-B", "S2"),
        rejected,
        // r5: accepted in Q2 (UTC), answered in Q3 after 1001 ms.
        request(q2_last, "r5", "UZ-A", "S1"),
        reply(q2_last + 1_001, "r5", "UZ-A", "S1", "insufficient_data"),
        deadline(EventKind::ReplyOnTime, q2_last + 1_001, "r5", "UZ-A", "S1"),
        // r6: accepted in Q4 (UTC).
        request(q4_first, "r6", "UZ-B", "S2"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .write(|t| {
            for e in &events {
                t.journal().append(e)?;
            }
            Ok(())
        })
        .unwrap();
    dir
}

#[test]
fn late_breached_at_risk_and_dispatch_are_counted_where_they_belong() {
    let dir = synthetic_store();
    let rows = csv_rows(&report(dir.path(), &["--quarter", "2026Q3"]));
    let get = |key: &str, col: &str| rows[key][col].clone();
    let cols = [
        "requests",
        "replies",
        "documents",
        "refusal",
        "not_held",
        "insufficient_data",
        "on_time",
        "late",
        "breached",
        "at_risk",
        "late_dispatch",
        "rejected",
        "reply_median_ms",
        "reply_p95_ms",
    ];
    let want: [(&str, [&str; 14]); 4] = [
        (
            "UZ-A",
            [
                "2", "3", "1", "1", "0", "1", "2", "1", "1", "1", "0", "0", "1800000", "10800000",
            ],
        ),
        (
            "UZ-B",
            [
                "2", "1", "0", "0", "1", "0", "1", "0", "1", "1", "0", "0", "2000", "2000",
            ],
        ),
        (
            "UZ-C",
            [
                "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "1", "1", "", "",
            ],
        ),
        (
            "(total)",
            [
                "4", "4", "1", "1", "1", "1", "3", "1", "2", "2", "1", "1", "2000", "10800000",
            ],
        ),
    ];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (key, values) in want {
        for (col, v) in cols.iter().zip(values) {
            assert_eq!(get(key, col), v, "{key} {col}");
        }
    }

    // By service: the consumer's late dispatch and rejection go with the service.
    let rows = csv_rows(&report(
        dir.path(),
        &["--quarter", "2026Q3", "--by", "service"],
    ));
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["(total)", "S1", "S2"]);
    let s = |key: &str, col: &str| rows[key][col].parse::<u64>().unwrap();
    assert_eq!(
        (
            s("S1", "requests"),
            s("S1", "late"),
            s("S1", "breached"),
            s("S1", "rejected")
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(
        (
            s("S2", "requests"),
            s("S2", "breached"),
            s("S2", "late_dispatch")
        ),
        (2, 1, 1)
    );

    // In Tashkent (UTC+5), r5's request falls in Q3 too, and nothing of Q4 does.
    let v: Value = serde_json::from_str(&report(
        dir.path(),
        &[
            "--quarter",
            "2026Q3",
            "--tz",
            "Asia/Tashkent",
            "--format",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(v["period"]["time_zone"], "Asia/Tashkent");
    assert_eq!(v["period"]["from_utc"], "2026-06-30T19:00:00Z");
    assert_eq!(v["total"]["requests"], 5);
    assert_eq!(v["rejected_by_code"][0]["name"], "bad_signature");

    // The HTML shows the same, and the chart draws the breaches.
    let html = report(dir.path(), &["--quarter", "2026Q3", "--format", "html"]);
    assert_eq!(html_number(&html, "total-late"), 1);
    assert_eq!(html_number(&html, "total-breached"), 2);
    assert_eq!(html_number(&html, "total-at_risk"), 2);
    assert_eq!(html_number(&html, "total-late_dispatch"), 1);
    assert!(html.contains("<title>UZ-B: 1 breached</title>"), "{html}");
    assert!(html.contains("<title>UZ-A: 1 late</title>"));
}
