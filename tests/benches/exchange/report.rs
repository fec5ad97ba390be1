//! Reporting: the tables and the targets.

use super::*;

pub(crate) fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Bytes of the files under `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) fn print_relay_run(run: usize, n: usize, r: &RelayRun) {
    println!(
        "[relay run {run}] {} of {n} delivered in {:.2} s = {:.0} msgs/s (publisher confirmed \
         all in {:.2} s = {:.0} msgs/s); failures {}",
        r.count,
        r.delivered.as_secs_f64(),
        rate(n, r.delivered),
        r.publish.as_secs_f64(),
        rate(n, r.publish),
        r.failures
    );
    println!("  {}", r.cpu);
}

pub(crate) fn print_exchange_run(run: usize, n: usize, r: &ExchangeRun) {
    println!(
        "[exchange run {run}] {} of {n} requests handled by the provider in {:.2} s = {:.0} \
         requests/s; {} replies back in {:.2} s = {:.0} round trips/s; all sent (outbox on \
         disk) in {:.2} s; failed {}",
        r.handled,
        r.handled_at.as_secs_f64(),
        rate(n, r.handled_at),
        r.replies,
        r.replied_at.as_secs_f64(),
        rate(n, r.replied_at),
        r.send.as_secs_f64(),
        r.failed
    );
    println!(
        "  broker: {} accepted in {} batches ({:.1} per batch), {} receipts, {} deadlines \
         breached; stores on disk {:.1} MB",
        r.accepted,
        r.batches,
        r.accepted as f64 / r.batches.max(1) as f64,
        r.receipts,
        r.breached,
        r.disk_bytes as f64 / 1e6
    );
    println!("  {}", r.cpu);
    println!("  {}", r.broker_times);
    if let Some(e) = &r.first_error {
        println!("  first failure: {e}");
    }
}

pub(crate) fn print_step(what: &str, load: f64, r: &LatencyStep) {
    println!(
        "  {:>3.0}% {what:<8} offered {:>6.0}/s: {} sent, {} completed, {} failed; \
         p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms ({} recorded); {}{}",
        load * 100.0,
        r.offered,
        r.sent,
        r.completed,
        r.failed,
        ms(r.q(0.5)),
        ms(r.q(0.99)),
        ms(r.q(0.999)),
        ms(r.max()),
        r.hist.len(),
        r.cpu,
        r.first_error
            .as_ref()
            .map(|e| format!("; first failure: {e}"))
            .unwrap_or_default()
    );
    if let Some(h) = r.oneway.as_ref().filter(|h| !h.is_empty()) {
        println!(
            "        one way (scheduled send → the provider's handler): p50 {} ms, p99 {} ms, \
             p99.9 {} ms, max {} ms ({} recorded)",
            ms(r.oneway_q(0.5)),
            ms(r.oneway_q(0.99)),
            ms(r.oneway_q(0.999)),
            ms(Duration::from_micros(h.max())),
            h.len()
        );
    }
    if let Some(b) = &r.broker {
        println!("        {b}");
    }
}

pub(crate) fn what_runs(runs: usize) -> String {
    if runs == 1 {
        "1 run, no median".into()
    } else {
        format!("medians of {runs} runs")
    }
}

pub(crate) fn summary_throughput(
    s: &Settings,
    envelope: f64,
    relay: &[RelayRun],
    exchange: &[ExchangeRun],
) {
    let n = s.n;
    println!();
    println!(
        "throughput: N = {n}, {}, envelope {envelope:.0} B, load average {}",
        what_runs(s.runs),
        loadavg()
    );
    println!(
        "  {:<44} {:>10} {:>9} {:>10}",
        "path", "msgs/s", "s", "delivered"
    );
    if !relay.is_empty() {
        let delivered: Vec<String> = relay.iter().map(|r| r.count.to_string()).collect();
        println!(
            "  {:<44} {:>10.0} {:>9.2} {:>10}",
            "relay: publisher → Q1 → relay → Q2 → consumer",
            median(relay.iter().map(|r| rate(n, r.delivered)).collect()),
            median(relay.iter().map(|r| r.delivered.as_secs_f64()).collect()),
            delivered.join("/")
        );
    }
    if !exchange.is_empty() {
        let handled: Vec<String> = exchange.iter().map(|r| r.handled.to_string()).collect();
        let replies: Vec<String> = exchange.iter().map(|r| r.replies.to_string()).collect();
        println!(
            "  {:<44} {:>10.0} {:>9.2} {:>10}",
            "exchange: requests → provider's handler",
            median(exchange.iter().map(|r| rate(n, r.handled_at)).collect()),
            median(
                exchange
                    .iter()
                    .map(|r| r.handled_at.as_secs_f64())
                    .collect()
            ),
            handled.join("/")
        );
        println!(
            "  {:<44} {:>10.0} {:>9.2} {:>10}",
            "exchange: round trips (reply back)",
            median(exchange.iter().map(|r| rate(n, r.replied_at)).collect()),
            median(
                exchange
                    .iter()
                    .map(|r| r.replied_at.as_secs_f64())
                    .collect()
            ),
            replies.join("/")
        );
    }
    if !relay.is_empty() && !exchange.is_empty() {
        let ratio = median(exchange.iter().map(|r| rate(n, r.handled_at)).collect())
            / median(relay.iter().map(|r| rate(n, r.delivered)).collect());
        println!(
            "  exchange / relay = {:.0}% (target ≥ {:.0}%: {})",
            ratio * 100.0,
            TARGET_RATIO * 100.0,
            verdict(ratio >= TARGET_RATIO)
        );
    }
}

pub(crate) fn summary_latency(steps: &[(f64, LatencyStep, LatencyStep)]) {
    println!();
    println!("latency, open loop (ms, from the scheduled send; HDR histograms):");
    println!(
        "  relay: publish → final consumer (one way, 2 queues); exchange one way: send → the \
         provider's handler (2 queues); exchange round trip: send → reply back (4 queues)"
    );
    println!(
        "  {:>4} {:>9} | {:>13} {:>6} {:>6} | {:>13} {:>6} {:>6} | {:>14} {:>6} {:>6} {:>6} \
         | {:>8} {:>8}",
        "load",
        "offered/s",
        "relay p50",
        "p99",
        "p99.9",
        "1-way p50",
        "p99",
        "p99.9",
        "round trip p50",
        "p99",
        "p99.9",
        "max",
        "p99 ×rt",
        "p99 ×1w"
    );
    for (load, r, e) in steps {
        let relay99 = r.q(0.99).as_secs_f64().max(1e-9);
        println!(
            "  {:>3.0}% {:>9.0} | {:>13} {:>6} {:>6} | {:>13} {:>6} {:>6} | {:>14} {:>6} {:>6} \
             {:>6} | {:>7.1}× {:>7.1}×",
            load * 100.0,
            e.offered,
            ms(r.q(0.5)),
            ms(r.q(0.99)),
            ms(r.q(0.999)),
            ms(e.oneway_q(0.5)),
            ms(e.oneway_q(0.99)),
            ms(e.oneway_q(0.999)),
            ms(e.q(0.5)),
            ms(e.q(0.99)),
            ms(e.q(0.999)),
            ms(e.max()),
            e.q(0.99).as_secs_f64() / relay99,
            e.oneway_q(0.99).as_secs_f64() / relay99,
        );
    }
}

pub(crate) fn summary_crypto(rounds: usize, rows: &[CryptoRow]) {
    println!();
    println!(
        "sign and verify, µs per operation (medians of {rounds} rounds of ≥ 100 ms, one core):"
    );
    println!(
        "  {:<22} {:>9} {:>8} {:>6} | {:>8} {:>9} | {:>8} {:>13} {:>13}",
        "algorithm",
        "envelope",
        "header",
        "sig",
        "sign",
        "seal",
        "verify",
        "open+verify",
        "new chain"
    );
    for r in rows {
        println!(
            "  {:<22} {:>7} B {:>6} B {:>4} B | {:>8.1} {:>9.1} | {:>8.1} {:>13.1} {:>13.1}",
            r.name,
            r.envelope,
            r.header,
            r.signature,
            r.sign_us,
            r.seal_us,
            r.verify_us,
            r.open_verify_us,
            r.open_verify_new_chain_us
        );
    }
    println!(
        "  (sign/verify: the signature over the header bytes alone; seal: payload digest, \
         header encoding, signature and envelope encoding, as the adapter sends; open+verify: \
         decode, digest check, certificate and signature, as the broker and the adapters check \
         every message, the certificate chain remembered from an earlier message; new chain: \
         the same for a chain not seen before, its path (webpki, the CA's P-256 signature) \
         checked)"
    );
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Where the one-way target's CPU budget goes: what a request may cost (the
/// process and RabbitMQ together) at the target's rate, against what the
/// relay's own work and Ed25519 sealing and opening take of it, and what
/// the rest (stores, journal, checks, receipts) takes now. Printed when
/// the relay, the one-way runs and the crypto part all ran.
pub(crate) fn summary_budget(
    s: &Settings,
    relay: &[RelayRun],
    one_way: &[Duration],
    one_way_cpu: &[CpuUse],
    crypto: &[CryptoRow],
) {
    let Some(ed) = crypto.iter().find(|r| r.name == "Ed25519") else {
        return;
    };
    if relay.is_empty() || one_way.is_empty() {
        return;
    }
    // µs of CPU per message: cores used × seconds / messages.
    let per = |cpu: &CpuUse, t: Duration| {
        (cpu.own + cpu.rabbit.unwrap_or(0.0)) * t.as_secs_f64() * 1e6 / s.n as f64
    };
    let relay_us = median(relay.iter().map(|r| per(&r.cpu, r.delivered)).collect());
    let ex_us = median(
        one_way
            .iter()
            .zip(one_way_cpu)
            .map(|(t, c)| per(c, *t))
            .collect(),
    );
    let ex_own = median(
        one_way
            .iter()
            .zip(one_way_cpu)
            .map(|(t, c)| c.own * t.as_secs_f64() * 1e6 / s.n as f64)
            .collect(),
    );
    let cores = median(
        one_way_cpu
            .iter()
            .map(|c| c.own + c.rabbit.unwrap_or(0.0))
            .collect(),
    );
    let relay_rate = median(relay.iter().map(|r| rate(s.n, r.delivered)).collect());
    // With as many cores busy as the one-way runs kept busy.
    let budget = cores * 1e6 / (TARGET_RATIO * relay_rate);
    let crypto_us = ed.seal_us + ed.open_verify_us;
    let left = budget - relay_us - crypto_us;
    let rest = ex_us - relay_us - crypto_us;
    println!();
    println!("CPU per message against the one-way target (µs, the process and RabbitMQ together, medians):");
    println!(
        "  relay {relay_us:.0}; exchange one way {ex_us:.0} (this process {ex_own:.0}, RabbitMQ {:.0})",
        ex_us - ex_own
    );
    println!(
        "  at {:.0}% of the relay's rate, with the {cores:.2} cores the one-way runs used: {budget:.0} per request",
        TARGET_RATIO * 100.0
    );
    println!(
        "  the relay's work (the same queues and confirms) {relay_us:.0} + Ed25519 seal and open+verify {crypto_us:.0} \
         leave {left:.0} for the rest (durable stores, journal, checks, receipts), which takes {rest:.0} now"
    );
}

pub(crate) fn summary_targets(
    s: &Settings,
    relay: &[RelayRun],
    exchange: &[ExchangeRun],
    one_way_ratio: Option<f64>,
    latency: &[(f64, LatencyStep, LatencyStep)],
) {
    println!();
    println!("targets:");
    if let Some(ratio) = one_way_ratio {
        println!(
            "  exchange ≥ {:.0}% of the relay's rate, one way (like for like): {:.0}% — {}",
            TARGET_RATIO * 100.0,
            ratio * 100.0,
            verdict(ratio >= TARGET_RATIO)
        );
    }
    if !relay.is_empty() && !exchange.is_empty() {
        let ratio = median(exchange.iter().map(|r| rate(s.n, r.handled_at)).collect())
            / median(relay.iter().map(|r| rate(s.n, r.delivered)).collect());
        println!(
            "  exchange ≥ {:.0}% of the relay's rate, replies flowing (the provider's adapter does both legs' work): {:.0}% — {}",
            TARGET_RATIO * 100.0,
            ratio * 100.0,
            verdict(ratio >= TARGET_RATIO)
        );
    }
    for (load, r, e) in latency {
        let limit = r.q(0.99).mul_f64(TARGET_P99_FACTOR);
        println!(
            "  round-trip p99 at {:.0}% load ≤ {TARGET_P99_FACTOR}× the relay's p99 ({} ms): \
             {} ms — {} (one way, like for like: {} ms — {})",
            load * 100.0,
            ms(limit),
            ms(e.q(0.99)),
            verdict(e.q(0.99) <= limit),
            ms(e.oneway_q(0.99)),
            verdict(e.oneway_q(0.99) <= limit)
        );
    }
    if let Some((_, _, e)) = latency.iter().find(|(l, _, _)| (*l - 0.75).abs() < 1e-9) {
        println!(
            "  p99.9 at 75% load < {} s (real-time mode, RU 963 §10): {} ms — {}",
            TARGET_P999_AT_75.as_secs(),
            ms(e.q(0.999)),
            verdict(e.q(0.999) < TARGET_P999_AT_75)
        );
    }
    println!(
        "  (one run on a shared 2-core machine: RabbitMQ, the broker and both adapters share it)"
    );
}
