//! The report as one self-contained HTML page (maud templates, which escape
//! every value): inline CSS, charts as inline
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
use maud::{html, Markup, PreEscaped, DOCTYPE};

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

/// Escapes text for HTML and SVG (maud's escaping, for the hand-written SVG).
pub fn escape(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    let _ = maud::Escaper::new(&mut out).write_str(s);
    out
}

/// The report as an HTML page.
pub fn render(r: &SlaReport) -> String {
    let p = &r.period;
    let by = r.by.name();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Exchange quality report " (p.label) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { "Quality of the interagency exchange: service levels by " (by) }
                    p.sub {
                        "Period " strong #period { (p.label) } ": " (p.first_day) " to " (p.last_day)
                        " inclusive, days counted in " (p.time_zone) "."
                    }
                    dl.meta {
                        dt { "From (UTC)" } dd #from-utc { (p.from_utc) }
                        dt { "To (UTC, exclusive)" } dd #to-utc { (p.to_utc) }
                        dt { "Rows" } dd { "one per " (by) ", and the total" }
                        dt { "Events counted" } dd #events-counted { (r.events_counted) }
                        dt { "Generated" } dd { (r.generated_at) " by " code { "mev report sla" } }
                    }
                    section.basis {
                        h2 { "Legal basis" }
                        ul { @for b in &r.legal_basis { li { (b) } } }
                    }
                }
                (summary(&r.total))
                (table(r))
                section.chart {
                    h2 { "Deadline compliance by " (by) }
                    figure {
                        (PreEscaped(svg::compliance(&r.rows)))
                        figcaption { "Replies on time, replies late, and deadlines breached (passed without a reply), per " (by) "." }
                    }
                }
                section.chart {
                    h2 { "Reply times" }
                    figure {
                        (PreEscaped(svg::reply_times(&r.reply_time_histogram)))
                        figcaption {
                            "All replies received in the period, by time from the request's acceptance to the reply's. "
                            "Dashed lines: the 2-second real-time and 48-hour limits of RU 963 §10."
                        }
                    }
                }
                (rejections(r))
                (notes(r))
                footer { "mev report sla · " (p.label) " · by " (by) " · generated " (r.generated_at) }
            }
        }
    };
    page.into_string()
}

fn summary(t: &Row) -> Markup {
    let with_deadline = t.on_time + t.late;
    let share = if with_deadline == 0 {
        "—".to_string()
    } else {
        format!("{:.1}%", 100.0 * t.on_time as f64 / with_deadline as f64)
    };
    let time = |v: Option<i64>| v.map_or("—".to_string(), human_ms);
    let cards = [
        ("requests", t.requests.to_string(), "requests"),
        ("replies", t.replies.total.to_string(), "replies"),
        ("on-time-share", share, "of replies with a deadline on time"),
        ("late", t.late.to_string(), "late replies"),
        ("breached", t.breached.to_string(), "deadlines breached"),
        ("at-risk", t.at_risk.to_string(), "at risk"),
        ("median", time(t.reply_time_ms.median), "median reply time"),
        ("p95", time(t.reply_time_ms.p95), "95th percentile"),
    ];
    html! {
        section #summary {
            h2 { "Summary" }
            div.cards {
                @for (id, n, label) in &cards {
                    div.card { span.n id=(format!("card-{id}")) { (n) } span.l { (label) } }
                }
            }
        }
    }
}

fn table(r: &SlaReport) -> Markup {
    let by = r.by.name();
    html! {
        section {
            h2 { "By " (by) }
            table #sla-table {
                thead {
                    tr {
                        th rowspan="2" { (by) } th rowspan="2" { "requests" } th colspan="5" { "replies" }
                        th rowspan="2" { "on time" } th rowspan="2" { "late" } th rowspan="2" { "breached" }
                        th rowspan="2" { "at risk" } th rowspan="2" { "late dispatch" } th rowspan="2" { "rejected" }
                        th colspan="2" { "reply time" }
                    }
                    tr {
                        th { "all" }
                        @for k in REPLY_KINDS { th { (k.replace('_', " ")) } }
                        th { "median" } th { "95th pct." }
                    }
                }
                tbody {
                    @if r.rows.is_empty() {
                        tr { td colspan=(COLUMNS.len() + 1) { "Nothing was recorded in this period." } }
                    }
                    @for row in &r.rows {
                        tr data-key=(row.key) { (cells(row, None)) }
                    }
                }
                tfoot {
                    tr #total data-key="(total)" { (cells(&r.total, Some("total"))) }
                }
            }
        }
    }
}

fn cells(row: &Row, id_prefix: Option<&str>) -> Markup {
    let id = |col: &str| id_prefix.map(|p| format!("{p}-{col}"));
    let counts = row.counts();
    let times = [
        ("reply_median_ms", row.reply_time_ms.median),
        ("reply_p95_ms", row.reply_time_ms.p95),
    ];
    html! {
        td.key { (row.key) }
        @for (col, n) in COLUMNS.iter().zip(counts) {
            @let bad = matches!(*col, "late" | "breached" | "late_dispatch") && n > 0;
            td.num.bad[bad] data-col=(col) id=[id(col)] { (n) }
        }
        @for (col, v) in times {
            td.num data-col=(col) data-ms=(v.map_or(String::new(), |v| v.to_string())) id=[id(col)] {
                (v.map_or("—".to_string(), human_ms))
            }
        }
    }
}

fn rejections(r: &SlaReport) -> Markup {
    html! {
        section {
            h2 { "Rejections by code" }
            @if r.rejected_by_code.is_empty() {
                p { "No message was rejected in this period." }
            } @else {
                table #rejections {
                    thead { tr { th { "code" } th { "name" } th { "messages" } } }
                    tbody {
                        @for c in &r.rejected_by_code {
                            tr data-code=(c.code) { td.num { (c.code) } td { (c.name) } td.num { (c.count) } }
                        }
                    }
                }
            }
        }
    }
}

fn notes(r: &SlaReport) -> Markup {
    let by = r.by.name();
    let rows = match r.by {
        super::sla::By::Agency => {
            "the provider answers for requests, replies and deadlines; \
             the consumer for late dispatches (UZ annex 2 §12); the sender for rejected messages."
        }
        super::sla::By::Service => "the registered service the message names.",
    };
    html! {
        section.notes {
            h2 { "How this is counted" }
            ul {
                li {
                    "From the broker's journal. Each event is counted in the period it was recorded in (days in "
                    (r.period.time_zone)
                    "; the journal's times are UTC), in exactly one row, so the rows add up to the total."
                }
                li {
                    "Requests: requests accepted by the exchange (status updates are not requests); \
                     replies by kind: replies accepted; on time / late: replies to requests with a deadline, \
                     against that deadline; breached: requests whose deadline passed without a reply, once per request; \
                     at risk: requests warned that their deadline was near, once per request."
                }
                li { "Rows by " (by) ": " (rows) }
                li {
                    "Reply time: from the request's acceptance to the reply's, both as recorded by the exchange. \
                     Median and 95th percentile by the nearest-rank method (an observed time: the ⌈p·n/100⌉-th smallest)."
                }
            }
        }
    }
}
