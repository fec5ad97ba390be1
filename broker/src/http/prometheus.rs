//! `/metrics` in the OpenMetrics text format (which Prometheus scrapes),
//! encoded by `prometheus-client` from one reading of everything observed.
//!
//! Every metric is named `mev_*`; counters end in `_total`; times are in
//! seconds. See [`render`] for the list. [`parse`] reads an exposition back
//! into samples (for the tests and for tools that check a value).

use super::Observed;
use crate::metrics::HistogramSnapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A value as a gauge takes it (queue depths, counts far below `i64::MAX`).
fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// Encodes the families of one reading, in the order operators read them.
#[derive(Debug)]
struct Reading(Observed);

/// One family: its descriptor, then each labelled sample.
struct Family<'a, 'b> {
    encoder: &'a mut DescriptorEncoder<'b>,
}

type Fmt = Result<(), std::fmt::Error>;

impl Family<'_, '_> {
    /// A family of `kind` with one sample per label set.
    fn labelled<'l, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Vec<(&'l str, String)>, M)>,
    ) -> Fmt {
        let mut family = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, metric) in samples {
            metric.encode(family.encode_family(&escaped(labels))?)?;
        }
        Ok(())
    }

    /// A counter family with one sample per label set; `name` without `_total`.
    fn counters<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'l str, String)>, u64)>,
    ) -> Fmt {
        let samples = samples.into_iter().map(|(l, n)| (l, ConstCounter::new(n)));
        self.labelled(name, help, MetricType::Counter, samples)
    }

    /// A gauge family with one sample per label set.
    fn gauges<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'l str, String)>, i64)>,
    ) -> Fmt {
        let samples = samples.into_iter().map(|(l, n)| (l, ConstGauge::new(n)));
        self.labelled(name, help, MetricType::Gauge, samples)
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) -> Fmt {
        self.gauge_opt(name, help, Some(value))
    }

    /// A gauge family with one unlabelled sample, or none (not known yet).
    fn gauge_opt(&mut self, name: &str, help: &str, value: Option<i64>) -> Fmt {
        let family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        match value {
            Some(v) => ConstGauge::new(v).encode(family),
            None => Ok(()),
        }
    }

    fn gauge_f64(&mut self, name: &str, help: &str, value: Option<f64>) -> Fmt {
        let family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        match value {
            Some(v) => ConstGauge::new(v).encode(family),
            None => Ok(()),
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) -> Fmt {
        let family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(family)
    }

    fn counter_f64(&mut self, name: &str, help: &str, value: f64) -> Fmt {
        let family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(family)
    }

    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) -> Fmt {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        // The encoder takes each bucket's own count and adds them up; the
        // last bound (f64::MAX) is written as +Inf.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .zip(&h.cumulative)
            .map(|(bound, cumulative)| {
                let own = cumulative.saturating_sub(below);
                below = *cumulative;
                (*bound, own)
            })
            .collect();
        buckets.push((f64::MAX, h.count.saturating_sub(below)));
        family.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
    }
}

/// Label values as the text format writes them: `prometheus-client` writes
/// them as given, so a backslash, a double quote or a newline (a service
/// name from the register may hold one) is escaped here.
fn escaped(labels: Vec<(&str, String)>) -> Vec<(&str, String)> {
    labels
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            (k, v)
        })
        .collect()
}

fn agency(id: &str) -> Vec<(&'static str, String)> {
    vec![("agency", id.to_string())]
}

impl Collector for Reading {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let o = &self.0;
        let r = &o.report;
        let t = &r.totals;
        let log = &r.store_log;
        let mut f = Family {
            encoder: &mut encoder,
        };
        f.gauges(
            "mev_build_info",
            "The broker's version, id and namespace (always 1).",
            [(
                vec![
                    ("version", r.version.clone()),
                    ("broker", r.broker_id.clone()),
                    ("namespace", r.namespace.clone()),
                ],
                1,
            )],
        )?;
        f.gauge(
            "mev_uptime_seconds",
            "Seconds since the broker started.",
            int(r.uptime_secs),
        )?;
        f.gauge(
            "mev_rabbitmq_connected",
            "1 when the last RabbitMQ queue-depth poll read every queue, recently.",
            i64::from(r.rabbitmq.connected),
        )?;
        f.gauge_f64(
            "mev_queue_poll_age_seconds",
            "Seconds since a queue-depth poll last read every queue (absent before the first).",
            r.rabbitmq.last_poll_age_secs,
        )?;
        f.gauge(
            "mev_store_open",
            "1 when the broker's store can be read.",
            i64::from(r.store.open),
        )?;
        f.counters(
            "mev_messages_accepted",
            "Messages accepted (durable, in the outbox), by kind.",
            t.accepted
                .iter()
                .map(|(k, n)| (vec![("kind", k.clone())], *n)),
        )?;
        f.counters(
            "mev_rejections",
            "Messages refused, by stable error code.",
            t.rejected.iter().map(|c| {
                let labels = vec![("code", c.code.to_string()), ("name", c.name.clone())];
                (labels, c.count)
            }),
        )?;
        f.counter(
            "mev_duplicates",
            "Copies of already accepted messages (answered with their receipt again).",
            t.duplicates,
        )?;
        f.counter(
            "mev_garbage",
            "Inputs that could not be attributed to a registered sender.",
            t.garbage,
        )?;
        f.counters(
            "mev_delivered",
            "Messages the outbox published and RabbitMQ confirmed, by purpose (forward, receipt, notice).",
            [
                ("forward", t.forwards_delivered),
                ("receipt", t.receipts_delivered),
                ("notice", t.notices_delivered),
            ]
            .map(|(purpose, n)| (vec![("purpose", purpose.to_string())], n)),
        )?;
        f.counter(
            "mev_publish_retries",
            "Publish attempts that failed and will be retried from the outbox.",
            t.publish_retries,
        )?;
        f.counter("mev_batches", "Ingress micro-batches processed.", t.batches)?;
        f.gauges(
            "mev_inbox_messages",
            "Messages ready in an agency's inbox queue (from RabbitMQ).",
            r.agencies
                .iter()
                .filter_map(|a| a.inbox_depth.map(|d| (agency(&a.id), int(d)))),
        )?;
        f.gauges(
            "mev_inbox_consumers",
            "Consumers of an agency's inbox queue (its adapters).",
            r.agencies
                .iter()
                .filter_map(|a| a.consumers.map(|c| (agency(&a.id), int(c)))),
        )?;
        f.gauge_opt(
            "mev_ingress_messages",
            "Messages ready in the broker's ingress queue.",
            r.ingress.map(|i| int(i.messages)),
        )?;
        f.gauge_opt(
            "mev_ingress_consumers",
            "Consumers of the ingress queue (brokers).",
            r.ingress.map(|i| int(i.consumers)),
        )?;
        f.gauge(
            "mev_outbox_messages",
            "Messages in the broker's outbox, not yet confirmed by RabbitMQ.",
            int(r.outbox_depth),
        )?;
        f.gauge(
            "mev_open_requests",
            "Requests waiting for their reply (from the store).",
            int(r.open_requests),
        )?;
        f.gauges(
            "mev_agency_open_requests",
            "Requests for an agency accepted since the broker started, less its replies since then.",
            o.open_by_agency.iter().map(|(a, n)| (agency(a), *n)),
        )?;
        f.gauge(
            "mev_timers_armed",
            "Deadline timers armed (at-risk warnings and breaches to come).",
            int(r.timers_armed),
        )?;
        f.gauge(
            "mev_store_log_replayed_records",
            "Redo log records replayed when the broker started (0 after a clean stop).",
            int(log.replayed_at_start),
        )?;
        f.gauge(
            "mev_store_log_pending_records",
            "Redo log records since the store's last checkpoint.",
            int(log.pending),
        )?;
        f.counter(
            "mev_store_checkpoints",
            "Store checkpoints (durable commits that empty the redo log).",
            log.checkpoints,
        )?;
        f.counter_f64(
            "mev_store_checkpoint_seconds",
            "Time spent in store checkpoints, each a pause of the store's writes.",
            log.checkpoint_ms_total / 1e3,
        )?;
        f.gauge_f64(
            "mev_store_checkpoint_seconds_max",
            "The longest store checkpoint since the broker started.",
            Some(log.checkpoint_ms_max / 1e3),
        )?;
        f.gauge(
            "mev_dedup_ids",
            "Message ids in the dedup index.",
            int(r.dedup_ids),
        )?;
        f.gauge("mev_events", "Events recorded in the store.", int(o.events))?;
        f.counters(
            "mev_deadline_outcomes",
            "Deadline outcomes by the agency answerable and service: on_time, late, breached, at_risk, late_dispatch.",
            r.sla.iter().flat_map(|row| {
                let c = &row.counts;
                [
                    ("on_time", c.on_time),
                    ("late", c.late),
                    ("breached", c.breached),
                    ("at_risk", c.at_risk),
                    ("late_dispatch", c.late_dispatch),
                ]
                .map(|(outcome, n)| {
                    let labels = vec![
                        ("agency", row.agency.clone()),
                        ("service", row.service.clone()),
                        ("outcome", outcome.to_string()),
                    ];
                    (labels, n)
                })
            }),
        )?;
        f.histogram(
            "mev_routing_seconds",
            "Time from a message's ingress delivery to the durable commit of its batch.",
            &o.routing,
        )?;
        f.histogram(
            "mev_reply_seconds",
            "Time from a request's acceptance to its reply's.",
            &o.reply,
        )
    }
}

/// Renders everything observed as an OpenMetrics exposition.
pub fn render(o: &Observed) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Reading(o.clone())));
    let mut text = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// One sample of a parsed exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// An exposition read back: families' types and help, and the samples.
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

/// Reads an exposition of this module's (label values may hold escaped
/// quotes and backslashes); an error names the line that does not read.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| bad("no type"))?;
            e.types.insert(name.into(), kind.into());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or_else(|| bad("no help"))?;
            e.help.insert(name.into(), help.into());
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            let (name, rest) = match line.find(['{', ' ']) {
                Some(at) => line.split_at(at),
                None => return Err(bad("no value")),
            };
            let mut labels = BTreeMap::new();
            let mut rest = rest;
            if let Some(mut inner) = rest.strip_prefix('{') {
                while !inner.starts_with('}') {
                    let (key, after) = inner.split_once("=\"").ok_or_else(|| bad("a label"))?;
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c)) => value.push(c),
                                None => return Err(bad("an escape")),
                            },
                            Some((i, '"')) => break i,
                            Some((_, c)) => value.push(c),
                            None => return Err(bad("an unterminated label value")),
                        }
                    };
                    labels.insert(key.trim_start_matches(',').to_string(), value);
                    inner = &after[end + 1..];
                }
                rest = &inner[1..];
            }
            let value = rest.trim().split(' ').next().unwrap_or_default();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| bad("a value"))?,
            };
            e.samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    if e.samples.is_empty() {
        return Err("no samples".into());
    }
    Ok(e)
}

#[cfg(test)]
mod tests;
