//! Starting and stopping the broker: topology, the pipeline, the outbox, the
//! deadline timers, dedup pruning, CRL refresh, the operators' HTTP endpoint
//! ([`BrokerHandle::serve_http`]), and `mev broker --config FILE`.

use crate::config::BrokerConfig;
use crate::context::Context;
use crate::metrics::Counters;
use crate::pipeline::{self, Batching};
use crate::register::Register;
use crate::store::prelude::*;
use crate::store::Store;
use anyhow::Context as _;
use mev_proto::crypto::{Identity, RingVerifier};
use mev_proto::envelope::Limits;
use mev_proto::trust::{self, TrustStore};
use mev_transport::amqp::{Amqp, AmqpConfig};
use mev_transport::{Topology, TransportError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A broker ready to start over a transport.
pub struct Broker<T: Topology> {
    ctx: Arc<Context>,
    transport: T,
    batching: Batching,
    prefetch: u16,
    dedup_retention: Duration,
}

/// A running broker.
pub struct BrokerHandle {
    shutdown: watch::Sender<bool>,
    pipeline: tokio::task::JoinHandle<()>,
    outbox: tokio::task::JoinHandle<()>,
    housekeeping: tokio::task::JoinHandle<()>,
    timers: tokio::task::JoinHandle<()>,
    checkpoints: tokio::task::JoinHandle<()>,
    ctx: Arc<Context>,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    http: Option<HttpParts>,
}

/// The operators' endpoint of a running broker.
struct HttpParts {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    poller: tokio::task::JoinHandle<()>,
    queues: Arc<crate::http::QueueWatch>,
}

/// What the broker reports about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerStatus {
    pub counters: crate::metrics::Snapshot,
    /// Messages in the outbox, not yet confirmed by RabbitMQ.
    pub outbox_depth: u64,
    /// Requests waiting for their reply.
    pub open_requests: u64,
    /// Message ids in the dedup index (within the retention window).
    pub dedup_ids: u64,
    /// Recorded events.
    pub events: u64,
    /// Deadline timers armed (at-risk warnings and breaches to come).
    pub timers: u64,
}

/// How long accepted message ids are remembered to drop copies, unless configured.
pub const DEFAULT_DEDUP_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl<T: Topology> Broker<T> {
    pub fn new(ctx: Arc<Context>, transport: T, batching: Batching, prefetch: u16) -> Self {
        Broker {
            ctx,
            transport,
            batching,
            prefetch,
            dedup_retention: DEFAULT_DEDUP_RETENTION,
        }
    }

    /// How long accepted message ids are remembered (30 days unless set).
    pub fn with_dedup_retention(mut self, retention: Duration) -> Self {
        self.dedup_retention = retention;
        self
    }

    /// Declares the ingress and an inbox for every registered agency (idempotent).
    pub async fn declare_topology(&self) -> Result<(), TransportError> {
        self.transport.declare_ingress().await?;
        for agency in self.ctx.register.agencies() {
            self.transport.declare_inbox(&agency.id).await?;
        }
        Ok(())
    }

    /// Declares the topology, starts the outbox (which first drains what a
    /// previous run left), and starts consuming the ingress.
    pub async fn start(self) -> Result<BrokerHandle, TransportError> {
        self.declare_topology().await?;
        let (shutdown, rx) = watch::channel(false);
        let outbox = tokio::spawn(crate::outbox::run(
            self.ctx.store.clone(),
            self.transport.clone(),
            self.ctx.counters.clone(),
            rx.clone(),
        ));
        let housekeeping = tokio::spawn(prune_dedup(
            self.ctx.store.clone(),
            self.dedup_retention,
            rx.clone(),
        ));
        record_start(&self.ctx);
        let timers = tokio::spawn(crate::deadline::timers::run(self.ctx.clone(), rx.clone()));
        let checkpoints =
            tokio::spawn(crate::audit::checkpoints::run(self.ctx.clone(), rx.clone()));
        let ingress = self
            .transport
            .consume(&self.transport.names().ingress_queue(), self.prefetch)
            .await?;
        let pipeline = tokio::spawn(pipeline::run(self.ctx.clone(), ingress, self.batching, rx));
        Ok(BrokerHandle {
            shutdown,
            pipeline,
            outbox,
            housekeeping,
            timers,
            checkpoints,
            ctx: self.ctx,
            started: Instant::now(),
            started_at: chrono::Utc::now(),
            http: None,
        })
    }
}

/// Journals the start: the register the broker routes by (its file's
/// SHA-256, agencies and services), so register changes are on the record.
fn record_start(ctx: &Context) {
    // The agencies' time zones, for the local times journal entries carry:
    // set once, here, before the first entry.
    ctx.store.set_zones(|| {
        ctx.register
            .agencies()
            .map(|a| (a.id.clone(), a.jurisdiction.time_zone))
            .collect()
    });
    let path = ctx.register.path();
    let digest = std::fs::read(path)
        .map(|b| mev_proto::envelope::hex(&mev_proto::envelope::sha256(&b)))
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let event = crate::store::Event {
        sender: ctx.identity.agency.clone(),
        reason: format!(
            "{}: sha256 {digest}, {} agencies, {} services",
            path.display(),
            ctx.register.agencies().count(),
            ctx.register.services().count()
        ),
        ..crate::store::Event::new(
            ctx.clock.now().timestamp_millis(),
            crate::store::EventKind::RegisterLoaded,
        )
    };
    if let Err(e) = ctx.store.write(|t| t.journal().append(&event).map(|_| ())) {
        tracing::error!(error = %e, "cannot journal the start");
    }
}

/// Forgets accepted message ids older than `retention`, a slice at a time,
/// so the dedup index does not grow for ever.
async fn prune_dedup(store: Arc<Store>, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        let before = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(retention_ms);
        let s = store.clone();
        let pruned = tokio::task::spawn_blocking(move || s.prune_dedup(before, 10_000)).await;
        let more = match pruned {
            Ok(Ok(n)) => {
                if n > 0 {
                    tracing::info!(
                        pruned = n,
                        "dedup index: forgot ids past the retention window"
                    );
                }
                n == 10_000
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "dedup pruning failed");
                false
            }
            Err(_) => false,
        };
        let pause = if more {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(60)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
    }
}

impl BrokerHandle {
    /// The broker's counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.ctx.counters
    }
    /// The broker's store.
    pub fn store(&self) -> &Arc<Store> {
        &self.ctx.store
    }
    /// Counters, outbox depth and store sizes.
    pub fn status(&self) -> Result<BrokerStatus, crate::store::StoreError> {
        let store = &self.ctx.store;
        let (dedup_ids, open_requests, events) = store.counts()?;
        Ok(BrokerStatus {
            counters: self.ctx.counters.snapshot(),
            outbox_depth: store.outbox_depth()?,
            open_requests,
            dedup_ids,
            events,
            timers: store.timers_len()?,
        })
    }

    /// Serves the operators' endpoint (`/metrics`, `/api/status`, `/healthz`,
    /// `/readyz`, the dashboard at `/`) on `listen` (port 0 picks a free
    /// one), and polls the depth of the ingress and of every registered
    /// agency's inbox over `transport` every `queue_poll`. Returns the bound
    /// address. Stopped with the broker.
    pub async fn serve_http<T: Topology>(
        &mut self,
        transport: T,
        listen: SocketAddr,
        queue_poll: Duration,
    ) -> std::io::Result<SocketAddr> {
        if let Some(h) = &self.http {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("the HTTP endpoint already runs on {}", h.addr),
            ));
        }
        let queues = crate::http::QueueWatch::new(queue_poll.max(Duration::from_millis(100)));
        let state = Arc::new(crate::http::HttpState {
            ctx: self.ctx.clone(),
            queues: queues.clone(),
            namespace: transport.names().namespace().to_string(),
            started: self.started,
            started_at: self.started_at,
        });
        let (addr, server) = crate::http::serve(state, listen, self.shutdown.subscribe()).await?;
        let agencies = self.ctx.register.agencies().map(|a| a.id.clone()).collect();
        let poller = tokio::spawn(crate::http::poll_queues(
            queues.clone(),
            transport,
            agencies,
            self.shutdown.subscribe(),
        ));
        self.http = Some(HttpParts {
            addr,
            server,
            poller,
            queues,
        });
        Ok(addr)
    }

    /// Where the operators' endpoint listens, if it was started.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// The latest queue depths read from RabbitMQ, if the endpoint was started.
    pub fn queue_depths(&self) -> Option<crate::http::Queues> {
        self.http.as_ref().map(|h| h.queues.snapshot())
    }

    /// Stops after the batch in progress; what the outbox still holds stays
    /// on disk for the next start.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Some(h) = self.http {
            let _ = h.poller.await;
            let mut server = h.server;
            // Open keep-alive connections (a dashboard tab) get 2 s.
            if tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
        let _ = self.pipeline.await;
        let _ = self.outbox.await;
        let _ = self.housekeeping.await;
        let _ = self.timers.await;
        let _ = self.checkpoints.await;
        let ctx = self.ctx.clone();
        if let Some(reason) = ctx.store.failure() {
            // Nothing more can be written; the redo log is left for the
            // next start to replay.
            tracing::error!(%reason, "the store failed: no final journal checkpoint, no clean close");
            return;
        }
        // The last checkpoint covers everything recorded before the stop.
        let at = ctx.clock.now().timestamp_millis();
        if let Err(e) = crate::audit::checkpoints::write(&*ctx.store, &ctx.identity, at) {
            tracing::error!(error = %e, "cannot write the final journal checkpoint");
        }
        // A clean close: redb made durable on its own, the redo log emptied
        // (the next start replays nothing). Blocking I/O, off the runtime.
        let store = ctx.store.clone();
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot close the store cleanly; the next start replays its redo log")
            }
            Err(e) => tracing::error!(error = %e, "closing the store panicked"),
        }
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reloads the CRL files into `trust` every `every`, so that a certificate
/// revoked in a CRL file stops being accepted without a restart. A file that
/// cannot be read or parsed keeps the previous CRLs in force (and is logged):
/// a half-written file never un-revokes anything.
pub fn spawn_crl_refresh(
    trust: Arc<TrustStore>,
    files: Vec<std::path::PathBuf>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the files were loaded at start
        loop {
            tick.tick().await;
            if let Err(e) = load_crls(&trust, &files) {
                tracing::warn!(error = %format!("{e:#}"), "CRL refresh failed; keeping the previous CRLs");
            }
        }
    })
}

/// Loads every CRL file into `trust`.
pub fn load_crls(trust: &TrustStore, files: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for f in files {
        all.extend(trust::crls_from_pem(&read(f)?).with_context(|| format!("{}", f.display()))?);
    }
    trust.set_crls(all).context("loading CRLs")?;
    Ok(())
}

/// Builds the broker's context from its config.
pub fn context_from_config(config: &BrokerConfig) -> anyhow::Result<Arc<Context>> {
    let register = Register::load(&config.broker.register)
        .with_context(|| format!("register {}", config.broker.register.display()))?;
    let trust = TrustStore::from_pem(&read(&config.pki.ca)?).context("trusted CA certificates")?;
    load_crls(&trust, &config.pki.crls)?;
    let identity = Identity::from_pem(&read(&config.pki.key)?, &read(&config.pki.cert)?)
        .context("the broker's key and certificate")?;
    if identity.agency != config.broker.id {
        anyhow::bail!(
            "the broker's certificate is bound to {:?}, but broker.id is {:?}",
            identity.agency,
            config.broker.id
        );
    }
    let store = Store::open_with_cache(&config.broker.data_dir, config.store.cache_bytes())
        .with_context(|| format!("store in {}", config.broker.data_dir.display()))?;
    Ok(Arc::new(Context {
        register: Arc::new(register),
        trust: Arc::new(trust),
        verifier: Arc::new(RingVerifier::new()),
        identity,
        store: Arc::new(store),
        limits: Limits {
            max_message_bytes: config.limits.max_message_bytes,
            max_repeated: config.limits.max_repeated,
        },
        max_clock_skew: (config.limits.max_clock_skew_secs > 0)
            .then(|| chrono::TimeDelta::seconds(config.limits.max_clock_skew_secs as i64)),
        // A copy older than the dedup window could not be told from a replay.
        max_message_age: Some(chrono::TimeDelta::days(i64::from(
            config.broker.dedup_retention_days,
        ))),
        rate_limit: (config.limits.rate_per_agency > 0.0).then(|| {
            Arc::new(crate::ratelimit::RateLimiter::new(
                config.limits.rate_per_agency,
                config.limits.rate_burst,
            ))
        }),
        counters: Arc::new(Counters::default()),
        clock: crate::clock::Clock::system(),
        at_risk_fraction: (config.deadlines.at_risk_fraction > 0.0)
            .then_some(config.deadlines.at_risk_fraction),
    }))
}

/// Keeps glibc's allocator from holding on to large freed buffers, so the
/// broker's memory follows its configuration (redb's cache, the batches in
/// flight) rather than the largest messages it ever saw.
///
/// glibc serves an allocation of 128 KiB or more with an `mmap` of its own
/// and unmaps it at `free`; but after such a free it raises that threshold
/// to the size freed (up to 32 MiB), so from then on every 3.9 MiB message
/// body comes from its heap arenas, which keep the memory once it is freed.
/// Fifty such requests left a broker at 348 MiB resident (a 64 MiB cache),
/// against 98 MiB with the threshold fixed (tests/tests/store_memory.rs).
/// Setting the threshold fixes it at 128 KiB and turns the adjustment off.
/// Called by [`run`]; once per process is enough. Nothing on other C
/// libraries (musl unmaps large blocks anyway).
pub fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets a parameter of glibc's malloc; it takes malloc's
    // own lock and has no memory-safety preconditions. Its result (0 on a
    // value out of range) is only a missed tuning.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// `mev broker --config FILE`: runs until Ctrl-C or SIGTERM, or until its
/// store fails (an error: see [`FAIL_STOP_GRACE`]).
pub async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    bound_allocator();
    let ctx = context_from_config(&config)?;
    let transport = Amqp::new(
        config.broker.namespace.clone(),
        AmqpConfig {
            url: config.amqp.url.clone(),
            connection_name: format!("mev-broker {}", config.broker.id),
            quorum: config.amqp.quorum,
            max_inbox_length: config.amqp.max_inbox_length,
            tls: config.amqp.tls()?,
        },
    );
    transport
        .connect()
        .await
        .context("connecting to RabbitMQ")?;
    let batching = Batching {
        batch_size: config.pipeline.batch_size,
        batch_window: Duration::from_millis(config.pipeline.batch_window_ms),
    };
    let retention = Duration::from_secs(u64::from(config.broker.dedup_retention_days) * 86_400);
    let mut handle = Broker::new(
        ctx.clone(),
        transport.clone(),
        batching,
        config.amqp.prefetch,
    )
    .with_dedup_retention(retention)
    .start()
    .await
    .context("starting the broker")?;
    tracing::info!(namespace = %config.broker.namespace, "broker running");
    if let Some(listen) = config.http.listen_addr()? {
        let poll = Duration::from_secs(config.http.queue_poll_secs);
        match handle.serve_http(transport, listen, poll).await {
            Ok(addr) => eprintln!(
                "mev broker: running (namespace {}); dashboard, /metrics and /api/status on http://{addr}/",
                config.broker.namespace
            ),
            Err(e) => {
                handle.stop().await;
                return Err(anyhow::anyhow!(e).context(format!(
                    "cannot serve the HTTP endpoint on {listen} (http.listen; \"\" turns it off)"
                )));
            }
        }
    } else {
        eprintln!(
            "mev broker: running (namespace {}); no HTTP endpoint (http.listen is empty)",
            config.broker.namespace
        );
    }

    if !config.pki.crls.is_empty() {
        spawn_crl_refresh(
            ctx.trust.clone(),
            config.pki.crls.clone(),
            Duration::from_secs(config.pki.crl_refresh_secs.max(1)),
        );
    }

    tokio::select! {
        () = shutdown_signal() => {}
        reason = ctx.store.failed() => {
            return Err(fail_stop(handle, reason).await);
        }
    }
    tracing::info!("shutting down");
    handle.stop().await;
    Ok(())
}

/// How long a broker whose store failed keeps answering `/readyz` (503,
/// with the reason) before it exits, so that the operators' monitoring sees
/// why it goes. The pipeline has stopped taking deliveries by then.
pub const FAIL_STOP_GRACE: Duration = Duration::from_secs(1);
/// The longest the stop after a store failure may take before the process
/// exits anyway (nothing it could still do is durable).
pub const FAIL_STOP_LIMIT: Duration = Duration::from_secs(10);

/// Fail-stop: the store failed (its redo log poisoned by a write, sync or
/// commit that failed: EIO, a full disk), so nothing more can be made
/// durable, and nothing that is not durable may be acked or confirmed
/// (guaranteed delivery: KZ order §9, Tatarstan §1.3). Retrying cannot heal
/// it, and a broker that stays up but accepts nothing hides the fault from
/// the operator, who answers for uninterrupted operation (UZ annex 2 §27).
/// So the broker stops: `/readyz` says why for [`FAIL_STOP_GRACE`], the
/// tasks stop (unacked deliveries return to the queue), and `run` returns
/// the error, which makes the process exit non-zero. A restart, once the
/// disk is fixed, replays the log: nothing acked is lost.
async fn fail_stop(handle: BrokerHandle, reason: String) -> anyhow::Error {
    tracing::error!(%reason, "the store failed; stopping (fail-stop)");
    eprintln!(
        "mev broker: the store failed: {reason}; not ready, stopping (nothing that was not durable was acked)"
    );
    tokio::time::sleep(FAIL_STOP_GRACE).await;
    if tokio::time::timeout(FAIL_STOP_LIMIT, handle.stop())
        .await
        .is_err()
    {
        tracing::error!("the stop took longer than {FAIL_STOP_LIMIT:?}; exiting anyway");
    }
    anyhow::anyhow!(
        "the store failed: {reason}. Stopped so as not to accept what cannot be made durable; \
         free space on (or repair) the data directory's disk and start the broker again: the redo \
         log replays, and nothing acked is lost"
    )
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
