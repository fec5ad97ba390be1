//! Unit tests of `prometheus`.

use super::*;
use crate::http::{
    AgencyRow, CodeCount, QueueRow, RabbitStatus, StatusReport, StoreLog, StoreStatus, TimeSummary,
    Totals,
};
use crate::metrics::{Histogram, SlaCounts, SlaRow, REPLY_BUCKETS, ROUTING_BUCKETS};
use std::time::Duration;

fn observed() -> Observed {
    let routing = Histogram::new(ROUTING_BUCKETS);
    routing.observe_n(Duration::from_micros(1800), 40);
    routing.observe_n(Duration::from_millis(30), 3);
    routing.observe(Duration::from_secs(20));
    let reply = Histogram::new(REPLY_BUCKETS);
    reply.observe(Duration::from_millis(2300));
    let summary = TimeSummary {
        count: 0,
        mean_ms: None,
        p50_ms: None,
        p95_ms: None,
        p99_ms: None,
    };
    let counts = SlaCounts {
        on_time: 3,
        late: 1,
        breached: 2,
        at_risk: 4,
        late_dispatch: 0,
    };
    Observed {
        report: StatusReport {
            broker_id: "MEV-EXCHANGE".into(),
            namespace: "mev".into(),
            version: "0.1.0".into(),
            now: "2026-01-01T00:00:00.000Z".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            uptime_secs: 12,
            rabbitmq: RabbitStatus {
                connected: true,
                last_poll_at: None,
                last_poll_age_secs: Some(1.5),
                poll_every_secs: 5.0,
                error: None,
            },
            store: StoreStatus {
                open: true,
                error: None,
            },
            store_log: StoreLog {
                replayed_at_start: 3,
                pending: 17,
                checkpoints: 4,
                checkpoint_ms_total: 120.0,
                checkpoint_ms_max: 45.5,
            },
            ingress: Some(QueueRow {
                messages: 2,
                consumers: 1,
            }),
            outbox_depth: 1,
            open_requests: 7,
            timers_armed: 14,
            dedup_ids: 100,
            agencies: vec![
                AgencyRow {
                    id: "UZ-GNK".into(),
                    name: "Tax \"committee\"\nof \\ Uzbekistan".into(),
                    inbox_depth: Some(5),
                    consumers: Some(1),
                    open_requests: 7,
                    sla: counts,
                },
                AgencyRow {
                    id: "UZ-ARXIV".into(),
                    name: "Archive".into(),
                    inbox_depth: None,
                    consumers: None,
                    open_requests: 0,
                    sla: SlaCounts::default(),
                },
            ],
            totals: Totals {
                accepted: [("reply".to_string(), 3), ("request".to_string(), 10)].into(),
                accepted_total: 13,
                rejected_total: 2,
                rejected: vec![CodeCount {
                    code: 201,
                    name: "bad_signature".into(),
                    count: 2,
                }],
                duplicates: 1,
                garbage: 0,
                receipts_delivered: 12,
                forwards_delivered: 13,
                notices_delivered: 0,
                publish_retries: 0,
                batches: 4,
                inbox_depth: 5,
                sla: counts,
            },
            sla: vec![SlaRow {
                agency: "UZ-GNK".into(),
                service: "svc \"quoted\"".into(),
                counts,
            }],
            routing_time: summary.clone(),
            reply_time: summary,
            recent_rejections: vec![],
        },
        routing: routing.snapshot(),
        reply: reply.snapshot(),
        open_by_agency: [("UZ-GNK".to_string(), 7)].into(),
        events: 30,
    }
}

#[test]
fn metrics_output_is_an_openmetrics_exposition_of_what_was_observed() {
    let text = render(&observed());
    assert!(text.ends_with("# EOF\n"), "{text}");
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    // Every family has HELP and TYPE; every sample belongs to a declared
    // family (its name, or its name and a suffix of its type).
    for s in &e.samples {
        let family = e
            .types
            .keys()
            .filter(|f| s.name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("{} has no TYPE", s.name));
        assert!(e.help.contains_key(family), "{} has no HELP", s.name);
        assert!(family.starts_with("mev_"), "{family}");
        if e.types[family] == "counter" {
            assert_eq!(s.name, format!("{family}_total"), "counters end in _total");
        }
    }
    assert_eq!(
        e.value("mev_inbox_messages", &[("agency", "UZ-GNK")]),
        Some(5.0)
    );
    assert_eq!(
        e.value("mev_inbox_messages", &[("agency", "UZ-ARXIV")]),
        None
    );
    assert_eq!(
        e.value(
            "mev_deadline_outcomes_total",
            &[("service", "svc \"quoted\""), ("outcome", "breached")]
        ),
        Some(2.0)
    );
    assert_eq!(
        e.value("mev_rejections_total", &[("code", "201")]),
        Some(2.0)
    );
    assert_eq!(
        e.value("mev_routing_seconds_bucket", &[("le", "0.0025")]),
        Some(40.0)
    );
    assert_eq!(
        e.value("mev_routing_seconds_bucket", &[("le", "0.05")]),
        Some(43.0)
    );
    assert_eq!(
        e.value("mev_routing_seconds_bucket", &[("le", "+Inf")]),
        Some(44.0)
    );
    assert_eq!(e.value("mev_routing_seconds_count", &[]), Some(44.0));
    assert_eq!(
        e.value("mev_reply_seconds_bucket", &[("le", "2.0")]),
        Some(0.0)
    );
    assert_eq!(
        e.value("mev_reply_seconds_bucket", &[("le", "5.0")]),
        Some(1.0)
    );
    let sum = e.value("mev_reply_seconds_sum", &[]).unwrap();
    assert!((sum - 2.3).abs() < 1e-9, "{sum}");
    assert_eq!(e.value("mev_store_checkpoints_total", &[]), Some(4.0));
    assert_eq!(
        e.value("mev_store_checkpoint_seconds_total", &[]),
        Some(0.12)
    );
    assert_eq!(
        e.value("mev_store_checkpoint_seconds_max", &[]),
        Some(0.0455)
    );
    assert_eq!(e.value("mev_store_log_pending_records", &[]), Some(17.0));
    assert_eq!(e.value("mev_store_log_replayed_records", &[]), Some(3.0));
    assert_eq!(
        e.value("mev_build_info", &[("broker", "MEV-EXCHANGE")]),
        Some(1.0)
    );
}

/// Every `mev_*` metric the deploy/ files query is one `/metrics` has.
#[test]
fn deploy_files_name_only_real_metrics() {
    let e = parse(&render(&observed())).unwrap();
    // Families, and the samples' names (a counter's carry `_total`).
    let known: std::collections::BTreeSet<&str> = e
        .types
        .keys()
        .chain(e.samples.iter().map(|s| &s.name))
        .map(String::as_str)
        .collect();
    for (file, text) in [
        (
            "grafana/mev-dashboard.json",
            include_str!("../../../../deploy/grafana/mev-dashboard.json"),
        ),
        (
            "prometheus/mev-alerts.yml",
            include_str!("../../../../deploy/prometheus/mev-alerts.yml"),
        ),
    ] {
        let mut rest = text;
        let mut seen = 0;
        while let Some(i) = rest.find("mev_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| known.contains(b)))
                .unwrap_or(&name);
            assert!(known.contains(family), "{file}: {name} is not a metric");
            seen += 1;
        }
        assert!(seen >= 3, "{file} names the metrics");
    }
}
