//! How fast a 100,000-message outbox drains after an outage (issue 4).
//!
//! A benchmark, not a test: it prints figures and never asserts on time.
//! It exits with an error only when messages are missing at the end (a
//! loss) or something could not run at all.
//!
//! 1. Adapter outbox: an adapter with its outbox on disk (real fsyncs)
//!    reaches RabbitMQ through a [`Proxy`] whose link is down. `N` signed
//!    requests are enqueued (256 `send_request` calls at once); then the
//!    ingress is declared, the link comes up, and the outbox is timed until
//!    it is empty. Nothing consumes the ingress: the messages just land there
//!    and are counted.
//! 2. Broker outbox: a broker store on disk is filled with `N` forwards to one
//!    agency (1,000 per transaction), as if RabbitMQ had been unreachable;
//!    then `mev_broker::outbox::run` drains it to the real RabbitMQ and is
//!    timed until the outbox is empty; the inbox is counted.
//!
//! ```text
//! cargo bench -p mev-tests --bench outbox_drain
//! MEV_BENCH_N=10000 MEV_BENCH_RUNS=1 MEV_BENCH_PARTS=adapter cargo bench -p mev-tests --bench outbox_drain
//! ```
//!
//! Settings (environment): `MEV_BENCH_N` (messages, default 100000),
//! `MEV_BENCH_RUNS` (runs of each part, default 3), `MEV_BENCH_CONCURRENCY`
//! (concurrent `send_request` calls, default 256), `MEV_BENCH_PARTS`
//! (`adapter`, `broker` or both, comma separated; default both), `AMQP_URL`.
//! Every run uses its own namespace `mevbench-<uuid>` and deletes it at the end.

use anyhow::{bail, Context as _};
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::{Topology, Transport};
use mev_adapter::{Adapter, AdapterConfig, NoHandler, OutgoingRequest};
use mev_broker::metrics::Counters;
use mev_broker::register::Register;
use mev_broker::store::prelude::*;
use mev_broker::store::{Event, EventKind, OutboxEntry, Purpose, Store};
use mev_devpki::{DevPki, KeyAlg};
use mev_proto::crypto::{Identity, RingVerifier, SignatureVerifier};
use mev_proto::trust::TrustStore;
use mev_tests::proxy::Proxy;
use mev_tests::{amqp_url, load_register, median, redact, Cast, BROKER_ID};
use prost::Message as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often the outbox depth is polled while it drains.
const POLL: Duration = Duration::from_millis(10);
/// A drain that takes longer than this is reported as stuck.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);
/// Outbox entries per transaction when the broker's store is filled.
const FILL_BATCH: usize = 1_000;
/// Requests sealed to measure the adapter's average envelope size.
const SIZE_SAMPLE: usize = 1_000;
/// The longest a single setup or cleanup step may take.
const STEP: Duration = Duration::from_secs(60);

struct Settings {
    n: usize,
    runs: usize,
    concurrency: usize,
    adapter: bool,
    broker: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        use mev_tests::env_count as num;
        let parts = std::env::var("MEV_BENCH_PARTS").unwrap_or_else(|_| "adapter,broker".into());
        let parts: Vec<String> = parts.split(',').map(|p| p.trim().to_lowercase()).collect();
        if let Some(p) = parts
            .iter()
            .find(|p| !["adapter", "broker"].contains(&p.as_str()))
        {
            bail!("MEV_BENCH_PARTS: unknown part {p:?} (adapter, broker)");
        }
        Ok(Settings {
            n: num("MEV_BENCH_N", 100_000)?,
            runs: num("MEV_BENCH_RUNS", 3)?,
            concurrency: num("MEV_BENCH_CONCURRENCY", 256)?,
            adapter: parts.iter().any(|p| p == "adapter"),
            broker: parts.iter().any(|p| p == "broker"),
        })
    }
}

/// What every run shares: the register, the cast, the PKI.
struct Fixture {
    register: Arc<Register>,
    cast: Cast,
    trust: Arc<TrustStore>,
    verifier: Arc<dyn SignatureVerifier>,
    consumer: Identity,
    agency_ids: Vec<String>,
}

impl Fixture {
    fn new() -> anyhow::Result<Fixture> {
        let register = Arc::new(load_register());
        let cast = Cast::choose(&register);
        let pki = DevPki::new().context("development CA")?;
        let trust = Arc::new(pki.trust_store().context("trust store")?);
        let consumer = pki
            .issue(&cast.consumer, KeyAlg::Ed25519)
            .context("the consumer's certificate")?;
        let agency_ids = register.agencies().map(|a| a.id.clone()).collect();
        Ok(Fixture {
            register,
            cast,
            trust,
            verifier: Arc::new(RingVerifier::new()),
            consumer,
            agency_ids,
        })
    }

    /// Request number `i` from the cast's consumer to its provider.
    fn request(&self, i: usize) -> OutgoingRequest {
        mev_cli::demo::sample_request(
            &self.register,
            &self.cast.service,
            i as u64,
            format!("Applicant {i} documents"),
        )
    }
}

/// One run of the adapter part.
struct AdapterRun {
    enqueue: Duration,
    enqueue_failures: usize,
    depth_after_enqueue: u64,
    disk_bytes: u64,
    avg_envelope: f64,
    first_confirm: Duration,
    drain: Duration,
    ingress: u32,
}

/// One run of the broker part.
struct BrokerRun {
    fill: Duration,
    disk_bytes: u64,
    avg_envelope: f64,
    first_confirm: Duration,
    drain: Duration,
    inbox: u32,
    forwarded: u64,
    publish_failures: u64,
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("outbox_drain: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    mev_tests::bench_main(
        "outbox_drain",
        "messages were missing at the end",
        bench(&settings),
    )
}

/// Runs the parts; `Ok(false)` if any run lost messages.
async fn bench(s: &Settings) -> anyhow::Result<bool> {
    let fx = Fixture::new()?;
    println!(
        "outbox_drain: N = {}, {} run(s) per part, {} concurrent sends, RabbitMQ {}",
        s.n,
        s.runs,
        s.concurrency,
        redact(&amqp_url())
    );
    println!(
        "  requests {} -> {} for service {} (signed Ed25519)",
        fx.cast.consumer, fx.cast.provider, fx.cast.service.number
    );
    let mut complete = true;
    let mut adapter_runs = Vec::new();
    let mut broker_runs = Vec::new();
    for run in 1..=s.runs {
        if s.adapter {
            let r = adapter_run(&fx, s).await?;
            complete &= r.ingress as usize == s.n && r.depth_after_enqueue as usize == s.n;
            print_adapter(run, s.n, &r);
            adapter_runs.push(r);
        }
        if s.broker {
            let r = broker_run(&fx, s.n).await?;
            complete &= r.inbox as usize == s.n;
            print_broker(run, s.n, &r);
            broker_runs.push(r);
        }
    }
    summary(s, &adapter_runs, &broker_runs);
    Ok(complete)
}

/// The adapter part, in its own namespace, deleted at the end.
async fn adapter_run(fx: &Fixture, s: &Settings) -> anyhow::Result<AdapterRun> {
    let namespace = format!("mevbench-{}", uuid::Uuid::new_v4().simple());
    let admin = Amqp::new(
        namespace.clone(),
        AmqpConfig {
            connection_name: "mevbench admin".into(),
            ..AmqpConfig::new(amqp_url())
        },
    );
    step("connecting to RabbitMQ", admin.connect()).await??;
    let result = adapter_measure(fx, s, &namespace, &admin).await;
    cleanup(&admin, &fx.agency_ids).await;
    result
}

async fn adapter_measure(
    fx: &Fixture,
    s: &Settings,
    namespace: &str,
    admin: &Amqp,
) -> anyhow::Result<AdapterRun> {
    let n = s.n;
    let dir = tempfile::tempdir().context("temp dir")?;
    let link = Proxy::to_rabbitmq().await;
    link.set_up(false); // the outage
    let transport = Amqp::new(
        namespace.to_string(),
        AmqpConfig {
            connection_name: "mevbench adapter".into(),
            ..AmqpConfig::new(link.url())
        },
    );
    let mut config = AdapterConfig::new(
        fx.consumer.clone(),
        fx.trust.clone(),
        fx.verifier.clone(),
        BROKER_ID,
    );
    config.data_dir = Some(dir.path().to_path_buf());
    config.shutdown_flush = Duration::from_secs(1);
    let adapter = step(
        "the adapter to connect (offline)",
        Adapter::connect(transport, config, None::<NoHandler>),
    )
    .await?
    .context("connecting the adapter")?;
    let adapter = Arc::new(adapter);

    // The average envelope size, from a sample sealed like send_request does.
    let sample = n.min(SIZE_SAMPLE);
    let mut sample_bytes = 0usize;
    for i in 0..sample {
        let (header, payload) = fx.request(i).into_parts(&fx.cast.consumer);
        sample_bytes += adapter.seal(header, payload)?.len();
    }
    let avg_envelope = sample_bytes as f64 / sample as f64;

    // Enqueue while the link is down.
    let requests: Vec<OutgoingRequest> = (0..n).map(|i| fx.request(i)).collect();
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut failures = 0usize;
    let mut first_error = None;
    let mut note = |r: Result<Result<(), mev_adapter::AdapterError>, tokio::task::JoinError>| {
        let e = match r {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        failures += 1;
        first_error.get_or_insert(e);
    };
    for req in requests {
        while tasks.len() >= s.concurrency {
            if let Some(r) = tasks.join_next().await {
                note(r);
            }
        }
        let a = adapter.clone();
        tasks.spawn(async move { a.send_request(req).await.map(drop) });
    }
    while let Some(r) = tasks.join_next().await {
        note(r);
    }
    let enqueue = start.elapsed();
    if let Some(e) = &first_error {
        eprintln!("  adapter: {failures} send_request calls failed; the first: {e}");
    }
    let depth_after_enqueue = adapter.outbox_depth();
    let disk_bytes = dir_size(dir.path());

    // The outage ends: the ingress exists, the link comes up.
    step("declaring the ingress", admin.declare_ingress()).await??;
    step(
        "declaring the consumer's inbox",
        admin.declare_inbox(&fx.cast.consumer),
    )
    .await??;
    let start = Instant::now();
    link.set_up(true);
    let mut first_confirm = None;
    let drain = loop {
        let depth = adapter.outbox_depth();
        if first_confirm.is_none() && depth < depth_after_enqueue {
            first_confirm = Some(start.elapsed());
        }
        if depth == 0 {
            break start.elapsed();
        }
        if start.elapsed() > DRAIN_LIMIT {
            bail!("the adapter's outbox still holds {depth} messages after {DRAIN_LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    let ingress = settled_depth(admin, &admin.names().ingress_queue(), n).await?;

    match Arc::try_unwrap(adapter) {
        Ok(a) => {
            let _ = tokio::time::timeout(STEP, a.shutdown()).await;
        }
        Err(_) => eprintln!("  adapter: still shared at the end; dropped without shutdown"),
    }
    drop(link);
    Ok(AdapterRun {
        enqueue,
        enqueue_failures: failures,
        depth_after_enqueue,
        disk_bytes,
        avg_envelope,
        first_confirm: first_confirm.unwrap_or(drain),
        drain,
        ingress,
    })
}

/// The broker part, in its own namespace, deleted at the end.
async fn broker_run(fx: &Fixture, n: usize) -> anyhow::Result<BrokerRun> {
    let namespace = format!("mevbench-{}", uuid::Uuid::new_v4().simple());
    let admin = Amqp::new(
        namespace.clone(),
        AmqpConfig {
            connection_name: "mevbench admin".into(),
            ..AmqpConfig::new(amqp_url())
        },
    );
    step("connecting to RabbitMQ", admin.connect()).await??;
    let result = broker_measure(fx, n, &namespace, &admin).await;
    cleanup(&admin, &fx.agency_ids).await;
    result
}

async fn broker_measure(
    fx: &Fixture,
    n: usize,
    namespace: &str,
    admin: &Amqp,
) -> anyhow::Result<BrokerRun> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let store = Arc::new(Store::open(dir.path()).context("opening the broker's store")?);
    let provider = fx.cast.provider.clone();

    // What an outage leaves behind: N accepted forwards in the outbox.
    let start = Instant::now();
    let envelope_bytes = {
        let store = store.clone();
        let register = fx.register.clone();
        let service = fx.cast.service.clone();
        let consumer = fx.consumer.clone();
        let provider = provider.clone();
        tokio::task::spawn_blocking(move || {
            fill(&store, &register, &service, &consumer, &provider, n)
        })
        .await
        .context("filling the store panicked")??
    };
    let fill_time = start.elapsed();
    let depth = store.outbox_depth()?;
    if depth as usize != n {
        bail!("the broker's outbox holds {depth} entries after the fill, not {n}");
    }
    let disk_bytes = dir_size(dir.path());

    step(
        "declaring the provider's inbox",
        admin.declare_inbox(&provider),
    )
    .await??;
    let transport = Amqp::new(
        namespace.to_string(),
        AmqpConfig {
            connection_name: "mevbench broker outbox".into(),
            ..AmqpConfig::new(amqp_url())
        },
    );
    let counters = Arc::new(Counters::default());
    let (stop, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let task = tokio::spawn(mev_broker::outbox::run(
        store.clone(),
        transport,
        counters.clone(),
        stop_rx,
    ));
    let mut first_confirm = None;
    let drained = loop {
        let depth = store.outbox_depth()?;
        if first_confirm.is_none() && (depth as usize) < n {
            first_confirm = Some(start.elapsed());
        }
        if depth == 0 {
            break Ok(start.elapsed());
        }
        if start.elapsed() > DRAIN_LIMIT {
            break Err(anyhow::anyhow!(
                "the broker's outbox still holds {depth} entries after {DRAIN_LIMIT:?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    let _ = stop.send(true);
    if tokio::time::timeout(STEP, task).await.is_err() {
        eprintln!("  broker: the outbox task did not stop within {STEP:?}");
    }
    let drain = drained?;
    let inbox = settled_depth(admin, &admin.names().inbox_queue(&provider), n).await?;
    Ok(BrokerRun {
        fill: fill_time,
        disk_bytes,
        avg_envelope: envelope_bytes as f64 / n as f64,
        first_confirm: first_confirm.unwrap_or(drain),
        drain,
        inbox,
        forwarded: counters.forwarded.load(Ordering::Relaxed),
        publish_failures: counters.publish_failures.load(Ordering::Relaxed),
    })
}

/// Seals `n` requests and puts them in the broker's outbox as accepted
/// forwards to `provider`, [`FILL_BATCH`] per durable transaction; returns
/// the envelope bytes written.
fn fill(
    store: &Store,
    register: &Register,
    service: &mev_broker::register::Service,
    consumer: &Identity,
    provider: &str,
    n: usize,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    let mut i = 0usize;
    while i < n {
        let end = (i + FILL_BATCH).min(n);
        let mut batch = Vec::with_capacity(end - i);
        for k in i..end {
            let req = mev_cli::demo::sample_request(
                register,
                service,
                k as u64,
                format!("Applicant {k} documents"),
            );
            let (header, payload) = req.into_parts(&consumer.agency);
            let id = header.message_id.clone();
            let env = mev_proto::envelope::seal(
                header,
                payload,
                consumer.signer.as_ref(),
                &consumer.certificate_chain,
            )?;
            let digest = mev_proto::envelope::sha256(&env.header);
            let bytes = env.encode_to_vec();
            total += bytes.len() as u64;
            batch.push((id, digest, bytes));
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        store.write(|t| {
            for (id, digest, bytes) in &batch {
                t.dedup().accept(id, digest, now_ms)?;
                let entry = t.journal().append_with(
                    &Event {
                        message_id: id.clone(),
                        recipient: provider.to_string(),
                        ..Event::new(now_ms, EventKind::Received)
                    },
                    bytes,
                )?;
                t.outbox().enqueue(
                    &OutboxEntry {
                        to: provider.to_string(),
                        message_id: id.clone(),
                        purpose: Purpose::Forward,
                        entry: Some(entry),
                    },
                    bytes,
                )?;
            }
            Ok(())
        })?;
        i = end;
    }
    Ok(total)
}

/// A queue's depth, waited for (up to 5 s) to reach `expected`; the last
/// count seen if it does not.
async fn settled_depth(admin: &Amqp, queue: &str, expected: usize) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = step("a queue depth", admin.queue_depth(queue))
            .await?
            .with_context(|| format!("the depth of {queue}"))?;
        if d.messages as usize == expected || Instant::now() > deadline {
            return Ok(d.messages);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the namespace's queues and exchanges; a failure is reported, not fatal.
async fn cleanup(admin: &Amqp, agency_ids: &[String]) {
    let ns = admin.names().namespace().to_string();
    match tokio::time::timeout(STEP, admin.delete_topology(agency_ids)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("  cleanup of {ns} failed: {e}"),
        Err(_) => eprintln!("  cleanup of {ns} timed out"),
    }
}

async fn step<F: std::future::Future>(what: &str, f: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout(STEP, f)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {STEP:?} waiting for {what}"))
}

/// Bytes of the files directly in `dir` (the redb database).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

fn print_adapter(run: usize, n: usize, r: &AdapterRun) {
    let bytes = r.avg_envelope * n as f64;
    let after_first = n as f64 / (r.drain - r.first_confirm).as_secs_f64().max(1e-9);
    println!("[adapter run {run}]");
    println!(
        "  enqueue (link down): {n} requests in {:.2} s = {:.0} msgs/s ({} failed); outbox depth {}",
        r.enqueue.as_secs_f64(),
        rate(n, r.enqueue),
        r.enqueue_failures,
        r.depth_after_enqueue
    );
    println!(
        "  outbox on disk: {:.1} MB ({:.0} B per message); average envelope ≈ {:.0} B",
        mb(r.disk_bytes as f64),
        r.disk_bytes as f64 / n as f64,
        r.avg_envelope
    );
    println!(
        "  drain (link up): {:.2} s = {:.0} msgs/s, {:.1} MB/s; first confirm after {:.2} s \
         (back-off wake-up), {:.0} msgs/s from then on",
        r.drain.as_secs_f64(),
        rate(n, r.drain),
        mb(bytes) / r.drain.as_secs_f64().max(1e-9),
        r.first_confirm.as_secs_f64(),
        after_first
    );
    let verdict = if r.ingress as usize == n {
        "ok"
    } else {
        "MISMATCH: messages lost"
    };
    println!("  ingress queue depth: {} of {n} ({verdict})", r.ingress);
}

fn print_broker(run: usize, n: usize, r: &BrokerRun) {
    let bytes = r.avg_envelope * n as f64;
    let after_first = n as f64 / (r.drain - r.first_confirm).as_secs_f64().max(1e-9);
    println!("[broker run {run}]");
    println!(
        "  fill: {n} sealed forwards in {:.2} s ({:.0} msgs/s, {} per transaction); \
         store on disk {:.1} MB; average envelope {:.0} B",
        r.fill.as_secs_f64(),
        rate(n, r.fill),
        FILL_BATCH,
        mb(r.disk_bytes as f64),
        r.avg_envelope
    );
    println!(
        "  drain: {:.2} s = {:.0} msgs/s, {:.1} MB/s; first confirm after {:.2} s, \
         {:.0} msgs/s from then on; forwarded {}, publish failures {}",
        r.drain.as_secs_f64(),
        rate(n, r.drain),
        mb(bytes) / r.drain.as_secs_f64().max(1e-9),
        r.first_confirm.as_secs_f64(),
        after_first,
        r.forwarded,
        r.publish_failures
    );
    let verdict = if r.inbox as usize == n {
        "ok"
    } else {
        "MISMATCH: messages lost"
    };
    println!("  inbox queue depth: {} of {n} ({verdict})", r.inbox);
}

fn summary(s: &Settings, adapter: &[AdapterRun], broker: &[BrokerRun]) {
    let n = s.n;
    let what = if s.runs == 1 {
        "1 run, no median".to_string()
    } else {
        format!("medians of {} runs", s.runs)
    };
    println!();
    println!("summary: N = {n}, {what}");
    println!(
        "  {:<16} {:>14} {:>9} {:>11} {:>7} {:>13} {:>10} {:>10} {:>9}",
        "outbox",
        "enqueue msgs/s",
        "drain s",
        "drain msg/s",
        "MB/s",
        "1st confirm s",
        "disk MB",
        "envelope B",
        "delivered"
    );
    if !adapter.is_empty() {
        let m = |f: &dyn Fn(&AdapterRun) -> f64| median(adapter.iter().map(f).collect());
        let delivered: Vec<String> = adapter.iter().map(|r| r.ingress.to_string()).collect();
        println!(
            "  {:<16} {:>14.0} {:>9.2} {:>11.0} {:>7.1} {:>13.2} {:>10.1} {:>10.0} {:>9}",
            "adapter (fsync)",
            m(&|r| rate(n, r.enqueue)),
            m(&|r| r.drain.as_secs_f64()),
            m(&|r| rate(n, r.drain)),
            m(&|r| mb(r.avg_envelope * n as f64) / r.drain.as_secs_f64()),
            m(&|r| r.first_confirm.as_secs_f64()),
            m(&|r| mb(r.disk_bytes as f64)),
            m(&|r| r.avg_envelope),
            delivered.join("/")
        );
    }
    if !broker.is_empty() {
        let m = |f: &dyn Fn(&BrokerRun) -> f64| median(broker.iter().map(f).collect());
        let delivered: Vec<String> = broker.iter().map(|r| r.inbox.to_string()).collect();
        println!(
            "  {:<16} {:>14} {:>9.2} {:>11.0} {:>7.1} {:>13.2} {:>10.1} {:>10.0} {:>9}",
            "broker",
            format!("fill {:.0}", m(&|r| rate(n, r.fill))),
            m(&|r| r.drain.as_secs_f64()),
            m(&|r| rate(n, r.drain)),
            m(&|r| mb(r.avg_envelope * n as f64) / r.drain.as_secs_f64()),
            m(&|r| r.first_confirm.as_secs_f64()),
            m(&|r| mb(r.disk_bytes as f64)),
            m(&|r| r.avg_envelope),
            delivered.join("/")
        );
    }
    println!(
        "  (drain = link up / outbox task started until the outbox is empty, polled every \
         {} ms; 1st confirm includes the adapter's back-off wake-up of up to 5 s)",
        POLL.as_millis()
    );
}
