//! The report as one self-contained HTML page: inline CSS, charts as inline
//! SVG (the `svg` module), no script and nothing loaded from elsewhere, and a
//! print stylesheet (A4, tables and charts kept whole on a page) so it
//! prints cleanly on paper.
//!
//! Numbers carry stable hooks for tools and tests: each table row is
//! `<tr data-key="…">` with cells `<td data-col="requests">`, the total row
//! is `<tr id="total">` with cells `id="total-requests"` and so on (the CSV
//! column names), and reply times give milliseconds in `data-ms`.

use super::csv::COLUMNS;
use super::sla::{human_ms, Row, SlaReport, REPLY_KINDS};
use super::svg;
use std::fmt::Write as _;

const CSS: &str = r#"
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
  color: #1a1a1a; max-width: 1100px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 2px; }
.sub { color: #444; margin: 0 0 12px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; font-size: 13px; }
dl.meta dt { color: #555; }
dl.meta dd { margin: 0; }
.basis ul { margin: 4px 0; padding-left: 20px; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; }
.card { border: 1px solid #ccc; border-radius: 4px; padding: 6px 12px; min-width: 92px; }
.card .n { display: block; font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .l { font-size: 12px; color: #555; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #bbb; padding: 3px 6px; }
th { background: #f0f0f0; font-weight: 600; }
td.num { text-align: right; }
td.key { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; white-space: nowrap; }
tfoot td { font-weight: 700; background: #f7f7f7; border-top: 2px solid #444; }
td.bad { color: #b71c1c; font-weight: 600; }
figure { margin: 8px 0; }
figcaption { font-size: 12px; color: #555; }
svg { max-width: 100%; height: auto; font-family: inherit; }
.notes { font-size: 12.5px; color: #333; }
footer { margin-top: 24px; font-size: 11px; color: #666; }
@page { size: A4 portrait; margin: 14mm 12mm; }
@media print {
  body { font-size: 9.5pt; max-width: none; margin: 0; padding: 0; color: #000; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  table { font-size: 7pt; }
  #sla-table { width: 100%; }
  th, td { padding: 1px 2px; }
  td.key { white-space: normal; overflow-wrap: anywhere; }
  td.num { white-space: nowrap; }
  table, figure, .cards, .basis, dl.meta, tr { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
  thead { display: table-header-group; }
  tfoot { display: table-row-group; }
  section.chart { break-before: auto; }
  a { color: inherit; text-decoration: none; }
}
"#;

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The report as an HTML page.
pub fn render(r: &SlaReport) -> String {
    let p = &r.period;
    let by = r.by.name();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Exchange quality report {}</title>\n<style>{CSS}</style>\n</head>\n<body>",
        escape(&p.label)
    );
    let _ = writeln!(
        s,
        "<header>\n<h1>Quality of the interagency exchange: service levels by {by}</h1>\n\
         <p class=\"sub\">Period <strong id=\"period\">{}</strong>: {} to {} inclusive, days counted in {}.</p>\n\
         <dl class=\"meta\">\
         <dt>From (UTC)</dt><dd id=\"from-utc\">{}</dd>\
         <dt>To (UTC, exclusive)</dt><dd id=\"to-utc\">{}</dd>\
         <dt>Rows</dt><dd>one per {by}, and the total</dd>\
         <dt>Events counted</dt><dd id=\"events-counted\">{}</dd>\
         <dt>Generated</dt><dd>{} by <code>mev report sla</code></dd></dl>",
        escape(&p.label),
        p.first_day,
        p.last_day,
        escape(&p.time_zone),
        p.from_utc,
        p.to_utc,
        r.events_counted,
        r.generated_at
    );
    s.push_str("<section class=\"basis\"><h2>Legal basis</h2><ul>");
    for b in &r.legal_basis {
        let _ = write!(s, "<li>{}</li>", escape(b));
    }
    s.push_str("</ul></section>\n</header>\n");
    summary(&mut s, &r.total);
    table(&mut s, r);
    let _ = writeln!(
        s,
        "<section class=\"chart\"><h2>Deadline compliance by {by}</h2><figure>{}\
         <figcaption>Replies on time, replies late, and deadlines breached (passed without a reply), per {by}.</figcaption>\
         </figure></section>",
        svg::compliance(&r.rows)
    );
    let _ = writeln!(
        s,
        "<section class=\"chart\"><h2>Reply times</h2><figure>{}\
         <figcaption>All replies received in the period, by time from the request's acceptance to the reply's. \
         Dashed lines: the 2-second real-time and 48-hour limits of RU 963 §10.</figcaption>\
         </figure></section>",
        svg::reply_times(&r.reply_time_histogram)
    );
    rejections(&mut s, r);
    notes(&mut s, r);
    let _ = writeln!(
        s,
        "<footer>mev report sla · {} · by {by} · generated {}</footer>\n</body>\n</html>",
        escape(&p.label),
        r.generated_at
    );
    s
}

fn summary(s: &mut String, t: &Row) {
    let with_deadline = t.on_time + t.late;
    let share = if with_deadline == 0 {
        "—".to_string()
    } else {
        format!("{:.1}%", 100.0 * t.on_time as f64 / with_deadline as f64)
    };
    let time = |v: Option<i64>| v.map_or("—".to_string(), human_ms);
    s.push_str("<section id=\"summary\"><h2>Summary</h2><div class=\"cards\">");
    for (id, n, label) in [
        ("requests", t.requests.to_string(), "requests"),
        ("replies", t.replies.total.to_string(), "replies"),
        ("on-time-share", share, "of replies with a deadline on time"),
        ("late", t.late.to_string(), "late replies"),
        ("breached", t.breached.to_string(), "deadlines breached"),
        ("at-risk", t.at_risk.to_string(), "at risk"),
        ("median", time(t.reply_time_ms.median), "median reply time"),
        ("p95", time(t.reply_time_ms.p95), "95th percentile"),
    ] {
        let _ = write!(
            s,
            "<div class=\"card\"><span class=\"n\" id=\"card-{id}\">{n}</span><span class=\"l\">{label}</span></div>"
        );
    }
    s.push_str("</div></section>\n");
}

fn table(s: &mut String, r: &SlaReport) {
    let by = r.by.name();
    let _ = write!(
        s,
        "<section><h2>By {by}</h2><table id=\"sla-table\">\n<thead><tr>\
         <th rowspan=\"2\">{by}</th><th rowspan=\"2\">requests</th><th colspan=\"5\">replies</th>\
         <th rowspan=\"2\">on time</th><th rowspan=\"2\">late</th><th rowspan=\"2\">breached</th>\
         <th rowspan=\"2\">at risk</th><th rowspan=\"2\">late dispatch</th><th rowspan=\"2\">rejected</th>\
         <th colspan=\"2\">reply time</th></tr>\n<tr><th>all</th>"
    );
    for k in REPLY_KINDS {
        let _ = write!(s, "<th>{}</th>", k.replace('_', " "));
    }
    s.push_str("<th>median</th><th>95th pct.</th></tr></thead>\n<tbody>\n");
    if r.rows.is_empty() {
        let _ = writeln!(
            s,
            "<tr><td colspan=\"{}\">Nothing was recorded in this period.</td></tr>",
            COLUMNS.len() + 1
        );
    }
    for row in &r.rows {
        let _ = write!(s, "<tr data-key=\"{}\">", escape(&row.key));
        cells(s, row, None);
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n<tfoot><tr id=\"total\" data-key=\"(total)\">");
    cells(s, &r.total, Some("total"));
    s.push_str("</tr></tfoot>\n</table></section>\n");
}

fn cells(s: &mut String, row: &Row, id_prefix: Option<&str>) {
    let id = |col: &str| id_prefix.map_or(String::new(), |p| format!(" id=\"{p}-{col}\""));
    let _ = write!(s, "<td class=\"key\">{}</td>", escape(&row.key));
    let mut counts = vec![row.requests, row.replies.total];
    counts.extend(REPLY_KINDS.iter().map(|k| row.replies.of(k)));
    counts.extend([
        row.on_time,
        row.late,
        row.breached,
        row.at_risk,
        row.late_dispatch,
        row.rejected,
    ]);
    for (col, n) in COLUMNS.iter().zip(counts) {
        let bad = matches!(*col, "late" | "breached" | "late_dispatch") && n > 0;
        let class = if bad { "num bad" } else { "num" };
        let _ = write!(
            s,
            "<td class=\"{class}\" data-col=\"{col}\"{}>{n}</td>",
            id(col)
        );
    }
    for (col, v) in [
        ("reply_median_ms", row.reply_time_ms.median),
        ("reply_p95_ms", row.reply_time_ms.p95),
    ] {
        let (ms, text) = v.map_or((String::new(), "—".to_string()), |v| {
            (v.to_string(), human_ms(v))
        });
        let _ = write!(
            s,
            "<td class=\"num\" data-col=\"{col}\" data-ms=\"{ms}\"{}>{text}</td>",
            id(col)
        );
    }
}

fn rejections(s: &mut String, r: &SlaReport) {
    s.push_str("<section><h2>Rejections by code</h2>");
    if r.rejected_by_code.is_empty() {
        s.push_str("<p>No message was rejected in this period.</p></section>\n");
        return;
    }
    s.push_str("<table id=\"rejections\"><thead><tr><th>code</th><th>name</th><th>messages</th></tr></thead><tbody>");
    for c in &r.rejected_by_code {
        let _ = write!(
            s,
            "<tr data-code=\"{0}\"><td class=\"num\">{0}</td><td>{1}</td><td class=\"num\">{2}</td></tr>",
            c.code,
            escape(c.name),
            c.count
        );
    }
    s.push_str("</tbody></table></section>\n");
}

fn notes(s: &mut String, r: &SlaReport) {
    let by = r.by.name();
    let _ = writeln!(
        s,
        "<section class=\"notes\"><h2>How this is counted</h2><ul>\
         <li>From the broker's journal. Each event is counted in the period it was recorded in \
         (days in {}; the journal's times are UTC), in exactly one row, so the rows add up to the total.</li>\
         <li>Requests: requests accepted by the exchange (status updates are not requests); \
         replies by kind: replies accepted; on time / late: replies to requests with a deadline, \
         against that deadline; breached: requests whose deadline passed without a reply, once per request; \
         at risk: requests warned that their deadline was near, once per request.</li>\
         <li>Rows by {by}: {}</li>\
         <li>Reply time: from the request's acceptance to the reply's, both as recorded by the exchange. \
         Median and 95th percentile by the nearest-rank method (an observed time: the ⌈p·n/100⌉-th smallest).</li>\
         </ul></section>",
        escape(&r.period.time_zone),
        match r.by {
            super::sla::By::Agency => "the provider answers for requests, replies and deadlines; \
                the consumer for late dispatches (UZ annex 2 §12); the sender for rejected messages.",
            super::sla::By::Service => "the registered service the message names.",
        }
    );
}
