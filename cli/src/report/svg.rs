//! The report's charts as inline SVG, drawn here with no library and no
//! script: deadline compliance per row (stacked bars of on time, late and
//! breached) and the distribution of reply times. Late bars are hatched and
//! breached ones dark, so the charts still read on a black-and-white printer.

use super::html::escape;
use super::sla::{Bucket, Row};
use std::fmt::Write as _;

const WIDTH: i64 = 720;
const LABEL_W: i64 = 170;
const BAR_H: i64 = 18;
const GAP: i64 = 8;

/// Fill colours (and the late bars' hatching).
const ON_TIME: &str = "#2e7d32";
const LATE: &str = "url(#hatch-late)";
const BREACHED: &str = "#b71c1c";

/// Stacked horizontal bars: on time, late, breached, one bar per row.
pub fn compliance(rows: &[Row]) -> String {
    let max = rows
        .iter()
        .map(|r| r.on_time + r.late + r.breached)
        .max()
        .unwrap_or(0);
    let plot_w = WIDTH - LABEL_W - 60;
    let top = 28;
    let n = rows.len().max(1) as i64;
    let height = top + n * (BAR_H + GAP) + 10;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="chart-compliance" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-labelledby="chart-compliance-title">"#
    );
    s.push_str(r#"<title id="chart-compliance-title">Replies on time, late, and deadlines breached</title>"#);
    s.push_str(concat!(
        r#"<defs><pattern id="hatch-late" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"#,
        r##"<rect width="6" height="6" fill="#f9a825"/><line x1="0" y1="0" x2="0" y2="6" stroke="#7a5200" stroke-width="2"/></pattern></defs>"##
    ));
    legend(
        &mut s,
        &[("on time", ON_TIME), ("late", LATE), ("breached", BREACHED)],
    );
    if max == 0 {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" class="empty" fill="#555">No reply or deadline fell in this period.</text></svg>"##,
            LABEL_W,
            top + 14
        );
        return s;
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as i64 * (BAR_H + GAP);
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="11">{}</text>"#,
            LABEL_W - 6,
            y + BAR_H - 5,
            escape(&clip(&r.key, 26))
        );
        let mut x = LABEL_W;
        for (n, fill, what) in [
            (r.on_time, ON_TIME, "on time"),
            (r.late, LATE, "late"),
            (r.breached, BREACHED, "breached"),
        ] {
            if n == 0 {
                continue;
            }
            let w = (n as i64 * plot_w / max as i64).max(1);
            let _ = write!(
                s,
                r##"<rect x="{x}" y="{y}" width="{w}" height="{BAR_H}" fill="{fill}" stroke="#222" stroke-width="0.5"><title>{}: {n} {what}</title></rect>"##,
                escape(&r.key)
            );
            x += w;
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="11">{} / {} / {}</text>"#,
            x + 6,
            y + BAR_H - 5,
            r.on_time,
            r.late,
            r.breached
        );
    }
    s.push_str("</svg>");
    s
}

/// Vertical bars of reply times by bucket, with the legal limits marked.
pub fn reply_times(buckets: &[Bucket]) -> String {
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    let (left, top, plot_h) = (40, 24, 180);
    let bar_slot = (WIDTH - left - 10) / buckets.len().max(1) as i64;
    let height = top + plot_h + 48;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="chart-reply-times" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-labelledby="chart-reply-times-title">"#
    );
    s.push_str(
        r#"<title id="chart-reply-times-title">Distribution of reply times (from the request's acceptance to the reply's)</title>"#,
    );
    let base = top + plot_h;
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{base}" x2="{}" y2="{base}" stroke="#222"/>"##,
        WIDTH - 10
    );
    if max == 0 {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" class="empty" fill="#555">No replies in this period.</text>"##,
            left + 10,
            top + plot_h / 2
        );
    }
    for (i, b) in buckets.iter().enumerate() {
        let x = left + i as i64 * bar_slot;
        if max > 0 && b.count > 0 {
            let h = (b.count as i64 * plot_h / max as i64).max(1);
            let _ = write!(
                s,
                r##"<rect x="{}" y="{}" width="{}" height="{h}" fill="#1565c0" stroke="#222" stroke-width="0.5"><title>{}: {}</title></rect>"##,
                x + 6,
                base - h,
                bar_slot - 12,
                escape(b.label),
                b.count
            );
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
                x + bar_slot / 2,
                base - h - 4,
                b.count
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="10">{}</text>"#,
            x + bar_slot / 2,
            base + 14,
            escape(b.label)
        );
        // The limits of RU 963 §10: 2 s (real time) and 48 hours.
        let mark = match b.upper_ms {
            Some(2_000) => Some("2 s"),
            Some(172_800_000) => Some("48 h"),
            _ => None,
        };
        if let Some(m) = mark {
            let xl = x + bar_slot;
            let _ = write!(
                s,
                r##"<line x1="{xl}" y1="{top}" x2="{xl}" y2="{}" stroke="#b71c1c" stroke-dasharray="4 3"/><text x="{}" y="{}" font-size="10" fill="#b71c1c">{m} limit (RU 963 §10)</text>"##,
                base + 20,
                xl + 3,
                top + 10
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{left}" y="{}" font-size="10">reply time</text></svg>"#,
        base + 38
    );
    s
}

fn legend(s: &mut String, items: &[(&str, &str)]) {
    let mut x = LABEL_W;
    for (label, fill) in items {
        let _ = write!(
            s,
            r##"<rect x="{x}" y="4" width="12" height="12" fill="{fill}" stroke="#222" stroke-width="0.5"/><text x="{}" y="14" font-size="11">{label}</text>"##,
            x + 16
        );
        x += 24 + 7 * label.len() as i64 + 20;
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
