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
//! separated; default 0.25,0.5,0.75), `MEV_BENCH_BATCH` and `MEV_BENCH_PREFETCH` (the broker's batch size and
//! prefetch; default: `mev broker`'s, 256 and 512), `AMQP_URL`.
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
use mev_adapter::transport::Transport;
use mev_adapter::{
    Adapter, AdapterConfig, AdapterEvent, IncomingRequest, NoHandler, OutgoingRequest, ReplyBody,
};
use mev_broker::metrics::{Counters, HistogramSnapshot};
use mev_broker::pipeline::{Batching, Context};
use mev_broker::pki::{DevPki, KeyAlg};
use mev_broker::register::{Register, Service};
use mev_broker::server::{Broker, BrokerHandle};
use mev_broker::store::Store;
use mev_proto::crypto::{Identity, RingSigner, RingVerifier, SignatureVerifier};
use mev_proto::envelope::Limits;
use mev_proto::pb::SignatureAlgorithm;
use mev_proto::trust::TrustStore;
use mev_tests::{amqp_url, load_register, BROKER_ID};
use prost::Message as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

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
/// or `MEV_BENCH_BATCH` and `MEV_BENCH_PREFETCH` where set (to try other settings).
fn default_batching() -> Batching {
    let p = mev_broker::config::PipelineSection::default();
    Batching {
        batch_size: mev_tests::env_count("MEV_BENCH_BATCH", p.batch_size).unwrap_or(p.batch_size),
        batch_window: Duration::from_millis(p.batch_window_ms),
    }
}
fn broker_prefetch() -> u16 {
    let p = mev_broker::config::AmqpSection::default().prefetch;
    mev_tests::env_count("MEV_BENCH_PREFETCH", p as usize)
        .ok()
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(p)
}
/// The offered loads of the latency part, as fractions of the maximum round-trip rate.
/// The latency steps, fractions of the maximum (`MEV_BENCH_LOADS` picks others).
const LOADS: [f64; 3] = [0.25, 0.50, 0.75];
/// Targets (issue 9; RU 963 §10 for the real-time mode).
const TARGET_RATIO: f64 = 0.70;
const TARGET_P99_FACTOR: f64 = 2.5;
const TARGET_P999_AT_75: Duration = Duration::from_secs(2);
/// Samples sealed to measure the average envelope size.
const SIZE_SAMPLE: usize = 200;
/// The throwaway RSA test key of mev-proto's tests (ring cannot generate RSA keys).
const RSA_KEY_PEM: &str = include_str!("../../proto/tests/data/rsa2048.pem");

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
// Clock and histograms
// ---------------------------------------------------------------------------

/// When the bench started.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the bench started: the timestamps carried in relay messages.
fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `t` in nanoseconds since the bench started.
fn ns_of(t: tokio::time::Instant) -> u64 {
    u64::try_from(t.into_std().saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn step<F: std::future::Future>(what: &str, f: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout(STEP, f)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {STEP:?} waiting for {what}"))
}

/// CPU time used so far (clock ticks): this process, RabbitMQ's Erlang VM
/// (`beam.smp`, if found), and the whole machine (busy and total).
#[derive(Clone, Copy)]
struct Cpu {
    at: Instant,
    own: u64,
    rabbit: Option<u64>,
    busy: u64,
    total: u64,
    /// Bytes this process caused to be written to storage (`/proc/self/io`).
    written: u64,
}

/// What was used between two [`Cpu`] readings.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    /// Cores' worth of CPU this process used (1.0 = one core all the time).
    own: f64,
    /// The same for RabbitMQ.
    rabbit: Option<f64>,
    /// How busy the whole machine was (all its cores, every process).
    machine: f64,
    /// Megabytes this process wrote to storage.
    written_mb: f64,
}

/// Clock ticks per second of /proc (`CLK_TCK`, 100 on Linux).
const TICKS: f64 = 100.0;

impl Cpu {
    fn now() -> Cpu {
        fn process(pid: &str) -> Option<u64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        }
        static RABBIT: OnceLock<Option<String>> = OnceLock::new();
        let rabbit = RABBIT.get_or_init(|| {
            std::fs::read_dir("/proc")
                .ok()?
                .filter_map(Result::ok)
                .find_map(|e| {
                    let pid = e.file_name().to_string_lossy().to_string();
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                    (comm.trim() == "beam.smp").then_some(pid)
                })
        });
        let (busy, total) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_string();
                let v: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let total: u64 = v.iter().take(8).sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                Some((total - idle, total))
            })
            .unwrap_or((0, 0));
        Cpu {
            at: Instant::now(),
            own: process("self").unwrap_or(0),
            rabbit: rabbit.as_deref().and_then(process),
            busy,
            total,
            written: std::fs::read_to_string("/proc/self/io")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("write_bytes:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0),
        }
    }

    fn since(&self, before: &Cpu) -> CpuUse {
        let wall = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        CpuUse {
            own: self.own.saturating_sub(before.own) as f64 / TICKS / wall,
            rabbit: match (self.rabbit, before.rabbit) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b) as f64 / TICKS / wall),
                _ => None,
            },
            machine: self.busy.saturating_sub(before.busy) as f64
                / self.total.saturating_sub(before.total).max(1) as f64,
            written_mb: self.written.saturating_sub(before.written) as f64 / 1e6,
        }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CPU: this process {:.2} cores", self.own)?;
        if let Some(r) = self.rabbit {
            write!(f, ", RabbitMQ {r:.2} cores")?;
        }
        write!(
            f,
            "; machine {:.0}% busy; this process wrote {:.1} MB to disk",
            self.machine * 100.0,
            self.written_mb
        )
    }
}

/// A fixed schedule: message `k` is due at `start + k / rate`.
#[derive(Clone, Copy)]
struct Schedule {
    start: tokio::time::Instant,
    rate: f64,
    total: u64,
    /// Messages due before this are warm-up: sent, not recorded.
    warm_until: tokio::time::Instant,
}

impl Schedule {
    fn new(rate: f64, secs: u64) -> Schedule {
        let start = tokio::time::Instant::now() + Duration::from_millis(20);
        let warm = Duration::from_secs(secs)
            .div_f64(5.0)
            .min(Duration::from_secs(2));
        Schedule {
            start,
            rate,
            total: (rate * secs as f64).round().max(1.0) as u64,
            warm_until: start + warm,
        }
    }

    fn at(&self, k: u64) -> tokio::time::Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Calls `send(k, due)` for every message in order, each as soon as it
    /// is due (never earlier; late if the caller is slow: the latency is
    /// measured from `due` all the same).
    async fn run<F, Fut>(&self, mut send: F) -> anyhow::Result<()>
    where
        F: FnMut(u64, tokio::time::Instant) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let mut k = 0u64;
        while k < self.total {
            tokio::time::sleep_until(self.at(k)).await;
            let now = tokio::time::Instant::now();
            while k < self.total && self.at(k) <= now {
                send(k, self.at(k)).await?;
                k += 1;
            }
        }
        Ok(())
    }
}

/// One open-loop step's outcome.
struct LatencyStep {
    offered: f64,
    sent: u64,
    completed: u64,
    failed: u64,
    hist: Histogram<u64>,
    first_error: Option<String>,
    cpu: CpuUse,
    /// The broker's own timings (exchange steps only).
    broker: Option<BrokerTimes>,
    /// One way, scheduled send → the provider's handler (exchange steps only).
    oneway: Option<Histogram<u64>>,
}

/// What the broker's histograms saw between two readings.
struct BrokerTimes {
    /// A batch's processing: checks, one store transaction, acks (it does
    /// not include the wait for the batch to fill).
    routing: HistogramSnapshot,
    /// A request's acceptance to its reply's acceptance.
    reply: HistogramSnapshot,
}

impl BrokerTimes {
    fn between(after: &Counters, routing: &HistogramSnapshot, reply: &HistogramSnapshot) -> Self {
        fn delta(a: HistogramSnapshot, b: &HistogramSnapshot) -> HistogramSnapshot {
            HistogramSnapshot {
                cumulative: a
                    .cumulative
                    .iter()
                    .zip(&b.cumulative)
                    .map(|(x, y)| x.saturating_sub(*y))
                    .collect(),
                count: a.count.saturating_sub(b.count),
                sum: a.sum - b.sum,
                bounds: a.bounds,
            }
        }
        BrokerTimes {
            routing: delta(after.routing.snapshot(), routing),
            reply: delta(after.reply.snapshot(), reply),
        }
    }
}

impl std::fmt::Display for BrokerTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".into(), |s| format!("{:.1}", s * 1e3));
        write!(
            f,
            "broker: batch processing mean {} ms (p99 ≈ {} ms); request accepted → reply \
             accepted mean {} ms (p99 ≈ {} ms)",
            ms(self.routing.mean()),
            ms(self.routing.quantile(0.99)),
            ms(self.reply.mean()),
            ms(self.reply.quantile(0.99)),
        )
    }
}

impl LatencyStep {
    /// The one-way `q` quantile (exchange steps), zero when not measured.
    fn oneway_q(&self, q: f64) -> Duration {
        self.oneway
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or(Duration::ZERO, |h| {
                Duration::from_micros(h.value_at_quantile(q))
            })
    }
    fn q(&self, q: f64) -> Duration {
        Duration::from_micros(self.hist.value_at_quantile(q))
    }
    fn max(&self) -> Duration {
        Duration::from_micros(self.hist.max())
    }
}

// ---------------------------------------------------------------------------
// The fixture: register, services, identities, request templates
// ---------------------------------------------------------------------------

/// Requests for one service from the consumer to its provider.
struct Flow {
    service: Service,
    provider_id: String,
    provider: Identity,
    /// A valid request for the service, its attachment to be padded.
    template: OutgoingRequest,
    /// The attachment's length that makes the envelope the target size.
    attachment_len: usize,
    /// The reply's payload (a sample of the service's reply schema).
    reply_payload: Vec<u8>,
}

struct Fixture {
    register: Arc<Register>,
    consumer_id: String,
    consumer: Identity,
    broker: Identity,
    agency_ids: Vec<String>,
    trust: Arc<TrustStore>,
    verifier: Arc<dyn SignatureVerifier>,
    /// A service with a 48-hour deadline: the throughput runs, whose
    /// saturated round trips take longer than a real-time service allows
    /// (its breach notices would add traffic the relay does not carry).
    throughput: Flow,
    /// The real-time service (2 s): the latency part.
    latency: Flow,
    seq: AtomicU64,
}

impl Fixture {
    fn new(target_bytes: usize) -> anyhow::Result<Fixture> {
        let register = Arc::new(load_register());
        let service = |number: &str| {
            register
                .service(number)
                .filter(|s| s.is_active())
                .with_context(|| format!("no active service {number} in the shipped register"))
                .cloned()
        };
        let (throughput, latency) = (service(THROUGHPUT_SERVICE)?, service(LATENCY_SERVICE)?);
        let consumer_id = latency
            .consumers
            .first()
            .with_context(|| format!("service {LATENCY_SERVICE} has no consumers"))?
            .agency
            .clone();
        if throughput.consumer(&consumer_id).is_none() {
            bail!("{consumer_id} may not ask for {THROUGHPUT_SERVICE}");
        }
        let pki = DevPki::new().context("development CA")?;
        let consumer = pki
            .issue(&consumer_id, KeyAlg::Ed25519)
            .context("the consumer's certificate")?;
        let broker = pki
            .issue(BROKER_ID, KeyAlg::Ed25519)
            .context("the broker's certificate")?;
        let flow = |service: Service| -> anyhow::Result<Flow> {
            let provider = pki
                .issue(&service.provider, KeyAlg::Ed25519)
                .context("the provider's certificate")?;
            let template =
                mev_broker::demo::sample_request(&register, &service, 0, "Galiev Rustem".into());
            if template.payload.is_empty() {
                bail!("no sample payload for {}", service.request_schema);
            }
            let reply_payload = register
                .sample_payload(&service.reply_schema)
                .with_context(|| format!("no sample payload for {}", service.reply_schema))?;
            Ok(Flow {
                provider_id: service.provider.clone(),
                service,
                provider,
                template,
                attachment_len: 0,
                reply_payload,
            })
        };
        let mut fx = Fixture {
            throughput: flow(throughput)?,
            latency: flow(latency)?,
            trust: Arc::new(pki.trust_store().context("trust store")?),
            verifier: Arc::new(RingVerifier::new()),
            agency_ids: register.agencies().map(|a| a.id.clone()).collect(),
            register,
            consumer_id,
            consumer,
            broker,
            seq: AtomicU64::new(0),
        };
        // Pad the applicant's attached application (carried in the signed
        // header) so the envelope is about the target size: the payload
        // itself must decode strictly against the service's schema.
        for _ in 0..3 {
            for latency in [false, true] {
                let flow = if latency { &fx.latency } else { &fx.throughput };
                let size = fx
                    .seal_consumer(fx.request_with(flow, 0, flow.attachment_len))?
                    .len();
                let len = (flow.attachment_len + target_bytes).saturating_sub(size);
                if latency {
                    fx.latency.attachment_len = len;
                } else {
                    fx.throughput.attachment_len = len;
                }
            }
        }
        Ok(fx)
    }

    /// Request number `i` of `flow` with an attachment of `len` bytes.
    fn request_with(&self, flow: &Flow, i: u64, len: usize) -> OutgoingRequest {
        let mut req = flow.template.clone();
        req.applicant.id_number = format!("{:014}", 31_203_850_000_000u64 + i);
        req.applicant.full_name = format!("Galiev Rustem {i}");
        let mut content = format!("%PDF-1.7 application no. {i:08}\n").into_bytes();
        let filler = b"0 0 612 792 re f BT /F1 12 Tf 72 720 Td (Application) Tj ET\n";
        while content.len() < len {
            let take = (len - content.len()).min(filler.len());
            content.extend_from_slice(&filler[..take]);
        }
        req.applicant.application = Some(Attachment {
            name: "application.pdf".into(),
            media_type: "application/pdf".into(),
            content,
        });
        req.application_received_at = Some(chrono::Utc::now());
        req
    }

    /// The next request of `flow`, padded to the target size.
    fn request(&self, flow: &Flow) -> OutgoingRequest {
        let i = self.seq.fetch_add(1, Ordering::Relaxed);
        self.request_with(flow, i, flow.attachment_len)
    }

    /// `req` sealed by the consumer, as `send_request` would.
    fn seal_consumer(&self, req: OutgoingRequest) -> anyhow::Result<Vec<u8>> {
        let (header, payload) = req.into_parts(&self.consumer_id);
        Ok(mev_proto::envelope::seal(
            header,
            payload,
            self.consumer.signer.as_ref(),
            &self.consumer.certificate_chain,
        )?
        .encode_to_vec())
    }

    /// The average size of the envelopes of `flow`.
    fn envelope_size(&self, flow: &Flow) -> anyhow::Result<f64> {
        let mut total = 0usize;
        for i in 0..SIZE_SAMPLE {
            total += self
                .seal_consumer(self.request_with(flow, i as u64, flow.attachment_len))?
                .len();
        }
        Ok(total as f64 / SIZE_SAMPLE as f64)
    }
}

/// A transport of its own (one connection) for one participant.
fn transport(namespace: &str, name: &str) -> Amqp {
    Amqp::new(
        namespace.to_string(),
        AmqpConfig {
            connection_name: format!("mevbench {name}"),
            ..AmqpConfig::new(amqp_url())
        },
    )
}

// ---------------------------------------------------------------------------
// The zero-work relay (lapin only)
// ---------------------------------------------------------------------------

/// What the relay's final consumer saw.
#[derive(Default)]
struct Sink {
    count: AtomicU64,
    /// `now_ns()` of the latest message.
    last_ns: AtomicU64,
    /// Latencies of messages sent at or after this `now_ns()` are recorded.
    record_from_ns: AtomicU64,
    hist: Mutex<Option<Histogram<u64>>>,
}

/// A relay topology in its own namespace: Q1 → relay → Q2 → final consumer.
struct Relay {
    q1: String,
    q2: String,
    admin: Connection,
    publisher_conn: Connection,
    relay_conn: Connection,
    sink_conn: Connection,
    publisher: Channel,
    sink: Arc<Sink>,
    failures: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn connect(name: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(format!("mevbench {name}").as_str()));
    step(
        "connecting to RabbitMQ",
        Connection::connect(&amqp_url(), props),
    )
    .await?
    .with_context(|| format!("connecting to RabbitMQ at {}", redact(&amqp_url())))
}

/// A channel consuming `queue` with the relay's prefetch, and its consumer.
async fn consume(
    conn: &Connection,
    queue: &str,
    tag: &str,
) -> anyhow::Result<(lapin::Channel, lapin::Consumer)> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(RELAY_PREFETCH, BasicQosOptions::default())
        .await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((ch, consumer))
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

impl Relay {
    async fn start() -> anyhow::Result<Relay> {
        let ns = format!("mevbench-{}", uuid::Uuid::new_v4().simple());
        let q1 = format!("{ns}.relay.q1");
        let q2 = format!("{ns}.relay.q2");
        let admin = connect("relay admin").await?;
        let ch = admin.create_channel().await?;
        for q in [&q1, &q2] {
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::durable(),
                quorum_args(),
            )
            .await
            .with_context(|| format!("declaring {q}"))?;
        }
        let _ = ch.close(200, "declared".into()).await;
        let publisher_conn = connect("relay publisher").await?;
        let publisher = publisher_conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut relay = Relay {
            q1,
            q2,
            publisher_conn,
            relay_conn: connect("relay").await?,
            sink_conn: connect("relay final consumer").await?,
            admin,
            publisher,
            sink: Arc::new(Sink::default()),
            failures: Arc::new(AtomicU64::new(0)),
            tasks: Vec::new(),
        };
        relay.start_relay().await?;
        relay.start_sink().await?;
        Ok(relay)
    }

    /// Q1 → Q2: re-publish each message, ack it on Q1 once Q2 confirmed it.
    /// Publishes and confirms overlap: at most the prefetch in flight.
    async fn start_relay(&mut self) -> anyhow::Result<()> {
        let (input, mut consumer) = consume(&self.relay_conn, &self.q1, "relay").await?;
        let output = self.relay_conn.create_channel().await?;
        output
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (tx, mut rx) = mpsc::channel::<(PublisherConfirm, Acker)>(RELAY_PREFETCH as usize);
        let q2 = self.q2.clone();
        let failures = self.failures.clone();
        self.tasks.push(tokio::spawn(async move {
            let _keep = input;
            while let Some(Ok(d)) = consumer.next().await {
                let published = output
                    .basic_publish(
                        "".into(),
                        q2.as_str().into(),
                        BasicPublishOptions::default(),
                        &d.data,
                        persistent(),
                    )
                    .await;
                match published {
                    Ok(confirm) => {
                        if tx.send((confirm, d.acker)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("  relay: publish to Q2 failed: {e}");
                        return;
                    }
                }
            }
        }));
        let failures = self.failures.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some((confirm, acker)) = rx.recv().await {
                match confirm.await {
                    Ok(Confirmation::Ack(None)) => {
                        let _ = acker.ack(BasicAckOptions::default()).await;
                    }
                    other => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("  relay: Q2 did not confirm: {other:?}");
                        let _ = acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await;
                    }
                }
            }
        }));
        Ok(())
    }

    /// The final consumer: counts, records latency, acks.
    async fn start_sink(&mut self) -> anyhow::Result<()> {
        let (ch, mut consumer) = consume(&self.sink_conn, &self.q2, "sink").await?;
        let sink = self.sink.clone();
        self.tasks.push(tokio::spawn(async move {
            let _keep = ch;
            while let Some(Ok(d)) = consumer.next().await {
                let now = now_ns();
                let sent = d
                    .data
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(now);
                if sent >= sink.record_from_ns.load(Ordering::Relaxed) {
                    if let Some(h) = lock(&sink.hist).as_mut() {
                        h.saturating_record(now.saturating_sub(sent) / 1_000);
                    }
                }
                sink.last_ns.fetch_max(now, Ordering::Relaxed);
                sink.count.fetch_add(1, Ordering::Relaxed);
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
        }));
        Ok(())
    }

    /// A message of `bytes` bytes stamped with `sent_ns`.
    fn body(bytes: usize, sent_ns: u64, k: u64) -> Vec<u8> {
        let mut body = Vec::with_capacity(bytes.max(16));
        body.extend_from_slice(&sent_ns.to_le_bytes());
        body.extend_from_slice(&k.to_le_bytes());
        let filler = b"relay payload of the envelope's size ";
        while body.len() < bytes {
            let take = (bytes - body.len()).min(filler.len());
            body.extend_from_slice(&filler[..take]);
        }
        body
    }

    /// A task awaiting the publisher's confirms in order; the channel's
    /// capacity is the window of confirms in flight.
    fn confirmer(
        &self,
        window: usize,
    ) -> (mpsc::Sender<PublisherConfirm>, tokio::task::JoinHandle<u64>) {
        let (tx, mut rx) = mpsc::channel::<PublisherConfirm>(window.max(1));
        let task = tokio::spawn(async move {
            let mut failed = 0u64;
            while let Some(c) = rx.recv().await {
                match c.await {
                    Ok(Confirmation::Ack(None)) => {}
                    other => {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("  relay: Q1 did not confirm: {other:?}");
                        }
                    }
                }
            }
            failed
        });
        (tx, task)
    }

    async fn publish(&self, body: &[u8]) -> anyhow::Result<PublisherConfirm> {
        Ok(self
            .publisher
            .basic_publish(
                "".into(),
                self.q1.as_str().into(),
                BasicPublishOptions::default(),
                body,
                persistent(),
            )
            .await?)
    }

    /// Waits until the final consumer has seen `n` messages in all.
    async fn wait_count(&self, n: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.sink.count.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Deletes the queues and closes the connections.
    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.publisher_conn.close(200, "done".into()).await;
        let _ = self.relay_conn.close(200, "done".into()).await;
        let _ = self.sink_conn.close(200, "done".into()).await;
        let deleted = async {
            let ch = self.admin.create_channel().await?;
            for q in [&self.q1, &self.q2] {
                ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
            let _ = self.admin.close(200, "done".into()).await;
            Ok::<_, lapin::Error>(())
        };
        match tokio::time::timeout(STEP, deleted).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("  cleanup of {} failed: {e}", self.q1),
            Err(_) => eprintln!("  cleanup of {} timed out", self.q1),
        }
    }
}

/// One throughput run of the relay.
struct RelayRun {
    /// First publish → every confirm of Q1 in.
    publish: Duration,
    /// First publish → the final consumer's last message.
    delivered: Duration,
    count: u64,
    failures: u64,
    cpu: CpuUse,
}

async fn relay_run(s: &Settings, bytes: usize) -> anyhow::Result<RelayRun> {
    let relay = Relay::start().await?;
    let result = relay_measure(&relay, s, bytes).await;
    relay.stop().await;
    result
}

async fn relay_measure(relay: &Relay, s: &Settings, bytes: usize) -> anyhow::Result<RelayRun> {
    let n = s.n as u64;
    let cpu = Cpu::now();
    let start = Instant::now();
    let start_ns = now_ns();
    let (tx, confirms) = relay.confirmer(s.window);
    for k in 0..n {
        let confirm = relay.publish(&Relay::body(bytes, now_ns(), k)).await?;
        if tx.send(confirm).await.is_err() {
            bail!("the relay's confirm task ended early");
        }
    }
    drop(tx);
    let nacked = confirms
        .await
        .context("the relay's confirm task panicked")?;
    let publish = start.elapsed();
    if !relay.wait_count(n, RUN_LIMIT).await {
        eprintln!(
            "  relay: only {} of {n} arrived within {RUN_LIMIT:?}",
            relay.sink.count.load(Ordering::Relaxed)
        );
    }
    let delivered = Duration::from_nanos(
        relay
            .sink
            .last_ns
            .load(Ordering::Relaxed)
            .saturating_sub(start_ns),
    );
    Ok(RelayRun {
        publish,
        delivered,
        count: relay.sink.count.load(Ordering::Relaxed),
        failures: nacked + relay.failures.load(Ordering::Relaxed),
        cpu: Cpu::now().since(&cpu),
    })
}

/// The relay at `rate` messages a second for `secs` seconds, open loop.
async fn relay_open_loop(
    relay: &Relay,
    rate: f64,
    secs: u64,
    bytes: usize,
    window: usize,
) -> anyhow::Result<LatencyStep> {
    let base = relay.sink.count.load(Ordering::Relaxed);
    let cpu = Cpu::now();
    let sched = Schedule::new(rate, secs);
    *lock(&relay.sink.hist) = Some(histogram());
    relay
        .sink
        .record_from_ns
        .store(ns_of(sched.warm_until), Ordering::Relaxed);
    let (tx, confirms) = relay.confirmer(window);
    {
        let tx = &tx;
        sched
            .run(|k, due| {
                let body = Relay::body(bytes, ns_of(due), k);
                async move {
                    let confirm = relay.publish(&body).await?;
                    tx.send(confirm)
                        .await
                        .map_err(|_| anyhow::anyhow!("the relay's confirm task ended early"))
                }
            })
            .await?;
    }
    drop(tx);
    let nacked = confirms
        .await
        .context("the relay's confirm task panicked")?;
    relay.wait_count(base + sched.total, REPLY_LIMIT).await;
    let completed = relay.sink.count.load(Ordering::Relaxed) - base;
    relay.sink.record_from_ns.store(u64::MAX, Ordering::Relaxed);
    let hist = lock(&relay.sink.hist).take().unwrap_or_else(histogram);
    let missing = sched.total.saturating_sub(completed);
    Ok(LatencyStep {
        offered: rate,
        sent: sched.total,
        completed,
        failed: missing + nacked,
        hist,
        first_error: (missing + nacked > 0)
            .then(|| format!("{missing} not delivered, {nacked} not confirmed")),
        cpu: Cpu::now().since(&cpu),
        broker: None,
        oneway: None,
    })
}

// ---------------------------------------------------------------------------
// The exchange: broker and two adapters, stores on disk
// ---------------------------------------------------------------------------

/// A broker and the two agencies' adapters in a namespace of their own.
struct ExchangeRig {
    admin: Amqp,
    dir: tempfile::TempDir,
    broker: Option<BrokerHandle>,
    consumer: Option<Arc<Adapter<Amqp>>>,
    provider: Option<Adapter<Amqp>>,
    counters: Arc<Counters>,
    /// What the provider's handler saw: calls, the latest, and in the
    /// latency part the one-way latency (scheduled send → handler).
    provider_seen: Arc<Sink>,
    /// One-way runs: a plain consumer of the provider's inbox that counts
    /// and acks, like the relay's final consumer (no adapter, no reply).
    raw_provider: Option<tokio::task::JoinHandle<()>>,
}

impl ExchangeRig {
    /// An exchange serving `flow`: its consumer and provider attached.
    async fn start(fx: &Fixture, flow: &Flow) -> anyhow::Result<ExchangeRig> {
        ExchangeRig::start_with(fx, flow, true).await
    }

    /// `replying`: the provider's adapter answers; otherwise a plain
    /// consumer takes the provider's inbox.
    async fn start_with(fx: &Fixture, flow: &Flow, replying: bool) -> anyhow::Result<ExchangeRig> {
        let namespace = format!("mevbench-{}", uuid::Uuid::new_v4().simple());
        let admin = transport(&namespace, "admin");
        step("connecting to RabbitMQ", admin.connect())
            .await?
            .with_context(|| format!("connecting to RabbitMQ at {}", redact(&amqp_url())))?;
        let mut rig = ExchangeRig {
            admin,
            dir: tempfile::tempdir().context("temp dir")?,
            broker: None,
            consumer: None,
            provider: None,
            counters: Arc::new(Counters::default()),
            provider_seen: Arc::new(Sink::default()),
            raw_provider: None,
        };
        match rig.bring_up(fx, flow, &namespace, replying).await {
            Ok(()) => Ok(rig),
            Err(e) => {
                rig.stop(fx).await;
                Err(e)
            }
        }
    }

    async fn bring_up(
        &mut self,
        fx: &Fixture,
        flow: &Flow,
        namespace: &str,
        replying: bool,
    ) -> anyhow::Result<()> {
        let store = Store::open(&self.dir.path().join("broker")).context("the broker's store")?;
        let ctx = Arc::new(Context {
            verifier: fx.verifier.clone(),
            // As `mev broker` sets it: the dedup window (30 days by default).
            max_message_age: Some(chrono::TimeDelta::days(30)),
            counters: self.counters.clone(),
            ..Context::new(
                fx.register.clone(),
                fx.trust.clone(),
                fx.broker.clone(),
                Arc::new(store),
            )
        });
        let batching = default_batching();
        let broker = Broker::new(
            ctx,
            transport(namespace, "broker"),
            batching,
            broker_prefetch(),
        );
        self.broker = Some(
            step("the broker to start", broker.start())
                .await?
                .context("starting the broker")?,
        );

        if !replying {
            let t = transport(namespace, "provider");
            step("the provider's inbox", t.declare_inbox(&flow.provider_id))
                .await?
                .context("declaring the provider's inbox")?;
            let queue = t.names().inbox_queue(&flow.provider_id);
            let mut inbox = step("consuming the provider's inbox", t.consume(&queue, 512))
                .await?
                .context("consuming the provider's inbox")?;
            let seen = self.provider_seen.clone();
            self.raw_provider = Some(tokio::spawn(async move {
                let _link = t;
                while let Some(d) = inbox.next().await {
                    seen.last_ns.fetch_max(now_ns(), Ordering::Relaxed);
                    seen.count.fetch_add(1, Ordering::Relaxed);
                    let _ = d.ack().await;
                }
            }));
        } else {
            self.start_provider(fx, flow, namespace).await?;
        }
        self.start_consumer(fx, namespace).await
    }

    async fn start_provider(
        &mut self,
        fx: &Fixture,
        flow: &Flow,
        namespace: &str,
    ) -> anyhow::Result<()> {
        let seen = self.provider_seen.clone();
        let schema = flow.service.reply_schema.clone();
        let payload = flow.reply_payload.clone();
        let handler = move |req: IncomingRequest| {
            let now = now_ns();
            seen.last_ns.fetch_max(now, Ordering::Relaxed);
            seen.count.fetch_add(1, Ordering::Relaxed);
            // The latency part's requests carry their scheduled send time.
            let due = req
                .header
                .applicant
                .as_ref()
                .and_then(|a| a.full_name.rsplit_once(" @"))
                .and_then(|(_, ns)| ns.parse::<u64>().ok());
            if let Some(due) = due {
                if due >= seen.record_from_ns.load(Ordering::Relaxed) {
                    if let Some(h) = lock(&seen.hist).as_mut() {
                        h.saturating_record(now.saturating_sub(due) / 1_000);
                    }
                }
            }
            std::future::ready(ReplyBody::Documents {
                provided: req.header.documents.clone(),
                payload_schema: schema.clone(),
                payload: payload.clone(),
            })
        };
        let config = AdapterConfig::new(
            flow.provider.clone(),
            fx.trust.clone(),
            fx.verifier.clone(),
            BROKER_ID,
        )
        .with_data_dir(self.dir.path().join("provider"));
        let provider = step(
            "the provider's adapter to connect",
            Adapter::connect(transport(namespace, "provider"), config, Some(handler)),
        )
        .await?
        .context("connecting the provider's adapter")?;
        drain_events(&provider);
        self.provider = Some(provider);
        Ok(())
    }

    async fn start_consumer(&mut self, fx: &Fixture, namespace: &str) -> anyhow::Result<()> {
        let config = AdapterConfig::new(
            fx.consumer.clone(),
            fx.trust.clone(),
            fx.verifier.clone(),
            BROKER_ID,
        )
        .with_data_dir(self.dir.path().join("consumer"));
        let consumer = step(
            "the consumer's adapter to connect",
            Adapter::connect(transport(namespace, "consumer"), config, None::<NoHandler>),
        )
        .await?
        .context("connecting the consumer's adapter")?;
        drain_events(&consumer);
        self.consumer = Some(Arc::new(consumer));
        Ok(())
    }

    fn consumer(&self) -> anyhow::Result<Arc<Adapter<Amqp>>> {
        self.consumer
            .clone()
            .context("the consumer's adapter is not running")
    }

    /// Stops the adapters and the broker and deletes the namespace.
    async fn stop(mut self, fx: &Fixture) {
        if let Some(c) = self.consumer.take() {
            match Arc::try_unwrap(c) {
                Ok(a) => {
                    let _ = tokio::time::timeout(STEP, a.shutdown()).await;
                }
                Err(_) => eprintln!("  exchange: the consumer's adapter is still shared; dropped"),
            }
        }
        if let Some(p) = self.provider.take() {
            let _ = tokio::time::timeout(STEP, p.shutdown()).await;
        }
        if let Some(raw) = self.raw_provider.take() {
            raw.abort();
        }
        if let Some(b) = self.broker.take() {
            let _ = tokio::time::timeout(STEP, b.stop()).await;
        }
        let ns = self.admin.names().namespace().to_string();
        match tokio::time::timeout(STEP, self.admin.delete_topology(&fx.agency_ids)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("  cleanup of {ns} failed: {e}"),
            Err(_) => eprintln!("  cleanup of {ns} timed out"),
        }
    }
}

/// Reads an adapter's events (receipts of replies, notices) so none pile up.
fn drain_events(adapter: &Adapter<Amqp>) {
    if let Some(mut rx) = adapter.events() {
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let AdapterEvent::Receipt(r) = e {
                    if !r.accepted {
                        eprintln!("  exchange: a reply was refused: {} {}", r.code, r.reason);
                    }
                }
            }
        });
    }
}

/// One throughput run of the exchange.
struct ExchangeRun {
    /// First send → every `send_request` returned (all in the outbox on disk).
    send: Duration,
    /// First send → the provider's handler saw the last request.
    handled_at: Duration,
    /// First send → the last reply arrived at the consumer.
    replied_at: Duration,
    handled: u64,
    replies: u64,
    failed: u64,
    first_error: Option<String>,
    batches: u64,
    accepted: u64,
    receipts: u64,
    breached: u64,
    disk_bytes: u64,
    cpu: CpuUse,
    broker_times: BrokerTimes,
}

/// Sends `s.n` requests of the throughput flow, `s.concurrency` at once
/// (each `send_request` returns once the request is in the outbox on disk).
/// Each task yields when its reply came (`wait_reply`) or when its send
/// returned (ns). The semaphore is free again once every send returned.
async fn send_requests(
    consumer: &Arc<Adapter<Amqp>>,
    fx: &Fixture,
    s: &Settings,
    wait_reply: bool,
) -> anyhow::Result<(JoinSet<Result<u64, String>>, Arc<Semaphore>)> {
    let slots = Arc::new(Semaphore::new(s.concurrency));
    let mut tasks = JoinSet::new();
    for _ in 0..s.n {
        let permit = slots.clone().acquire_owned().await?;
        let adapter = consumer.clone();
        let req = fx.request(&fx.throughput);
        tasks.spawn(async move {
            let sent = adapter.send_request(req).await;
            drop(permit);
            let handle = sent.map_err(|e| format!("send_request: {e}"))?;
            if !wait_reply {
                return Ok(now_ns());
            }
            match tokio::time::timeout(REPLY_LIMIT, handle.reply()).await {
                Ok(Ok(_)) => Ok(now_ns()),
                Ok(Err(e)) => Err(format!("reply: {e}")),
                Err(_) => Err(format!("no reply within {REPLY_LIMIT:?}")),
            }
        });
    }
    Ok((tasks, slots))
}

/// One one-way throughput run: first send → the provider's inbox consumer
/// took the `n`th request (the relay's topology: two queues, a final
/// consumer that acks). Returns that time.
async fn one_way_run(fx: &Fixture, s: &Settings) -> anyhow::Result<(Duration, CpuUse)> {
    let rig = ExchangeRig::start_with(fx, &fx.throughput, false).await?;
    let result = one_way_measure(&rig, fx, s).await;
    rig.stop(fx).await;
    result
}

async fn one_way_measure(
    rig: &ExchangeRig,
    fx: &Fixture,
    s: &Settings,
) -> anyhow::Result<(Duration, CpuUse)> {
    let consumer = rig.consumer()?;
    let cpu = Cpu::now();
    let start_ns = now_ns();
    let (mut tasks, _) = send_requests(&consumer, fx, s, false).await?;
    while let Some(r) = tasks.join_next().await {
        r?.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let limit = Instant::now() + REPLY_LIMIT;
    while rig.provider_seen.count.load(Ordering::Relaxed) < s.n as u64 {
        if Instant::now() > limit {
            bail!(
                "one way: {} of {} requests reached the provider's inbox",
                rig.provider_seen.count.load(Ordering::Relaxed),
                s.n
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((
        Duration::from_nanos(
            rig.provider_seen
                .last_ns
                .load(Ordering::Relaxed)
                .saturating_sub(start_ns),
        ),
        Cpu::now().since(&cpu),
    ))
}

async fn exchange_run(fx: &Fixture, s: &Settings) -> anyhow::Result<ExchangeRun> {
    let rig = ExchangeRig::start(fx, &fx.throughput).await?;
    let result = exchange_measure(&rig, fx, s).await;
    rig.stop(fx).await;
    result
}

async fn exchange_measure(
    rig: &ExchangeRig,
    fx: &Fixture,
    s: &Settings,
) -> anyhow::Result<ExchangeRun> {
    let consumer = rig.consumer()?;
    let routing = rig.counters.routing.snapshot();
    let reply = rig.counters.reply.snapshot();
    let cpu = Cpu::now();
    let start = Instant::now();
    let start_ns = now_ns();
    let (mut tasks, slots) = send_requests(&consumer, fx, s, true).await?;
    let all = slots.acquire_many(s.concurrency as u32).await?;
    let send = start.elapsed();
    drop(all);
    let mut replies = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    let mut last_reply_ns = start_ns;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(at)) => {
                replies += 1;
                last_reply_ns = last_reply_ns.max(at);
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let cpu = Cpu::now().since(&cpu);
    let snap = rig.counters.snapshot();
    Ok(ExchangeRun {
        cpu,
        broker_times: BrokerTimes::between(&rig.counters, &routing, &reply),
        send,
        handled_at: Duration::from_nanos(
            rig.provider_seen
                .last_ns
                .load(Ordering::Relaxed)
                .saturating_sub(start_ns),
        ),
        replied_at: Duration::from_nanos(last_reply_ns - start_ns),
        handled: rig.provider_seen.count.load(Ordering::Relaxed),
        replies,
        failed,
        first_error,
        batches: snap.batches,
        accepted: snap.accepted.values().sum(),
        receipts: snap.receipts,
        breached: snap.sla_total().breached,
        disk_bytes: dir_size(rig.dir.path()),
    })
}

/// The exchange at `rate` requests a second for `secs` seconds, open loop:
/// each request is sent when due, and its round trip timed from then.
async fn exchange_open_loop(
    rig: &ExchangeRig,
    fx: &Fixture,
    rate: f64,
    secs: u64,
) -> anyhow::Result<LatencyStep> {
    let consumer = rig.consumer()?;
    let routing = rig.counters.routing.snapshot();
    let reply = rig.counters.reply.snapshot();
    let cpu = Cpu::now();
    let sched = Schedule::new(rate, secs);
    *lock(&rig.provider_seen.hist) = Some(histogram());
    rig.provider_seen
        .record_from_ns
        .store(ns_of(sched.warm_until), Ordering::Relaxed);
    let hist = Arc::new(Mutex::new(histogram()));
    let mut tasks = JoinSet::new();
    sched
        .run(|_, due| {
            let adapter = consumer.clone();
            let mut req = fx.request(&fx.latency);
            req.applicant.full_name = format!("{} @{}", req.applicant.full_name, ns_of(due));
            let hist = hist.clone();
            let record = due >= sched.warm_until;
            tasks.spawn(async move {
                let handle = adapter
                    .send_request(req)
                    .await
                    .map_err(|e| format!("send_request: {e}"))?;
                match tokio::time::timeout(REPLY_LIMIT, handle.reply()).await {
                    Ok(Ok(_)) => {
                        if record {
                            let us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                            lock(&hist).saturating_record(us);
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("reply: {e}")),
                    Err(_) => Err(format!("no reply within {REPLY_LIMIT:?}")),
                }
            });
            std::future::ready(Ok(()))
        })
        .await?;
    let mut completed = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => completed += 1,
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let hist = std::mem::replace(&mut *lock(&hist), histogram());
    rig.provider_seen
        .record_from_ns
        .store(u64::MAX, Ordering::Relaxed);
    let oneway = lock(&rig.provider_seen.hist).take();
    Ok(LatencyStep {
        oneway,
        offered: rate,
        sent: sched.total,
        completed,
        failed,
        hist,
        first_error,
        cpu: Cpu::now().since(&cpu),
        broker: Some(BrokerTimes::between(&rig.counters, &routing, &reply)),
    })
}

// ---------------------------------------------------------------------------
// Sign and verify, per algorithm
// ---------------------------------------------------------------------------

struct CryptoRow {
    name: &'static str,
    envelope: usize,
    header: usize,
    signature: usize,
    sign_us: f64,
    seal_us: f64,
    verify_us: f64,
    open_verify_us: f64,
    open_verify_new_chain_us: f64,
}

/// A development CA like `DevPki`'s (ECDSA P-256), which can also certify the
/// P-384 and RSA keys `DevPki` does not issue. rcgen's default validity
/// (1975 to 4096) covers today.
fn crypto_ca() -> anyhow::Result<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mevbench CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok(rcgen::CertifiedIssuer::self_signed(params, key)?)
}

/// An agency certificate for `key` (SAN URI `urn:mev:agency:<ID>`,
/// digitalSignature), as `DevPki` makes them.
fn crypto_leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    agency: &str,
    key: &rcgen::KeyPair,
) -> anyhow::Result<Vec<u8>> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, agency);
    let uri = format!("{}{agency}", mev_proto::trust::AGENCY_URI_PREFIX);
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into()?)];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params.signed_by(key, ca)?.der().to_vec())
}

/// Microseconds per call of `f`: the median of `rounds` rounds of at least 100 ms.
fn per_op(rounds: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..20 {
        f()?;
    }
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let mut ops = 0u64;
        while ops < 10 || start.elapsed() < Duration::from_millis(100) {
            f()?;
            ops += 1;
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6 / ops as f64);
    }
    Ok(median(samples))
}

fn crypto_part(fx: &Fixture, rounds: usize) -> anyhow::Result<Vec<CryptoRow>> {
    let ca = crypto_ca()?;
    let trust = TrustStore::new(&[ca.der().to_vec()])?;
    let verifier = RingVerifier::new();
    let limits = Limits::default();
    let agency = fx.consumer_id.as_str();
    let algs: [(&'static str, rcgen::KeyPair, SignatureAlgorithm); 5] = [
        (
            "Ed25519",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
            SignatureAlgorithm::Ed25519,
        ),
        (
            "ECDSA P-256 SHA-256",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            SignatureAlgorithm::EcdsaP256Sha256,
        ),
        (
            "ECDSA P-384 SHA-384",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
            SignatureAlgorithm::EcdsaP384Sha384,
        ),
        (
            "RSA-2048 PKCS#1 v1.5",
            rcgen::KeyPair::from_pem(RSA_KEY_PEM)?,
            SignatureAlgorithm::RsaPkcs1Sha256,
        ),
        (
            "RSA-2048 PSS",
            rcgen::KeyPair::from_pem(RSA_KEY_PEM)?,
            SignatureAlgorithm::RsaPssSha256,
        ),
    ];
    let mut rows = Vec::new();
    for (name, key, alg) in algs {
        let cert = crypto_leaf(&ca, agency, &key)?;
        let signer = RingSigner::from_pkcs8_der_for(key.serialized_der(), alg)
            .with_context(|| format!("a {name} signer"))?;
        let identity = Identity::new(agency, Arc::new(signer), vec![cert]);
        let (header, payload) = fx
            .request_with(&fx.throughput, 0, fx.throughput.attachment_len)
            .into_parts(agency);
        let seal = || {
            mev_proto::envelope::seal(
                header.clone(),
                payload.clone(),
                identity.signer.as_ref(),
                &identity.certificate_chain,
            )
        };
        let env = seal()?;
        let bytes = env.encode_to_vec();
        let sig = env
            .signature
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let now = chrono::Utc::now();
        let spki = trust
            .verify_certificate(&identity.certificate_chain, agency, now)
            .with_context(|| format!("the {name} certificate"))?
            .spki_der;
        // Once, checked: the envelope opens and verifies as the broker does.
        mev_proto::envelope::open(&bytes, &limits)
            .and_then(|o| o.verify(&trust, &verifier, now))
            .map_err(|r| anyhow::anyhow!("{name}: the sealed envelope does not verify: {r}"))?;
        let sign_us = per_op(rounds, || {
            std::hint::black_box(identity.signer.sign(std::hint::black_box(&env.header))?);
            Ok(())
        })?;
        let seal_us = per_op(rounds, || {
            std::hint::black_box(seal()?.encode_to_vec());
            Ok(())
        })?;
        let verify_us = per_op(rounds, || {
            verifier.verify(alg, &spki, std::hint::black_box(&env.header), &sig)?;
            Ok(())
        })?;
        let open_verify_us = per_op(rounds, || {
            let opened = mev_proto::envelope::open(std::hint::black_box(&bytes), &limits)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            opened
                .verify(&trust, &verifier, now)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            Ok(())
        })?;
        // The same with the trust store's memory of verified chains wiped
        // each time (loading CRLs does that): a certificate seen for the
        // first time, its path (the CA's ECDSA P-256 signature) checked.
        let open_verify_new_chain_us = per_op(rounds, || {
            trust.set_crls(Vec::new())?;
            let opened = mev_proto::envelope::open(std::hint::black_box(&bytes), &limits)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            opened
                .verify(&trust, &verifier, now)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            Ok(())
        })?;
        rows.push(CryptoRow {
            name,
            envelope: bytes.len(),
            header: env.header.len(),
            signature: sig.len(),
            sign_us,
            seal_us,
            verify_us,
            open_verify_us,
            open_verify_new_chain_us,
        });
    }
    Ok(rows)
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
                    "  exchange one way / relay = {:.0}% (the like-for-like ratio: both two queues and a final consumer that acks; target ≥ 70%: {})",
                    ratio * 100.0,
                    if ratio >= 0.7 { "met" } else { "MISSED" }
                );
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

    if s.crypto {
        println!("[crypto] load average {}", loadavg());
        let rounds = s.runs.max(3) + 2;
        let rows = tokio::task::block_in_place(|| crypto_part(&fx, rounds))?;
        summary_crypto(rounds, &rows);
    }

    summary_targets(s, &relay_runs, &exchange_runs, &latency);
    Ok(ok)
}

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
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

fn print_relay_run(run: usize, n: usize, r: &RelayRun) {
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

fn print_exchange_run(run: usize, n: usize, r: &ExchangeRun) {
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

fn print_step(what: &str, load: f64, r: &LatencyStep) {
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

fn what_runs(runs: usize) -> String {
    if runs == 1 {
        "1 run, no median".into()
    } else {
        format!("medians of {runs} runs")
    }
}

fn summary_throughput(s: &Settings, envelope: f64, relay: &[RelayRun], exchange: &[ExchangeRun]) {
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

fn summary_latency(steps: &[(f64, LatencyStep, LatencyStep)]) {
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

fn summary_crypto(rounds: usize, rows: &[CryptoRow]) {
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

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn summary_targets(
    s: &Settings,
    relay: &[RelayRun],
    exchange: &[ExchangeRun],
    latency: &[(f64, LatencyStep, LatencyStep)],
) {
    println!();
    println!("targets:");
    if !relay.is_empty() && !exchange.is_empty() {
        let ratio = median(exchange.iter().map(|r| rate(s.n, r.handled_at)).collect())
            / median(relay.iter().map(|r| rate(s.n, r.delivered)).collect());
        println!(
            "  exchange ≥ {:.0}% of the relay's rate: {:.0}% — {}",
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

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
