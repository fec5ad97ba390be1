//! The exchange against raw RabbitMQ, measured side by side (issue 9).
//!
//! A benchmark, not a test: it prints figures and never asserts on time.
//! It exits with an error only when messages are missing at the end (a
//! loss), a request fails, or something could not run at all.
//!
//! One run measures, against the same RabbitMQ:
//!
//! 1. `relay` — the ceiling: a zero-work relay written with lapin alone. A
//!    publisher (publisher confirms, a sliding window of `MEV_BENCH_WINDOW`
//!    confirms in flight) puts `N` persistent messages of the envelope's size
//!    on a durable quorum queue Q1; a relay consumes Q1 (prefetch 512),
//!    re-publishes each message (persistent, with confirms, pipelined) to the
//!    quorum queue Q2 and acks it on Q1 once Q2's confirm came; a final
//!    consumer acks Q2. Three connections (publisher, relay, final consumer),
//!    like the three processes of the exchange. Rate: `N` / (first publish →
//!    the final consumer's `N`th message).
//! 2. `exchange` — the same `N` as signed requests (Ed25519, envelopes of
//!    the relay's message size) for a 48-hour service (`RU-10047`), from a
//!    consumer's [`Adapter`] over [`Amqp`] through a broker to the
//!    provider's adapter, whose handler replies at once with documents.
//!    Everything as in production: quorum queues, persistent messages,
//!    confirms, the adapters' stores (`AdapterConfig::data_dir`) and the
//!    broker's store on disk in a temp dir, the broker's default batching
//!    (256 / 1 ms) and prefetch (512), one connection per participant.
//!    `MEV_BENCH_CONCURRENCY` `send_request` calls at once (each returns
//!    once the request is in the outbox on disk). Rates: requests handed to
//!    the provider's handler per second (`N` / first send → the `N`th
//!    handler call), compared with the relay; and round trips per second
//!    (`N` / first send → the `N`th reply back at the consumer), which is the
//!    maximum the latency part loads. The reply leg runs at the same time as
//!    the request leg: the broker carries both, and a receipt per sender per
//!    batch. (A real-time service would have its 2 s deadline breached by
//!    a saturating run, and the breach notices add traffic.)
//!    Then a one-way run per throughput run: the same requests, but the
//!    provider's inbox is taken by a plain consumer that counts and acks
//!    (no adapter, no reply), the relay's own topology (two queues and a
//!    final consumer): the like-for-like ratio against the relay.
//! 3. `latency` — open loop: sends on a fixed schedule whatever comes back,
//!    at 25%, 50% and 75% of the measured maximum round-trip rate, each for
//!    `MEV_BENCH_SECS` seconds (the first fifth, at most 2 s, is warm-up and
//!    not recorded). Latency is taken from each message's *scheduled* send
//!    time (no coordinated omission) into HDR histograms: for the exchange,
//!    requests for the real-time service (`RU-30002`, RU 963 §10: 2 s), the
//!    round trip (→ the reply back at the consumer's adapter, 4 queues) and
//!    one way (→ the provider's handler, 2 queues; the scheduled time rides
//!    in the request); for the relay at the same offered loads, publish →
//!    the final consumer (one way, 2 queues). The broker's own histograms
//!    (batch processing; request accepted → reply accepted) are printed
//!    beside them.
//! 4. `crypto` — per-operation cost of each signature algorithm ring gives
//!    the exchange (Ed25519, ECDSA P-256 and P-384, RSA-2048 PKCS#1 v1.5 and
//!    PSS), over the header of the envelope used above: the raw signature and
//!    verification, sealing an envelope as the adapter does, and opening and
//!    verifying one as the broker and the adapters do: with the certificate
//!    chain remembered from an earlier message (`TrustStore`'s cache), and
//!    for a chain not seen before (its path checked).
//!
//! ```text
//! cargo bench -p mev-tests --bench exchange
//! MEV_BENCH_N=3000 MEV_BENCH_RUNS=1 MEV_BENCH_SECS=4 cargo bench -p mev-tests --bench exchange
//! ```
//!
//! Settings (environment): `MEV_BENCH_N` (messages per throughput run,
//! default 20000), `MEV_BENCH_RUNS` (throughput runs of each side, default
//! 3; medians are reported), `MEV_BENCH_SECS` (seconds per latency step,
//! default 20), `MEV_BENCH_PARTS` (`relay`, `exchange`, `oneway`, `latency`,
//! `crypto`, comma separated; default all but `oneway`, which `exchange`
//! includes: the one-way runs alone), `MEV_BENCH_CONCURRENCY` (concurrent
//! `send_request` calls, default 256), `MEV_BENCH_WINDOW` (the relay
//! publisher's confirms in flight, default 512), `MEV_BENCH_BYTES` (target
//! envelope size, default 2048), `MEV_BENCH_RATE` (the maximum round-trip
//! rate the latency loads are fractions of; default: measured),
//! `MEV_BENCH_LOADS` (the latency steps as fractions of that rate, comma
//! separated; default 0.25,0.5,0.75), `MEV_BENCH_BATCH`, `MEV_BENCH_BATCH_WINDOW_US` and `MEV_BENCH_PREFETCH` (the
//! broker's batch size, batch window and prefetch; default: `mev broker`'s,
//! 256, 1,000 µs and 512), `AMQP_URL`.
//! Every run uses its own namespace `mevbench-<uuid>` and deletes it at the end.
//!
//! Beside each figure: the CPU this process (relay or exchange: broker and
//! both adapters) and RabbitMQ (`beam.smp`) used, in cores, how busy the
//! machine was, and what this process wrote to disk, so a reader can tell a
//! CPU-bound run from a waiting one on a shared machine.

use anyhow::{bail, Context as _};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    PublisherConfirm,
};
use mev_adapter::message::Attachment;
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::{Topology, Transport};
use mev_adapter::{
    Adapter, AdapterConfig, AdapterEvent, IncomingRequest, NoHandler, OutgoingRequest, ReplyBody,
};
use mev_broker::metrics::{Counters, HistogramSnapshot};
use mev_broker::pipeline::{Batching, Context};
use mev_broker::register::{Register, Service};
use mev_broker::server::{Broker, BrokerHandle};
use mev_broker::store::Store;
use mev_devpki::{DevPki, KeyAlg};
use mev_proto::crypto::{Identity, RingSigner, RingVerifier, SignatureVerifier};
use mev_proto::envelope::Limits;
use mev_proto::pb::SignatureAlgorithm;
use mev_proto::trust::TrustStore;
use mev_tests::{amqp_url, load_register, median, redact, BROKER_ID};
use prost::Message as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

mod clock;
mod crypto;
mod fixture;
mod relay;
mod report;
mod rig;

use clock::*;
use crypto::*;
use fixture::*;
use relay::*;
use report::*;
use rig::*;

/// The service of the throughput runs: a 48-hour deadline (RU 963 §10).
const THROUGHPUT_SERVICE: &str = "RU-10047";
/// The service of the latency part: real-time, a reply within 2 seconds (RU 963 §10).
const LATENCY_SERVICE: &str = "RU-30002";
/// The longest a single setup or cleanup step may take.
const STEP: Duration = Duration::from_secs(60);
/// A request without its reply after this long counts as failed.
const REPLY_LIMIT: Duration = Duration::from_secs(120);
/// A throughput run that takes longer than this is reported as stuck.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// Prefetch of the relay's consumers: the broker's default.
const RELAY_PREFETCH: u16 = 512;
/// The broker's default batching and prefetch (`mev broker --print-default-config`),
/// or `MEV_BENCH_BATCH`, `MEV_BENCH_BATCH_WINDOW_US` and `MEV_BENCH_PREFETCH`
/// where set (to try other settings).
fn default_batching() -> Batching {
    let p = mev_broker::config::PipelineSection::default();
    let window = match std::env::var("MEV_BENCH_BATCH_WINDOW_US") {
        Ok(v) => Duration::from_micros(v.trim().parse().unwrap_or_else(|_| {
            panic!("MEV_BENCH_BATCH_WINDOW_US={v} is not a number of microseconds")
        })),
        Err(_) => Duration::from_millis(p.batch_window_ms),
    };
    Batching {
        batch_size: mev_tests::env_count("MEV_BENCH_BATCH", p.batch_size).unwrap_or(p.batch_size),
        batch_window: window,
    }
}
fn broker_prefetch() -> u16 {
    let p = mev_broker::config::AmqpSection::default().prefetch;
    mev_tests::env_count("MEV_BENCH_PREFETCH", p as usize)
        .ok()
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(p)
}
/// The offered loads of the latency part, as fractions of the maximum round-trip
/// rate (`MEV_BENCH_LOADS` picks others).
const LOADS: [f64; 3] = [0.25, 0.50, 0.75];
/// Targets (issue 9; RU 963 §10 for the real-time mode).
const TARGET_RATIO: f64 = 0.70;
const TARGET_P99_FACTOR: f64 = 2.5;
const TARGET_P999_AT_75: Duration = Duration::from_secs(2);
/// Samples sealed to measure the average envelope size.
const SIZE_SAMPLE: usize = 200;
/// The throwaway RSA test key of mev-proto's tests (ring cannot generate RSA keys).
const RSA_KEY_PEM: &str = include_str!("../../../proto/tests/data/rsa2048.pem");

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

struct Settings {
    n: usize,
    runs: usize,
    secs: u64,
    concurrency: usize,
    window: usize,
    bytes: usize,
    rate: Option<f64>,
    /// The latency steps, fractions of the maximum round-trip rate.
    loads: Vec<f64>,
    relay: bool,
    exchange: bool,
    /// The one-way runs alone (`exchange` runs them after each replied run).
    oneway: bool,
    latency: bool,
    crypto: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        use mev_tests::env_count as num;
        const PARTS: [&str; 5] = ["relay", "exchange", "oneway", "latency", "crypto"];
        let parts = std::env::var("MEV_BENCH_PARTS")
            .unwrap_or_else(|_| "relay,exchange,latency,crypto".into());
        let parts: Vec<String> = parts
            .split(',')
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        if let Some(p) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
            bail!("MEV_BENCH_PARTS: unknown part {p:?} ({})", PARTS.join(", "));
        }
        let rate = match std::env::var("MEV_BENCH_RATE") {
            Ok(v) => Some(
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0)
                    .with_context(|| format!("MEV_BENCH_RATE={v} is not a positive number"))?,
            ),
            Err(_) => None,
        };
        let loads = match std::env::var("MEV_BENCH_LOADS") {
            Ok(v) => v
                .split(',')
                .map(|l| {
                    l.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|l| *l > 0.0 && *l <= 1.0)
                        .with_context(|| format!("MEV_BENCH_LOADS: {l:?} is not in (0, 1]"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            Err(_) => LOADS.to_vec(),
        };
        let has = |p: &str| parts.iter().any(|x| x == p);
        Ok(Settings {
            n: num("MEV_BENCH_N", 20_000)?,
            runs: num("MEV_BENCH_RUNS", 3)?,
            secs: num("MEV_BENCH_SECS", 20)? as u64,
            concurrency: num("MEV_BENCH_CONCURRENCY", 256)?,
            window: num("MEV_BENCH_WINDOW", 512)?,
            bytes: num("MEV_BENCH_BYTES", 2048)?,
            rate,
            loads,
            relay: has("relay"),
            exchange: has("exchange"),
            oneway: has("oneway") || has("exchange"),
            latency: has("latency"),
            crypto: has("crypto"),
        })
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("exchange: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    mev_tests::bench_main(
        "exchange",
        "messages were missing or requests failed",
        bench(&settings),
    )
}

/// Runs the parts; `Ok(false)` if anything was lost or failed.
async fn bench(s: &Settings) -> anyhow::Result<bool> {
    epoch();
    let fx = Fixture::new(s.bytes)?;
    let envelope = fx.envelope_size(&fx.throughput)?;
    let relay_bytes = envelope.round() as usize;
    println!(
        "exchange bench: N = {}, {} run(s), {} s per latency step, RabbitMQ {}, load average {}",
        s.n,
        s.runs,
        s.secs,
        redact(&amqp_url()),
        loadavg()
    );
    for (part, flow) in [("throughput", &fx.throughput), ("latency", &fx.latency)] {
        println!(
            "  {part}: requests {} -> {} for service {} ({}, deadline {}), signed Ed25519; \
             envelope {:.0} B (the application attached: {} B)",
            fx.consumer_id,
            flow.provider_id,
            flow.service.number,
            flow.service.request_schema,
            flow.service.deadline,
            fx.envelope_size(flow)?,
            flow.attachment_len,
        );
    }
    println!("  relay messages: {relay_bytes} B");
    let mut ok = true;
    let mut relay_runs = Vec::new();
    let mut exchange_runs = Vec::new();
    let mut one_way_runs: Vec<Duration> = Vec::new();
    let mut one_way_cpu: Vec<CpuUse> = Vec::new();
    let mut one_way_ratio = None;
    if s.relay || s.exchange || s.oneway {
        for run in 1..=s.runs {
            if s.relay {
                let r = relay_run(s, relay_bytes).await?;
                ok &= r.count == s.n as u64 && r.failures == 0;
                print_relay_run(run, s.n, &r);
                relay_runs.push(r);
            }
            if s.exchange {
                let r = exchange_run(&fx, s).await?;
                ok &= r.replies == s.n as u64 && r.failed == 0 && r.handled == s.n as u64;
                print_exchange_run(run, s.n, &r);
                exchange_runs.push(r);
            }
            if s.oneway {
                let (t, cpu) = one_way_run(&fx, s).await?;
                println!(
                    "[one-way run {run}] {} requests into the provider's inbox (a plain consumer acks them, no reply) in {:.2} s = {:.0} requests/s\n  {cpu}",
                    s.n,
                    t.as_secs_f64(),
                    rate(s.n, t)
                );
                one_way_runs.push(t);
                one_way_cpu.push(cpu);
            }
        }
        summary_throughput(s, envelope, &relay_runs, &exchange_runs);
        if !one_way_runs.is_empty() {
            let one_way = median(one_way_runs.iter().map(|t| rate(s.n, *t)).collect());
            println!(
                "  {:<44} {:>10.0} {:>9.2}",
                "exchange one way: requests → provider's inbox",
                one_way,
                median(one_way_runs.iter().map(|t| t.as_secs_f64()).collect())
            );
            if !relay_runs.is_empty() {
                let ratio =
                    one_way / median(relay_runs.iter().map(|r| rate(s.n, r.delivered)).collect());
                println!(
                    "  exchange one way / relay = {:.0}% (the like-for-like ratio: both two queues and a final consumer that acks; target ≥ {:.0}%: {})",
                    ratio * 100.0,
                    TARGET_RATIO * 100.0,
                    verdict(ratio >= TARGET_RATIO)
                );
                one_way_ratio = Some(ratio);
            }
        }
    }

    let mut latency = Vec::new();
    if s.latency {
        let max_rate = match s.rate {
            Some(r) => r,
            None if !exchange_runs.is_empty() => median(
                exchange_runs
                    .iter()
                    .map(|r| rate(s.n, r.replied_at))
                    .collect(),
            ),
            None => {
                println!(
                    "[latency] measuring the maximum round-trip rate first (N = {})",
                    s.n
                );
                let r = exchange_run(&fx, s).await?;
                ok &= r.replies == s.n as u64 && r.failed == 0;
                print_exchange_run(0, s.n, &r);
                rate(s.n, r.replied_at)
            }
        };
        println!(
            "[latency] open loop at {} of {:.0} round trips/s, {} s per step, load average {}",
            s.loads
                .iter()
                .map(|l| format!("{:.0}%", l * 100.0))
                .collect::<Vec<_>>()
                .join(", "),
            max_rate,
            s.secs,
            loadavg()
        );
        let relay = Relay::start().await?;
        let rig = match ExchangeRig::start(&fx, &fx.latency).await {
            Ok(r) => r,
            Err(e) => {
                relay.stop().await;
                return Err(e);
            }
        };
        let mut result = Ok(());
        for &load in &s.loads {
            let r = max_rate * load;
            let step = async {
                let rl = relay_open_loop(&relay, r, s.secs, relay_bytes, s.window).await?;
                print_step("relay", load, &rl);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let ex = exchange_open_loop(&rig, &fx, r, s.secs).await?;
                print_step("exchange", load, &ex);
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, anyhow::Error>((rl, ex))
            };
            match step.await {
                Ok((rl, ex)) => {
                    ok &= rl.failed == 0 && ex.failed == 0;
                    latency.push((load, rl, ex));
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let breached = rig.counters.snapshot().sla_total();
        println!(
            "  exchange deadlines (real-time, 2 s): on time {}, late {}, breached {}, at risk {}",
            breached.on_time, breached.late, breached.breached, breached.at_risk
        );
        rig.stop(&fx).await;
        relay.stop().await;
        result?;
        summary_latency(&latency);
    }

    let mut crypto = Vec::new();
    if s.crypto {
        println!("[crypto] load average {}", loadavg());
        let rounds = s.runs.max(3) + 2;
        crypto = tokio::task::block_in_place(|| crypto_part(&fx, rounds))?;
        summary_crypto(rounds, &crypto);
    }

    summary_budget(s, &relay_runs, &one_way_runs, &one_way_cpu, &crypto);
    summary_targets(s, &relay_runs, &exchange_runs, one_way_ratio, &latency);
    Ok(ok)
}
