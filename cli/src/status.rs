//! `mev status [--url URL] [--json]`: a running broker's queues, requests and
//! deadlines at a glance, read from its `/api/status`.
//!
//! Exit status: 0 when the broker is ready (RabbitMQ polled, store open), 1
//! when it answers but is not ready, 2 when it cannot be reached.

use mev_broker::http::StatusReport;
pub mod client;
use anyhow::Context as _;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// The endpoint `mev broker` serves by default (`[http] listen`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9464";

/// `mev status` options.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The broker's HTTP endpoint (its `[http] listen` address).
    #[arg(long, env = "MEV_STATUS_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Print /api/status as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The `/api/status` URL for a base URL (or the status URL itself).
pub fn status_url(base: &str) -> String {
    let base = base.trim();
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    if base.trim_end_matches('/').ends_with("/api/status") {
        base
    } else {
        format!("{}/api/status", base.trim_end_matches('/'))
    }
}

/// Fetches and parses a broker's status.
pub fn fetch(base: &str) -> anyhow::Result<(StatusReport, String)> {
    let url = status_url(base);
    let r = client::get(&url, Duration::from_secs(10)).with_context(|| {
        format!(
            "cannot reach the broker at {url} (is `mev broker` running, with [http] listen set?)"
        )
    })?;
    if r.status != 200 {
        anyhow::bail!("{url} answered {}: {}", r.status, r.body.trim());
    }
    let report: StatusReport = serde_json::from_str(&r.body)
        .with_context(|| format!("{url} did not answer with a broker status"))?;
    Ok((report, r.body))
}

/// `mev status`.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (report, _) = fetch(&args.url)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(if report.rabbitmq.connected && report.store.open {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The table `mev status` prints.
pub fn render_table(r: &StatusReport) -> String {
    let mut out = String::new();
    let rabbit = if r.rabbitmq.connected {
        match r.rabbitmq.last_poll_age_secs {
            Some(age) => format!("RabbitMQ connected (queues read {age:.0}s ago)"),
            None => "RabbitMQ connected".to_string(),
        }
    } else {
        format!(
            "RabbitMQ NOT CONNECTED: {}",
            r.rabbitmq.error.as_deref().unwrap_or("unknown")
        )
    };
    let store = if r.store.open {
        "store open".to_string()
    } else {
        format!(
            "STORE UNREADABLE: {}",
            r.store.error.as_deref().unwrap_or("unknown")
        )
    };
    let _ = writeln!(
        out,
        "broker {} (namespace {}, v{}), up {}; {rabbit}; {store}",
        r.broker_id,
        r.namespace,
        r.version,
        duration(r.uptime_secs)
    );
    let _ = writeln!(out);
    let width = r
        .agencies
        .iter()
        .map(|a| a.id.len())
        .chain(["AGENCY".len(), "TOTAL".len()])
        .max()
        .unwrap_or(6);
    let header = [
        "INBOX",
        "CONSUMERS",
        "OPEN",
        "AT-RISK",
        "BREACHED",
        "ON-TIME",
        "LATE",
    ];
    let _ = write!(out, "{:<width$}", "AGENCY");
    for h in header {
        let _ = write!(out, "  {h:>9}");
    }
    let _ = writeln!(out);
    let mut consumers = 0u64;
    let mut open = 0u64;
    for a in &r.agencies {
        consumers += u64::from(a.consumers.unwrap_or(0));
        open += a.open_requests;
        let cells = [
            opt(a.inbox_depth),
            opt(a.consumers),
            a.open_requests.to_string(),
            a.sla.at_risk.to_string(),
            a.sla.breached.to_string(),
            a.sla.on_time.to_string(),
            a.sla.late.to_string(),
        ];
        let _ = write!(out, "{:<width$}", a.id);
        for c in cells {
            let _ = write!(out, "  {c:>9}");
        }
        let _ = writeln!(out);
    }
    let t = &r.totals;
    let cells = [
        t.inbox_depth.to_string(),
        consumers.to_string(),
        open.to_string(),
        t.sla.at_risk.to_string(),
        t.sla.breached.to_string(),
        t.sla.on_time.to_string(),
        t.sla.late.to_string(),
    ];
    let _ = write!(out, "{:<width$}", "TOTAL");
    for c in cells {
        let _ = write!(out, "  {c:>9}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out);
    let ingress = r.ingress.map_or_else(
        || "not read yet".to_string(),
        |i| format!("{} (consumers {})", i.messages, i.consumers),
    );
    let _ = writeln!(
        out,
        "outbox {}  ·  ingress {ingress}  ·  open requests {} (store)  ·  timers {}",
        r.outbox_depth, r.open_requests, r.timers_armed
    );
    let log = &r.store_log;
    let _ = writeln!(
        out,
        "store log: {} checkpoints (longest {} ms)  ·  {} records pending  ·  {} replayed at start",
        log.checkpoints, log.checkpoint_ms_max, log.pending, log.replayed_at_start
    );
    let kinds: Vec<String> = t.accepted.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        out,
        "accepted {}{}  ·  rejected {}  ·  duplicates {}  ·  garbage {}",
        t.accepted_total,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        },
        t.rejected_total,
        t.duplicates,
        t.garbage
    );
    let _ = writeln!(
        out,
        "delivered: forwards {}, receipts {}, notices {}  ·  publish retries {}",
        t.forwards_delivered, t.receipts_delivered, t.notices_delivered, t.publish_retries
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
    let _ = writeln!(
        out,
        "routing time p50 {} p95 {}  ·  reply time p50 {} p95 {}",
        ms(r.routing_time.p50_ms),
        ms(r.routing_time.p95_ms),
        ms(r.reply_time.p50_ms),
        ms(r.reply_time.p95_ms)
    );
    if !r.recent_rejections.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "latest rejections:");
        for x in r.recent_rejections.iter().take(5) {
            let sender = if x.sender.is_empty() { "?" } else { &x.sender };
            let _ = writeln!(
                out,
                "  {}  {} {}  from {sender}: {}",
                x.at, x.code, x.name, x.reason
            );
        }
    }
    if r.open_requests > open {
        let _ = writeln!(
            out,
            "\n(per-agency OPEN counts requests since the broker started; {} are from earlier runs)",
            r.open_requests - open
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_urls() {
        assert_eq!(
            status_url("http://127.0.0.1:9464"),
            "http://127.0.0.1:9464/api/status"
        );
        assert_eq!(
            status_url("127.0.0.1:9464/"),
            "http://127.0.0.1:9464/api/status"
        );
        assert_eq!(status_url("http://h:1/api/status"), "http://h:1/api/status");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m05s");
        assert_eq!(duration(3 * 3600 + 120), "3h02m");
        assert_eq!(duration(2 * 86_400 + 3600), "2d01h");
    }
}
