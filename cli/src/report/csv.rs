//! The report as CSV (RFC 4180): a header row, one row per agency or
//! service, then the total row labelled `(total)`. Reply times are in
//! milliseconds, empty where there were no replies.

use super::sla::{Row, SlaReport, REPLY_KINDS};
use std::fmt::Write as _;

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
    let mut out = String::new();
    out.push_str(report.by.name());
    for c in COLUMNS {
        out.push(',');
        out.push_str(c);
    }
    out.push_str("\r\n");
    for row in report.rows.iter().chain(std::iter::once(&report.total)) {
        line(&mut out, row);
    }
    out
}

fn line(out: &mut String, r: &Row) {
    out.push_str(&field(&r.key));
    let mut counts = vec![r.requests, r.replies.total];
    counts.extend(REPLY_KINDS.iter().map(|k| r.replies.of(k)));
    counts.extend([
        r.on_time,
        r.late,
        r.breached,
        r.at_risk,
        r.late_dispatch,
        r.rejected,
    ]);
    for n in counts {
        let _ = write!(out, ",{n}");
    }
    for t in [r.reply_time_ms.median, r.reply_time_ms.p95] {
        out.push(',');
        if let Some(t) = t {
            let _ = write!(out, "{t}");
        }
    }
    out.push_str("\r\n");
}

/// A field, quoted when it must be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_when_needed() {
        assert_eq!(field("UZ-MVD"), "UZ-MVD");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
