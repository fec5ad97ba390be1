//! Benchmark (issue 5): the broker with 1,000,000 open requests, each with
//! its deadline and two durable timers on disk. Reports the broker's
//! resident memory and how long a restart takes with them, against the same
//! broker with none; then how long a restart takes when 10,000 of the
//! deadlines passed while it was down (each fires: a breach record and two
//! signed notices). Prints figures; asserts nothing about time.
//!
//! `cargo bench -p mev-broker --bench open_requests` (release). Set
//! `MEV_BENCH_OPEN` to change the count. Each restart is measured in a fresh
//! process (this binary re-runs itself), so memory is the restarted broker's
//! own and not what filling the store left behind.

use mev_adapter::transport::embedded::Embedded;
use mev_broker::pipeline::{Batching, Context};
use mev_broker::register::Register;
use mev_broker::server::Broker;
use mev_broker::store::prelude::*;
use mev_broker::store::{Event, EventKind, OpenRequest, Store, TimerKind};
use mev_devpki::{DevPki, KeyAlg};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn register_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// (VmRSS, VmHWM) in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Fills `dir` with `n` open requests to the first registered service,
/// `overdue` of them with a deadline already passed.
fn fill(dir: &Path, n: usize, overdue: usize) {
    let register = Register::load(&register_dir()).expect("register");
    let service = register
        .services()
        .find(|s| s.is_active() && !s.consumers.is_empty())
        .expect("a service")
        .clone();
    let consumer = service.consumers[0].agency.clone();
    let store = Store::open(dir).expect("store");
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        store
            .write(|t| {
                for k in i..end {
                    let id = format!("0190c6e0-0000-7000-8000-{k:012}");
                    let due = if k < overdue {
                        now - 60_000
                    } else {
                        now + 86_400_000 + (k as i64 % 86_400) * 1000
                    };
                    t.dedup().accept(&id, &[k as u8; 32], now)?;
                    // The journal entry that keeps the request's envelope.
                    t.journal().append_with(
                        &Event {
                            message_id: id.clone(),
                            ..Event::new(now, EventKind::Received)
                        },
                        &[0u8; 64],
                    )?;
                    t.requests().open(
                        &id,
                        &OpenRequest {
                            sender: consumer.clone(),
                            recipient: service.provider.clone(),
                            service: service.number.clone(),
                            accepted_at_ms: now,
                            policy: service.deadline.clone(),
                            deadline_ms: Some(due),
                            at_risk_ms: Some(due - 3_600_000),
                            breached: false,
                        },
                    )?;
                    t.timers().arm(due - 3_600_000, &id, TimerKind::AtRisk)?;
                    t.timers().arm(due, &id, TimerKind::Breach)?;
                }
                Ok(())
            })
            .expect("fill");
        i = end;
    }
    println!(
        "  filled {n} open requests ({overdue} overdue) in {:.1} s; store {:.0} MiB on disk",
        started.elapsed().as_secs_f64(),
        dir_size(dir) as f64 / (1024.0 * 1024.0)
    );
}

/// In a fresh process: opens the store in `dir`, starts a broker on it, and
/// waits until its timers have fired whatever was due. Prints one line of
/// `key=value` figures for the parent.
fn restart(dir: &Path) {
    let (rss0, _) = memory();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let register = Arc::new(Register::load(&register_dir()).expect("register"));
        let pki = DevPki::new().expect("pki");
        let trust = Arc::new(pki.trust_store().expect("trust"));
        let identity = pki.issue("MEV-EXCHANGE", KeyAlg::Ed25519).expect("identity");
        let started = Instant::now();
        let store = Arc::new(Store::open(dir).expect("store"));
        let opened = started.elapsed();
        let ctx = Arc::new(Context::new(register, trust, identity, store.clone()));
        let transport = Embedded::new("bench");
        let batching = Batching {
            batch_size: 256,
            batch_window: Duration::from_millis(5),
        };
        let broker = Broker::new(ctx.clone(), transport, batching, 256)
            .start()
            .await
            .expect("broker");
        let serving = started.elapsed();
        // Serving already; wait for the timers' first sweep to finish.
        let now = chrono::Utc::now().timestamp_millis();
        loop {
            match store.next_timer().expect("timers") {
                Some(due) if due <= now => tokio::time::sleep(Duration::from_millis(5)).await,
                _ => break,
            }
        }
        let swept = started.elapsed();
        // The counters are settled just after the last slice commits.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = broker.status().expect("status");
        let (rss, hwm) = memory();
        println!(
            "RESULT open_ms={:.1} serving_ms={:.1} swept_ms={:.1} rss_mib={rss:.1} hwm_mib={hwm:.1} \
             rss_before_mib={rss0:.1} open_requests={} timers={} breached={} notices_waiting={}",
            opened.as_secs_f64() * 1e3,
            serving.as_secs_f64() * 1e3,
            swept.as_secs_f64() * 1e3,
            status.open_requests,
            status.timers,
            status.counters.sla_total().breached,
            status.outbox_depth,
        );
        broker.stop().await;
    });
}

fn measure(dir: &Path) -> String {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--restart")
        .arg(dir)
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("RESULT "))
        .map(|l| l.trim_start_matches("RESULT ").to_string())
        .unwrap_or_else(|| format!("failed: {}", String::from_utf8_lossy(&out.stderr)))
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--restart") {
        restart(Path::new(&args[i + 1]));
        return;
    }
    let n: usize = std::env::var("MEV_BENCH_OPEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "open_requests benchmark: {n} open requests, each restart in a fresh process, 3 runs each"
    );

    let empty = tempfile::tempdir().expect("tempdir");
    fill(empty.path(), 0, 0);
    let full = tempfile::tempdir().expect("tempdir");
    fill(full.path(), n, 0);

    let mut rows = Vec::new();
    for (name, dir) in [("0 open", empty.path()), ("full", full.path())] {
        let runs: Vec<String> = (0..3).map(|_| measure(dir)).collect();
        for r in &runs {
            println!("  {name}: {r}");
        }
        rows.push((
            name,
            median(runs.iter().map(|r| field(r, "serving_ms")).collect()),
            median(runs.iter().map(|r| field(r, "rss_mib")).collect()),
        ));
    }
    let overdue = 10_000.min(n);
    let late = tempfile::tempdir().expect("tempdir");
    fill(late.path(), n, overdue);
    let r = measure(late.path());
    println!("  {overdue} overdue: {r}");

    println!();
    println!(
        "| broker store            | restart to serving (median) | resident memory (median) |"
    );
    println!(
        "|-------------------------|----------------------------:|-------------------------:|"
    );
    for (name, ms, rss) in &rows {
        let label = if *name == "full" {
            format!("{n} open requests")
        } else {
            "no open requests".to_string()
        };
        println!("| {label:<23} | {ms:>24.1} ms | {rss:>20.1} MiB |");
    }
    println!(
        "| {n} open, {overdue} overdue | all due timers fired {:.0} ms after start; {} breaches recorded |",
        field(&r, "swept_ms"),
        field(&r, "breached"),
    );
    if rows.len() == 2 {
        println!(
            "memory with {n} open requests / with none: {:.2}x",
            rows[1].2 / rows[0].2
        );
    }
}
