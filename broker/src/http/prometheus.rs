//! `/metrics` in the Prometheus text exposition format (version 0.0.4), and a
//! strict checker of that format (used by the tests, and handy to anyone
//! changing the metrics).
//!
//! Every metric is named `mev_*`; counters end in `_total`; times are in
//! seconds. See [`render`] for the list.

use super::Observed;
use crate::metrics::HistogramSnapshot;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families, each with its HELP and TYPE lines.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in h.bounds.iter().zip(&h.cumulative) {
            self.sample(&bucket, &[("le", &format_float(*bound))], count);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count);
        self.sample(&format!("{name}_sum"), &[], format_float(h.sum));
        self.sample(&format!("{name}_count"), &[], h.count);
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

/// Renders everything observed as Prometheus text.
pub fn render(o: &Observed) -> String {
    let r = &o.report;
    let t = &r.totals;
    let mut out = Out {
        text: String::with_capacity(16 * 1024),
    };

    out.family(
        "mev_build_info",
        "gauge",
        "The broker's version, id and namespace (always 1).",
    );
    out.sample(
        "mev_build_info",
        &[
            ("version", &r.version),
            ("broker", &r.broker_id),
            ("namespace", &r.namespace),
        ],
        1,
    );
    out.single(
        "mev_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        r.uptime_secs,
    );
    out.single(
        "mev_rabbitmq_connected",
        "gauge",
        "1 when the last RabbitMQ queue-depth poll read every queue, recently.",
        u8::from(r.rabbitmq.connected),
    );
    out.family(
        "mev_queue_poll_age_seconds",
        "gauge",
        "Seconds since a queue-depth poll last read every queue (absent before the first).",
    );
    if let Some(age) = r.rabbitmq.last_poll_age_secs {
        out.sample("mev_queue_poll_age_seconds", &[], format_float(age));
    }
    out.single(
        "mev_store_open",
        "gauge",
        "1 when the broker's store can be read.",
        u8::from(r.store.open),
    );

    out.family(
        "mev_messages_accepted_total",
        "counter",
        "Messages accepted (durable, in the outbox), by kind.",
    );
    for (kind, n) in &t.accepted {
        out.sample("mev_messages_accepted_total", &[("kind", kind)], n);
    }
    out.family(
        "mev_rejections_total",
        "counter",
        "Messages refused, by stable error code.",
    );
    for c in &t.rejected {
        out.sample(
            "mev_rejections_total",
            &[("code", &c.code.to_string()), ("name", &c.name)],
            c.count,
        );
    }
    out.single(
        "mev_duplicates_total",
        "counter",
        "Copies of already accepted messages (answered with their receipt again).",
        t.duplicates,
    );
    out.single(
        "mev_garbage_total",
        "counter",
        "Inputs that could not be attributed to a registered sender.",
        t.garbage,
    );
    out.family(
        "mev_delivered_total",
        "counter",
        "Messages the outbox published and RabbitMQ confirmed, by purpose (forward, receipt, notice).",
    );
    out.sample(
        "mev_delivered_total",
        &[("purpose", "forward")],
        t.forwards_delivered,
    );
    out.sample(
        "mev_delivered_total",
        &[("purpose", "receipt")],
        t.receipts_delivered,
    );
    out.sample(
        "mev_delivered_total",
        &[("purpose", "notice")],
        t.notices_delivered,
    );
    out.single(
        "mev_publish_retries_total",
        "counter",
        "Publish attempts that failed and will be retried from the outbox.",
        t.publish_retries,
    );
    out.single(
        "mev_batches_total",
        "counter",
        "Ingress micro-batches processed.",
        t.batches,
    );

    out.family(
        "mev_inbox_messages",
        "gauge",
        "Messages ready in an agency's inbox queue (from RabbitMQ).",
    );
    for a in &r.agencies {
        if let Some(d) = a.inbox_depth {
            out.sample("mev_inbox_messages", &[("agency", &a.id)], d);
        }
    }
    out.family(
        "mev_inbox_consumers",
        "gauge",
        "Consumers of an agency's inbox queue (its adapters).",
    );
    for a in &r.agencies {
        if let Some(c) = a.consumers {
            out.sample("mev_inbox_consumers", &[("agency", &a.id)], c);
        }
    }
    out.family(
        "mev_ingress_messages",
        "gauge",
        "Messages ready in the broker's ingress queue.",
    );
    if let Some(i) = r.ingress {
        out.sample("mev_ingress_messages", &[], i.messages);
    }
    out.family(
        "mev_ingress_consumers",
        "gauge",
        "Consumers of the ingress queue (brokers).",
    );
    if let Some(i) = r.ingress {
        out.sample("mev_ingress_consumers", &[], i.consumers);
    }
    out.single(
        "mev_outbox_messages",
        "gauge",
        "Messages in the broker's outbox, not yet confirmed by RabbitMQ.",
        r.outbox_depth,
    );
    out.single(
        "mev_open_requests",
        "gauge",
        "Requests waiting for their reply (from the store).",
        r.open_requests,
    );
    out.family(
        "mev_agency_open_requests",
        "gauge",
        "Requests for an agency accepted since the broker started, less its replies since then.",
    );
    for (agency, n) in &o.open_by_agency {
        out.sample("mev_agency_open_requests", &[("agency", agency)], n);
    }
    out.single(
        "mev_timers_armed",
        "gauge",
        "Deadline timers armed (at-risk warnings and breaches to come).",
        r.timers_armed,
    );
    let log = &r.store_log;
    out.single(
        "mev_store_log_replayed_records",
        "gauge",
        "Redo log records replayed when the broker started (0 after a clean stop).",
        log.replayed_at_start,
    );
    out.single(
        "mev_store_log_pending_records",
        "gauge",
        "Redo log records since the store's last checkpoint.",
        log.pending,
    );
    out.single(
        "mev_store_checkpoints_total",
        "counter",
        "Store checkpoints (durable commits that empty the redo log).",
        log.checkpoints,
    );
    out.single(
        "mev_store_checkpoint_seconds_total",
        "counter",
        "Time spent in store checkpoints, each a pause of the store's writes.",
        format_float(log.checkpoint_ms_total / 1e3),
    );
    out.single(
        "mev_store_checkpoint_seconds_max",
        "gauge",
        "The longest store checkpoint since the broker started.",
        format_float(log.checkpoint_ms_max / 1e3),
    );
    out.single(
        "mev_dedup_ids",
        "gauge",
        "Message ids in the dedup index.",
        r.dedup_ids,
    );
    out.single(
        "mev_events",
        "gauge",
        "Events recorded in the store.",
        o.events,
    );

    out.family(
        "mev_deadline_outcomes_total",
        "counter",
        "Deadline outcomes by the agency answerable and service: on_time, late, breached, at_risk, late_dispatch.",
    );
    for row in &r.sla {
        let c = &row.counts;
        for (outcome, n) in [
            ("on_time", c.on_time),
            ("late", c.late),
            ("breached", c.breached),
            ("at_risk", c.at_risk),
            ("late_dispatch", c.late_dispatch),
        ] {
            out.sample(
                "mev_deadline_outcomes_total",
                &[
                    ("agency", &row.agency),
                    ("service", &row.service),
                    ("outcome", outcome),
                ],
                n,
            );
        }
    }

    out.histogram(
        "mev_routing_seconds",
        "Time from a message's ingress delivery to the durable commit of its batch.",
        &o.routing,
    );
    out.histogram(
        "mev_reply_seconds",
        "Time from a request's acceptance to its reply's.",
        &o.reply,
    );
    out.text
}

/// One sample of a parsed exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed, checked exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Family name → type.
    pub types: BTreeMap<String, String>,
    /// Family name → help text.
    pub help: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.starts_with("__")
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// Parses `{a="x",b="y"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = rest[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("invalid escape {other:?} in a label value")),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) => return Err("newline in a label value".into()),
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Parses and checks a text exposition: line syntax, metric and label names,
/// escapes, HELP/TYPE before samples and at most once, families contiguous,
/// no repeated series, counters not negative, and histograms well formed
/// (ascending `le` bounds ending in `+Inf`, cumulative counts, `+Inf` equal
/// to `_count`, a `_sum`).
pub fn check(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut enter = |family: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(family) {
            if finished.contains(family) {
                return Err(format!("family {family} is not contiguous"));
            }
            if let Some(c) = current.take() {
                finished.insert(c);
            }
            *current = Some(family.to_string());
        }
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = parts.next().unwrap_or("");
            let rest = parts.next().unwrap_or("");
            if !valid_metric_name(name) {
                return Err(at(format!("invalid metric name {name:?}")));
            }
            enter(name, &mut current).map_err(at)?;
            if keyword == "HELP" {
                if e.help.insert(name.into(), rest.into()).is_some() {
                    return Err(at("HELP repeated".into()));
                }
            } else {
                if !matches!(
                    rest,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    return Err(at(format!("unknown type {rest:?}")));
                }
                if e.types.insert(name.into(), rest.into()).is_some() {
                    return Err(at("TYPE repeated".into()));
                }
                if e.samples
                    .iter()
                    .any(|s| family_of(&s.name, &e.types) == name)
                {
                    return Err(at("TYPE after a sample of its family".into()));
                }
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample needs a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at(format!("invalid metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| at("invalid value".into()))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at("invalid timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let family = family_of(name, &e.types).to_string();
        enter(&family, &mut current).map_err(at)?;
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("series repeated".into()));
        }
        if e.types.get(&family).map(String::as_str) == Some("counter") && value < 0.0 {
            return Err(at("a counter is negative".into()));
        }
        e.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    for (family, kind) in &e.types {
        if kind == "histogram" {
            check_histogram(&e, family)?;
        }
    }
    Ok(e)
}

fn check_histogram(e: &Exposition, family: &str) -> Result<(), String> {
    // Buckets per label set (without `le`), in order of appearance.
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let key = |labels: &BTreeMap<String, String>| {
        let mut l = labels.clone();
        l.remove("le");
        format!("{l:?}")
    };
    let bucket = format!("{family}_bucket");
    for s in e.samples.iter().filter(|s| s.name == bucket) {
        let le = s
            .labels
            .get("le")
            .ok_or_else(|| format!("{bucket} without le"))?;
        let bound =
            parse_value(le).ok_or_else(|| format!("{bucket}: le {le:?} is not a number"))?;
        groups
            .entry(key(&s.labels))
            .or_default()
            .push((bound, s.value));
    }
    if groups.is_empty() {
        return Err(format!("histogram {family} has no buckets"));
    }
    for (labels, buckets) in groups {
        for w in buckets.windows(2) {
            if w[1].0 <= w[0].0 {
                return Err(format!("{family}{labels}: le bounds not ascending"));
            }
            if w[1].1 < w[0].1 {
                return Err(format!("{family}{labels}: bucket counts not cumulative"));
            }
        }
        let (last_bound, inf) = *buckets.last().expect("non-empty");
        if last_bound != f64::INFINITY {
            return Err(format!("{family}{labels}: no +Inf bucket"));
        }
        let find = |suffix: &str| {
            e.samples
                .iter()
                .find(|s| s.name == format!("{family}{suffix}") && key(&s.labels) == labels)
                .map(|s| s.value)
        };
        let count = find("_count").ok_or_else(|| format!("{family}{labels}: no _count"))?;
        find("_sum").ok_or_else(|| format!("{family}{labels}: no _sum"))?;
        if count != inf {
            return Err(format!(
                "{family}{labels}: _count {count} differs from the +Inf bucket {inf}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
