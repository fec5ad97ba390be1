//! The report as CSV (RFC 4180): a header row, one row per agency or
//! service, then the total row labelled `(total)`. Reply times are in
//! milliseconds, empty where there were no replies.

use super::sla::{Row, SlaReport};

/// The columns after the first (which is `agency` or `service`).
pub const COLUMNS: [&str; 14] = [
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

/// The report as CSV text.
pub fn render(report: &SlaReport) -> String {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let header = std::iter::once(report.by.name()).chain(COLUMNS);
    // Writing to memory cannot fail; a row of the wrong length would be a bug.
    out.write_record(header).expect("the CSV header");
    for row in report.rows.iter().chain(std::iter::once(&report.total)) {
        out.write_record(fields(row)).expect("a CSV row");
    }
    let bytes = out.into_inner().expect("an in-memory CSV writer flushes");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

/// A row's fields, in the order of the header.
fn fields(r: &Row) -> Vec<String> {
    let counts = r.counts();
    let times = [r.reply_time_ms.median, r.reply_time_ms.p95]
        .map(|t| t.map_or(String::new(), |t| t.to_string()));
    std::iter::once(r.key.clone())
        .chain(counts.iter().map(u64::to_string))
        .chain(times)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn keys_are_quoted_when_needed_and_lines_end_in_crlf() {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
        let period = super::super::period::Period::days(day, day, chrono_tz::UTC).unwrap();
        let mut report =
            super::super::sla::build(&[], &period, super::super::sla::By::Agency, Utc::now());
        for key in ["UZ-MVD", "a,b", "say \"hi\""] {
            let mut row = report.total.clone();
            row.key = key.to_string();
            report.rows.push(row);
        }
        let text = render(&report);
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert!(lines[1].starts_with("UZ-MVD,"), "{text}");
        assert!(lines[2].starts_with("\"a,b\","), "{text}");
        assert!(lines[3].starts_with("\"say \"\"hi\"\"\","), "{text}");
        assert_eq!(lines.last(), Some(&""), "the last line ends in CRLF too");
        assert_eq!(lines[0].split(',').count(), COLUMNS.len() + 1);
    }
}
